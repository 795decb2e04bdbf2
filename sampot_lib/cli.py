"""The ``sampot`` command: evolve a click, draw a Dice heat-map, train a regressor, run the whole experiment.

Errors in the user's input print one line that says what to fix (exit status 2), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from sampot_lib.errors import SampotError

EPILOG = """\
examples:
  sampot data phantom --n 60 --out runs/phantom          # a synthetic chest X-ray set with exact lung masks
  sampot run runs/phantom --out runs/demo --max-images 8 # the whole experiment, small
  sampot evolve xray.png --click 700 480 --regressor runs/demo/regressor.pt --out runs/one
  sampot heatmap xray.png --mask left_lung.png --step 32 --out runs/heat.csv
  sampot download vit_b                                  # fetch SAM ViT-B (375 MB) into the cache

Models: sam_nano (default; our small stand-in, ships with the package, NOT SAM), vit_b, vit_l, vit_h (SAM,
downloaded once into $SAMPOT_CACHE or ~/.cache/sampot), or --checkpoint PATH with --model naming its type.
"""


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default="sam_nano", help="sam_nano, vit_b, vit_l or vit_h (default: %(default)s)")
    g.add_argument("--checkpoint", help="a local checkpoint file for --model (skips the download)")
    g.add_argument(
        "--mask-output", type=_mask_output, default=None,
        help="which SAM output a click yields: best (highest predicted IoU), single, 0, 1 or 2 (default: the "
        "model's recommended one, else best)",
    )  # fmt: skip
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")


def _evolve_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evolution (paper 3.3)")
    g.add_argument("--steps", type=_positive_int, default=30, help="Adam steps (default: %(default)s)")
    g.add_argument("--lr", type=_positive_float, default=10.0, help="Adam step size in pixels (default: %(default)s)")
    g.add_argument("--sharpness", type=_positive_float, default=5.0, help="slope of the sigmoid on the logits")
    g.add_argument("--no-safeguards", action="store_true", help="the paper's setting: only the image border limits")
    g.add_argument("--trust-radius", type=_positive_float, default=0.15, help="fraction of the image's longer side")
    g.add_argument("--min-overlap", type=_positive_float, default=0.3, help="min IoU of a winner with the first mask")
    g.add_argument("--max-area-ratio", type=_positive_float, default=2.0, help="max area change of a winner (x or /)")


def _safeguards(args: argparse.Namespace):
    from sampot_lib.evolve import Safeguards

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
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0")
    return x


def _load(args: argparse.Namespace):
    from sampot_lib.models import load_model

    return load_model(args.model, args.checkpoint, args.device, mask_output=args.mask_output)


def cmd_evolve(args: argparse.Namespace) -> int:
    from sampot_lib.data.io import read_image, read_mask, write_png, write_text
    from sampot_lib.evolve import check_point, evolve_prompt
    from sampot_lib.regressor import load_regressor

    image = read_image(args.image)
    gt = read_mask(args.mask, expected_shape=image.shape) if args.mask else None
    point = (float(args.click[0]), float(args.click[1]))
    check_point(point, image.shape)
    regressor, _ = load_regressor(args.regressor, device=args.device)
    model = _load(args)
    result = evolve_prompt(
        model, regressor, image, point, steps=args.steps, lr=args.lr, sharpness=args.sharpness,
        safeguards=_safeguards(args), gt_mask=gt, progress=True,
    )  # fmt: skip
    out, stem = Path(args.out), Path(args.image).stem
    record = {"image": str(args.image), "click": list(point), "evolved_click": [result.best.x, result.best.y]}
    record |= result.to_dict()
    write_png(out / f"{stem}_mask.png", result.best_mask)
    write_png(out / f"{stem}_initial_mask.png", result.initial_mask)
    write_text(out / f"{stem}_evolution.json", json.dumps(record, indent=1) + "\n")
    b, i = result.best, result.initial
    print(f"evolved click: ({b.x:.1f}, {b.y:.1f}) from ({i.x:.1f}, {i.y:.1f}) at step {b.step}")
    print(f"regressor score: {i.score:.3f} -> {b.score:.3f}")
    if gt is not None:
        print(f"Dice: {i.dice:.3f} -> {b.dice:.3f}")
    print(f"wrote {out / (stem + '_mask.png')} and {out / (stem + '_evolution.json')}")
    return 0


def cmd_heatmap(args: argparse.Namespace) -> int:
    from sampot_lib.data.io import read_image, read_mask, write_text
    from sampot_lib.heatmap import dice_heatmap
    from sampot_lib.regressor import load_regressor

    image = read_image(args.image)
    mask = read_mask(args.mask, expected_shape=image.shape)
    regressor = load_regressor(args.regressor, device=args.device)[0] if args.regressor else None
    hm = dice_heatmap(_load(args), image, mask, step=args.step, regressor=regressor)
    lines = ["x,y,dice,confidence,regressor"]
    lines += [
        f"{x:.1f},{y:.1f},{d:.5f},{c:.5f},{s:.5f}"
        for (x, y), d, c, s in zip(hm.points, hm.dice, hm.confidence, hm.score, strict=True)
    ]  # noqa: E501
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"{len(hm.dice)} clicks: Dice {hm.dice.min():.3f} .. {hm.dice.max():.3f} (spread {hm.spread:.3f})")
    print(f"wrote {args.out}")
    return 0


def _config(args: argparse.Namespace):
    from sampot_lib.pipeline import ExperimentConfig

    config = ExperimentConfig(
        data=str(args.data), out=str(args.out), structure=args.structure, model=args.model,
        checkpoint=args.checkpoint, mask_output=args.mask_output, device=args.device, split_file=args.split_file,
        seed=args.seed, max_images=args.max_images, regressor_size=args.regressor_size, epochs=args.epochs,
    )  # fmt: skip
    if args.command == "run":
        config.steps, config.lr, config.sharpness = args.steps, args.lr, args.sharpness
        config.safeguards = asdict(_safeguards(args))
    return config


def cmd_train_regressor(args: argparse.Namespace) -> int:
    from sampot_lib.pipeline import train_regressor_stage

    _, history = train_regressor_stage(_config(args))
    best = min(history, key=lambda h: h["val_mse"])
    print(f"best epoch {best['epoch']}: val MSE {best['val_mse']:.5f}; wrote {Path(args.out) / 'regressor.pt'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from sampot_lib.pipeline import run_experiment

    summary = run_experiment(_config(args))
    r = {k: "n/a" if v is None else f"{v:.3f}" for k, v in summary["regressor"].items()}
    print(
        f"regressor r: synthetic masks {r['r_regressor_synthetic']}, centroid clicks {r['r_regressor_centroid']} "
        f"(model confidence {r['r_confidence_centroid']})"
    )
    for name in ("on", "off"):
        s = summary[name]
        print(
            f"safeguards {name:>3}: {s['improved']}/{s['n']} improved, {s['worse']} worse, {s['catastrophes']} "
            f"catastrophes; mean Dice {s['mean_dice_initial']:.3f} -> {s['mean_dice_evolved']:.3f}"
        )
    print(f"results in {args.out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from sampot_lib.models.registry import fetch_checkpoint

    path = fetch_checkpoint(args.name, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    print(f"{args.name}: {path} (sha256 verified)")
    return 0


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder-format data set (images/, masks/<structure>/)")
    p.add_argument("--out", required=True, help="output folder for splits, regressor and results")
    p.add_argument("--structure", default="left_lung", help="mask folder to segment (default: %(default)s)")
    p.add_argument("--split-file", help="a split JSON from `sampot data split` (default: make one, seeded)")
    p.add_argument("--seed", type=_positive_int, default=0, help="seed of every random choice (default: 0)")
    p.add_argument("--max-images", type=_positive_int, default=None, help="use at most N images per split")
    p.add_argument("--regressor-size", type=_positive_int, default=128, help="regressor input size in pixels")
    p.add_argument("--epochs", type=_positive_int, default=200, help="regressor epochs (default: %(default)s)")
    _model_args(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sampot", description="Task-driven prompt evolution (SAMPOT) for promptable segmentation models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("evolve", help="evolve one click on one image; writes the mask PNG and a JSON record")
    p.add_argument("image", help="PNG/JPEG/DICOM image")
    p.add_argument("--click", nargs=2, type=float, required=True, metavar=("X", "Y"), help="the user's click, px")
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
    p.add_argument("--out", required=True, help="CSV file to write (x, y, dice, confidence, regressor)")
    _model_args(p)
    p.set_defaults(func=cmd_heatmap)

    p = sub.add_parser("train-regressor", help="build the synthetic-mask set and train the segmentation regressor")
    _experiment_args(p)
    p.set_defaults(func=cmd_train_regressor)

    p = sub.add_parser("run", help="the whole experiment: regressor, its evaluation, evolution of the test split")
    _experiment_args(p)
    _evolve_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("download", help="download and verify a SAM checkpoint into the cache")
    p.add_argument("name", help="vit_b, vit_l or vit_h")
    p.add_argument("--cache-dir", help="default: $SAMPOT_CACHE or ~/.cache/sampot")
    p.set_defaults(func=cmd_download)

    try:
        from sampot_lib.cli_data import add_data_commands
    except ImportError:  # the data commands are optional while their module is absent
        pass
    else:
        add_data_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SampotError as exc:
        print(f"sampot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sampot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
