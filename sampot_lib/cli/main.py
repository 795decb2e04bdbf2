"""The ``sampot`` command: evolve a click, draw a Dice heat-map, train a regressor, run the whole experiment.

Every value is checked before any work (:mod:`sampot_lib.cli.checks`). Errors in the user's input, and faults of the
machine the user can fix (disk full, read-only or unwritable folder), print one line that names the thing and says
what to fix (exit status 2); anything else is an internal error, also one line (exit status 1). A traceback only
with ``--debug`` (or ``$SAMPOT_DEBUG=1``). Warnings (an inverted mask, a click in the background) are one line each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from sampot_lib.defaults import (
    BOX_JITTER,
    EPOCHS,
    LR,
    MAX_AREA_RATIO,
    MIN_OVERLAP,
    REGRESSOR_SIZE,
    SHARPNESS,
    STEPS,
    TRUST_RADIUS,
)
from sampot_lib.errors import SampotError

EPILOG = """\
examples:
  sampot data phantom --n 60 --out runs/phantom          # a synthetic chest X-ray set with exact lung masks
  sampot run runs/phantom --out runs/demo --max-images 8 # the whole experiment, small
  sampot evolve xray.png --click 700 480 --regressor runs/demo/regressor.pt --out runs/one
  sampot heatmap xray.png --mask left_lung.png --step 32 --out runs/heat.csv
  sampot download vit_b                                  # fetch SAM ViT-B (375 MB) into the cache
  sampot app runs/phantom --regressor runs/demo/regressor.pt  # the widget as a page: click, evolve, download

