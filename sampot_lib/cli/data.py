"""``sampot data ...``: check, split, prepare and phantom; :func:`add_data_commands` adds them to a parser.

Light enough to import while the parser is built (the data layer only: no torch), so its commands are plain
functions.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from sampot_lib.data import public
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import CONFOUNDER_PRESETS, write_phantom_set
from sampot_lib.data.splits import empty_parts, make_splits, save_splits
from sampot_lib.data.validate import validate_folder
from sampot_lib.defaults import PAPER_FRACTIONS
from sampot_lib.errors import SampotError, SampotWarning


def _check(args: argparse.Namespace) -> int:
    report = validate_folder(args.dir, structures=args.structures, progress=not args.quiet)
    print(report.format())
    return 0 if report.ok else 1


def _split(args: argparse.Namespace) -> int:
    ds = FolderDataset(args.dir, validate=not args.no_validate, structures=[])  # a split reads no mask
    splits = make_splits(ds, fractions=args.fractions, seed=args.seed)
    wanted = {name for name, f in zip(("train", "val", "test"), args.fractions, strict=True) if f > 0}
    empty = [name for name in empty_parts(splits) if name in wanted]  # a fraction of 0 is empty on purpose
    if empty:
        warnings.warn(
            f"{' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: {args.dir} has {len(ds.subjects)} "
            f"subject(s) for fractions {' '.join(f'{f:g}' for f in args.fractions)}. Training a regressor needs "
            "train and val images, evolution needs test images: add images (or subjects).",
            SampotWarning, stacklevel=1,
        )  # fmt: skip
    out = Path(args.out) if args.out is not None else Path(args.dir) / "splits.json"
    subjects = {i: ds.subject_of(i) for i in ds.ids}
    save_splits(out, splits, seed=args.seed, fractions=args.fractions, subjects=subjects, source=str(args.dir))
    counts = ", ".join(f"{k} {len({subjects[i] for i in v})} subjects / {len(v)} images" for k, v in splits.items())
    print(f"wrote {out}: {counts}")
    print(f"use it with: sampot run {args.dir} --split-file {out} (likewise train-regressor and calibrate; without "
          "--split-file a run makes its own split)")  # fmt: skip
    return 0


def _prepare(args: argparse.Namespace) -> int:
    if args.masks is not None and args.name != "covid":
        raise SampotError(
            f"--masks is the covid set's masks zip; {args.name} takes its masks from --src: drop --masks."
        )
    src = args.src
    if args.download:
        into = Path(args.src) if args.src else Path(args.out).parent / f"{args.name}_download"
        src, digest = public.fetch_and_extract(args.name, into)
        known = public.DOWNLOADS[args.name].sha256
        print(f"downloaded {args.name}: sha256 {digest}" + (" (matches)" if known else " (no published checksum)"))
    if src is None:
        raise SampotError("give --src DIR (the unpacked set) or --download.")
    extra = {"masks": args.masks} if args.name == "covid" else {}
    res = public.prepare(args.name, src, args.out, max_size=args.max_size or None, progress=True, **extra)
    print(f"wrote {res.written} images to {res.out}; skipped {len(res.skipped)}")
    for line in res.skipped[:20]:
        print(f"  skipped: {line}")
    if len(res.skipped) > 20:
        print(f"  ... {len(res.skipped) - 20} more")
    return 0


def _phantom(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    write_phantom_set(args.out, args.n, args.seed, size=args.size, confounders=args.confounders, progress=True)
    print(f"wrote {args.n} phantoms ({args.size} px) to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with ``check``, ``split``, ``prepare`` and ``phantom`` (each sets ``func(args) -> int``)."""
    data = subparsers.add_parser("data", help="check, split, convert or generate data sets (folder format)")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="{check,split,prepare,phantom}")

    p = sub.add_parser("check", help="validate a folder-format data set and print every problem")
    p.add_argument("dir", help="folder with images/ and masks/<structure>/")
    p.add_argument("--structures", nargs="+", default=None, help="mask folders required (default: all found)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: one while the files are read)")
    p.set_defaults(func=_check)

    p = sub.add_parser("split", help="subject-level train/val/test split, saved as JSON")
    p.add_argument("dir", help="folder-format data set to split (images/, masks/<structure>/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random assignment (default: %(default)s)")
    p.add_argument(
        "--fractions", type=float, nargs=3, default=list(PAPER_FRACTIONS), metavar=("TRAIN", "VAL", "TEST"),
        help=f"relative sizes in subjects (default: the paper's {' '.join(map(str, PAPER_FRACTIONS))})",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="split file (default: DIR/splits.json)")
    p.add_argument("--no-validate", action="store_true", help="skip reading every file first (default: every file is "
                   "read and checked)")  # fmt: skip
    p.set_defaults(func=_split)

    p = sub.add_parser("prepare", help="convert a public set into the folder format")
    p.add_argument("name", choices=sorted(public.CONVERTERS), help="the public set: %(choices)s")
    p.add_argument("--src", default=None, help="the unpacked set, or with --download where to put it (default: "
                   "none, which needs --download; it then goes into NAME_download beside --out)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder, written in the folder format")
    p.add_argument("--download", action="store_true", help=f"fetch the set first ({', '.join(public.DOWNLOADS)}; "
                   "default: read it from --src)")  # fmt: skip
    p.add_argument("--max-size", type=int, default=1024, help="shrink the longer side to this many pixels, 0 keeps "
                   "the size (default: %(default)s)")  # fmt: skip
    p.add_argument("--masks", default=None, help="covid: the V7 masks zip (default: from torchxrayvision)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("phantom", help="write procedural chest X-ray phantoms with exact lung masks")
    p.add_argument("--n", type=int, default=60, help="number of phantoms (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed: phantom i is drawn from (seed, i) (default: %(default)s)")
    p.add_argument("--out", required=True, help="output folder, written in the folder format")
    p.add_argument("--size", type=int, default=1024, help="side of the square images in pixels (default: %(default)s)")
    p.add_argument("--confounders", choices=list(CONFOUNDER_PRESETS), default="default",
                   help="how often lung opacities, a PICC line, nodules and burned-in labels appear: %(choices)s "
                   "(default: %(default)s)")  # fmt: skip
    p.set_defaults(func=_phantom)
