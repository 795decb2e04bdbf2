"""The places a command writes, checked before it does any work: an ``--out`` that would replace one of the command's
own inputs, a run folder's files or a hand-made file, or that lies inside a data set; $SAMPOT_EMBEDDINGS and the
checkpoint cache. :func:`~sampot_lib.cli.checks.check_args` calls them last, after the values and the inputs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import ModuleType

from sampot_lib import errors as checks
from sampot_lib.cli.options import check_not_a_run_file
from sampot_lib.errors import SampotError
from sampot_lib.experiment.records import listed

#: What `sampot evolve` writes into --out, each name after the image's stem and "_".
EVOLVE_OUTPUTS = ("mask.png", "initial_mask.png", "overlay.png", "evolution.html", "evolution.json")
#: The commands that read and write $SAMPOT_EMBEDDINGS.
EMBEDDING_COMMANDS = ("evolve", "heatmap", "run", "train-regressor", "calibrate", "app")
#: The files `sampot run` / `train-regressor` write into --out (none may be a folder).
RUN_FILES = (
    "config.json", "splits.json", "manifest.json", "regressor.pt", "regressor_history.csv", "regressor_eval.csv",
    "regressor_eval.json", "evolution.csv", "trajectories.json", "summary.json", "summary.html",
)  # fmt: skip

#: The files `sampot calibrate` writes into --out: its own (experiment.calibration.CALIBRATION_FILES) and the run
#: folder's.
CALIBRATE_FILES = ("calibration.json", "regressor_calibrated.pt", "splits.json", "manifest.json")


def _data_set_part(place: str | Path, data: str | Path | None) -> Path | None:
    """The ``images/`` or ``masks/`` folder that ``place`` lies in, or the ``manifest.csv`` that it is, of the command's
    data set ``data`` or of any folder holding both folders, if any."""
    path, given = Path(place).resolve(), Path(data).resolve() if data else None

    def is_data_set(folder: Path) -> bool:
        return folder == given or all((folder / p).is_dir() for p in ("images", "masks"))

    if path.name == "manifest.csv" and is_data_set(path.parent):
        return path
    for folder in (path, *path.parents):
        if folder.name in ("images", "masks") and is_data_set(folder.parent):
            return folder
    return None


def check_outside_data_set(args: argparse.Namespace, data_cmd: str | None) -> None:
    """Nothing is written into a data set's images/ or masks/, or over its manifest.csv: a file or a folder there
    breaks the set for every later command (as an unsupported file, an unread folder, or a manifest without ids)."""
    places = [("--out", getattr(args, "out", None))]
    if args.command in EMBEDDING_COMMANDS:
        places.append(("$SAMPOT_EMBEDDINGS", os.environ.get("SAMPOT_EMBEDDINGS")))
    data = getattr(args, "data", None) if args.command in ("run", "train-regressor", "calibrate") else None
    if args.command == "data" and data_cmd == "split":
        data = args.dir
    for name, place in places:
        inside = _data_set_part(place, data) if place else None
        if inside is not None and inside.name == "manifest.csv":
            raise SampotError(f"{name} {place} is the data set's manifest (its images' ids and subjects): writing "
                              f"there breaks the set for every later command; give {name} another file.")  # fmt: skip
        if inside is not None:
            raise SampotError(f"{name} {place} lies inside the data set's {inside.name}/ folder, where anything "
                              "written breaks the set for every later command: choose a place outside "
                              f"{inside}.")  # fmt: skip


def _check_not_an_input(args: argparse.Namespace) -> None:
    """An output file that is one of the command's own input files would destroy it: refused, naming both."""
    named = (("the image", "image"), ("the image", "source"), ("the --mask file", "mask"), ("the mask", "mask_file"),
             ("the --regressor file", "regressor"), ("the --checkpoint file", "checkpoint"))  # fmt: skip
    inputs = [(flag, Path(getattr(args, dest))) for flag, dest in named if getattr(args, dest, None)]
    inputs = [(flag, p.resolve()) for flag, p in inputs if p.is_file()]
    out = getattr(args, "out", None)
    if args.command == "evolve":
        outputs = [Path(out) / f"{Path(args.image).stem}_{name}" for name in EVOLVE_OUTPUTS]
    else:  # a run folder's --out (run, calibrate) is checked as a folder
        outputs = [Path(out)] if args.command in ("score", "heatmap") and out is not None else []
    for output in outputs:
        for flag, source in inputs:
            if output.resolve() == source or (output.is_file() and os.path.samefile(output, source)):  # a hard link
                other = "another folder" if args.command == "evolve" else "another file"
                raise SampotError(f"{output} is {flag} ({source.name}), and the output would replace it: give "
                                  f"--out {other}.")  # fmt: skip


