"""Benchmark: seconds per image of prompt evolution with each optimiser at equal model calls.

One image = one image-encoder pass + ``B`` model calls of evolution (the user's prompt first) + the two full-size
result masks, timed end to end with ``evolve_prompt`` and the oracle score (timing does not depend on the score's
values). Backends: ``torch`` (Adam, CMA-ES, random) and ``onnx`` (the prompt -> mask step in onnxruntime; no Adam).
A phantom chest X-ray stands in for data (time depends on the image's size, not its content).

    python benchmarks/bench_optimizers.py --model litemedsam --budgets 10 30 100 --threads 1 --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sampot_lib.data.phantom import make_phantom
from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.optimizers import OPTIMIZERS
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.scoring import OracleScorer
from sampot_lib.method.synth import centroid_prompt, jittered_box
from sampot_lib.models import load_model
from sampot_lib.models.onnx import export_onnx, load_onnx_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="litemedsam")
    p.add_argument("--budgets", type=int, nargs="+", default=[10, 30, 100])
    p.add_argument("--backends", nargs="+", choices=["torch", "onnx"], default=["torch", "onnx"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2, help="images timed per cell (median reported)")
    p.add_argument("--size", type=int, default=1024, help="image side in pixels (JSRT: 1024)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    source = load_model(args.model, device=args.device)
    models = {"torch": source}
    if "onnx" in args.backends:
        path = Path(tempfile.mkdtemp()) / f"{args.model}.onnx"
        models["onnx"] = load_onnx_model(source, export_onnx(source, path), threads=args.threads)
    images = [make_phantom(seed=s, size=args.size) for s in range(args.repeats)]
    kind = "box" if "box" in source.prompt_kinds and "click" not in source.prompt_kinds else "click"
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{args.model}, {kind} prompts, {args.size} px, device {args.device} ({device_name}), "
          f"{args.threads} torch thread(s); seconds per image (median of {args.repeats})")  # fmt: skip
    print(f"{'backend':<8} {'optimizer':<9} {'calls':>5} {'s/image':>8} {'ms/call':>8}")
    for backend in args.backends:
        model = models[backend]
        for opt in OPTIMIZERS:
            if OPTIMIZERS[opt].needs_gradient and not model.differentiable:
                continue
            for budget in args.budgets:
                times, per_call = [], []
                for i, (image, masks) in enumerate(images):
                    mask = masks["left_lung"]
                    prompt = Prompt.from_box(jittered_box(mask, 0.1, i)) if kind == "box" else centroid_prompt(mask)
                    source._cache.clear()  # a real encoder pass per image
                    scorer = OracleScorer(mask, size=128, device=args.device)
                    t = time.perf_counter()
                    model.embed(image)
                    t_embed = time.perf_counter()
                    evolve_prompt(model, scorer, image, prompt, steps=budget - 1, optimizer=opt, seed=i)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    end = time.perf_counter()
                    times.append(end - t)
                    per_call.append((end - t_embed) / (budget + 2))
                print(f"{backend:<8} {opt:<9} {budget:>5} {statistics.median(times):>8.2f} "
                      f"{1000 * statistics.median(per_call):>8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
