"""The full-size results: every run of the table below on JSRT/SCR's whole test split, resumably, into results/.

    python scripts/make_results.py                    # every run, every seed (hours on 2 CPU cores)
    python scripts/make_results.py --only sam_nano_left_lung_click_paper --seeds 0
    python scripts/make_results.py --check 3          # re-run 3 test images of one committed run and compare
    python scripts/make_results.py --check 3 --only litemedsam_heart_box litemedsam_right_lung_box   # these runs
    python scripts/make_results.py --only litemedsam_heart_box --seeds 1 --device cuda   # on a GPU

Each run is an ordinary run folder under ``--work`` (default ``_build/results``: regressors, trajectories, the
embedding store; never committed). When a seed finishes, its per-image ``evolution.csv``, its ``summary.json`` and
its regressor's evaluation go to ``results/<run>/seed_<k>/`` (with ``regressor.pt`` and ``splits.json`` for seed 0,
what ``--check`` re-runs from), and ``results/index.csv`` is rebuilt with one row per (run, score or rule, seed).
Interrupted, it resumes where it stopped (``--resume`` of every stage). Every run uses the paper's subject split
(41/28/53 subjects as proportions, seed 0) made once per run; seeds change the regressor and the users' boxes.

``--check N`` re-evolves the first N test images of the first committed run that has a regressor (or of each run
``--only`` names, in turn), with that regressor, its split, its do-no-harm margin and its thread count, and fails
unless every per-image row equals the committed one (:func:`sampot_lib.report.results.first_difference`, relative
tolerance 1e-9: the same code, inputs and thread count give the same floats on the same CPU kind; the CSV holds them
in full). On another kind of CPU (:func:`~sampot_lib.experiment.provenance.cpu_model`: its name, family, model and
vector instructions) the prompts, scores and Dice are compared within
:data:`~sampot_lib.report.results.CROSS_CPU_TOLERANCE`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.splits import load_splits
from sampot_lib.defaults import HARM_TOLERANCE, RULE
from sampot_lib.errors import SampotError, device, whole
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.evolution import evolve_stage
from sampot_lib.experiment.pooled_rule import pooled_rule, records_rule_gains, seed_folders
from sampot_lib.experiment.presets import apply_preset
from sampot_lib.experiment.provenance import cpu_model
from sampot_lib.experiment.records import read_csv, read_json, write_csv, write_json
from sampot_lib.experiment.runfolder import split_hash
from sampot_lib.experiment.runner import run_experiment
from sampot_lib.experiment.setup import apply_process_settings, prepare_splits
from sampot_lib.files import write_text
from sampot_lib.report.results import (
    CROSS_CPU_TOLERANCE,
    INDEX_COLUMNS,
    buys_markdown,
    first_difference,
    index_rows,
    pooled_index_rows,
    with_results_table,
)

ROOT = Path(__file__).resolve().parent.parent
BOXES = dict(model="litemedsam", prompt="box", box_jitter=0.10, scorers=["regressor", "confidence", "blend", "oracle",
             RULE])  # fmt: skip
#: name -> the run's settings (ExperimentConfig fields; "preset" starts from a preset). Cheapest first.
RUNS: dict[str, dict] = {
    "sam_nano_left_lung_click_paper": dict(model="sam_nano", structure="left_lung", preset="paper"),
    "litemedsam_left_lung_box": BOXES | dict(structure="left_lung", extra_jitters=[0.05, 0.20]),
    "litemedsam_heart_box": BOXES | dict(structure="heart", extra_jitters=[0.05, 0.20]),
    "litemedsam_right_lung_box": BOXES | dict(structure="right_lung"),
    "litemedsam_left_clavicle_box": BOXES | dict(structure="left_clavicle"),
    "litemedsam_right_clavicle_box": BOXES | dict(structure="right_clavicle"),
}
SEEDS = (0, 1, 2)
KEPT = ("evolution.csv", "summary.json", "regressor_eval.json", "regressor_history.csv")


def commit() -> str | None:
    """The checkout's commit, with "-dirty" when the package has uncommitted changes; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "sampot_lib"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty else "")


def config_of(name: str, data: Path, out: Path, **extra) -> ExperimentConfig:
    values = dict(RUNS[name]) | {"data": str(data), "out": str(out)} | extra
    preset = values.pop("preset", None)
    return apply_preset(preset, **values) if preset else ExperimentConfig(**values)


