"""Benchmark: does a within-image loss beside the MSE make the regressor a better judge of one image's candidates?

One regressor per ``--rank-weights`` value is trained on the same training set (the train and val masks of a run's
kept ``regressor_set.npz`` given by ``--set``, or made here from the data's train and validation splits with the
experiment's settings), then the user's prompt of every validation image is evolved with each, as the experiment
does (Adam, early stopping, safeguards on, the true Dice of every visited prompt recorded), and once with the oracle.
Nothing here reads the test split.

Per weight the table gives the regressor on the validation masks (r and MAE with Dice, the median over images of the
within-image Spearman), and evolution on the validation images: mean gain and share of the oracle's gain, images
improved / worse / harmed (worse by more than 0.02), the median within-image Spearman along the path, the median top-1
regret, the share of gamed images, and the do-no-harm rule (blend of regressor and IoU head, margin chosen as the run
chooses it) in two readings: the margin chosen on all validation images and applied to them (in-sample, what the run's
choice sees), and two-fold (chosen on one half of the images, applied to the other, and the other way round).

    python benchmarks/bench_ranking_loss.py --data ../shared/data/jsrt_scr --structure heart \\
        --set _build/results/litemedsam_heart_box/seed_0/regressor_set.npz --rank-weights 0 1 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.splits import make_splits
from sampot_lib.defaults import BOX_JITTER, HARM_TOLERANCE, N_OUTSIDE, SAFEGUARDS_ON, SHARPNESS, UNCHANGED_TOL
from sampot_lib.experiment.stages import load_training_sets
from sampot_lib.method.evolve import evolve_prompt, truth_gain
from sampot_lib.method.metrics import pearson_or_none, spearman_or_none
from sampot_lib.method.prompts import Safeguards
from sampot_lib.method.regressor_training import RegressorData, fit_regressor, predict_dice
from sampot_lib.method.scoring import OracleScorer, RegressorScorer, choose_blend_weight
from sampot_lib.method.selection import DoNoHarm, choose_margin, rule_gains
from sampot_lib.method.synth import user_prompt_for
from sampot_lib.method.training_set import model_prompts_for, regressor_samples
from sampot_lib.models import load_model


def mask_metrics(scores: np.ndarray, data: RegressorData) -> dict[str, float]:
    """r and MAE of scores with Dice over the masks, and the median over images of the within-image Spearman."""
    rhos = [spearman_or_none(scores[data.image_id == i], data.dice[data.image_id == i])
            for i in np.unique(data.image_id)]  # fmt: skip
    rhos = [r for r in rhos if r is not None]
    return {"r": pearson_or_none(scores, data.dice), "mae": float(np.mean(np.abs(scores - data.dice))),
            "rho": float(np.median(rhos)) if rhos else float("nan")}  # fmt: skip


def two_fold_rule(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per image, the rule's true gain with the margin chosen on the other half of the images (even / odd index)."""
    out = np.zeros_like(true)
    halves = np.arange(len(true)) % 2
    for h in (0, 1):
        margin = choose_margin(predicted[halves != h], true[halves != h])["margin"]
        out[halves == h] = rule_gains(predicted[halves == h], true[halves == h], margin)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a data folder (images/, masks/<structure>/)")
    p.add_argument("--structure", default="left_lung")
    p.add_argument("--model", default="litemedsam")
    p.add_argument("--set", type=Path, help="a run's regressor_set.npz (default: make the set here)")
    p.add_argument("--rank-weights", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    p.add_argument("--jitter", type=float, default=BOX_JITTER)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = FolderDataset(args.data, structures=[args.structure])
    model = load_model(args.model)
    kind = "box" if "click" not in model.prompt_kinds else "click"
    splits = make_splits(data, seed=args.seed)
    if args.set is not None:
        sets = load_training_sets(args.set, None)
        if sets is None:
            raise SystemExit(f"{args.set} holds no readable training set")
    else:
        prompts = model_prompts_for(kind, N_OUTSIDE)
        sets = {part: regressor_samples(model, data, splits[part], args.structure, seed=args.seed, progress=False,
                                        prompts_for_image=prompts) for part in ("train", "val")}  # fmt: skip
    train, val = sets["train"], sets["val"]
    ids = sorted(set(val.image_id.tolist()))
    if set(ids) & set(splits["test"]):
        raise SystemExit("the training set's val part holds test images: give the set of a run with the same split")
    own = val.kind != "synthetic"
    guards = Safeguards(**SAFEGUARDS_ON)
    images = {i: (data.image(i), data.mask(i, args.structure)) for i in ids}
    starts = {i: user_prompt_for(args.seed, kind, args.jitter, i, truth) for i, (_, truth) in images.items()}
    oracle = [truth_gain(evolve_prompt(model, OracleScorer(truth, 128, SHARPNESS), image, starts[i], gt_mask=truth,
                                       seed=args.seed, safeguards=guards), truth)["gain"]
              for i, (image, truth) in images.items()]  # fmt: skip
    oracle_gain = statistics.mean(oracle)
    print(f"{args.model}, {kind} prompts at J = {args.jitter}, {args.structure}: {len(train)} train / {len(val)} val "
          f"masks; {len(ids)} validation images evolved; oracle mean gain {oracle_gain:+.4f}; seed {args.seed}, "
          f"{args.threads} thread(s)")  # fmt: skip
    print("| rank weight | epochs | val r | val MAE | val within-image rho | gain | share | improved / worse / harmed "
          "| path rho | top-1 regret | gamed | rule margin | rule share (in-sample) | rule share (2-fold) "
          "| rule harmed (2-fold) |")  # fmt: skip
    print("|" + "---:|" * 15)
    for w in args.rank_weights:
        reg, history = fit_regressor(train, val, seed=args.seed, progress=False, rank_weight=w)
        on_val = mask_metrics(predict_dice(reg, val), val)
        blend = choose_blend_weight(predict_dice(reg, val.subset(own)), val.confidence[own], val.dice[own])
        rule = DoNoHarm(0.0, blend)
        gains, predicted, rhos, regrets, gamed = [], [], [], [], 0
        for i, (image, truth) in images.items():
            run = evolve_prompt(model, RegressorScorer(reg, image, SHARPNESS), image, starts[i], gt_mask=truth,
                                seed=args.seed, safeguards=guards)  # fmt: skip
            gain = truth_gain(run, truth)["gain"]
            gains.append(gain)
            predicted.append(rule.predicted_gain(run))
            steps = run.trajectory
            rho = spearman_or_none([s.score for s in steps], [s.dice for s in steps])
            if rho is not None:
                rhos.append(rho)
            regrets.append(max(s.dice for s in steps if s.allowed) - run.best.dice)
            gamed += run.best.score > run.initial.score and gain < -UNCHANGED_TOL
        gains_a, predicted_a = np.array(gains), np.array(predicted)
        choice = choose_margin(predicted_a, gains_a)
        in_sample = rule_gains(predicted_a, gains_a, choice["margin"])
        folded = two_fold_rule(predicted_a, gains_a)
        n = len(gains)
        print(f"| {w:g} | {len(history)} | {on_val['r']:.3f} | {on_val['mae']:.4f} | {on_val['rho']:.2f} "
              f"| {gains_a.mean():+.4f} | {gains_a.mean() / oracle_gain:.2f} "
              f"| {(gains_a > UNCHANGED_TOL).sum()} / {(gains_a < -UNCHANGED_TOL).sum()} / "
              f"{(gains_a < -HARM_TOLERANCE).sum()} | {np.median(rhos):.2f} | {np.median(regrets):.4f} "
              f"| {gamed / n:.2f} | {choice['margin']:g} | {in_sample.mean() / oracle_gain:.2f} "
              f"| {folded.mean() / oracle_gain:.2f} | {(folded < -HARM_TOLERANCE).sum()} |", flush=True)  # fmt: skip
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