Models: sam_nano (default; our small stand-in, ships with the package, NOT SAM), vit_b, vit_l, vit_h (SAM,
downloaded once into $SAMPOT_CACHE or ~/.cache/sampot), or --checkpoint PATH with --model naming its type.
"""


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", default="sam_nano", help="sam_nano, litemedsam, vit_b, vit_l or vit_h (default: %(default)s)"
    )
    g.add_argument("--checkpoint", help="a local checkpoint file for --model (skips the download)")
    g.add_argument(
        "--mask-output", type=_mask_output, default=None,
        help="which SAM output a click yields: best (highest predicted IoU), single, 0, 1 or 2 (default: the "
        "model's recommended one, else best)",
    )  # fmt: skip
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")


def _evolve_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evolution (paper 3.3)")
    g.add_argument(
        "--steps", type=_positive_int, default=STEPS, help="model calls after the user's prompt (default: %(default)s)"
    )
    g.add_argument(
        "--lr", type=_positive_float, default=LR,
        help="step size in pixels of the original image: Adam's lr, the random/cmaes search scale / 3 "
        "(default: %(default)s)",
    )  # fmt: skip
    g.add_argument(
        "--optimizer", default="adam", choices=["adam", "random", "cmaes"],
        help="how the prompt moves: adam (the paper's, needs gradients), random search or cmaes (default: %(default)s)",
    )  # fmt: skip
    g.add_argument("--sharpness", type=_positive_float, default=SHARPNESS, help="slope of the sigmoid on the logits")
    g.add_argument("--no-safeguards", action="store_true", help="the paper's setting: only the image border limits")
    g.add_argument("--trust-radius", type=_positive_float, default=TRUST_RADIUS, help="fraction of the image's longer side")
    g.add_argument("--min-overlap", type=_positive_float, default=MIN_OVERLAP, help="min IoU of a winner with the first mask")
    g.add_argument("--max-area-ratio", type=_positive_float, default=MAX_AREA_RATIO, help="max area change of a winner (x or /)")


def _safeguards(args: argparse.Namespace):
    from sampot_lib.method.evolve import Safeguards

    if args.no_safeguards:
        return Safeguards.off()
    return Safeguards(trust_radius=args.trust_radius, min_overlap=args.min_overlap, max_area_ratio=args.max_area_ratio)


def _mask_output(value: str) -> str | int:
    if value in ("best", "single"):
        return value
    if value in ("0", "1", "2"):
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r} is not one of best, single, 0, 1, 2")


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return n


def _positive_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not math.isfinite(x) or not x > 0:  # float() reads "nan" and "inf"
        raise argparse.ArgumentTypeError(f"{value} must be a finite number > 0")
    return x


def _load(args: argparse.Namespace):
    from sampot_lib.models import load_model

    backend = getattr(args, "backend", "torch")
    return load_model(args.model, args.checkpoint, args.device, mask_output=args.mask_output, backend=backend)


def _user_prompt(args: argparse.Namespace):
    """The prompt given on the command line: --box X0 Y0 X1 Y1 and/or --click X Y (repeatable)."""
    from sampot_lib.method.prompts import Prompt

    clicks = tuple((float(x), float(y)) for x, y in (args.click or []))
    box = tuple(float(v) for v in args.box) if args.box else None
    if box is None and not clicks:
        raise SampotError("give the user's prompt: --click X Y (one or more) and/or --box X0 Y0 X1 Y1.")
    return Prompt(points=clicks, labels=(1,) * len(clicks), box=box)  # type: ignore[arg-type]


def _warn_odd_input(prompt, mask, mask_path: str | None) -> None:  # noqa: ANN001 (Prompt, H x W bool or None)
    """Warnings (not errors) for input that works but is probably a mistake: an inverted mask, a click in the
    background of the given mask."""
    from sampot_lib.data.io import looks_inverted
    from sampot_lib.errors import SampotWarning

    if mask is None:
        return
    if looks_inverted(mask):
        warnings.warn(
            f"mask {mask_path} covers {mask.mean():.0%} of the image and nearly all its border: is it inverted "
            "(structure black, background white)? The Dice it gives is then of the background.",
            SampotWarning, stacklevel=2,
        )  # fmt: skip
    for (x, y), label in zip(prompt.points, prompt.labels, strict=True):
        if label == 1 and not mask[int(round(y)), int(round(x))]:
            warnings.warn(
                f"click ({x:g}, {y:g}) lies in the background of the mask {mask_path}: the model segments what is "
                "under the click, probably not the structure. Click inside the structure.",
                SampotWarning, stacklevel=2,
            )  # fmt: skip


def _json_text(record: dict, path: Path) -> str:
    """The JSON of a result record; SampotError naming ``path`` and the key if a number is NaN or infinite."""
    from sampot_lib.experiment.records import finite_json

    clean, _ = finite_json(record, "refuse", where=str(path))
    return json.dumps(clean, indent=1, allow_nan=False) + "\n"


def cmd_evolve(args: argparse.Namespace) -> int:
    import warnings

    from sampot_lib.data.io import read_image, read_mask, write_png
    from sampot_lib.files import write_text
    from sampot_lib.method.evolve import evolve_prompt
    from sampot_lib.method.regressor import check_regressor, load_regressor

    if args.backend == "onnx" and args.optimizer == "adam":  # before any work: ONNX gives no gradients
        raise SampotError("--backend onnx gives no gradients, which adam needs: add --optimizer cmaes or random.")
    image = read_image(args.image)
    gt = read_mask(args.mask, expected_shape=image.shape) if args.mask else None
    prompt = _user_prompt(args)
    prompt.check(image.shape[:2])
    _warn_odd_input(prompt, gt, args.mask)
    regressor, reg_meta = load_regressor(args.regressor, device=args.device)
    model = _load(args)
    kinds = getattr(model, "prompt_kinds", ())  # from the model's record
    if kinds and prompt.kind not in kinds:
        warnings.warn(
            f"model {args.model!r} answers {', '.join(kinds)} prompts well, not a {prompt.kind}; its masks may be "
            "poor (LiteMedSAM is a box model: give --box X0 Y0 X1 Y1).", stacklevel=1,
        )  # fmt: skip
    expected = {"model": args.model, "mask_output": getattr(model, "mask_output", None),
                "prompt": "box" if prompt.box is not None else "click", "sharpness": args.sharpness}  # fmt: skip
    for note in check_regressor(reg_meta, expected):
        print(f"sampot: warning: {note}", file=sys.stderr)
    result = evolve_prompt(
        model, regressor, image, prompt, steps=args.steps, lr=args.lr, sharpness=args.sharpness,
        optimizer=args.optimizer, safeguards=_safeguards(args), gt_mask=gt, seed=args.seed, progress=True,
    )  # fmt: skip
    out, stem = Path(args.out), Path(args.image).stem
    record = {"image": str(args.image)} | result.to_dict()
    record_text = _json_text(record, out / f"{stem}_evolution.json")  # NaN is refused before any file is written
    write_png(out / f"{stem}_mask.png", result.best_mask)
    write_png(out / f"{stem}_initial_mask.png", result.initial_mask)
    write_text(out / f"{stem}_evolution.json", record_text)
    b, i = result.best, result.initial
    fmt = ", ".join
    print(f"evolved {prompt.kind}: ({fmt(f'{v:.1f}' for v in b.coords)}) from ({fmt(f'{v:.1f}' for v in i.coords)}) "
          f"at step {b.step}")  # fmt: skip
    print(f"regressor score: {i.score:.3f} -> {b.score:.3f}")
    if gt is not None:
        print(f"Dice: {i.dice:.3f} -> {b.dice:.3f}")
    print(f"wrote {out / (stem + '_mask.png')} and {out / (stem + '_evolution.json')}")
    return 0


def cmd_heatmap(args: argparse.Namespace) -> int:
    from sampot_lib.data.io import read_image, read_mask
    from sampot_lib.files import write_text
    from sampot_lib.method.heatmap import dice_heatmap, grid_points
    from sampot_lib.method.regressor import load_regressor

    image = read_image(args.image)
    mask = read_mask(args.mask, expected_shape=image.shape)
    _warn_odd_input(_NoPrompt, mask, args.mask)
    if len(grid_points(mask, args.step)) == 0:  # before the model is loaded
        raise SampotError(f"no grid point of --step {args.step} falls inside the mask {args.mask}; use a smaller step.")
    regressor = load_regressor(args.regressor, device=args.device)[0] if args.regressor else None
    hm = dice_heatmap(_load(args), image, mask, step=args.step, regressor=regressor)

    def cell(v: float, fmt: str = ".5f") -> str:  # a blank cell, not "nan": the regressor column without one
        return format(v, fmt) if math.isfinite(v) else ""

    lines = ["x,y,dice,confidence,regressor"]
    lines += [
        ",".join([cell(x, ".1f"), cell(y, ".1f"), cell(d), cell(c), cell(s)])
        for (x, y), d, c, s in zip(hm.points, hm.dice, hm.confidence, hm.score, strict=True)
    ]
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"{len(hm.dice)} clicks: Dice {hm.dice.min():.3f} .. {hm.dice.max():.3f} (spread {hm.spread:.3f})")
    print(f"wrote {args.out}")
    return 0


class _NoPrompt:
    """No clicks (the heat-map makes its own): only the mask is looked at by :func:`_warn_odd_input`."""

    points: tuple = ()
    labels: tuple = ()


class _DefaultInt(int):
    """An int option's default (not typed by the user): a preset may replace it."""


