"""Every command-line value checked before a command does any work.

:func:`check_args` runs between argparse and the command: a value of the right syntax that cannot work (``--lr inf``,
``--min-overlap 5``, ``--epochs 0``, ``--device gpu0``, an ``--out`` that is a file, an unwritable folder) fails here,
in one line naming the flag, before an image is read or a model loaded. It looks at the parsed names, so a command
that gains a flag gets its check by naming it here, and a flag a command lacks is skipped.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sampot_lib import errors as checks
from sampot_lib.cli.options import is_default, mask_folder_structure, shipped_settings, typed
from sampot_lib.cli.output_checks import check_cache, check_outputs, check_outside_data_set, model_registry
from sampot_lib.data.splits import load_splits
from sampot_lib.defaults import (
    MAX_LR,
    MAX_PHANTOM_SIZE,
    MAX_REGRESSOR_SIZE,
    MAX_SHARPNESS,
    MAX_STEPS,
    MIN_LABELLED,
    MIN_MAX_IMAGES,
    MIN_PHANTOM_SIZE,
    MOST_IDLE_MINUTES,
    MOST_SESSIONS,
    SAFEGUARDS_ON,
    STRUCTURE,
)
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import check_scheduler, check_scheduler_answers

# dest -> (flag, check of the value; it returns the value to keep). None values (flag not given) are not checked.
_VALUES: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "steps": ("--steps", lambda v, n: checks.whole(v, n, low=0, high=MAX_STEPS)),
    "lr": ("--lr", lambda v, n: checks.number(v, n, low=0, high=MAX_LR, low_open=True)),
    "sharpness": ("--sharpness", lambda v, n: checks.number(v, n, low=0, high=MAX_SHARPNESS, low_open=True)),
    "trust_radius": ("--trust-radius", lambda v, n: _safeguard(v, n, "trust_radius")),
    "min_overlap": ("--min-overlap", lambda v, n: _safeguard(v, n, "min_overlap")),
    "margin": ("--margin", lambda v, n: checks.fraction(v, n)),
    "max_area_ratio": ("--max-area-ratio", lambda v, n: _safeguard(v, n, "max_area_ratio")),
    "epochs": ("--epochs", lambda v, n: checks.whole(v, n, low=1)),
    "max_images": ("--max-images", lambda v, n: _max_images(v, n)),
    "regressor_size": ("--regressor-size", lambda v, n: checks.regressor_size(v, n, high=MAX_REGRESSOR_SIZE)),
    "seed": ("--seed", checks.seed),
    "step": ("--step", lambda v, n: checks.whole(v, n, low=1)),
    "port": ("--port", lambda v, n: checks.whole(v, n, low=1, high=65535)),
    "max_sessions": ("--max-sessions", lambda v, n: checks.whole(v, n, low=1, high=MOST_SESSIONS)),
    "idle_minutes": ("--idle-minutes", lambda v, n: checks.number(v, n, low=0, high=MOST_IDLE_MINUTES)),
    "click": ("--click", lambda v, n: _coords(v, n)),
    "box": ("--box", lambda v, n: [checks.number(x, n) for x in v]),
    "device": ("--device", checks.device),
    "labelled": ("--labelled", lambda v, n: _labelled(v, n)),
    "tune_lr": ("--tune-lr", lambda v, n: checks.number(v, n, low=0, high=1, low_open=True)),
    "workers": ("--workers", lambda v, n: _workers(v, n)),
    "box_jitter": ("--box-jitter", checks.fraction),
    "min_gain": ("--min-gain", lambda v, n: checks.number(v, n, low=0, high=1, high_open=True)),  # scores lie in [0, 1]
    "extra_jitters": ("--extra-jitters", lambda v, n: [checks.fraction(j, n) for j in v]),
    "seeds": ("--seeds", lambda v, n: _seeds(v, n)),
    "scheduler": ("--scheduler", check_scheduler),
}
# Values of the data commands (their names mean something else elsewhere, so they are checked by command).
_DATA_VALUES: dict[str, dict[str, tuple[str, Callable[[Any, str], Any]]]] = {
    "split": {"fractions": ("--fractions", lambda v, n: _fractions(v, n))},
    "phantom": {
        "n": ("--n", lambda v, n: checks.whole(v, n, low=1)),
        "size": ("--size", lambda v, n: checks.whole(v, n, low=MIN_PHANTOM_SIZE, high=MAX_PHANTOM_SIZE)),
    },
    "prepare": {"max_size": ("--max-size", lambda v, n: _max_size(v, n))},
}


def _check_split_parts(args: argparse.Namespace, splits: dict[str, list[str]]) -> None:
    """A --split-file whose parts this command needs are empty fails before the run folder is written."""
    labelled = len(splits["train"]) + len(splits["val"])
    if args.command == "calibrate" and labelled < MIN_LABELLED:
        raise SampotError(f"--split-file {args.split_file} holds {labelled} train and validation images; calibration "
                          f"labels at least {MIN_LABELLED} of them: give a split with more there.")  # fmt: skip
    needs: tuple[str, ...] = ()
    if args.command == "train-regressor":
        needs = ("train", "val")
    elif args.command == "run":
        needs = ("test",) if getattr(args, "regressor", None) else ("train", "val", "test")
    empty = [part for part in needs if not splits[part]]
    if empty:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        raise SampotError(f"the {' and '.join(empty)} part of --split-file {args.split_file} is empty ({sizes} "
                          f"images); `sampot {args.command}` needs images there: give a split with other parts, or "
                          "leave out --split-file (a run makes its own split).")  # fmt: skip


def _safeguard(value: Any, name: str, key: str) -> float:
    low, high, low_open, high_open = checks.SAFEGUARD_RANGES[key]  # the bounds the safeguards themselves check
    return checks.number(value, name, low=low, high=high, low_open=low_open, high_open=high_open)


def _max_images(value: Any, name: str) -> int:
    n = checks.whole(value, name)
    if n < MIN_MAX_IMAGES:
        raise SampotError(f"{name} must be at least {MIN_MAX_IMAGES} (a correlation needs {MIN_MAX_IMAGES} test "
                          f"images) or left out; got {n}.")  # fmt: skip
    return n


def _labelled(value: Any, name: str) -> int:
    n = checks.whole(value, name)
    if n < MIN_LABELLED:
        raise SampotError(f"{name} must be at least {MIN_LABELLED} (two labelled images to fine-tune on, one to check "
                          f"on); got {n}.")  # fmt: skip
    return n


def _seeds(value: Any, name: str) -> list[int]:
    seeds = [checks.seed(s, name) for s in value]  # the bound of --seed
    if len(set(seeds)) != len(seeds):
        raise SampotError(f"{name} lists a seed twice ({' '.join(map(str, seeds))}); give each seed once.")
    return seeds


def _workers(value: Any, name: str) -> int:
    n = checks.whole(value, name, low=1)
    if n > 1:
        # Imported here: the parallel module loads the models (torch); only a typed --workers N > 1 needs it.
        from sampot_lib.experiment.parallel import check_workers

        check_workers(n, name)
    return n


def _max_size(value: Any, name: str) -> int:
    n = checks.whole(value, name)
    if n != 0 and n < 64:
        raise SampotError(f"{name} must be 0 (keep the size) or at least 64 pixels, got {n}.")
    return n


def _coords(clicks: Any, name: str) -> Any:
    # --click is repeatable (a list of pairs) in evolve; one pair elsewhere.
    pairs = clicks if clicks and isinstance(clicks[0], (list, tuple)) else [clicks]
    for pair in pairs:
        for x in pair:
            checks.number(x, f"{name} {' '.join(str(v) for v in pair)}:")
    return clicks


def _fractions(value: Any, name: str) -> list[float]:
    fr = [checks.number(v, name, low=0) for v in value]
    if max(fr) <= 0:
        raise SampotError(f"{name} must have a positive sum (train, val, test sizes, e.g. 41 28 53), got {value}.")
    return fr


def check_args(args: argparse.Namespace) -> None:
    """Check every value of a parsed command line; normalise some in place (the device's name). Raises SampotError.

    Order: plain values first (cheap, and what a typo usually hits), then the inputs that must exist, then the
    places outputs go (a probe file is made and removed there; nothing else is created).
    """
    data_cmd = getattr(args, "data_command", None)
    rules = dict(_VALUES)
    if args.command == "data":
        rules = {"seed": _VALUES["seed"], **_DATA_VALUES.get(data_cmd, {})}
    for dest, (flag, check) in rules.items():
        value = getattr(args, dest, None)
        if value is not None and not is_default(value):  # a default is valid, and its mark lets a preset replace it
            setattr(args, dest, check(value, flag))
    _check_patience(args)
    _check_combinations(args)
    _check_model(args)
    _check_inputs(args)
    check_outputs(args, data_cmd)
    check_outside_data_set(args, data_cmd)


def _check_patience(args: argparse.Namespace) -> None:
    """A --patience the user typed that --steps never reaches would not stop a run: say so (the default's is off for
    runs shorter than it)."""
    patience, steps = getattr(args, "patience", None), getattr(args, "steps", None)
    if patience is not None and steps is not None and typed(args, "patience") and patience > steps:
        raise SampotError(f"--patience {patience} is larger than --steps {steps}: the run would never stop early; "
                          f"give a patience of at most {steps}, or 0 for none.")  # fmt: skip
    patience, epochs = getattr(args, "regressor_patience", None), getattr(args, "epochs", None)
    # a preset replaces an epochs default later, so only epochs the user typed (or no preset) are compared
    known = epochs is not None and (typed(args, "epochs") or getattr(args, "preset", None) is None)
    if patience is not None and known and typed(args, "regressor_patience") and patience > epochs:
        raise SampotError(f"--regressor-patience {patience} is larger than --epochs {epochs}: training would never "
                          f"stop early; give a patience of at most {epochs}, or 0 for none.")  # fmt: skip


#: Options that train the regressor: with --regressor (used as it is) they would do nothing.
_TRAINING_OPTIONS = ("epochs", "regressor_patience", "regressor_schedule", "regressor_precision", "rank_weight")


def _check_combinations(args: argparse.Namespace) -> None:
    """Options the user typed that another option makes do nothing: refused, not dropped (config.json would record
    them as used)."""
    if getattr(args, "no_safeguards", False):
        # not typed(): evolve's and calibrate's defaults are not marked; a value other than the default was typed
        guards = ("trust_radius", "min_overlap", "max_area_ratio")
        given = [f"--{k.replace('_', '-')}" for k in guards if getattr(args, k, None) != SAFEGUARDS_ON[k]]
        if given:
            raise SampotError(f"--no-safeguards turns every safeguard off, so {' and '.join(given)} would be dropped: "
                              "give one or the other.")  # fmt: skip
    if args.command == "evolve" and args.margin is not None and args.no_do_no_harm:
        raise SampotError(f"--margin {args.margin:g} is the do-no-harm rule's margin, but --no-do-no-harm turns the "
                          "rule off: give one or the other.")  # fmt: skip
    if args.command == "evolve" and args.seed is not None and args.optimizer == "adam":
        raise SampotError(f"--seed {args.seed} seeds the cmaes and random optimizers, but --optimizer adam makes no "
                          "random choice: drop --seed, or give --optimizer cmaes or random.")  # fmt: skip
    if args.command == "run" and getattr(args, "regressor", None) is not None:
        given = [f"--{k.replace('_', '-')}" for k in _TRAINING_OPTIONS if typed(args, k)]
        if given:
            one = len(given) == 1
            raise SampotError(f"{' and '.join(given)} {'sets' if one else 'set'} how a regressor is trained, but "
                              f"--regressor {args.regressor} is used as it is: drop {'it' if one else 'them'}, or drop "
                              "--regressor to train one.")  # fmt: skip


def _check_model(args: argparse.Namespace) -> None:
    model = getattr(args, "model", None)
    if model is None or args.command == "data":
        return
    registry = model_registry()
    names = registry.model_names()
    if model not in names:
        raise SampotError(f"--model {model!r} is unknown; known: {', '.join(sorted(names))}.")
    ckpt = registry.CHECKPOINTS.get(model)
    if getattr(args, "checkpoint", None) is None and ckpt is not None and ckpt.url is not None:
        if not (registry.default_cache_dir() / ckpt.filename).is_file():  # it will be downloaded into the cache
            check_cache()


def _check_inputs(args: argparse.Namespace) -> None:
    get = lambda name: getattr(args, name, None)  # noqa: E731
    if get("scheduler") is not None:
        check_scheduler_answers(args.scheduler)
    if get("checkpoint") is not None:
        checks.input_file(args.checkpoint, "--checkpoint", hint="give the model's weights file (.pth/.pt)")
    if get("structure") is not None and not args.structure.strip():
        raise SampotError("--structure is empty; give a structure's name, a folder of masks/ (e.g. left_lung).")
    if get("regressor") is not None and not args.regressor.strip():
        raise SampotError("--regressor is empty; give a regressor file or a shipped regressor's name.")
    if get("regressor") is not None and not Path(args.regressor).exists():
        _shipped_path(args)
    if get("regressor") is not None and Path(args.regressor).is_dir():
        inside = Path(args.regressor) / "regressor.pt"
        hint = f"give the file, e.g. --regressor {inside}" if inside.is_file() else "give the regressor.pt file"
        raise SampotError(f"--regressor {args.regressor} is a folder, not a file; {hint}.")
    if get("regressor") is not None:
        hint = ("give a regressor file, or the name of a shipped one (`sampot regressors` lists them); or train one "
                "with `sampot run` or `sampot train-regressor`")  # fmt: skip
        if Path(args.regressor).name == "regressor_calibrated.pt":  # made by calibrate, not by training
            hint = "`sampot calibrate DATA --regressor R --out DIR` makes it (again)"
        checks.input_file(args.regressor, "--regressor", hint=hint)
    if args.command == "run" and get("regressor") is not None:
        _check_run_regressor(args)
    if args.command in ("evolve", "heatmap"):
        checks.input_file(args.image, "image", hint="give a PNG, JPEG or DICOM file")
    if args.command == "score":
        _check_score(args)
    if get("mask") is not None:
        checks.input_file(args.mask, "--mask", hint="give a 0/255 PNG mask of the image's size")
    if get("split_file") is not None:
        checks.input_file(args.split_file, "--split-file", hint="make one with `sampot data split DIR`")
        splits = load_splits(args.split_file)  # a damaged or foreign file fails now, not after the data set is read
        _check_split_parts(args, splits)
    if args.command in ("run", "train-regressor", "calibrate"):
        checks.input_dir(args.data, "data set", hint="give a folder with images/ and masks/<structure>/")
    if args.command == "app":
        if not Path(args.source).exists():
            raise SampotError(f"{args.source}: no such file or folder; give a data set folder or one image.")
    if args.command == "data" and getattr(args, "data_command", None) == "split":
        checks.input_dir(args.dir, "data set", hint="give a folder with images/ and masks/<structure>/")
    if args.command == "data" and get("src") is not None and not get("download"):
        checks.input_dir(args.src, "--src", hint="give the unpacked data set's folder")


def _check_run_regressor(args: argparse.Namespace) -> None:
    """`sampot run --regressor FILE`: a shipped regressor brings its model (unless --model is given); a file that
    cannot be read, or a regressor for another model or structure, fails before the run folder is written (the test
    stage checks the rest: the prompt, the settings, the test images)."""
    # Imported here: they import torch (seconds); only a run with --regressor needs them.
    from sampot_lib.method.regressor import load_regressor
    from sampot_lib.method.regressor_origin import check_regressor

    shipped_settings(args)
    _, meta = load_regressor(args.regressor)
    check_regressor(
        meta, {"model": args.model, "structure": args.structure}, allow_foreign=args.allow_foreign_regressor
    )


def _shipped_path(args: argparse.Namespace) -> None:
    """A --regressor that is no file but a shipped regressor's name becomes its file, checked (size, sha256)."""
    from sampot_lib.method import shipped  # imports torch: only for a --regressor that is not a path

    records = shipped.shipped_regressors()
    if args.regressor in records:
        args.regressor = str(shipped.verify_shipped(records[args.regressor]))


def _check_score(args: argparse.Namespace) -> None:
    """``sampot score``: one image and its mask, or a data set folder (and then a CSV to write). Without
    --structure, a MASK in ``masks/<structure>/`` names the structure (as for evolve and heatmap)."""
    source = Path(args.source)
    if args.structure is None:
        args.structure = (None if source.is_dir() else mask_folder_structure(args.mask_file)) or STRUCTURE
    if source.is_dir():
        checks.input_dir(source, "data set", hint="give a folder with images/ and masks/<structure>/")
        if args.mask_file is not None:
            raise SampotError(f"{source} is a data set folder: drop MASK ({args.mask_file}); its masks are read from "
                              f"masks/{args.structure}/.")  # fmt: skip
        if args.out is None:
            raise SampotError(f"scoring the data set {source} writes a CSV: give --out scores.csv.")
        return
    checks.input_file(source, "image", hint="give a PNG, JPEG or DICOM file, or a data set folder")
    if args.mask_file is None:
        raise SampotError(f"give the mask of {source} to score: sampot score IMAGE MASK --structure S --model M.")
    checks.input_file(args.mask_file, "mask", hint="give a 0/255 PNG mask of the image's size")
