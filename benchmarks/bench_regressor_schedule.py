"""Benchmark: regressor training recipes (learning-rate schedule, patience) against the epochs they take.

The regressor's epochs are most of the paper preset's time (SAM-Nano on JSRT: 159 epochs, 73% of the run). A recipe
that reaches the same validation loss in fewer epochs buys that time back. For each seed this builds the paper
preset's training and validation sets once (``sampot run``'s own training stage, kept in ``WORK/seed_<k>/``), then
trains the regressor with each recipe on them. Only the validation split is read: the loss that picks the best epoch
is the one compared, so the test split chooses nothing.

Each row: the epochs run, the best epoch, the best validation MSE and its ratio to the first recipe's on the same
seed (the preset as it was), and the training time. Results of a finished (seed, recipe) are kept in ``WORK`` and
reused.

    SAMPOT_THREADS=1 python benchmarks/bench_regressor_schedule.py --data ../shared/data/jsrt_scr --work /tmp/sched
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sampot_lib.defaults import BATCH_SIZE, EPOCHS, REGRESSOR_LR, REGRESSOR_PATIENCE
from sampot_lib.experiment.presets import apply_preset
from sampot_lib.experiment.stages import load_training_sets, train_regressor_stage
from sampot_lib.method.regressor_training import fit_regressor

#: name: (fit_regressor's schedule settings, early-stopping patience). The first is the reference.
RECIPES = {
    f"constant, patience {REGRESSOR_PATIENCE}": ({"lr_schedule": "constant"}, REGRESSOR_PATIENCE),
    "plateau 4 x0.5, patience 10": ({"lr_schedule": "plateau", "lr_decay_patience": 4, "lr_decay_factor": 0.5}, 10),
    "plateau 2 x0.5, patience 6": ({"lr_schedule": "plateau", "lr_decay_patience": 2, "lr_decay_factor": 0.5}, 6),
    f"constant, patience {REGRESSOR_PATIENCE}, bfloat16": (
        {"lr_schedule": "constant", "precision": "bfloat16"},
        REGRESSOR_PATIENCE,
    ),
}


def training_sets(data: str, work: Path, seed: int, model: str, structure: str) -> dict:
    """The paper preset's train and val sets for ``seed``, made by the run's training stage (one epoch) once."""
    folder = work / f"seed_{seed}"
    sets = load_training_sets(folder / "regressor_set.npz", None)
    if sets is None:
        config = apply_preset("paper", data=data, out=str(folder), model=model, structure=structure, seed=seed,
                              epochs=1)  # fmt: skip
        train_regressor_stage(config, progress=False)
        sets = load_training_sets(folder / "regressor_set.npz", None)
    return sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a data folder (images/, masks/<structure>/)")
    p.add_argument("--work", required=True, help="where the training sets and finished rows are kept")
    p.add_argument("--model", default="sam_nano")
    p.add_argument("--structure", default="left_lung")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = p.parse_args()
    work = Path(args.work)
    rows: dict[tuple[int, str], dict] = {}
    for seed in args.seeds:
        sets = training_sets(args.data, work, seed, args.model, args.structure)
        for name in args.recipes:
            kept = work / f"seed_{seed}" / f"{name.replace(' ', '_').replace(',', '')}.json"
            if kept.is_file():
                rows[seed, name] = json.loads(kept.read_text())
                continue
            schedule, patience = RECIPES[name]
            t0 = time.perf_counter()
            _, history = fit_regressor(sets["train"], sets["val"], epochs=EPOCHS, batch_size=BATCH_SIZE,
                                       lr=REGRESSOR_LR, seed=seed, patience=patience, progress=False,
                                       **schedule)  # fmt: skip
            best = min(history, key=lambda r: r["val_mse"])
            rows[seed, name] = {"epochs": len(history), "best_epoch": int(best["epoch"]),
                                "best_val_mse": best["val_mse"], "seconds": time.perf_counter() - t0}  # fmt: skip
            kept.write_text(json.dumps(rows[seed, name]))
            print(f"seed {seed}, {name}: {rows[seed, name]}", flush=True)
    reference = args.recipes[0]
    print(f"\n{args.model}, {args.structure}, the paper preset's training sets, seeds {args.seeds}, "
          f"{torch.get_num_threads()} torch thread(s); ratio: best validation MSE / {reference!r}'s on the same "
          "seed\n")  # fmt: skip
    print("| recipe | epochs run | best epoch | best val MSE | ratio | median epochs | median ratio | median time |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.recipes:
        got = [rows[s, name] for s in args.seeds]
        ratios = [rows[s, name]["best_val_mse"] / rows[s, reference]["best_val_mse"] for s in args.seeds]
        print(f"| {name} | {' / '.join(str(g['epochs']) for g in got)} | "
              f"{' / '.join(str(g['best_epoch']) for g in got)} | "
              f"{' / '.join(format(g['best_val_mse'], '.5f') for g in got)} | "
              f"{' / '.join(format(r, '.3f') for r in ratios)} | "
              f"{statistics.median(g['epochs'] for g in got):g} | {statistics.median(ratios):.3f} | "
              f"{statistics.median(g['seconds'] for g in got):.0f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
