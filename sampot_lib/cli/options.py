"""The options several commands share, the types that read their values, and how a typed value is told from a
default.

Light on purpose (argparse, the default numbers, the presets' names): the parser is built from it before any
command runs, so ``sampot --help`` and a mistyped option never import torch.
"""

from __future__ import annotations

import argparse
import glob
import math
from pathlib import Path
from typing import Any

from sampot_lib.defaults import (
    BOX_JITTER,
    EPOCHS,
    EVOLVE_MIN_GAIN,
    EVOLVE_PATIENCE,
    LR,
    LR_DECAY_FACTOR,
    LR_DECAY_PATIENCE,
    LR_SCHEDULES,
    MAX_AREA_RATIO,
    MIN_OVERLAP,
    PRESETS,
    RANK_WEIGHT,
    REGRESSOR_PATIENCE,
    REGRESSOR_PRECISION,
    REGRESSOR_PRECISIONS,
    REGRESSOR_SCHEDULE,
    REGRESSOR_SIZE,
    SHARPNESS,
    STEPS,
    TRUST_RADIUS,
)
from sampot_lib.errors import SampotError

#: The number options a preset may set: their defaults are marked so that a preset replaces only those not typed.
PRESET_NUMBERS = ("seed", "max_images", "regressor_size", "epochs", "steps", "patience", "lr", "sharpness",
                  "trust_radius", "min_overlap", "max_area_ratio", "box_jitter", "regressor_patience",
                  "rank_weight")  # fmt: skip


def mask_output(value: str) -> str | int:
    """--mask-output: best, single, 0, 1 or 2."""
    if value in ("best", "single"):
        return value
    if value in ("0", "1", "2"):
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r} is not one of best, single, 0, 1, 2")


def positive_int(value: str) -> int:
    """A whole number >= 0."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return n


def positive_float(value: str) -> float:
    """A finite number > 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(x) or not x > 0:  # float() reads "nan" and "inf"
        raise argparse.ArgumentTypeError(f"{value} must be a finite number > 0")
    return x


def non_negative_float(value: str) -> float:
    """A finite number >= 0."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise argparse.ArgumentTypeError(f"{value} must be a finite number >= 0")
    return x


def whole_number(value: str) -> int:
    """A whole number of any sign: the type of the options whose range :mod:`sampot_lib.cli.checks` states, in the
    library's words, with the other values (a bound here would state another range first)."""
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None


def finite_number(value: str) -> float:
    """A finite number of any sign: the type of the number options whose range :mod:`sampot_lib.cli.checks` states."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(x):  # float() reads "nan" and "inf"
        raise argparse.ArgumentTypeError(f"{value} must be a finite number")
    return x


def structure_option(p: argparse.ArgumentParser) -> None:
    """``--structure`` of a one-image command: what its regressor must have been trained for."""
    p.add_argument("--structure", help="the structure segmented; a --regressor trained for another is refused "
                   "(default: the folder name of a --mask in masks/<structure>/, else not checked)")  # fmt: skip


def foreign_option(p: argparse.ArgumentParser) -> None:
    """``--allow-foreign-regressor`` (also ``--allow-foreign``): a regressor made for other data, on purpose."""
    p.add_argument("--allow-foreign-regressor", "--allow-foreign", dest="allow_foreign_regressor", action="store_true",
                   help="use a --regressor made for another model, structure, prompt kind or sharpness, or one "
                   "that saw these images (never a shipped one measured on its training images), on purpose; the "
                   "results record every difference (default: refuse it)")  # fmt: skip


def model_options(p: argparse.ArgumentParser, model: str | None = "sam_nano") -> None:
    """--model, --checkpoint, --mask-output, --device. ``model=None``: the model comes from the regressor's record."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default=_DefaultStr(model) if model is not None else None,
        help="sam_nano, litemedsam, vit_b, vit_l or vit_h "
        + ("(default: %(default)s)" if model is not None else "(default: the regressor's model)"),
    )  # fmt: skip
    g.add_argument(
        "--checkpoint",
        help="a local checkpoint file for --model (default: the packaged weights, or SAM's downloaded once into the "
        "cache)",
    )
    g.add_argument(
        "--mask-output", type=mask_output, default=None,
        help="which SAM output a click yields: best (highest predicted IoU), single, 0, 1 or 2 (default: the "
        "model's recommended one, else best)",
    )  # fmt: skip
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")