class _DefaultFloat(float):
    """A float option's default (not typed by the user): a preset may replace it."""


def _mark_defaults(p: argparse.ArgumentParser) -> None:
    """Wrap the number options' defaults so that ``_config`` can tell them from values the user typed."""
    for dest in ("seed", "max_images", "regressor_size", "epochs", "steps", "lr", "sharpness", "trust_radius",
                 "min_overlap", "max_area_ratio"):  # fmt: skip
        value = p.get_default(dest)
        if type(value) is int:
            p.set_defaults(**{dest: _DefaultInt(value)})
        elif type(value) is float:
            p.set_defaults(**{dest: _DefaultFloat(value)})


def _typed(args: argparse.Namespace, dest: str) -> bool:
    """Whether the user gave option ``dest`` (rather than leaving its default)."""
    value = getattr(args, dest, None)
    return value is not None and value is not False and not isinstance(value, (_DefaultInt, _DefaultFloat))


def _plain(value):
    return int(value) if isinstance(value, _DefaultInt) else float(value) if isinstance(value, _DefaultFloat) else value


def _config(args: argparse.Namespace):
    """The ExperimentConfig of ``train-regressor`` / ``run``: the options, over the preset's values if --preset is
    given (an option the user typed wins over the preset; ``differs_from_paper`` lists it)."""
    from sampot_lib.experiment.config import ExperimentConfig, preset_values

    keys = ["structure", "model", "checkpoint", "mask_output", "device", "split_file", "seed", "max_images",
            "regressor_size", "epochs", "box_jitter", "workers", "scheduler"]  # fmt: skip
    if args.command == "run":
        keys += ["steps", "lr", "sharpness", "optimizer", "seeds", "regressor", "scorers", "extra_jitters"]
    values = {k: _plain(getattr(args, k)) for k in keys if hasattr(args, k) and getattr(args, k) is not None}
    values["prompt"] = _prompt_kind(args)
    values |= {"data": str(args.data), "out": str(args.out)}
    guards_typed = args.command == "run" and (
        args.no_safeguards or any(_typed(args, k) for k in ("trust_radius", "min_overlap", "max_area_ratio"))
    )
    if args.command == "run":
        values["safeguards"] = asdict(_safeguards(args))
    if getattr(args, "preset", None):
        for key, value in preset_values(args.preset).items():
            if key == "safeguards":
                if args.command == "run" and not guards_typed:
                    values[key] = value
            elif not _typed(args, key):
                values[key] = value
        values["preset"] = args.preset
    return ExperimentConfig(**values)


