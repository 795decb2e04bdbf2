"""Benchmark: images per minute of a whole `sampot run` with 1 and more worker processes, and where the time goes.

    python benchmarks/bench_scaling.py                      # sam_nano on 20 and 60 phantoms, 1 and 2 workers
    python benchmarks/bench_scaling.py --n 20 --epochs 5 --model litemedsam --workers 1 2 4
    python benchmarks/bench_scaling.py --data path/to/set --n 200

For each data-set size N (phantoms written once per N, or the first N images of --data) and each worker count,
a fresh run folder gets: a pre-pass that encodes every image into the run's embedding store (the "encoding" share:
each image is encoded once per run, whatever stage asks), then the stages of `sampot run` with that store:
regressor-set creation ("samples"), the regressor's training ("training", always in this process), the
evaluation and the evolution of the test split. "start" is the local Dask cluster's start (0 for one worker, which
runs in this process). Images per minute = N / total wall time. The split is the paper's 41 / 28 / 53 proportions.

Timings are wall-clock on whatever else the machine runs: on a shared machine they are contended (say so with
the numbers). Results of every configuration are the same numbers (checked by tests/experiment/test_parallel.py).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sampot_lib.data.folder import FolderDataset
from sampot_lib.experiment import stages as pipeline
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.parallel import DatasetRef, Workers, resolve, usable_cores
from sampot_lib.experiment.setup import open_dataset, prepare_splits

STAGES = ("start", "encoding", "samples", "training", "evaluation", "evolution")


def encode(image_id: str, *, model: Any, dataset: Any) -> None:
    """Encode one image into the store (a task: a worker loads the model once)."""
    net, data = resolve(model), resolve(dataset)
    net.embed(data.image(image_id))


def subset(data: Path, n: int, into: Path) -> Path:
    """The first ``n`` images of a folder-format set, as symbolic links (nothing copied)."""
    ds = FolderDataset(data, validate=False)
    ids = ds.ids[:n]
    (into / "images").mkdir(parents=True)
    for image_id in ids:
        src = ds.image_path(image_id)
        (into / "images" / src.name).symlink_to(src.resolve())
        for s in ds.structures:
            (into / "masks" / s).mkdir(parents=True, exist_ok=True)
            (into / "masks" / s / f"{image_id}.png").symlink_to(ds.mask_path(image_id, s).resolve())
    return into


def one_run(config: ExperimentConfig, workers: int) -> dict[str, float]:
    """Seconds of each part of one whole run into a fresh folder."""
    os.environ["SAMPOT_EMBEDDINGS"] = str(Path(config.out) / "embeddings")  # this run's store, shared by all
    times = dict.fromkeys(STAGES, 0.0)
    fit = pipeline.fit_regressor

    def timed_fit(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fit(*args, **kwargs)
        finally:
            times["training"] += time.perf_counter() - t

    pipeline.fit_regressor = timed_fit
    try:
        with Workers(workers) as pool:
            t = time.perf_counter()
            if pool.parallel:
                pool.client()
            times["start"] = time.perf_counter() - t
            dataset = open_dataset(config)
            model = pipeline.LazyModel(config)
            splits = prepare_splits(config, dataset)
            ids = [i for part in ("train", "val", "test") for i in splits[part]]
            t = time.perf_counter()
            source = pool.share(model.get(), lambda: pipeline.model_ref(config))
            pool.map(
                encode,
                ids,
                desc="encoding",
                progress=False,
                kwargs=dict(model=source, dataset=pool.share(dataset, DatasetRef(str(dataset.root)))),
            )
            times["encoding"] = time.perf_counter() - t
            for name, stage in (("samples", pipeline.train_regressor_stage), ("evaluation", pipeline.evaluate_stage),
                                ("evolution", pipeline.evolve_stage)):  # fmt: skip
                t = time.perf_counter()
                stage(config, model, dataset, progress=False, workers=pool)
                times[name] += time.perf_counter() - t
        times["samples"] -= times["training"]  # the training stage: its sets, then the fit
    finally:
        pipeline.fit_regressor = fit
        os.environ.pop("SAMPOT_EMBEDDINGS", None)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[20, 60], help="images per run (default: 20 60)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default: 1 2)")
    parser.add_argument("--model", default="sam_nano", help="sam_nano (default), litemedsam, vit_b, ...")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, help="a folder-format data set (default: phantoms, written per N)")
    parser.add_argument("--size", type=int, default=256, help="phantom size in px (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="regressor epochs (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="evolution steps (default: %(default)s)")
    args = parser.parse_args()
    os.environ.setdefault("SAMPOT_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["SAMPOT_THREADS"]))  # the serial run: one thread, as each worker has
    prompt = "box" if args.model == "litemedsam" else "click"
    print(f"{args.model} on {args.data or f'phantoms of {args.size} px'}, {args.epochs} epochs, {args.steps} steps, "
          f"{usable_cores()} usable cores; wall-clock seconds (contended if the machine is shared)")  # fmt: skip
    print("| N | workers | total s | images/min | " + " | ".join(STAGES) + " |")
    print("|---" * (4 + len(STAGES)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.n:
            if args.data is not None:
                data = subset(args.data, n, Path(tmp) / f"data_{n}")
            else:
                from sampot_lib.data.phantom import write_phantom_set

                data = write_phantom_set(Path(tmp) / f"phantom_{n}", n, seed=0, size=args.size, progress=False)
            for w in args.workers:
                config = ExperimentConfig(
                    data=str(data), out=str(Path(tmp) / f"run_{n}_{w}"), model=args.model, device=args.device,
                    epochs=args.epochs, steps=args.steps, prompt=prompt, workers=w,
                )  # fmt: skip
                t = time.perf_counter()
                times = one_run(config, w)
                total = time.perf_counter() - t
                shares = " | ".join(f"{times[s]:.1f} ({100 * times[s] / total:.0f}%)" for s in STAGES)
                print(f"| {n} | {w} | {total:.1f} | {60 * n / total:.1f} | {shares} |", flush=True)


if __name__ == "__main__":
    main()