def evolution_options(p: argparse.ArgumentParser, sharpness: float | None = SHARPNESS) -> None:
    """The evolution's budget, step, optimiser, sharpness and safeguards. ``sharpness=None``: the regressor's."""
    g = p.add_argument_group("evolution (paper 3.3)")
    g.add_argument(
        "--steps",
        type=whole_number,
        default=STEPS,
        help="model calls after the user's prompt (default: %(default)s)",
    )
    g.add_argument(
        "--patience", type=positive_int, default=EVOLVE_PATIENCE,
        help="stop once the best score has not risen by more than --min-gain for this many calls in a row; 0: spend "
        "every step " + ("(default: %(default)s)" if EVOLVE_PATIENCE else "(default: every step)"),
    )  # fmt: skip
    if EVOLVE_PATIENCE is not None:  # marked, so that a patience the user typed above --steps can be told apart
        p.set_defaults(patience=_DefaultInt(EVOLVE_PATIENCE))
    g.add_argument(
        "--min-gain", type=non_negative_float, default=EVOLVE_MIN_GAIN,
        help="the least rise of the best score that counts as progress for --patience (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--lr", type=positive_float, default=LR,
        help="step size in pixels of the original image: Adam's lr, the random/cmaes search scale / 3 "
        "(default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--optimizer", default="adam", choices=["adam", "random", "cmaes"],
        help="how the prompt moves: adam (the paper's, needs gradients), random search or cmaes (default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--sharpness", type=positive_float, default=sharpness,
        help="slope of the sigmoid on the logits "
        + ("(default: %(default)s)" if sharpness is not None else "(default: the regressor's)"),
    )  # fmt: skip
    g.add_argument("--no-safeguards", action="store_true", help="the paper's setting: only the image border limits "
                   "the prompt (default: the three safeguards below)")  # fmt: skip
    g.add_argument("--trust-radius", type=positive_float, default=TRUST_RADIUS,
                   help="largest move, as a fraction of the image's longer side (default: %(default)s)")  # fmt: skip
    g.add_argument("--min-overlap", type=finite_number, default=MIN_OVERLAP,
                   help="least IoU of a winner with the first mask (default: %(default)s)")  # fmt: skip
    g.add_argument("--max-area-ratio", type=finite_number, default=MAX_AREA_RATIO,
                   help="largest area change of a winner, x or / (default: %(default)s)")  # fmt: skip