def check_data(data: Path, names: list[str]) -> None:
    """One line naming what is missing, before any work."""
    if not (data / "images").is_dir():
        raise SampotError(f"no data set at {data} (images/ is missing): give --data, the JSRT/SCR folder "
                          "(../shared/data/jsrt_scr on the project's machines).")  # fmt: skip
    for name in names:
        structure = RUNS[name]["structure"]
        if not (data / "masks" / structure).is_dir():
            raise SampotError(f"{data} has no masks/{structure}/, which run {name} needs.")


def split_of(name: str, data: Path) -> dict[str, list[str]]:
    """The split run ``name`` gets on ``data`` (seed 0), made in a scratch folder: {part: image ids}."""
    with tempfile.TemporaryDirectory() as tmp:
        prepare_splits(config_of(name, data, Path(tmp), seed=0), FolderDataset(data))
        return read_json(Path(tmp) / "splits.json")["splits"]


def index_of(results: Path) -> list[dict[str, Any]]:
    """The rows of results/index.csv that the committed summaries give (and the pooled do-no-harm rule of each run
    whose seeds' rows record the rule's predicted gains), every column of :data:`INDEX_COLUMNS` ("" for None)."""
    rows = []
    for summary_path in sorted(results.glob("*/seed_*/summary.json")):
        summary = read_json(summary_path, "summary")
        rows += index_rows(summary_path.parent.parent.name, summary, commit=summary.get("commit"))
    for run in sorted(p for p in results.iterdir() if p.is_dir()):
        seeds = seed_folders(run)  # the rule with one margin for every seed, where their rows hold what it needs
        if len(seeds) >= 2 and all(records_rule_gains(f / "evolution.csv") for f in seeds):
            summaries = {f.name.removeprefix("seed_"): read_json(f / "summary.json", "summary") for f in seeds}
            rows += pooled_index_rows(run.name, pooled_rule(seeds), summaries)
    return [{k: ("" if r.get(k) is None else r[k]) for k in INDEX_COLUMNS} for r in rows]


def rebuild_index(results: Path) -> int:
    """results/index.csv from every committed summary (:func:`index_of`), and the README's table of what SAMPOT buys
    from it."""
    rows = index_of(results)
    if rows:
        write_csv(results / "index.csv", rows)
        readme = ROOT / "README.md"
        write_text(readme, with_results_table(readme.read_text(), buys_markdown(read_csv(results / "index.csv"),
                                                                                HARM_TOLERANCE)))  # fmt: skip
    return len(rows)


def make(
    names: list[str],
    seeds: list[int],
    data: Path,
    work: Path,
    results: Path,
    *,
    device: str = "cpu",
    stamp: str | None = None,
) -> None:
    check_data(data, names)
    for name in names:  # every run's split is compared before anything is written
        committed = results / name / "seed_0" / "splits.json"
        if committed.is_file() and split_hash(read_json(committed)["splits"]) != split_hash(split_of(name, data)):
            raise SampotError(f"the split {data} gives run {name} differs from the committed one ({committed}): "
                              "the data set is not the one the results were made on.")  # fmt: skip
    stamp = stamp or commit()
    for name in names:
        base = work / name
        prepare_splits(config_of(name, data, base, seed=0), FolderDataset(data))  # the run's split, made once
        split_file = base / "splits.json"
        for seed in seeds:
            config = config_of(name, data, base / f"seed_{seed}", seed=seed, split_file=str(split_file),
                               device=device)  # fmt: skip
            print(f"== {name}, seed {seed}", flush=True)
            summary = run_experiment(config, progress=True, resume=True)
            kept = results / name / f"seed_{seed}"
            kept.mkdir(parents=True, exist_ok=True)
            for file in KEPT + (("regressor.pt",) if seed == 0 else ()):
                if (config.out_dir / file).is_file():
                    shutil.copyfile(config.out_dir / file, kept / file)
            if seed == 0:
                shutil.copyfile(split_file, kept / "splits.json")
            write_json(kept / "summary.json", summary | {"commit": stamp})
            print(f"   {rebuild_index(results)} index rows in {results / 'index.csv'}", flush=True)


