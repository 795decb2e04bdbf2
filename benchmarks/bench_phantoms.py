"""Benchmark: seconds to draw and write phantom chest X-rays (the book's default data set), median and spread.

    python benchmarks/bench_phantoms.py --sizes 256 1024 --n 10 --repeats 3

The book's default build writes 60 phantoms of 512 px; the data chapter's target is 60 full-size (1024 px) phantoms
within a minute on this 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sampot_lib.data.phantom import write_phantom_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--n", type=int, default=10, help="phantoms per timed set")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| size px | phantoms | s per phantom, median (spread) | 60 phantoms, s |")
    print("|---|---|---|---|")
    for size in args.sizes:
        per = []
        for k in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                write_phantom_set(Path(tmp) / "ph", args.n, seed=k, size=size, progress=False)
                per.append((time.perf_counter() - t) / args.n)
        med = statistics.median(per)
        print(f"| {size} | {args.n} | {med:.3f} ({max(per) - min(per):.3f}) | {60 * med:.0f} |")


if __name__ == "__main__":
    main()