def cmd_train_regressor(args: argparse.Namespace) -> int:
    from sampot_lib.experiment.stages import train_regressor_stage

    _, history = train_regressor_stage(_config(args), resume=args.resume, force=args.force)
    best = min(history, key=lambda h: h["val_mse"])
    print(f"best epoch {int(best['epoch'])}: val MSE {best['val_mse']:.5f}; wrote {Path(args.out) / 'regressor.pt'}")
    return 0


def _pm(mean: dict, sd: dict, key: str, fmt: str) -> str:
    """"mean ± sd" of one headline number (sd left out when undefined)."""
    if mean.get(key) is None:
        return "n/a"
    m = format(mean[key], fmt)
    return m if sd.get(key) is None else f"{m} ± {format(sd[key], fmt.replace('+', ''))}"


def cmd_run(args: argparse.Namespace) -> int:
    from sampot_lib.experiment.config import differs_from_paper
    from sampot_lib.experiment.runner import run_experiment

    config = _config(args)
    summary = run_experiment(config, resume=args.resume, force=args.force)
    several = "mean" in summary  # several seeds: mean ± sample sd over seeds
    mean = summary["mean"] if several else {k: v for k, v in summary.items() if isinstance(v, dict)}
    sd = summary["sd"] if several else {}
    first = next(iter(summary["per_seed"].values())) if several else summary
    if several:
        print(f"{len(summary['seeds'])} seeds ({', '.join(map(str, summary['seeds']))}): mean ± sd over seeds")
    r, rs = mean.get("regressor") or {}, sd.get("regressor") or {}
    user = "centroid clicks" if config.prompt == "click" else f"user's boxes (J = {config.box_jitter:g})"
    print(f"regressor r: {user} {_pm(r, rs, 'r_regressor_initial', '.3f')}, all the model's masks "
          f"{_pm(r, rs, 'r_regressor_model', '.3f')}, synthetic masks {_pm(r, rs, 'r_regressor_synthetic', '.3f')}; "
          f"model's IoU head: {user} {_pm(r, rs, 'r_confidence_initial', '.3f')}, all its masks "
          f"{_pm(r, rs, 'r_confidence_model', '.3f')}")  # fmt: skip
    labels = {"on": "regressor, safeguards on", "off": "regressor, safeguards off"}
    for group, m in mean.items():
        if group == "regressor" or "mean_gain" not in m:
            continue
        s = sd.get(group) or {}
        label = labels.get(group, group.replace("jitter_", "regressor, box jitter ") if group.startswith("jitter_")
                            else f"{group}, safeguards on")  # fmt: skip
        print(f"{label}: {_pm(m, s, 'improved', '.1f' if several else '.0f')} of {m['n']:.0f} improved, "
              f"{_pm(m, s, 'worse', '.1f' if several else '.0f')} worse, "
              f"{_pm(m, s, 'catastrophes', '.1f' if several else '.0f')} catastrophes; mean Dice "
              f"{_pm(m, s, 'mean_dice_initial', '.3f')} -> {_pm(m, s, 'mean_dice_evolved', '.3f')}, gain "
              f"{_pm(m, s, 'mean_gain', '+.4f')}")  # fmt: skip
    foreign, origin = first.get("regressor_foreign", []), first.get("regressor_origin", {})
    if config.regressor is not None:
        print(f"regressor: {config.regressor}, trained on {origin.get('data', 'an unrecorded data set')} "
              f"({origin.get('n_train_ids', '?')} + {origin.get('n_val_ids', '?')} images), applied to {config.data}")
        if origin.get("calibrated_on"):  # a file from `sampot calibrate`
            cal = origin["calibrated_on"]
            print(f"  calibrated on {cal.get('data')} ({cal.get('n_labelled')} labelled images, none tested on)")
        for note in foreign:
            print(f"  note: {note}")
    if config.preset:
        diff = differs_from_paper(config)
        print("settings that differ from the paper: " + ("; ".join(diff) if diff else "none"))
    print(f"results in {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure a regressor trained elsewhere on N labelled images of a new data set, fine-tune it on most of them,
    check it on the rest (:func:`sampot_lib.experiment.calibration.run_calibration`)."""
    from sampot_lib.experiment.calibration import run_calibration

    tuning = {k: v for k, v in (("epochs", args.epochs), ("tune_lr", args.tune_lr)) if v is not None}
    report = run_calibration(
        args.data, args.regressor, args.out, args.labelled, seed=args.seed, structure=args.structure,
        model=args.model, checkpoint=args.checkpoint, mask_output=args.mask_output, prompt=args.prompt,
        sharpness=args.sharpness, box_jitter=args.box_jitter, steps=args.steps, lr=args.lr, optimizer=args.optimizer,
        safeguards=_safeguards(args), split_file=args.split_file, device=args.device, **tuning,
    )  # fmt: skip
    for note in report["regressor_notes"]:
        print(f"sampot: warning: {note}", file=sys.stderr)
    b, cb, ca = report["before"], report["check_before"], report["check_after"]

    def r(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    print(f"labelled images of {args.data}: {len(report['fine_tune_ids'])} to fine-tune on, "
          f"{len(report['check_ids'])} held out to check ({', '.join(report['check_ids'])})")  # fmt: skip
    e = b["evolution"]
    print(f"before calibration, {b['n_images']} labelled images: r {r(b['r_all'])} (the model's masks "
          f"{r(b['r_model'])}), mean abs. error {b['mae']:.3f}; evolution improved {e['improved']}, worse "
          f"{e['worse']} of {e['n']}, mean Dice gain {e['mean_gain']:+.4f}")  # fmt: skip
    print(f"held-out, before -> after: r {r(cb['r_all'])} -> {r(ca['r_all'])} (the model's masks "
          f"{r(cb['r_model'])} -> {r(ca['r_model'])}), mean abs. error {cb['mae']:.3f} -> {ca['mae']:.3f}; "
          f"evolution mean gain {cb['evolution']['mean_gain']:+.4f} -> "
          f"{ca['evolution']['mean_gain']:+.4f}")  # fmt: skip
    print(f"recommendation: {report['recommendation']}")
    out = Path(args.out)
    print(f"wrote {out / 'regressor_calibrated.pt'} and {out / 'calibration.json'}; evolve with it (its labelled "
          f"images are never tested on): sampot run {args.data} --out {out} --seed {args.seed} --regressor "
          f"{out / 'regressor_calibrated.pt'}")  # fmt: skip
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from sampot_lib.models.registry import fetch_checkpoint

    path = fetch_checkpoint(args.name, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    print(f"{args.name}: {path} (sha256 verified)")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from sampot_lib.ui.app import run_app

    return run_app(
        args.source, args.regressor, host=args.host, port=args.port, model=args.model, checkpoint=args.checkpoint,
        mask_output=args.mask_output, device=args.device, structure=args.structure, steps=args.steps, lr=args.lr,
    )  # fmt: skip


def _prompt_kind(args: argparse.Namespace) -> str:
    """--prompt, or the kind the model's record says it answers well (a box for LiteMedSAM, else a click); a click
    for a box-only model is allowed with a warning."""
    import warnings

    from sampot_lib.models.registry import OTHER_MODELS, model_meta

    known = args.model in OTHER_MODELS or args.checkpoint is None
    kinds = model_meta(args.model).get("prompt_kinds", []) if known else []
    if args.prompt is None:
        return "click" if not kinds or "click" in kinds else "box"
    if kinds and args.prompt not in kinds:
        warnings.warn(f"model {args.model!r} answers {', '.join(kinds)} prompts well, not a {args.prompt}; its masks "
                      "may be poor.", stacklevel=1)  # fmt: skip
    return args.prompt


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder-format data set (images/, masks/<structure>/)")
    p.add_argument("--out", required=True, help="output folder for splits, regressor and results")
    p.add_argument("--structure", default="left_lung", help="mask folder to segment (default: %(default)s)")
    p.add_argument("--split-file", help="a split JSON from `sampot data split` (default: make one, seeded)")
    p.add_argument("--seed", type=_positive_int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--max-images", type=_positive_int, default=None, help="use at most N images per split")
    p.add_argument("--regressor-size", type=_positive_int, default=REGRESSOR_SIZE, help="regressor input size in pixels")
    p.add_argument("--epochs", type=_positive_int, default=EPOCHS, help="regressor epochs (default: %(default)s)")
    p.add_argument("--prompt", choices=["click", "box"], help="the user's first prompt: the centroid click (the "
                   "paper's) or the structure's box jittered by --box-jitter (default: what the model answers well)")
    p.add_argument("--box-jitter", type=float, default=BOX_JITTER, help="J: each edge of the user's box moves by a seeded "
                   "uniform fraction in [-J, J] of the box size (default: %(default)s)")  # fmt: skip
    from sampot_lib.experiment.config import PRESETS

    g = p.add_argument_group("the run folder and presets")
    g.add_argument("--preset", choices=list(PRESETS), help="start from a preset's settings (paper: the paper's); "
                   "options you type win over it, and the run lists what differs from the paper")  # fmt: skip
    g.add_argument("--resume", action="store_true", help="reuse the stages in --out that finished from the same "
                   "settings, split and inputs; redo the rest")  # fmt: skip
    g.add_argument("--force", action="store_true", help="start --out over: delete results made on another split "
                   "instead of refusing")  # fmt: skip
    g = p.add_argument_group("where the per-image work runs (never changes a number)")
    g.add_argument("--workers", type=int, default=None, metavar="N", help="N > 1: a local Dask cluster of N worker "
                   "processes, the cores split evenly (default: 1, in this process)")  # fmt: skip
    g.add_argument("--scheduler", metavar="ADDRESS", help="join a running Dask cluster at ADDRESS (tcp://host:8786, "
                   "as `dask scheduler` prints it) instead")  # fmt: skip
    _model_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sampot", description="Task-driven prompt evolution (SAMPOT) for promptable segmentation models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("evolve", help="evolve one click on one image; writes the mask PNG and a JSON record")
    p.add_argument("image", help="PNG/JPEG/DICOM image")
    p.add_argument(
        "--click", nargs=2, type=float, action="append", metavar=("X", "Y"),
        help="the user's click in pixels (repeat for several clicks)",
    )  # fmt: skip
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="the user's box in pixels")
    p.add_argument(
        "--backend", choices=["torch", "onnx"], default="torch",
        help="onnx: the model's prompt->mask step exported once and run by onnxruntime, without gradients (evolve it "
        "with --optimizer cmaes or random) (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the random and cmaes optimizers (default: 0)")
    p.add_argument("--regressor", required=True, help="regressor.pt from `sampot train-regressor` or `sampot run`")
    p.add_argument("--mask", help="ground-truth mask PNG, to report the true Dice along the way")
    p.add_argument("--out", required=True, help="output folder")
    _model_args(p)
    _evolve_args(p)
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser("heatmap", help="Dice of the model's mask for a grid of clicks inside a mask (paper fig. 1)")
    p.add_argument("image")
    p.add_argument("--mask", required=True, help="ground-truth mask PNG of the structure")
    p.add_argument("--step", type=_positive_int, default=32, help="grid spacing in pixels (default: %(default)s)")
    p.add_argument("--regressor", help="also score every mask with this regressor")
    p.add_argument(
        "--out", required=True, help="CSV file to write (x, y, dice, confidence, regressor; blank without --regressor)"
    )
    _model_args(p)
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser("train-regressor", help="build the synthetic-mask set and train the segmentation regressor")
    _experiment_args(p)
    _mark_defaults(p)
    p.set_defaults(func=cmd_train_regressor)

    p = sub.add_parser("run", help="the whole experiment: regressor, its evaluation, evolution of the test split")
    _experiment_args(p)
    _evolve_args(p)
    p.add_argument("--seeds", type=_positive_int, nargs="+", metavar="K", help="train the regressor and evolve once "
                   "per seed (out/seed_K/, one split made with --seed) and report mean ± sd over seeds")  # fmt: skip
    p.add_argument("--regressor", help="use this regressor.pt, trained elsewhere, instead of training one; the "
                   "results record both data sets and every difference from its training")  # fmt: skip
    p.add_argument("--scorers", nargs="+", choices=["regressor", "confidence", "blend", "oracle"], default=None,
                   help="scores that drive evolution, side by side at the same budget: regressor (SAMPOT), confidence "
                   "(the model's IoU head), blend (of the two, weight chosen on val), oracle (soft Dice with the "
                   "truth: the ceiling) (default: regressor)")  # fmt: skip
    p.add_argument("--extra-jitters", type=float, nargs="+", default=None, metavar="J",
                   help="box prompts: also evolve users' boxes jittered by these J, regressor score only")  # fmt: skip
    _mark_defaults(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "calibrate", help="measure a regressor trained elsewhere on N labelled images of a new data set and "
        "fine-tune it on them",
        description="Measure a regressor trained on other data on N labelled images of DATA (how it ranks masks "
        "there, whether evolution helps or hurts), fine-tune it on 70% of them and check it before and after on "
        "the other 30% (at least one). The images come, seeded, from the train and validation parts of the split "
        "of --out (a run folder), so `sampot run DATA --out DIR --regressor DIR/regressor_calibrated.pt` never tests "
        "on them. Writes DIR/calibration.json and DIR/regressor_calibrated.pt.",
    )  # fmt: skip
    p.add_argument("data", help="folder-format data set (images/, masks/<structure>/) the regressor is new to")
    p.add_argument("--regressor", required=True, help="regressor.pt trained elsewhere (e.g. by `sampot run`)")
    p.add_argument("--labelled", type=_positive_int, required=True, metavar="N",
                   help="how many labelled images to calibrate on (at least 3; 10 is a good start)")  # fmt: skip
    p.add_argument("--out", required=True, help="run folder: its split gives the labelled images; the results go "
                   "there")  # fmt: skip
    p.add_argument("--structure", help="mask folder (default: the regressor's structure)")
    p.add_argument("--prompt", choices=["click", "box"], help="the user's first prompt (default: the regressor's)")
    p.add_argument("--box-jitter", type=float, default=BOX_JITTER, help="J of the user's box (default: %(default)s)")
    p.add_argument("--split-file", help="a split JSON from `sampot data split` (default: the run folder's, seeded)")
    p.add_argument("--seed", type=_positive_int, default=0, help="seed of the split, the choice of images and the "
                   "fine-tuning (default: 0; give `sampot run` the same)")  # fmt: skip
    p.add_argument("--epochs", type=_positive_int, default=None, help="fine-tuning epochs (default: 30)")
    p.add_argument("--tune-lr", type=_positive_float, default=None, help="fine-tuning learning rate (default: 1e-3)")
    _model_args(p)
    _evolve_args(p)
    p.set_defaults(func=cmd_calibrate, model=None, sharpness=None)  # None: the regressor's own

    p = sub.add_parser("download", help="download and verify a SAM checkpoint into the cache")
    p.add_argument("name", help="vit_b, vit_l or vit_h")
    p.add_argument("--cache-dir", help="default: $SAMPOT_CACHE or ~/.cache/sampot")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser(
        "app", help="the prompt widget as a page in your browser: pick an image, click, evolve, download the mask",
        description="Serve the prompt widget as a page of its own (Voila) until Ctrl-C: pick an image, click inside "
        "the structure, press evolve, download the mask as a PNG. Input is checked before the server starts.",
    )  # fmt: skip
    p.add_argument("source", metavar="DATA_OR_IMAGE", help="a folder-format data set, or one PNG/JPEG/DICOM image")
    p.add_argument("--regressor", required=True, help="regressor.pt from `sampot train-regressor` or `sampot run`")
    p.add_argument("--structure", help="mask folder shown as ground truth (default: the regressor's structure)")
    p.add_argument("--steps", type=_positive_int, default=STEPS, help="evolution steps (default: %(default)s)")
    p.add_argument("--lr", type=_positive_float, default=LR, help="step size in pixels (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=_positive_int, default=8866, help="port (default: %(default)s)")
    _model_args(p)
    p.set_defaults(func=cmd_app)

    try:
        from sampot_lib.cli.data import add_data_commands
    except ImportError:  # the data commands are optional while their module is absent
        pass
    else:
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
        help="show the Python traceback of an error (for a bug report)",
    )  # fmt: skip
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, top=False)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """warnings.showwarning for the command line: one line, no source location."""
    print(f"sampot: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done; 2 the input or the machine's setup needs fixing (one line says what);
    1 a fault that is not the user's (an internal error: run again with --debug for the traceback); 130 Ctrl-C.

    Every value is checked before any work (:func:`sampot_lib.cli.checks.check_args`). Errors print one line, never
    a traceback unless --debug (or $SAMPOT_DEBUG=1) is given.
    """
    from sampot_lib.cli.checks import check_args
    from sampot_lib.errors import USER_ERRNOS, describe_os_error
    from sampot_lib.experiment.setup import apply_thread_setting

    parser = build_parser()
    _add_debug(parser, top=True)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False) or os.environ.get("SAMPOT_DEBUG"))
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            check_args(args)
            apply_thread_setting()  # as the book's kernels do: the same thread count gives the same numbers
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("sampot: interrupted", file=sys.stderr)
            return 130
        except SampotError as exc:
            if debug:
                raise
            print(f"sampot: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # what the checks could not foresee: a disk filling up, a folder made read-only
            if debug:
                raise
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
