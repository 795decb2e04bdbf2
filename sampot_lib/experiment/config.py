"""The settings of an experiment and their checks.

:class:`ExperimentConfig` holds everything that decides a run's numbers (written to ``out/config.json``). Every
value is checked when the config is made, by type and by range, so a notebook parameter or a command-line value that
cannot work fails at once with :class:`~sampot_lib.errors.SampotError` naming the parameter, never deep inside torch
after minutes of work.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sampot_lib.defaults import (
    BATCH_SIZE,
    BOX_JITTER,
    EPOCHS,
    EVOLVE_MIN_GAIN,
    EVOLVE_PATIENCE,
    LR,
    LR_SCHEDULES,
    MAX_LR,
    MAX_REGRESSOR_SIZE,
    MAX_SHARPNESS,
    MAX_STEPS,
    MIN_MAX_IMAGES,
    N_OUTSIDE,
    N_SYNTHETIC,
    OPTIMIZERS,
    PAPER_FRACTIONS,
    PRESETS,
    RANK_WEIGHT,
    REGRESSOR_LR,
    REGRESSOR_PATIENCE,
    REGRESSOR_PRECISION,
    REGRESSOR_PRECISIONS,
    REGRESSOR_SCHEDULE,
    REGRESSOR_SIZE,
    RULE,
    SAFEGUARDS_ON,
    SCHEDULER_TIMEOUT,
    SCORERS,
    SHARPNESS,
    SIMULATED_PROMPTS,
    STEPS,
)
from sampot_lib.errors import SampotError, check_safeguards, device_form, regressor_size
from sampot_lib.errors import seed as check_seed

MASK_OUTPUTS = (None, "best", "single", 0, 1, 2)


@dataclass
class ExperimentConfig:
    """Everything that decides the numbers of a run (written to ``out/config.json``).

    Every value is checked when the config is made, by type and by range. ``workers``, ``scheduler`` and
    ``dashboard`` say where the per-image work runs; they never change a number, so no stage is redone for them
    (:data:`STAGE_SETTINGS`).

    Raises:
        SampotError: A value of the wrong type or out of range, naming the parameter.

    Attributes:
        data: The data set's folder, in the folder format (``images/``, ``masks/<structure>/``).
        out: The run folder, for the splits, the regressor and the results.
        structure: The structure to segment: the name of a folder in ``masks/``.
        model: The model's registry name (``sam_nano``, ``litemedsam``, ``vit_b``, ``vit_l`` or ``vit_h``).
        checkpoint: A local checkpoint file for ``model``; None: the packaged weights, or SAM's downloaded once into
            the cache.
        mask_output: Which output a prompt yields: ``"best"``, ``"single"``, 0, 1 or 2; None: the model's
            recommended one, else ``"best"``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (its form is checked here, whether it exists at run time).
        split_file: A split JSON from ``sampot data split``; None: make one, seeded by ``seed``.
        split_fractions: The train, val and test shares of the subjects: three non-negative numbers with a positive
            sum (default: the paper's 41 / 28 / 53).
        seed: Seeds the split, the regressor's training set and its weights.
        max_images: Use at most this many images per split (at least 3), for quick runs; None: all.
        n_synthetic: Level-set masks of the truth per image in the regressor's training set.
        n_outside: Click prompts: model masks from clicks 5 px outside the structure per image in the regressor's
            training set, beside those from the centroids of three horizontal bands.
        regressor_size: The regressor's input size in pixels.
        epochs: The most epochs of regressor training.
        batch_size: Regressor training's batch size (at least 2: batch norm needs two samples a batch).
        regressor_lr: Adam's learning rate in regressor training.
        regressor_patience: Stop regressor training after this many epochs without a lower validation loss; 0: every
            epoch.
        regressor_schedule: Regressor training's learning-rate schedule, one of
            :data:`~sampot_lib.defaults.LR_SCHEDULES` (``"constant"``: the paper's one rate).
        regressor_precision: Regressor training's arithmetic, one of :data:`~sampot_lib.defaults.REGRESSOR_PRECISIONS`
            (``"float32"``: the paper's; ``"bfloat16"``: the training batches' forward pass under autocast).
        rank_weight: Weight of the within-image loss beside the MSE in regressor training; 0: the MSE alone.
        steps: Evolution's model calls after the user's prompt.
        patience: Stop an evolution once the best score has not risen by more than ``min_gain`` for this many calls
            in a row; 0, None or one of at least ``steps``: no early stopping.
        min_gain: The least rise of the best score that counts as progress for ``patience``.
        lr: Evolution's step size in pixels of the original image.
        sharpness: Slope of the sigmoid on the logits the regressor scores.
        safeguards: The fields of :class:`~sampot_lib.method.prompts.Safeguards` as a dict (default: on).
        prompt: The simulated user's first prompt: ``"click"`` (the structure's centroid, the paper's) or ``"box"``
            (the structure's box jittered by ``box_jitter``).
        box_jitter: J: each edge of the user's box moves by a seeded uniform fraction in [-J, J] of the box size.
        optimizer: How the prompt moves: ``"adam"``, ``"cmaes"`` or ``"random"``.
        scorers: The scores that drive evolution, side by side at the same budget: some of ``regressor``,
            ``confidence``, ``blend``, ``oracle`` and ``do-no-harm``, each once (``regressor`` is put first, and
            added for ``do-no-harm``).
        margin: The do-no-harm rule's margin, a predicted Dice gain in [0, 1]; None: chosen on the validation split.
        extra_jitters: Box prompts: also evolve users' boxes jittered by these fractions in [0, 1] (regressor score
            only).
        regressor: A regressor file trained elsewhere, used instead of training one. Its provenance is checked: a
            regressor for other settings, or one that saw the test images, is refused unless
            ``allow_foreign_regressor``, and the results then record every difference. None: train one.
        allow_foreign_regressor: Use a ``regressor`` made for other settings or data, on purpose.
        preset: The name of the preset the values came from (a label;
            :func:`~sampot_lib.experiment.presets.differs_from_paper` says what differs), or None.
        seeds: Run the regressor training and the evolution once per seed (sub-folders ``seed_<k>/`` of ``out``,
            all on the split made with ``seed``) and report mean and spread; None runs ``seed`` alone.
        workers: None or 1: the per-image work runs in this process; N > 1: a local Dask cluster of N processes
            (:class:`sampot_lib.experiment.parallel.Workers`).
        scheduler: The address of a running Dask scheduler to join instead (not with ``workers`` > 1), or None.
        dashboard: Serve the Dask dashboard of the ``workers`` cluster (with ``scheduler``: print that cluster's).
    """

    data: str
    out: str
    structure: str = "left_lung"
    model: str = "sam_nano"
    checkpoint: str | None = None
    mask_output: str | int | None = None
    device: str = "cpu"
    split_file: str | None = None
    split_fractions: list[float] = field(default_factory=lambda: [float(f) for f in PAPER_FRACTIONS])
    seed: int = 0
    max_images: int | None = None  # per split, for quick runs; None uses all
    n_synthetic: int = N_SYNTHETIC
    n_outside: int = N_OUTSIDE
    regressor_size: int = REGRESSOR_SIZE
    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    regressor_lr: float = REGRESSOR_LR
    regressor_patience: int = REGRESSOR_PATIENCE
    regressor_schedule: str = REGRESSOR_SCHEDULE
    regressor_precision: str = REGRESSOR_PRECISION
    rank_weight: float = RANK_WEIGHT
    steps: int = STEPS
    patience: int | None = EVOLVE_PATIENCE
    min_gain: float = EVOLVE_MIN_GAIN
    lr: float = LR
    sharpness: float = SHARPNESS
    safeguards: dict[str, Any] = field(default_factory=lambda: dict(SAFEGUARDS_ON))
    prompt: str = "click"
    box_jitter: float = BOX_JITTER
    optimizer: str = "adam"
    scorers: list[str] = field(default_factory=lambda: ["regressor"])
    margin: float | None = None
    extra_jitters: list[float] = field(default_factory=list)
    regressor: str | None = None
    allow_foreign_regressor: bool = False
    preset: str | None = None
    seeds: list[int] | None = None
    workers: int | None = None
    scheduler: str | None = None
    dashboard: bool = False

    def __post_init__(self) -> None:
        # Notebooks get these from papermill parameters: a wrong type must fail here, by name, not deep inside torch.
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = _ALLOWED[f.name]
            if isinstance(value, Path) and str in allowed:
                setattr(self, f.name, str(value))
            elif isinstance(value, tuple) and list in allowed:
                setattr(self, f.name, list(value))
            elif isinstance(value, int) and not isinstance(value, bool) and float in allowed and int not in allowed:
                setattr(self, f.name, float(value))
            elif not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise SampotError(f"parameter {f.name!r} must be {names}, got {value!r} ({type(value).__name__}).")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Values of the right type that still cannot work."""
        if self.mask_output not in MASK_OUTPUTS:
            raise SampotError(
                f"parameter 'mask_output' must be best, single, 0, 1, 2 or None, got {self.mask_output!r}."
            )
        for name in ("data", "out", "structure", "model", "device"):
            if not getattr(self, name).strip():
                raise SampotError(f"parameter {name!r} must not be empty.")
        device_form(self.device, "parameter 'device'")  # its form; whether it exists here is checked at run time
        if Path(self.structure).name != self.structure or self.structure in (".", ".."):
            # masks/<structure>/ must be a folder inside masks/, not a path out of it
            raise SampotError(f"parameter 'structure' must be the name of a folder in masks/, got {self.structure!r}.")
        check_seed(self.seed, "parameter 'seed'")  # the bound of --seed: what numpy and torch both accept
        for name, lo in (("n_synthetic", 0), ("n_outside", 0), ("batch_size", 2), ("epochs", 1),
                         ("steps", 0), ("regressor_patience", 0)):  # fmt: skip
            if getattr(self, name) < lo:
                why = " (batch norm needs two samples a batch)" if name == "batch_size" else ""
                raise SampotError(f"parameter {name!r} must be >= {lo}{why}, got {getattr(self, name)}.")
        if not 0 <= self.rank_weight < float("inf"):
            raise SampotError(f"parameter 'rank_weight' must be a finite number >= 0 (0: the MSE alone), got "
                              f"{self.rank_weight}.")  # fmt: skip
        if self.max_images is not None and self.max_images < MIN_MAX_IMAGES:
            raise SampotError(
                f"parameter 'max_images' must be at least {MIN_MAX_IMAGES} (a correlation needs {MIN_MAX_IMAGES} test "
                "images) or None for all, "
                f"got {self.max_images}."
            )
        if self.steps > MAX_STEPS:
            raise SampotError(f"parameter 'steps' must be at most {MAX_STEPS}, got {self.steps}.")
        regressor_size(self.regressor_size, "parameter 'regressor_size'", high=MAX_REGRESSOR_SIZE)
        for name in ("regressor_lr", "lr", "sharpness"):
            _positive(name, getattr(self, name))
        for name, most in (("lr", MAX_LR), ("sharpness", MAX_SHARPNESS)):  # the command line's bounds
            if getattr(self, name) > most:
                raise SampotError(f"parameter {name!r} must be in (0, {most:g}], got {getattr(self, name)!r}.")
        if self.patience is not None and self.patience < 0:
            raise SampotError(f"parameter 'patience' must be a whole number >= 0 or None (0, None or one of at least "
                              f"'steps': no early stopping), got {self.patience}.")  # fmt: skip
        if not (math.isfinite(self.min_gain) and 0 <= self.min_gain < 1):  # a score lies in [0, 1]
            raise SampotError(f"parameter 'min_gain' must be a score gain in [0, 1), got {self.min_gain!r}.")
        if not (math.isfinite(self.box_jitter) and 0 <= self.box_jitter <= 1):
            raise SampotError(f"parameter 'box_jitter' must be a fraction in [0, 1], got {self.box_jitter!r}.")
        for name, allowed in (("prompt", SIMULATED_PROMPTS), ("optimizer", OPTIMIZERS),
                              ("regressor_schedule", LR_SCHEDULES),
                              ("regressor_precision", REGRESSOR_PRECISIONS)):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise SampotError(
                    f"parameter {name!r} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}."
                )
        if (
            not self.scorers
            or any(s not in (*SCORERS, RULE) for s in self.scorers)
            or len(set(self.scorers)) != len(self.scorers)
        ):
            raise SampotError(
                f"parameter 'scorers' must list some of {', '.join((*SCORERS, RULE))} (each once), "
                f"got {self.scorers!r}."
            )
        if RULE in self.scorers and "regressor" not in self.scorers:  # the rule picks among the regressor's steps
            self.scorers = ["regressor", *self.scorers]
        if self.scorers[0] != "regressor" and "regressor" in self.scorers:
            self.scorers = ["regressor", *[s for s in self.scorers if s != "regressor"]]
        if self.margin is not None and not (math.isfinite(self.margin) and 0 <= self.margin <= 1):
            raise SampotError(f"parameter 'margin' must be a predicted Dice gain in [0, 1] or None (chosen on the "
                              f"validation split), got {self.margin!r}.")  # fmt: skip
        for j in self.extra_jitters:
            if not (_is_number(j) and math.isfinite(j) and 0 <= j <= 1):
                raise SampotError(
                    f"parameter 'extra_jitters' must hold fractions in [0, 1], got {self.extra_jitters!r}."
                )
        self.extra_jitters = [float(j) for j in self.extra_jitters]
        # settings that do nothing in this run would be recorded in config.json as if they had been used
        if self.margin is not None and RULE not in self.scorers:
            raise SampotError(f"parameter 'margin' (--margin) is the do-no-harm rule's margin, but the scorers "
                              f"({', '.join(self.scorers)}) do not include {RULE}: add {RULE} to them, or leave the "
                              "margin out.")  # fmt: skip
        if self.extra_jitters and self.prompt != "box":
            raise SampotError(f"parameter 'extra_jitters' (--extra-jitters) jitters users' boxes, but the prompt is "
                              f"{self.prompt!r}: give prompt 'box' (--prompt box), or leave the extra jitters "
                              "out.")  # fmt: skip
        if self.preset is not None and self.preset not in PRESETS:
            raise SampotError(f"parameter 'preset' must be one of {', '.join(PRESETS)} or None, got {self.preset!r}.")
        fr = self.split_fractions
        # a finite sum: three finite fractions near the float limit sum to inf, and the split then divides by it
        if (
            len(fr) != 3
            or not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in fr)
            or not 0 < sum(fr) < math.inf
        ):
            raise SampotError(
                f"parameter 'split_fractions' must be three non-negative numbers (train, val, test) with a positive "
                f"sum, e.g. [41, 28, 53]; got {fr!r}."
            )
        self.split_fractions = [float(v) for v in fr]
        if self.seeds is not None:
            if not self.seeds or not all(_is_number(s) and isinstance(s, int) for s in self.seeds):
                raise SampotError(
                    f"parameter 'seeds' must be a non-empty list of whole numbers >= 0, got {self.seeds!r}."
                )
            for s in self.seeds:
                check_seed(s, "parameter 'seeds': each seed")
            if len(set(self.seeds)) != len(self.seeds):
                raise SampotError(f"parameter 'seeds' lists a seed twice: {self.seeds}.")
        check_safeguards(self.safeguards)
        if self.workers is not None and self.workers < 1:
            raise SampotError(f"parameter 'workers' must be >= 1 (1: in this process) or None, got {self.workers}.")
        if self.scheduler is not None:
            self.scheduler = check_scheduler(self.scheduler, "parameter 'scheduler'")
            if self.workers is not None and self.workers > 1:
                raise SampotError("give 'workers' or 'scheduler', not both: a joined Dask cluster has its own workers.")

    @property
    def out_dir(self) -> Path:
        """The run folder ``out`` as a path."""
        return Path(self.out)

    @property
    def run_seeds(self) -> list[int]:
        """The seeds to run: ``seeds``, or ``[seed]``."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dict (what ``out/config.json`` holds).

        Returns:
            One entry per attribute.
        """
        return asdict(self)


_NONE = type(None)
_ALLOWED: dict[str, tuple[type, ...]] = {
    "data": (str,), "out": (str,), "structure": (str,), "model": (str,), "checkpoint": (str, _NONE),
    "mask_output": (str, int, _NONE), "device": (str,), "split_file": (str, _NONE), "split_fractions": (list,),
    "seed": (int,), "max_images": (int, _NONE), "n_synthetic": (int,), "n_outside": (int,), "regressor_size": (int,),
    "epochs": (int,), "batch_size": (int,), "regressor_lr": (float,), "regressor_patience": (int,),
    "regressor_schedule": (str,), "regressor_precision": (str,), "rank_weight": (float,), "steps": (int,),
    "patience": (int, _NONE), "min_gain": (float,), "lr": (float,),
    "sharpness": (float,), "safeguards": (dict,), "prompt": (str,), "box_jitter": (float,), "optimizer": (str,),
    "scorers": (list,), "margin": (float, _NONE), "extra_jitters": (list,), "regressor": (str, _NONE),
    "allow_foreign_regressor": (bool,), "preset": (str, _NONE), "seeds": (list, _NONE), "workers": (int, _NONE),
    "scheduler": (str, _NONE), "dashboard": (bool,),
}  # fmt: skip


#: A Dask scheduler address: [protocol://]host:port (``dask scheduler`` prints it).
_ADDRESS = re.compile(
    r"^(?:(tcp|tls|ucx|ws|wss)://)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$"
)


def check_scheduler(address: str, name: str = "--scheduler") -> str:
    """A Dask scheduler address ``[tcp|tls|ucx|ws|wss://]host:port`` (port 1-65535), stripped; else SampotError."""
    text = address.strip()
    match = _ADDRESS.match(text)
    if match is None or not 1 <= int(match.group(4)) <= 65535:
        raise SampotError(f"{name} must be a Dask scheduler address like tcp://node1:8786 (host:port, as `dask "
                          f"scheduler` prints it), got {address!r}.")  # fmt: skip
    return text


def check_scheduler_answers(address: str, name: str = "--scheduler", timeout: float = SCHEDULER_TIMEOUT) -> None:
    """SampotError unless something accepts a connection at a Dask scheduler's ``host:port`` within ``timeout`` s:
    looked at before a run folder is written, since joining the cluster comes later (UCX addresses are not tried)."""
    match = _ADDRESS.match(check_scheduler(address, name))
    if match is None or match.group(1) == "ucx":
        return
    host, port = match.group(2).strip("[]"), int(match.group(4))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = "no such host" if isinstance(exc, socket.gaierror) else exc.strerror or type(exc).__name__
        raise SampotError(
            f"{name} {address}: nothing answers at {host}:{port} ({why}); start `dask scheduler` "
            "there (it prints its address) or correct the address, or use --workers N."
        ) from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise SampotError(f"parameter {name!r} must be a finite number > 0, got {value!r}.")


# -- which settings each stage's results depend on ------------------------------------------------------------------

# A stage's results are reusable (``--resume``) while these settings are unchanged; ``out``, ``device``, ``preset``,
# ``seeds``, ``workers`` and ``scheduler`` never change a stage's numbers (a sub-run of one seed gets its own folder;
# every image's work depends on the seed and the image alone, wherever it runs).
_DATA = ("data", "structure", "split_file", "split_fractions", "seed", "max_images")
_MODEL = ("model", "checkpoint", "mask_output")
_SET = ("n_synthetic", "n_outside", "regressor_size", "sharpness", "prompt")
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "train": _DATA + _MODEL + _SET + ("epochs", "batch_size", "regressor_lr", "regressor_patience",
                                        "regressor_schedule", "regressor_precision", "rank_weight", "regressor"),
    "evaluate": _DATA + _MODEL + _SET + ("box_jitter", "regressor"),
    "evolve": _DATA + _MODEL + ("regressor_size", "sharpness", "prompt", "box_jitter", "extra_jitters", "steps",
                                "patience", "min_gain", "lr", "safeguards", "optimizer", "scorers", "margin",
                                "regressor"),
}  # fmt: skip


def stage_settings(config: ExperimentConfig, stage: str) -> dict[str, Any]:
    """The settings ``stage``'s results depend on, as a JSON-ready dict."""
    return {k: getattr(config, k) for k in STAGE_SETTINGS[stage]}


def settings_hash(settings: dict[str, Any]) -> str:
    """sha256 of a settings dict in canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


#: Settings that name a file or a folder. What they hold is hashed into a stage's inputs, so they are compared by
#: where they point: ``phantom``, ``phantom/`` and its absolute path are one data set.
_PATH_SETTINGS = ("data", "checkpoint", "regressor")


def same_path(a: Any, b: Any) -> bool:
    """Whether two paths (as given, relative to the working folder) point to the same place."""
    try:
        return a == b or Path(str(a)).resolve() == Path(str(b)).resolve()
    except (OSError, RuntimeError):
        return False


def comparable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """A stage's settings as they decide its results: path settings resolved against the working folder, and no
    ``split_file``, since a stage records the hash of the split it was made on and a copied or moved run folder's
    own ``splits.json`` is the same split under another name."""
    out = {k: v for k, v in settings.items() if k != "split_file"}
    for key in _PATH_SETTINGS:
        if isinstance(out.get(key), str):
            try:
                out[key] = str(Path(out[key]).resolve())
            except (OSError, RuntimeError):
                pass
    return out


def same_settings(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether results made with settings ``old`` are results of ``new`` (:func:`comparable_settings`)."""
    return old == new or comparable_settings(old) == comparable_settings(new)


def made_with(entry: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a stage's manifest record was made with ``settings`` (paths compared by where they point)."""
    return entry.get("settings_hash") == settings_hash(settings) or same_settings(entry.get("settings", {}), settings)


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """ "epochs 3 -> 5, steps 2 -> 4": the settings that differ (a path's spelling is no difference)."""
    old_c, new_c = comparable_settings(old), comparable_settings(new)
    keys = [k for k in sorted(set(old_c) | set(new_c)) if old_c.get(k) != new_c.get(k)]
    shown = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:6]]
    return ", ".join(shown) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "") or "none"
