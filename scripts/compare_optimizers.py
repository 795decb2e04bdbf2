"""Adam vs CMA-ES vs random search at equal model calls: prints a table and writes a CSV.

For one model and one or more structures of a folder-format data set, each image's user prompt (a box jittered by
``--box-jitter``, or the centroid click) is evolved by each optimiser with each score (``oracle``: soft Dice with the
truth, the ceiling; ``regressor``: a trained regressor, the method), and the winning mask's true Dice is read at each
budget of model calls (``--budgets``, default 10 30 100; the user's prompt is call 1).

One run per (image, score, optimiser) of the largest budget gives every smaller budget exactly: no optimiser looks at
the budget (Adam's steps, random search's draws and CMA-ES's populations do not depend on it), so a run of B calls is
the first B calls of the longest run, and the winner at B is the best-scoring allowed step among them (evolve's
rule; tests/method/test_optimizers.py checks this prefix property). Seconds per image at budget B = one image-encoder
pass + the wall time until the B-th score, with ``--threads`` torch threads (default 1).

    python scripts/compare_optimizers.py ../shared/data/jsrt_scr --model litemedsam --structures left_lung heart \\
        --images 10 --out runs/compare_optimizers.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from sampot_lib.data.folder import FolderDataset
from sampot_lib.errors import SampotError
from sampot_lib.method.evolve import Safeguards
from sampot_lib.method.optimizers import OPTIMIZERS
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.scoring import OracleScorer, RegressorScorer
from sampot_lib.method.synth import centroid_prompt, jittered_box
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.registry import load_model
from sampot_lib.models.sam import SamLikeModel
from sampot_lib.report.study import compare_optimizers

FIELDS = ["structure", "image_id", "score", "optimizer", "budget", "dice_start", "dice_end", "best_step", "seconds"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="folder-format data set (read in place)")
    p.add_argument("--model", default="litemedsam", help="registry name (default: %(default)s)")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: the prompt -> mask step in onnxruntime (no gradients, so no adam)")  # fmt: skip
    p.add_argument("--structures", nargs="+", default=["left_lung", "heart"])
    p.add_argument("--images", type=int, default=10, help="images, evenly spaced over the set (default: %(default)s)")
    p.add_argument("--prompt", choices=["box", "click"], default="box")
    p.add_argument("--box-jitter", type=float, default=0.10)
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 30, 100], help="model calls, the user's prompt first")
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    p.add_argument("--scores", nargs="+", choices=["oracle", "regressor"], default=["oracle"])
    p.add_argument("--regressor", type=Path, help="a trained regressor (.pt) for --scores regressor")
    p.add_argument("--lr", type=float, default=10.0, help="pixels: Adam's step, random/cmaes scale / 3")
    p.add_argument("--sharpness", type=float, default=5.0)
    p.add_argument("--size", type=int, default=128, help="side of the oracle's score grid (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="optimiser seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/compare_optimizers.csv"))
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Every problem of the arguments, before any work."""
    unknown = [o for o in args.optimizers if o not in OPTIMIZERS]
    if unknown:
        raise SampotError(f"unknown optimizer(s) {unknown}; use some of {', '.join(OPTIMIZERS)}.")
    if any(b < 1 for b in args.budgets):
        raise SampotError(f"budgets are model calls >= 1 (the user's prompt is the first), got {args.budgets}.")
    if args.images < 1 or args.threads < 1:
        raise SampotError("--images and --threads must be >= 1.")
    if "regressor" in args.scores and args.regressor is None:
        raise SampotError("--scores regressor needs --regressor PATH (a trained regressor).")
    if not args.out.parent.is_dir():
        raise SampotError(f"cannot write {args.out}: folder {args.out.parent} does not exist.")


def write_csv(rows: list[dict], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def summary(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["structure"], r["score"], r["optimizer"], r["budget"])].append(r)
    head = (
        f"{'structure':<11} {'score':<9} {'optimizer':<9} {'calls':>5} {'n':>3} {'Dice start':>10} {'Dice end':>9} "
        f"{'gain':>7} {'better/worse':>12} {'s/image':>8}"
    )
    lines = [head, "-" * len(head)]
    for (structure, score, opt, budget), rs in sorted(groups.items()):
        start = np.array([r["dice_start"] for r in rs])
        end = np.array([r["dice_end"] for r in rs])
        better, worse = int((end > start + 1e-9).sum()), int((end < start - 1e-9).sum())
        secs = np.mean([r["seconds"] for r in rs])
        lines.append(
            f"{structure:<11} {score:<9} {opt:<9} {budget:>5} {len(rs):>3} {start.mean():>10.4f} {end.mean():>9.4f} "
            f"{(end - start).mean():>+7.4f} {f'{better}/{worse}':>12} {secs:>8.2f}"
        )
    return "\n".join(lines)