def experiment_options(p: argparse.ArgumentParser) -> None:
    """The options of ``train-regressor`` and ``run``: the data, the run folder, the regressor, presets, workers."""
    p.add_argument("data", help="folder-format data set (images/, masks/<structure>/)")
    p.add_argument("--out", required=True, help="output folder for splits, regressor and results")
    p.add_argument("--structure", default="left_lung", help="mask folder to segment (default: %(default)s)")
    p.add_argument("--split-file", help="a split JSON from `sampot data split` (default: make one, seeded)")
    p.add_argument("--seed", type=positive_int, default=0, help="seed of every random choice (default: %(default)s)")
    p.add_argument("--max-images", type=whole_number, default=None,
                   help="use at most N images per split (default: all)")  # fmt: skip
    p.add_argument("--regressor-size", type=whole_number, default=REGRESSOR_SIZE,
                   help="regressor input size in pixels (default: %(default)s)")  # fmt: skip
    p.add_argument("--epochs", type=whole_number, default=EPOCHS, help="regressor epochs (default: %(default)s)")
    p.add_argument(
        "--regressor-patience", type=positive_int, default=REGRESSOR_PATIENCE,
        help="stop regressor training after this many epochs without a lower validation loss; 0: every epoch "
        + ("(default: %(default)s)" if REGRESSOR_PATIENCE else "(default: every epoch)"),
    )  # fmt: skip
    p.add_argument(
        "--regressor-schedule", choices=LR_SCHEDULES, default=None,
        help=f"regressor training's learning rate: constant (the paper's) or plateau (times {LR_DECAY_FACTOR} after "
        f"{LR_DECAY_PATIENCE + 1} epochs in a row without a lower validation loss) (default: the preset's, else "
        f"{REGRESSOR_SCHEDULE})",
    )  # fmt: skip
    p.add_argument(
        "--regressor-precision", choices=REGRESSOR_PRECISIONS, default=None,
        help="regressor training's arithmetic: float32 (the paper's) or bfloat16 (the training batches' forward pass "
        "under autocast; 1.7x faster an epoch on a 2-core CPU with Intel AMX, emulated on CPUs without native "
        f"bfloat16) (default: the preset's, else {REGRESSOR_PRECISION})",
    )  # fmt: skip
    p.add_argument(
        "--rank-weight", type=non_negative_float, default=RANK_WEIGHT,
        help="weight of the within-image loss beside the MSE in regressor training (the score's differences between "
        "masks of one image against their Dice differences); 0: the MSE alone (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--prompt", choices=["click", "box"], help="the user's first prompt: the centroid click (the "
                   "paper's) or the structure's box jittered by --box-jitter (default: what the model answers "
                   "well)")  # fmt: skip
    p.add_argument("--box-jitter", type=float, default=BOX_JITTER, help="J: each edge of the user's box moves by a "
                   "seeded uniform fraction in [-J, J] of the box size (default: %(default)s)")  # fmt: skip
    g = p.add_argument_group("the run folder and presets")
    g.add_argument("--preset", choices=list(PRESETS), help="start from a preset's settings (paper: the paper's); "
                   "options you type win over it, and the run lists what differs from the paper (default: none, "
                   "the options' own defaults)")  # fmt: skip
    g.add_argument("--resume", action="store_true", help="reuse the stages in --out that finished from the same "
                   "settings, split and inputs; redo the rest (default: redo every stage)")  # fmt: skip
    g.add_argument("--force", action="store_true", help="start --out over: remove the results an earlier run wrote "
                   "there (never a split you made, nor your other files) and make them again (default: refuse to "
                   "replace results made on another split or with other settings)")  # fmt: skip
    g = p.add_argument_group("where the per-image work runs (never changes a number)")
    g.add_argument("--workers", type=int, default=None, metavar="N", help="N > 1: a local Dask cluster of N worker "
                   "processes, the cores split evenly (default: 1, in this process)")  # fmt: skip
    g.add_argument("--scheduler", metavar="ADDRESS", help="join a running Dask cluster at ADDRESS (tcp://host:8786, "
                   "as `dask scheduler` prints it) instead (default: none, as --workers says)")  # fmt: skip
    g.add_argument("--dashboard", action="store_true", help="serve the Dask dashboard of --workers' cluster on "
                   "127.0.0.1 and print its address (with --scheduler: print that cluster's); needs the dashboard "
                   "extra, bokeh (default: off)")  # fmt: skip
    model_options(p)


class _DefaultInt(int):
    """An int option's default (not typed by the user): a preset may replace it."""


class _DefaultFloat(float):
    """A float option's default (not typed by the user): a preset may replace it."""


class _DefaultStr(str):
    """A str option's default (not typed by the user): a shipped regressor's record may replace it."""


#: The default of --model, marked: a shipped --regressor's own model replaces it.
DEFAULT_MODEL = _DefaultStr("sam_nano")


def mark_defaults(p: argparse.ArgumentParser) -> None:
    """Wrap the defaults of :data:`PRESET_NUMBERS` so that :func:`typed` can tell them from values the user typed."""
    for dest in PRESET_NUMBERS:
        value = p.get_default(dest)
        if type(value) is int:
            p.set_defaults(**{dest: _DefaultInt(value)})
        elif type(value) is float:
            p.set_defaults(**{dest: _DefaultFloat(value)})


def is_default(value: Any) -> bool:
    """Whether ``value`` is an option's marked default (see :func:`mark_defaults`), not a value the user typed."""
    return isinstance(value, (_DefaultInt, _DefaultFloat, _DefaultStr))


def typed(args: argparse.Namespace, dest: str) -> bool:
    """Whether the user gave option ``dest`` (rather than leaving its default)."""
    value = getattr(args, dest, None)
    return value is not None and value is not False and not is_default(value)


def plain(value: Any) -> Any:
    """``value`` without the default's mark (a plain int or float)."""
    if isinstance(value, _DefaultStr):
        return str(value)
    return int(value) if isinstance(value, _DefaultInt) else float(value) if isinstance(value, _DefaultFloat) else value


def mask_folder_structure(mask: str | Path | None) -> str | None:
    """The structure a mask file's folder names: ``S`` for a file in ``masks/S/``, else None."""
    if not mask:
        return None
    folder = Path(mask).resolve().parent
    return folder.name if folder.parent.name == "masks" else None


