"""The paper's preset on the whole JSRT set, timed beside a yardstick: how long `sampot run --preset paper` takes, where
the time goes, and that time as a multiple of the plain-torch LiteMedSAM encoder timed in the same call.

Run from the repository root (a quiet machine; minutes on 2 CPU cores)::

    python benchmarks/bench_paper_preset.py --data ../shared/data/jsrt_scr --threads 2

The run is ``python -m sampot_lib run DATA --structure left_lung --model sam_nano --preset paper`` in a fresh process
with a fresh embedding store and ``SAMPOT_THREADS``; its stages' times come from its manifest, its epochs and best
validation loss from ``regressor_history.csv``, its outcome from ``summary.json``. Absolute times on a shared machine
move by a quarter and more between days, so the goal is stated against a yardstick timed before and after the run in
this process: LiteMedSAM's image encoder on one 3 x 256 x 256 input in plain torch (``bench_evolution.yardstick``).
The speed issue set the goal of 8 minutes on a day that yardstick took 1.03 to 1.12 s at 2 threads, so the goal here is
8 minutes x (the yardstick's median / 1.075 s).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_evolution import yardstick  # noqa: E402  (the benchmarks folder is not a package)

#: The goal, and the yardstick's median (s, 2 threads) on the day it was set.
GOAL_SECONDS, GOAL_YARDSTICK = 8 * 60.0, 1.075


def _stage_seconds(manifest: dict) -> dict[str, float]:
    """{stage: seconds} from the run's manifest (its stages' start and finish stamps)."""
    out = {}
    for name, stage in manifest["stages"].items():
        if stage.get("started") and stage.get("finished"):
            start, end = (datetime.fromisoformat(stage[k]) for k in ("started", "finished"))
            out[name] = (end - start).total_seconds()
    return out


def run_preset(data: Path, threads: int, scratch: Path) -> dict:
    """One run of the preset in a fresh process; its wall time, peak memory, stages and outcome."""
    out = scratch / "run"
    env = os.environ | {"SAMPOT_THREADS": str(threads), "SAMPOT_EMBEDDINGS": str(scratch / "embeddings")}
    cmd = [sys.executable, "-m", "sampot_lib", "run", str(data), "--out", str(out), "--structure", "left_lung",
           "--model", "sam_nano", "--preset", "paper"]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(out / "regressor_history.csv", newline="") as fh:
        history = [row for row in csv.DictReader(fh) if int(row["epoch"]) > 0]
    summary = json.loads((out / "summary.json").read_text())["on"]
    return {
        "wall": wall,
        "peak_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
        "stages": _stage_seconds(json.loads((out / "manifest.json").read_text())),
        "epochs": len(history),
        "best_val_mse": min(float(row["val_mse"]) for row in history),
        "improved": summary["improved"],
        "worse": summary["worse"],
        "n": summary["n"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the JSRT/SCR folder")
    p.add_argument("--threads", type=int, default=2, help="torch threads, for the run and the yardstick (default 2)")
    p.add_argument("--yardstick-repeats", type=int, default=5, help="encoder passes before and after (default 5)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    before = yardstick("litemedsam", args.yardstick_repeats, cpu)["encoder"]
    with tempfile.TemporaryDirectory(prefix="sampot-bench-preset-") as tmp:
        run = run_preset(Path(args.data), args.threads, Path(tmp))
    after = yardstick("litemedsam", args.yardstick_repeats, cpu)["encoder"]
    stick = statistics.median(before + after)
    goal = GOAL_SECONDS * stick / GOAL_YARDSTICK
    print(f"SAM-Nano, the paper's preset, {args.data}; {args.threads} thread(s), torch {torch.__version__}")
    print(f"yardstick (plain LiteMedSAM encoder): median {stick:.2f} s (before {min(before):.2f}-{max(before):.2f}, "
          f"after {min(after):.2f}-{max(after):.2f})")  # fmt: skip
    print("| part | seconds |\n|---|---|")
    for name, seconds in run["stages"].items():
        print(f"| stage {name} | {seconds:.0f} |")
    print(f"| whole run (wall) | {run['wall']:.0f} |")
    print(f"| goal at this yardstick: 8 min x {stick:.2f} / {GOAL_YARDSTICK} | {goal:.0f} |")
    print(f"| whole run / yardstick (goal {GOAL_SECONDS / GOAL_YARDSTICK:.0f}) | {run['wall'] / stick:.0f} |")
    print(f"regressor: {run['epochs']} epochs, best validation MSE {run['best_val_mse']:.5f}; test: "
          f"{run['improved']} of {run['n']} improved, {run['worse']} worse; peak resident memory "
          f"{run['peak_gb']:.2f} GB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