def compare_one(
    args: argparse.Namespace, torch_model: SamLikeModel, model: PromptableModel,
    regressor: SegmentationRegressor | None, optimizers: list[str], image: np.ndarray, truth: np.ndarray,
    prompt: Prompt,
) -> list[dict]:  # fmt: skip
    """Rows (score, optimizer, budget, Dice start/end, best step, seconds) of one image and structure."""
    torch_model._cache.clear()  # time a real encoder pass; evolution then reuses the cached embedding
    t = time.perf_counter()
    model.embed(image)
    embed_s = time.perf_counter() - t
    scorers = {}
    for score in args.scores:
        if score == "oracle":
            scorers[score] = OracleScorer(truth, size=args.size, sharpness=args.sharpness)
        else:
            scorers[score] = RegressorScorer(regressor, image, args.sharpness)
    return compare_optimizers(
        model, image, truth, prompt, scorers, optimizers, args.budgets, lr=args.lr, sharpness=args.sharpness,
        seed=args.seed, safeguards=Safeguards(), embed_seconds=embed_s,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_args(args)
        torch.set_num_threads(args.threads)
        ds = FolderDataset(args.data, validate=False, structures=args.structures)
        missing = [s for s in args.structures if s not in ds.structures]
        if missing:
            raise SampotError(f"structure(s) {missing} not in {args.data} (it has {', '.join(ds.structures)}).")
        torch_model = load_model(args.model)
        model = torch_model
        if args.backend == "onnx":
            from sampot_lib.models.onnx import onnx_backend
            from sampot_lib.models.registry import default_cache_dir

            model = onnx_backend(torch_model, default_cache_dir(), threads=args.threads)
        regressor = None
        if "regressor" in args.scores:
            from sampot_lib.method.regressor import load_regressor

            regressor, _ = load_regressor(args.regressor)
    except SampotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    optimizers = [o for o in args.optimizers if not (OPTIMIZERS[o].needs_gradient and not model.differentiable)]
    picks = np.unique(np.linspace(0, len(ds.ids) - 1, min(args.images, len(ds.ids))).round().astype(int))
    ids = [ds.ids[i] for i in picks]
    budgets = sorted(set(args.budgets))
    rows: list[dict] = []
    done = 0
    # a background job ignores Ctrl-C's SIGINT; let `kill PID` stop it the same way, keeping the images finished
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        for k, image_id in enumerate(ids):  # images outer: an interrupted run has every structure of its images
            image = ds.image(image_id)
            for structure in args.structures:
                truth = ds.mask(image_id, structure)
                if args.prompt == "box":
                    prompt = Prompt.from_box(jittered_box(truth, args.box_jitter, seed=k))
                else:
                    prompt = Prompt.click(*centroid_prompt(truth))
                one = compare_one(args, torch_model, model, regressor, optimizers, image, truth, prompt)
                for r in one:
                    r.update(structure=structure, image_id=image_id)
                    if r["budget"] == max(budgets):
                        print(
                            f"{structure} {image_id} {r['score']} {r['optimizer']}: Dice {r['dice_start']:.3f} -> "
                            f"{r['dice_end']:.3f} at {r['budget']} calls, {r['seconds']:.1f} s",
                            flush=True,
                        )
                rows += one
            done += 1
    except KeyboardInterrupt:  # keep the images finished so far (each row is complete); say so
        rows = [r for r in rows if r["image_id"] in ids[:done]]
        print(f"\ninterrupted: the table and {args.out} hold the {done} images finished", file=sys.stderr)
    write_csv(rows, args.out)
    print()
    print(f"{args.model} ({args.backend}), {args.prompt} prompts, {done} images, lr {args.lr} px, "
          f"{args.threads} torch thread(s); Dice of the winning mask with the truth")  # fmt: skip
    print(summary(rows))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