def check(n: int, data: Path, results: Path, only: list[str] | None = None) -> int:
    """Re-run the first ``n`` test images of committed runs; 0 when every row of every run matches.

    ``only`` names the runs (each must have a committed seed-0 regressor); by default the first committed run with a
    regressor. The runs are checked in turn and the first that differs ends the check.
    """
    runs = [name for name in RUNS if (results / name / "seed_0" / "regressor.pt").is_file()]
    if not runs:
        raise SampotError(f"no committed run with a regressor under {results}: make one with `make results` first.")
    whole(n, "--check N (CHECK_IMAGES of `make results-check`)", low=3)  # a run's correlations need 3 test images
    if only:
        lacking = [name for name in only if name not in runs]
        if lacking:
            raise SampotError(f"--only {lacking[0]} has no committed seed-0 regressor under {results} to re-run; "
                              f"runs that can be checked: {', '.join(runs)}.")  # fmt: skip
    check_data(data, only or runs[:1])
    for name in only or runs[:1]:
        status = check_run(name, n, data, results)
        if status:
            return status
    return 0


def check_run(name: str, n: int, data: Path, results: Path) -> int:
    """Re-run the first ``n`` test images of one committed run's seed 0; 0 when every row matches."""
    kept = results / name / "seed_0"
    wanted = {i for ids in load_splits(kept / "splits.json").values() for i in ids}
    missing = sorted(wanted - set(FolderDataset(data).ids))
    if missing:
        raise SampotError(f"results-check re-runs images of the data set the results were made on, and {data} lacks "
                          f"{len(missing)} of them ({', '.join(missing[:3])} ...); give DATA= (or --data) the JSRT/SCR "
                          "folder.")  # fmt: skip
    summary = read_json(kept / "summary.json", "summary")
    threads = int(summary["torch_threads"])
    torch.set_num_threads(threads)
    margin = summary.get("rule_validation", {}).get("margin")
    with tempfile.TemporaryDirectory() as tmp:
        config = config_of(name, data, Path(tmp) / "check", seed=0, split_file=str(kept / "splits.json"),
                           regressor=str(kept / "regressor.pt"), max_images=n, margin=margin)  # fmt: skip
        evolve_stage(config, progress=False)
        fresh = read_csv(config.out_dir / "evolution.csv")
    committed = read_csv(kept / "evolution.csv")
    same_cpu = summary.get("cpu") == cpu_model()
    diff = first_difference(fresh, committed, absolute=None if same_cpu else CROSS_CPU_TOLERANCE)
    images = sorted({r["image_id"] for r in fresh})
    how = "equal the committed ones" if same_cpu else (
        f"match the committed ones within {CROSS_CPU_TOLERANCE['x']:g} px and {CROSS_CPU_TOLERANCE['dice']:g} Dice "
        f"(made on {summary.get('cpu') or 'an unrecorded CPU'}, re-run on {cpu_model()})")  # fmt: skip
    if diff is not None:
        print(f"results-check: {name}: {diff}", file=sys.stderr)
        return 1
    print(f"results-check: {name}: {len(fresh)} rows of {len(images)} test images ({', '.join(images)}) {how} "
          f"({threads} thread(s)).")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("DATA") or str(ROOT.parent / "shared" / "data" / "jsrt_scr"),
                   help="the JSRT/SCR folder (default: $DATA, else ../shared/data/jsrt_scr)")  # fmt: skip
    p.add_argument("--work", default=str(ROOT / "_build" / "results"), help="run folders (default: _build/results)")
    p.add_argument("--results", default=str(ROOT / "results"), help="where results go (default: results/)")
    p.add_argument("--only", nargs="+", choices=list(RUNS), help="these runs (default: every run, cheapest first)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="default: 0 1 2")
    p.add_argument("--check", type=int, metavar="N", help="re-run N test images of a committed run and compare")
    p.add_argument("--device", default="cpu", help="where the models run: cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--commit", help="the code's commit, for a copy of the checkout without git (default: git's HEAD)")
    args = p.parse_args(argv)
    os.environ.setdefault("SAMPOT_EMBEDDINGS", str(Path(args.work) / "embeddings"))
    apply_process_settings()
    try:
        if args.check is not None:
            return check(args.check, Path(args.data), Path(args.results), args.only)
        where = device(args.device, "--device")  # a GPU this machine lacks is named before any work
        make(args.only or list(RUNS), args.seeds, Path(args.data), Path(args.work), Path(args.results),
             device=where, stamp=args.commit)  # fmt: skip
    except SampotError as exc:
        print(f"make_results: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
