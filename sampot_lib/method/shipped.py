"""Segmentation regressors that ship inside the package, one record per (model, prompt kind, structure).

Each record (:class:`ShippedRegressor`), as torchvision keeps its weights, says what the file is (name, model,
prompt kind, structure, input size, file name, sha256, size), what it learned from (the training data's identity and
the ids of its training and validation images), how good it is (r and MAE with the true Dice on JSRT's test split,
the split-conformal half-width of its interval at a nominal level and the coverage measured on test), the do-no-harm
rule's margin and blend weight, and the terms of its data. The records live in ``regressors/registry.json`` beside
the ``<name>.pt`` files and their ``<name>.md`` model cards; ``scripts/ship_regressor.py`` writes all three from a
finished run. :func:`load_shipped_regressor` checks a file's size and sha256 before it is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sampot_lib.defaults import CONFORMAL_LEVEL, PROMPT_KINDS
from sampot_lib.errors import SampotError
from sampot_lib.files import sha256_file
from sampot_lib.method.regressor import SegmentationRegressor, load_regressor
from sampot_lib.models.registry import model_meta

#: The folder of the shipped regressors, their model cards and their registry.
REGRESSORS_DIR = Path(__file__).parent / "regressors"
REGISTRY_FILE = REGRESSORS_DIR / "registry.json"
#: What an interval can be of (:meth:`ShippedRegressor.half_width_of`).
INTERVAL_KINDS = ("mask", "user", "binary", "evolved")
#: How a user without a shipped regressor gets one.
TRAIN_HINT = ("train one on labelled images with `sampot train-regressor DATA --model M --structure S --prompt P "
              "--out DIR` (or `sampot run`) and pass --regressor DIR/regressor.pt")  # fmt: skip


@dataclass(frozen=True)
class ShippedRegressor:
    """The record of one shipped regressor.

    training_data: ``name``, ``data_identity`` (hash of the mask files it learned from), ``split_hash``,
    ``train_ids`` and ``val_ids`` (the images it was trained and validated on: a test on them is refused), ``terms``.
    numbers: ``test`` ({``n``, ``r``, ``mae``, ``coverage``} on the model's masks of the test split, and the same for
    the user prompts alone under ``test_user``), ``conformal`` ({``half_width``, ``level``, ``n``}: from the
    validation split; ``half_width_user``, ``half_width_binary`` and ``half_width_evolved`` where users' prompts,
    binary masks and evolution's winners were measured apart), and ``evolution`` (the run's evolution summary on test,
    when it has one).
    margin / blend_weight: the do-no-harm rule applied by default (:class:`~sampot_lib.method.selection.DoNoHarm`).
    """

    name: str
    model: str
    prompt_kind: str
    structure: str
    input_size: int
    filename: str
    sha256: str
    size: int
    training_data: dict[str, Any]
    numbers: dict[str, Any]
    margin: float
    blend_weight: float | None
    license: str
    card: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The regressor file inside the package."""
        return REGRESSORS_DIR / self.filename

    @property
    def card_path(self) -> Path:
        """The model card (markdown) inside the package."""
        return REGRESSORS_DIR / self.card

    @property
    def half_width(self) -> float:
        """The conformal half-width of the predicted Dice's interval."""
        return float(self.numbers["conformal"]["half_width"])

    @property
    def level(self) -> float:
        """The interval's nominal coverage (e.g. 0.9)."""
        return float(self.numbers["conformal"]["level"])

    def half_width_of(self, of: str = "mask") -> float:
        """The conformal half-width for the predicted Dice of ``of``: ``"mask"``, the model's soft masks (as evolution
        scores them); ``"user"``, the soft mask of a user's own prompt (evolution's step 0); ``"binary"``, a binary
        mask (as ``sampot score`` reads one); ``"evolved"``, the winner of an evolution (the best of many scores
        overrates its mask). A record that did not measure ``of`` apart gives the soft masks' half-width."""
        if of not in INTERVAL_KINDS:
            raise SampotError(f"no interval of {of!r}: choose one of {', '.join(INTERVAL_KINDS)}.")
        return float(self.numbers["conformal"].get(f"half_width_{of}", self.half_width))

    def interval(self, predicted: float, of: str = "mask") -> tuple[float, float]:
        """The interval of a predicted Dice: ``predicted`` ± the half-width for ``of`` (see :meth:`half_width_of`),
        clipped to [0, 1]."""
        return predicted_interval(predicted, self.half_width_of(of))

    def to_dict(self) -> dict[str, Any]:
        """The record as the registry file stores it."""
        return asdict(self)

    def summary(self) -> str:
        """One line: what it is for and its numbers on test."""
        test, conf = self.numbers.get("test", {}), self.numbers.get("conformal", {})
        return (f"{self.name}: {self.model} {self.prompt_kind} {self.structure}; on {test.get('n', '?')} test masks "
                f"r {_num(test.get('r'))}, MAE {_num(test.get('mae'))}, ±{_num(conf.get('half_width'))} at "
                f"{_pct(conf.get('level'))} nominal ({_pct(test.get('coverage'))} measured); do-no-harm margin "
                f"{self.margin:g}")  # fmt: skip