def mask_elsewhere(image: str | Path, mask: str | Path | None, structure: str | None) -> list[str]:
    """Warnings for a mask that seems to belong elsewhere: in ``masks/<s>/`` while ``structure`` (the one given)
    names another, or named as another image of the folder-format data set ``image`` is in (``DIR/images/``,
    ``DIR/masks/<s>/``). A Dice or a score against it is then another mask's."""
    folder = mask_folder_structure(mask)
    if mask is None or folder is None:
        return []
    notes = []
    if structure and folder != structure:
        notes.append(f"the mask {mask} lies in masks/{folder}/ but --structure is {structure}: it is taken as a "
                     f"{structure} mask; give the {structure} mask, or --structure {folder}.")  # fmt: skip
    shown, found = Path(image).resolve(), Path(mask).resolve()
    same_set = shown.parent.name == "images" and shown.parent.parent == found.parent.parent.parent
    # another image's mask only when the set has an image of that name (x_mask.png beside x.png is x's)
    if same_set and shown.stem != found.stem and any(shown.parent.glob(f"{glob.escape(found.stem)}.*")):
        notes.append(f"the mask {mask} is the mask of image {found.stem} of the data set, not of {shown.stem}; give "
                     f"{found.parent / shown.name}.")  # fmt: skip
    return notes


def check_not_a_run_file(out: str | Path, option: str = "--out") -> None:
    """Refuse an output file that the run folder it lies in lists in its manifest.json: a result, the manifest, or a
    file results were made from (its split). Replacing one loses what that run made, and its --resume.

    Args:
        out: The file a command is about to write.
        option: How the message names it (``"the default --out"`` when the user gave none).

    Raises:
        SampotError: ``out`` is such a file, naming the run folder.
    """
    # only for a command writing a file
    from sampot_lib.experiment.cleanup import WRITTEN_BESIDE
    from sampot_lib.experiment.runfolder import MANIFEST, RESULTS_OF, RunFolder

    folder = RunFolder(Path(out).parent)
    try:
        stages = folder.manifest()["stages"]
    except SampotError:  # a manifest.json of something else: no run folder
        return
    names = {MANIFEST, "config.json"} if stages else set()
    for stage, entry in stages.items():
        if isinstance(entry, dict):
            names |= {*(entry.get("outputs") or {}), *(entry.get("inputs") or {}), *RESULTS_OF.get(stage, ()),
                      *WRITTEN_BESIDE.get(stage, ())}  # fmt: skip
    if Path(out).name in names:
        raise SampotError(f"{option} {out} is a file of the run folder {folder.path} (its {MANIFEST} lists it): "
                          "writing there loses what that run made and its --resume; choose another --out.")  # fmt: skip


def shipped_settings(args: argparse.Namespace, prompt_option: str | None = None) -> Any:
    """With a --regressor that is a shipped regressor (its name or its file): --model, and the prompt kind where the
    command has an option for it (``prompt_option``, the ``args`` field), from its record where the user gave none.

    Args:
        args: The parsed options (changed in place).
        prompt_option: The field of the command's prompt-kind option (``"prompt"`` for score); None: the prompt kind
            is not an option of the command.

    Returns:
        The shipped record, or None for any other --regressor (or none).

    Raises:
        SampotError: An option the user gave contradicts the record, naming the option to change.
    """
    record = _shipped_record(getattr(args, "regressor", None))
    if record is not None:
        _take_settings(args, record, prompt_option)
    if getattr(args, "model", None) is not None:
        args.model = plain(args.model)  # the default's mark has done its work
    return record


def _shipped_record(given: str | None) -> Any:
    """The shipped record a --regressor names (its name or file), else None."""
    if not given:
        return None
    from sampot_lib.method.shipped import shipped_for_file, shipped_regressors  # torch: only with a --regressor

    record = shipped_regressors().get(str(given))
    return record if record is not None else shipped_for_file(given) if Path(given).is_file() else None


def _take_settings(args: argparse.Namespace, record: Any, prompt_option: str | None) -> None:
    """--model (and ``prompt_option``) from a shipped record where not typed; SampotError naming a contradicting
    option."""
    wanted = [("model", "--model", record.model)]
    if prompt_option is not None:
        wanted.append((prompt_option, f"--{prompt_option.replace('_', '-')}", record.prompt_kind))
    for dest, option, value in wanted:
        if not typed(args, dest):
            setattr(args, dest, value)
        elif str(getattr(args, dest)) != value:
            raise SampotError(
                f"the shipped regressor {record.name!r} scores masks of {option} {value}, not {getattr(args, dest)}: "
                f"change {option} to {value} (or leave it out), or pick a regressor made for "
                f"{option} {getattr(args, dest)} (`sampot regressors` lists them)."
            )
