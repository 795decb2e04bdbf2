"""Benchmark: regressor training's time per epoch in float32 and in bfloat16 (``--regressor-precision``).

An epoch is what the paper preset spends most of its time on (SAM-Nano on JSRT: 159 epochs, 73% of the run). Each
repeat trains ``--epochs`` whole epochs (the training batches, then the validation that picks the epoch) on the paper
preset's training set of one seed and divides by them, the two precisions interleaved so that a change in the
machine's load falls on both. The set is
``sampot run``'s own, built once by ``bench_regressor_schedule.py`` (``WORK/seed_<k>/regressor_set.npz``); that
benchmark also measures what bfloat16 does to the validation loss on three seeds.

    python benchmarks/bench_regressor_precision.py --work /tmp/sched --threads 1 2 --repeats 3 --epochs 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sampot_lib.defaults import BATCH_SIZE, REGRESSOR_LR, REGRESSOR_PRECISIONS
from sampot_lib.errors import SampotError
from sampot_lib.experiment.stages import load_training_sets
from sampot_lib.method.regressor_training import fit_regressor


def native_bfloat16() -> str:
    """What this CPU offers for bfloat16 arithmetic, as torch's oneDNN sees it."""
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return f"{torch.backends.cpu.get_cpu_capability()}, native bfloat16 {'yes' if native else 'no'}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="bench_regressor_schedule.py's folder of training sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5, help="epochs per repeat (the set-up is timed once per repeat)")
    args = p.parse_args()
    sets = load_training_sets(Path(args.work) / f"seed_{args.seed}" / "regressor_set.npz", None)
    if sets is None:
        raise SampotError(f"no training set in {args.work}/seed_{args.seed}: run bench_regressor_schedule.py first.")
    seconds: dict[tuple[int, str], list[float]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for _ in range(args.repeats):
            for precision in REGRESSOR_PRECISIONS:
                t0 = time.perf_counter()
                fit_regressor(sets["train"], sets["val"], epochs=args.epochs, batch_size=BATCH_SIZE,
                              lr=REGRESSOR_LR, seed=args.seed, patience=0, progress=False,
                              precision=precision)  # fmt: skip
                seconds.setdefault((threads, precision), []).append((time.perf_counter() - t0) / args.epochs)
    train, val = sets["train"], sets["val"]
    print(f"seconds per epoch of the paper preset's regressor training (seed {args.seed}: {len(train)} training "
          f"and {len(val)} validation masks at {train.images.shape[-1]} px), {args.repeats} repeats of "
          f"{args.epochs} epochs, the precisions interleaved; CPU: {native_bfloat16()}; torch "
          f"{torch.__version__}\n")  # fmt: skip
    print("| threads | precision | median | min | max | float32 / this |")
    print("|---|---|---|---|---|---|")
    for threads in args.threads:
        reference = statistics.median(seconds[threads, "float32"])
        for precision in REGRESSOR_PRECISIONS:
            got = seconds[threads, precision]
            print(f"| {threads} | {precision} | {statistics.median(got):.2f} s | {min(got):.2f} s | {max(got):.2f} s "
                  f"| {reference / statistics.median(got):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