def _check_evolve_replaces_its_own(out: Path, stem: str) -> None:
    """``sampot evolve`` replaces its files in --out only when an earlier evolve of the same image wrote them (its
    ``<stem>_evolution.json`` is there): a hand-drawn ``xray_mask.png`` beside ``xray.png`` is refused, not lost."""
    if (out / f"{stem}_evolution.json").is_file():
        return
    there = [f"{stem}_{name}" for name in EVOLVE_OUTPUTS if (out / f"{stem}_{name}").exists()]
    if there:
        them = "it" if len(there) == 1 else "them"
        raise SampotError(f"--out {out} already holds {listed(there)}, which sampot evolve would replace, and no "
                          f"{stem}_evolution.json says an earlier evolve wrote {them}: choose another --out, or move "
                          f"{them} away.")  # fmt: skip


def model_registry() -> ModuleType:
    """The model registry. It imports torch (seconds), so it is imported here, only for a command that names a model
    or the checkpoint cache and after the cheap checks: a mistyped value and the data commands answer at once."""
    from sampot_lib.models import registry

    return registry


def check_cache(cache_dir: str | None = None) -> None:
    """The checkpoint cache (--cache-dir, else $SAMPOT_CACHE or ~/.cache/sampot) is a folder sampot can write to."""
    if cache_dir:
        checks.cache_dir(cache_dir, "--cache-dir")
    else:
        where = "$SAMPOT_CACHE" if os.environ.get("SAMPOT_CACHE") else "the checkpoint cache"
        checks.cache_dir(model_registry().default_cache_dir(), where)


def check_outputs(args: argparse.Namespace, data_cmd: str | None) -> None:
    """Check where a parsed command line writes: each place is probed (a file made and removed there), nothing else
    is created. Raises SampotError naming the option.

    Args:
        args: The parsed command line.
        data_cmd: The ``sampot data`` subcommand, if any.
    """
    _check_not_an_input(args)
    embeddings = os.environ.get("SAMPOT_EMBEDDINGS")
    if embeddings and args.command in EMBEDDING_COMMANDS:
        checks.writable_folder(embeddings, "$SAMPOT_EMBEDDINGS")  # before the run folder is written, not after
    if args.command == "evolve":
        stem = Path(args.image).stem
        checks.output_dir(args.out, files=tuple(f"{stem}_{name}" for name in EVOLVE_OUTPUTS))
        _check_evolve_replaces_its_own(Path(args.out), stem)
    elif args.command in ("score", "heatmap") and args.out is not None:
        checks.output_file(args.out, example="scores.csv" if args.command == "score" else "heatmap.csv")
        check_not_a_run_file(args.out)
    elif args.command in ("run", "train-regressor"):
        checks.output_dir(args.out, files=RUN_FILES)
    elif args.command == "calibrate":
        checks.output_dir(args.out, files=CALIBRATE_FILES)
    elif args.command == "download":
        check_cache(args.cache_dir)
    elif args.command == "data" and data_cmd == "split":
        out = args.out if args.out is not None else Path(args.dir) / "splits.json"
        checks.output_file(out, example="splits.json")
        check_not_a_run_file(out, "--out" if args.out is not None else "the default --out")
    elif args.command == "data" and data_cmd in ("phantom", "prepare"):
        checks.output_dir(args.out)
