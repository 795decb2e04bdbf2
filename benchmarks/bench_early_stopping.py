"""Benchmark: what early stopping of evolution keeps of the Dice gain, and how many model calls it saves.

One full run per image (Adam, ``--steps`` calls after the user's prompt, true Dice recorded at every step) tells
what every (patience, min_gain) would give: a stopped run is the first steps of the full one, so
:func:`sampot_lib.method.evolve.stop_step` replays the rule on the full trajectory and the winner is the best
allowed step up to the stop. Images: the validation split of a data folder (``make_splits`` with the paper's
fractions and ``--seed``, as the experiment splits), the user's prompt as the experiment simulates it
(``user_prompt_for``: LiteMedSAM a jittered box, SAM models the centroid click).

The score is the oracle (soft Dice with the truth: the ceiling) unless ``--regressor`` gives a trained segmentation
regressor; then the oracle's full run is the reference, and each row's **share** is its mean Dice gain over the
oracle's: the issue's goal is a share within 0.02 of the full run's. With the oracle alone the share is of the
oracle's own full run (how much of a smooth score's gain a patience keeps).

    python benchmarks/bench_early_stopping.py --data ../shared/data/jsrt_scr --model litemedsam --images 10
    python benchmarks/bench_early_stopping.py --data DIR --regressor RUN/regressor.pt --images 28
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import numpy as np
import torch

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.splits import make_splits
from sampot_lib.defaults import BOX_JITTER, LR, SHARPNESS
from sampot_lib.method.evolve import EvolutionResult, evolve_prompt, stop_step
from sampot_lib.method.regressor import load_regressor
from sampot_lib.method.scoring import OracleScorer, RegressorScorer
from sampot_lib.method.synth import user_prompt_for
from sampot_lib.models import load_model


def _gain(result: EvolutionResult, stop: int) -> float:
    """True Dice gain of the winner among steps 0..stop (the best allowed score) over step 0."""
    steps = result.trajectory[: stop + 1]
    best = max((s for s in steps if s.allowed), key=lambda s: s.score)
    return float(best.dice - steps[0].dice)  # type: ignore[operator]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a data folder (images/, masks/<structure>/)")
    p.add_argument("--structure", default="left_lung")
    p.add_argument("--model", default="litemedsam")
    p.add_argument("--regressor", default=None, help="a trained regressor (default: the oracle drives evolution)")
    p.add_argument("--images", type=int, default=10, help="first N images of the validation split")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, nargs="+", default=[2, 3, 4, 5, 8, 12])
    p.add_argument("--min-gain", type=float, nargs="+", default=[0.0, 1e-3, 3e-3, 1e-2])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    data = FolderDataset(args.data, structures=[args.structure])
    ids = make_splits(data, seed=args.seed)["val"][: args.images]
    model = load_model(args.model)
    kind = "box" if "click" not in model.prompt_kinds else "click"
    regressor = load_regressor(args.regressor)[0] if args.regressor else None
    runs: dict[str, list[EvolutionResult]] = {"oracle": [], "regressor": []}
    t0 = time.perf_counter()
    for image_id in ids:
        image, truth = data.image(image_id), data.mask(image_id, args.structure)
        prompt = user_prompt_for(args.seed, kind, BOX_JITTER, image_id, truth)
        common = dict(steps=args.steps, lr=LR, gt_mask=truth, seed=args.seed, patience=None)  # every step: replayed
        oracle = OracleScorer(truth, size=regressor.input_size if regressor else 128, sharpness=SHARPNESS)
        runs["oracle"].append(evolve_prompt(model, oracle, image, prompt, **common))
        if regressor is not None:
            scorer = RegressorScorer(regressor, image, SHARPNESS)
            runs["regressor"].append(evolve_prompt(model, scorer, image, prompt, **common))
    driven = "regressor" if regressor is not None else "oracle"
    reference = statistics.mean(_gain(r, args.steps) for r in runs["oracle"])
    print(f"{args.model}, {kind} prompts, {len(ids)} validation images of {args.data} ({args.structure}), Adam "
          f"{args.steps} steps, score: {driven}; reference (oracle, full run): mean Dice gain {reference:.4f}; "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    print("| patience | min_gain | mean calls | mean Dice gain | share of the oracle's gain | share - full run's |")
    print("|---------:|---------:|-----------:|---------------:|---------------------------:|-------------------:|")
    full_gain = statistics.mean(_gain(r, args.steps) for r in runs[driven])
    full_share = full_gain / reference if reference else float("nan")
    print(f"| {'none':>8} | {'-':>8} | {args.steps + 1:10.1f} | {full_gain:14.4f} | {full_share:26.3f} | {0.0:18.3f} |")
    for patience, min_gain in itertools.product(args.patience, args.min_gain):
        if patience > args.steps:
            continue
        stops = [stop_step(r.trajectory, patience, min_gain) for r in runs[driven]]
        gain = statistics.mean(_gain(r, s) for r, s in zip(runs[driven], stops, strict=True))
        share = gain / reference if reference else float("nan")
        print(f"| {patience:8d} | {min_gain:8g} | {np.mean(stops) + 1:10.1f} | {gain:14.4f} | {share:26.3f} "
              f"| {share - full_share:18.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