def _num(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and math.isfinite(v) else "?"


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) and math.isfinite(v) else "?"


def shipped_regressors(registry: Path | None = None) -> dict[str, ShippedRegressor]:
    """Every shipped regressor's record by name (an empty dict when none ships).

    Raises:
        SampotError: ``registry`` is given and is not a file, or the registry is damaged.
    """
    if registry is not None and not Path(registry).is_file():  # only the package's own registry may be absent
        raise SampotError(f"the shipped regressors' registry {registry} is not a file; give the registry.json of a "
                          "sampot package, or leave it out for this sampot's own.")  # fmt: skip
    path = Path(registry) if registry is not None else REGISTRY_FILE
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())["regressors"]
        records = [ShippedRegressor(**row) for row in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise SampotError(f"the shipped regressors' registry {path} is damaged ({exc}); reinstall sampot.") from exc
    return {r.name: r for r in records}


def _listing(records: dict[str, ShippedRegressor]) -> str:
    if not records:
        return "none ships with this sampot"
    return "; ".join(f"{r.name} ({r.model}, {r.prompt_kind}, {r.structure})" for r in records.values())


def shipped_by_name(name: str, registry: Path | None = None) -> ShippedRegressor:
    """The record named ``name``; SampotError listing the shipped ones when there is none of that name."""
    records = shipped_regressors(registry)
    if name not in records:
        raise SampotError(f"no shipped regressor is named {name!r}; shipped: {_listing(records)}. Or {TRAIN_HINT}.")
    return records[name]


def prompt_family(prompt_kind: str) -> str:
    """``box`` for a prompt kind with a box (``box``, ``box+clicks``), ``click`` for clicks alone: the kind a
    regressor is shipped for, and the one the widget's mouse places."""
    return "box" if "box" in prompt_kind else "click"


#: How ``sampot evolve`` gives each prompt kind: what a message advises when the shipped regressor wants the other.
PROMPT_OPTIONS = {"box": "--box X0 Y0 X1 Y1", "click": "--click X Y"}


def find_shipped(
    model: str,
    prompt_kind: str,
    structure: str,
    registry: Path | None = None,
    prompt_options: Mapping[str, str] = PROMPT_OPTIONS,
) -> ShippedRegressor:
    """The shipped regressor for a model, a prompt kind and a structure: the default of evolution and scoring.

    Args:
        model: The model's registry name (e.g. ``"litemedsam"``).
        prompt_kind: ``click`` or ``box`` (a prompt with a box counts as ``box``, clicks alone as ``click``).
        structure: The structure segmented (e.g. ``"left_lung"``).
        registry: The registry file to read; None: the package's ``regressors/registry.json``.
        prompt_options: How the caller's command gives each prompt kind, for the advice when only the other kind's
            regressor is shipped.

    Returns:
        The shipped regressor's record.

    Raises:
        SampotError: In one line, listing the shipped ones and how to train one, when none fits; or a damaged
            registry.
    """
    if prompt_kind not in PROMPT_KINDS:
        raise SampotError(f"unknown prompt kind {prompt_kind!r}; known: {', '.join(PROMPT_KINDS)}.")
    if not isinstance(prompt_options, Mapping) or any(k not in prompt_options for k in ("box", "click")):
        raise SampotError(f"prompt_options must map 'box' and 'click' to how a prompt of that kind is given, got "
                          f"{prompt_options!r}; leave it out for sampot evolve's options.")  # fmt: skip
    kind = prompt_family(prompt_kind)
    records = shipped_regressors(registry)
    for record in records.values():
        if (record.model, record.prompt_kind, record.structure) == (model, kind, structure):
            return record
    other = [r for r in records.values() if (r.model, r.structure) == (model, structure)]
    if other:  # a regressor of the other prompt kind would be refused too: advise the prompt, not --regressor
        how = f"give a {other[0].prompt_kind} ({prompt_options[other[0].prompt_kind]})"
        raise SampotError(f"no shipped regressor for model {model!r} with {kind} prompts: its {structure} regressor "
                          f"({other[0].name}) scores masks from {other[0].prompt_kind} prompts; {how}, or "
                          f"{TRAIN_HINT}.")  # fmt: skip
    raise SampotError(f"no shipped regressor for model {model!r}, {kind} prompts and structure {structure!r}; "
                      f"shipped: {_listing(records)}. Pick one with --regressor NAME, or {TRAIN_HINT}.")  # fmt: skip


def default_prompt_kind(model: str) -> str:
    """The prompt kind a model answers best: ``click`` when its record lists clicks, else ``box`` (LiteMedSAM)."""
    return "click" if "click" in model_meta(model).get("prompt_kinds", ["click"]) else "box"


def verify_shipped(record: ShippedRegressor) -> Path:
    """The record's file, after its size and sha256 are checked; SampotError when it is missing or changed."""
    path = record.path
    if not path.is_file():
        raise SampotError(f"the shipped regressor {record.name!r} has no file at {path}; reinstall sampot.")
    size = path.stat().st_size
    digest = sha256_file(path) if size == record.size else None
    if size != record.size or digest != record.sha256:
        got = f"{size:,} bytes" if size != record.size else f"sha256 {digest}"
        raise SampotError(f"the shipped regressor file {path} has been changed ({got}, where its record has "
                          f"{record.size:,} bytes, sha256 {record.sha256}); reinstall sampot.")  # fmt: skip
    return path


def load_shipped_regressor(
    name: str | ShippedRegressor, device: str = "cpu", registry: Path | None = None
) -> tuple[SegmentationRegressor, dict[str, Any], ShippedRegressor]:
    """Load a shipped regressor after checking its file's size and sha256.

    Args:
        name: The shipped regressor's name, or its record.
        device: Where to put the regressor.
        registry: The registry file a name is looked up in; None: the package's ``regressors/registry.json``.

    Returns:
        The triple (regressor, meta, record), the regressor in eval mode, the file's own record of what it learned
        from, and the shipped record.

    Raises:
        SampotError: No shipped regressor of that name (the message lists the shipped ones), or its file is missing
            or changed.
    """
    record = name if isinstance(name, ShippedRegressor) else shipped_by_name(name, registry)
    regressor, meta = load_regressor(verify_shipped(record), input_size=record.input_size, device=device)
    return regressor, meta, record


def shipped_for_file(path: str | Path, registry: Path | None = None) -> ShippedRegressor | None:
    """The shipped record whose file is ``path``, or a copy of it (its size and sha256), or None for any other
    file: a user keeps a copy beside their project as often as they name the packaged one."""
    target = Path(path).resolve()
    records = shipped_regressors(registry).values()
    same = next((r for r in records if r.path.resolve() == target), None)
    if same is not None or not target.is_file():
        return same
    size = target.stat().st_size
    sized = [r for r in records if r.size == size]
    digest = sha256_file(target) if sized else None
    return next((r for r in sized if r.sha256 == digest), None)


def resolve_regressor(
    given: str | Path | None,
    model: str,
    prompt_kind: str,
    structure: str,
    device: str = "cpu",
    prompt_options: Mapping[str, str] = PROMPT_OPTIONS,
) -> tuple[SegmentationRegressor, dict[str, Any], ShippedRegressor | None]:
    """The regressor a command or the app uses: ``given`` a file path (as before), the name of a shipped one, or
    None for the shipped default of (``model``, ``prompt_kind``, ``structure``; ``prompt_options`` as for
    :func:`find_shipped`). Returns (regressor, the file's record, the shipped record or None for a file of the
    user's)."""
    if given is None:
        return load_shipped_regressor(
            find_shipped(model, prompt_kind, structure, prompt_options=prompt_options), device
        )
    path = Path(given)
    if not path.exists() and str(given) in shipped_regressors():
        return load_shipped_regressor(str(given), device)
    record = shipped_for_file(path) if path.is_file() else None
    if record is not None:
        return load_shipped_regressor(record, device)
    regressor, meta = load_regressor(path, device=device)
    return regressor, meta, None


def conformal_half_width(residuals: np.ndarray, level: float = CONFORMAL_LEVEL) -> float:
    """Split-conformal half-width: the ``ceil((n + 1) * level)``-th smallest absolute residual of ``n`` calibration
    residuals (predicted minus true Dice), so that a new exchangeable residual falls within it with probability at
    least ``level``. SampotError when ``n`` is too small for the level (the interval would be unbounded)."""
    r = np.sort(np.abs(np.asarray(residuals, dtype=float)))
    if not 0 < level < 1:
        raise SampotError(f"the conformal level must lie in (0, 1), got {level!r}.")
    k = math.ceil((len(r) + 1) * level)
    if k > len(r):
        raise SampotError(f"{len(r)} calibration residuals are too few for a {level:.0%} interval; it needs at least "
                          f"{math.ceil(level / (1 - level))}.")  # fmt: skip
    return float(r[k - 1])


def coverage(residuals: np.ndarray, half_width: float) -> float:
    """The share of residuals whose absolute value is at most ``half_width`` (NaN for none)."""
    r = np.abs(np.asarray(residuals, dtype=float))
    return float((r <= half_width).mean()) if r.size else float("nan")


def predicted_interval(predicted: float, half_width: float) -> tuple[float, float]:
    """``predicted`` ± ``half_width``, clipped to [0, 1]."""
    return max(0.0, predicted - half_width), min(1.0, predicted + half_width)
