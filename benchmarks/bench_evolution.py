"""Benchmark: image-encoder time, ms per evolution step, their ratio, and whole SAMPOT on one image.

An evolution step is one Adam update of the prompt: prompt encoder + mask decoder forward, steep sigmoid, regressor
forward, backward to the prompt's coordinates, Adam (the decoder runs through sampot_lib/models/decoder.py).
Targets: 50 vit_b steps <= 0.5 x one vit_b encoder pass (issue 2), <= 0.25 x (issue 11); whole SAMPOT with
LiteMedSAM (embed + 30 box steps) under 2 s on a 2-core CPU (issue 8). SAM models are evolved from a click, box
models (litemedsam) from a box jittered by 0.10.

    python benchmarks/bench_evolution.py --models litemedsam sam_nano vit_b --threads 1 2 --repeats 5

Weights are random for vit_b/l/h (timing does not depend on them); sam_nano uses its shipped weights if present.
Run it on a quiet machine: a second busy process makes multi-threaded torch stall.

It also counts the multiply-adds of an encoder pass and of an Adam call (torch's FlopCounterMode: matrix products
and convolutions, not elementwise work) and prints the 50-step ratio by arithmetic beside the timed one. The count
does not depend on the machine: for vit_b an Adam call is 2.14 G multiply-adds against 486 G for the encoder, a
ratio of 0.22 by arithmetic (segment-anything's own decoder: 3.28 G, 0.34). The timed ratio is higher because the
decoder's thin matrix products (4096 image tokens x 56 back-projected tokens) and its elementwise work (GELU, layer
norms, softmax) run at a lower share of the CPU's peak than the encoder's large ones.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sampot_lib.data.phantom import make_phantom
from sampot_lib.method.evolve import Safeguards, evolve_prompt
from sampot_lib.method.prompts import Prompt, predict
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.method.synth import centroid_prompt, jittered_box
from sampot_lib.models import SamModel, build_sam, load_model
from sampot_lib.models.registry import CHECKPOINTS


def _model(name: str) -> SamModel:
    if name == "litemedsam" or (name in CHECKPOINTS and CHECKPOINTS[name].url is None):  # shipped weights: use them
        return load_model(name)
    return SamModel(build_sam(name), name=name)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def multiply_adds(
    model: SamModel, regressor: SegmentationRegressor, image: np.ndarray, prompt: Prompt
) -> tuple[float, float]:
    """(encoder pass, one Adam call) in multiply-adds of matrix products and convolutions, as torch counts them.
    The call is one model call + score, forward and backward, with the image's decoder side already cached (as in
    every evolution step after the first): a count that does not depend on the machine or its load."""
    scorer = RegressorScorer(regressor, image)
    model._cache.clear()
    with FlopCounterMode(display=False) as counter:
        emb = model.embed(image)
    encoder = counter.get_total_flops() / 2
    with torch.no_grad():
        predict(model, emb, prompt, output_size=(scorer.size, scorer.size))  # cache the image side
    coords = torch.tensor(prompt.coords(), dtype=torch.float32, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        pred = predict(model, emb, prompt, coords, output_size=(scorer.size, scorer.size))
        scorer(pred.logits, pred.confidence).sum().backward()
    return encoder, counter.get_total_flops() / 2


def bench(name: str, image: np.ndarray, mask: np.ndarray, repeats: int, steps: int, size: int) -> dict[str, float]:
    model = _model(name)
    regressor = SegmentationRegressor(size).eval()
    enc = []
    for _ in range(repeats):
        model._cache.clear()  # time a real encoder pass, not the cache
        t = time.perf_counter()
        model.embed(image)
        enc.append(time.perf_counter() - t)
    if "box" in model.prompt_kinds and "click" not in model.prompt_kinds:
        prompt = Prompt.from_box(jittered_box(mask, 0.10, seed=0))
    else:
        prompt = Prompt.click(*centroid_prompt(mask))
    encoder_mac, call_mac = multiply_adds(model, regressor, image, prompt)
    evolve_prompt(model, regressor, image, prompt, steps=3, safeguards=Safeguards.off())  # warm-up
    per_step, whole = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        evolve_prompt(model, regressor, image, prompt, steps=steps, safeguards=Safeguards.off())
        # steps + 1 forward passes and steps backward passes, plus two full-size masks at the end
        per_step.append((time.perf_counter() - t) / steps)
        model._cache.clear()  # whole SAMPOT on a new image: embed, then 30 steps
        t = time.perf_counter()
        evolve_prompt(model, regressor, image, prompt, steps=30)
        whole.append(time.perf_counter() - t)
    enc_s, step_ms = statistics.median(enc), 1000 * statistics.median(per_step)
    return {
        "prompt": prompt.kind,
        "whole_s": statistics.median(whole),
        "whole_spread_s": max(whole) - min(whole),
        "encoder_s": enc_s,
        "encoder_spread_s": max(enc) - min(enc),
        "step_ms": step_ms,
        "step_spread_ms": 1000 * (max(per_step) - min(per_step)),
        "ratio_50": 50 * step_ms / 1000 / enc_s,
        "encoder_gmac": encoder_mac / 1e9,
        "call_gmac": call_mac / 1e9,
        "ratio_50_arithmetic": 50 * call_mac / encoder_mac,
        "peak_rss_gb": _peak_rss_gb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_b"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--regressor-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=1024)
    args = parser.parse_args()
    image, masks = make_phantom(np.random.default_rng(0), args.image_size)
    print(f"torch {torch.__version__}, {args.image_size} px phantom, regressor {args.regressor_size} px, median of "
          f"{args.repeats} (spread = max - min); whole = embed + 30 steps with the default safeguards")  # fmt: skip
    header = (
        f"| {'model':<10} | prompt | threads | encoder s (spread) | step ms (spread) | 50 steps / encoder "
        "| G mult-adds: encoder, step | 50 steps / encoder by arithmetic | whole s (spread) | peak RSS GB |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.models:
            r = bench(name, image, masks["left_lung"], args.repeats, args.steps, args.regressor_size)
            print(f"| {name:<10} | {r['prompt']:<6} | {threads:7d} "
                  f"| {r['encoder_s']:7.2f} ({r['encoder_spread_s']:5.2f})"
                  f"    | {r['step_ms']:6.1f} ({r['step_spread_ms']:5.1f})    | {r['ratio_50']:18.2f} "
                  f"| {r['encoder_gmac']:19.1f}, {r['call_gmac']:5.2f} | {r['ratio_50_arithmetic']:32.3f} "
                  f"| {r['whole_s']:6.2f} ({r['whole_spread_s']:5.2f})   | {r['peak_rss_gb']:11.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
