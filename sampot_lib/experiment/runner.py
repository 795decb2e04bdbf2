"""The whole experiment in one call: every stage with one model load and one validation of the data set, once or once
per seed, with the mean and spread over seeds."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import RULE_POOLED
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig, describe_changes, made_with, stage_settings
from sampot_lib.experiment.evolution import evolve_stage
from sampot_lib.experiment.parallel import Workers
from sampot_lib.experiment.pooled_rule import pooled_rule, records_rule_gains
from sampot_lib.experiment.records import read_json, write_json
from sampot_lib.experiment.runfolder import RunFolder
from sampot_lib.experiment.setup import resolve_split, write_config
from sampot_lib.experiment.stages import LazyModel, evaluate_stage, open_run, start_over, train_regressor_stage
from sampot_lib.experiment.summary import (
    summarise_seeds,
)
from sampot_lib.files import sha256_file


def _run_one(
    config: ExperimentConfig, dataset: FolderDataset, model: LazyModel, progress: bool, resume: bool, force: bool,
    workers: Workers,
) -> dict[str, Any]:  # fmt: skip
    if config.regressor is None:
        train_regressor_stage(config, model, dataset, progress, resume=resume, force=force, workers=workers)
    evaluate_stage(config, model, dataset, progress, resume=resume, force=force, workers=workers)
    return evolve_stage(config, model, dataset, progress, resume=resume, force=force, workers=workers)


def _replaced(config: ExperimentConfig, resume: bool) -> tuple[str, ...]:
    """The stages of the run folder itself that a forced run deletes first: all of them (not the split, which is kept
    when it is the same, nor a calibration); with ``resume``, only those this run would leave beside its own (a
    summary over seeds where it runs one seed, one seed's results where it runs several)."""
    if not resume:
        return ("train", "evaluate", "evolve", "aggregate")
    return ("aggregate",) if config.seeds is None else ("train", "evaluate", "evolve")


def run_experiment(
    config: ExperimentConfig, progress: bool = True, *, resume: bool = False, force: bool = False
) -> dict[str, Any]:
    """Run the whole experiment: train the regressor, evaluate it, evolve the test split.

    All stages run with one model load and one validation of the data set; the regressor is trained unless
    ``config.regressor`` names one. With ``config.seeds``, the regressor training and the evolution run once per
    seed in ``out/seed_<k>/``, all on the split made with ``config.seed``, and ``out/summary.json`` holds the mean and
    spread over seeds (:func:`summarise_seeds`) and, where two or more seeds ran the do-no-harm rule, the rule with one
    margin chosen on their validation evolutions together (:func:`~sampot_lib.experiment.pooled_rule.pooled_rule`,
    under ``"do-no-harm (pooled)"``). ``config.workers`` / ``scheduler``: one Dask cluster for every stage
    (started when the first per-image work needs it).

    Args:
        config: The run's settings; its results go to the folder ``config.out``.
        progress: Show progress bars, and say what an existing run folder holds before its stages are reused or
            redone.
        resume: Reuse every stage that finished from the same settings, split and inputs.
        force: Start the folder over: delete the results of earlier runs there (made on another split, with other
            settings, or over other seeds, with their ``seed_<k>/`` folders, as
            :func:`~sampot_lib.experiment.cleanup.remove_stages` finds them) instead of refusing or
            leaving them beside the new ones; with ``resume``, the stages this run reuses are kept. A ``splits.json``
            no run there made, a calibration and the files this run reads stay.

    Returns:
        The run's summary, as written to ``out/summary.json`` (the evolution's summary, or with ``config.seeds``
        the mean and spread over seeds, :func:`summarise_seeds`, with the config).

    Raises:
        SampotError: ``config`` is not an :class:`ExperimentConfig`, another run holds the folder, the data set is not
            usable, or a stage refuses its inputs (e.g. results made on another split without ``force``).
    """
    if not isinstance(config, ExperimentConfig):
        raise SampotError(f"run_experiment needs an ExperimentConfig, got {type(config).__name__}; make one with "
                          "ExperimentConfig(**settings).")  # fmt: skip
    with Workers(config.workers, config.scheduler, dashboard=config.dashboard) as workers:
        return _run_experiment(config, progress, resume, force, workers)


def _run_experiment(
    config: ExperimentConfig, progress: bool, resume: bool, force: bool, workers: Workers
) -> dict[str, Any]:
    parts = ("test",) if config.regressor is not None else ("train", "val", "test")
    folder, dataset = open_run(config, None, parts, force)  # validated once: every file of the set is read
    model = LazyModel(config)
    if progress and folder.path.is_dir() and not force:  # say what was found before reusing or redoing it
        for problem in folder.problems(stages=not resume):  # with --resume, each stage says its own
            print(f"note: {problem}; {'redoing what it affects' if resume else 'every stage is redone'}.",
                  file=sys.stderr)  # fmt: skip
    with folder.locked():
        if force:
            start_over(folder, config, _replaced(config, resume), progress)
        if config.seeds is None:
            return _run_one(config, dataset, model, progress, resume, force, workers)
        _, split = resolve_split(config, dataset, force=force)
        write_config(config)
        split_file = config.split_file or str(folder.path / "splits.json")
        per_seed = {}
        for k in config.seeds:
            sub = replace(config, out=str(folder.path / f"seed_{k}"), seed=k, seeds=None, split_file=split_file)
            per_seed[k] = _run_one(sub, dataset, model, progress, resume, force, workers)
        inputs = {f"seed_{k}/summary.json": sha256_file(folder.path / f"seed_{k}" / "summary.json")
                  for k in config.seeds}  # fmt: skip
        folder.begin("aggregate", {"seeds": config.seeds}, split, inputs)
        summary = summarise_seeds(per_seed) | {"config": config.to_dict()}
        chose = [k for k in config.seeds if per_seed[k].get("rule_validation", {}).get("curve")]  # not a given margin
        ruled = [folder.path / f"seed_{k}" for k in chose]
        # one margin for every seed, chosen on their validation together (seeds evolved by an older sampot, whose rows
        # do not record the rule's predictions, are left without it)
        if len(ruled) >= 2 and all(records_rule_gains(f / "evolution.csv") for f in ruled):
            summary[RULE_POOLED] = pooled_rule(ruled)
        write_json(folder.path / "summary.json", summary)
        folder.finish("aggregate", ["summary.json"])
    return summary


def results_made_otherwise(
    config: ExperimentConfig, stages: tuple[str, ...] = ("train", "evaluate", "evolve")
) -> list[str]:
    """Lines "<folder>: stage 'evolve' (steps 2 -> 4)", one for every finished stage in ``config``'s run folder (and its
    ``seed_<k>/`` folders) made with other settings than ``config``'s: what a run of ``stages`` would replace. A
    summary over seeds where this run has one seed, or one seed's results where this run has several, is one too:
    each run writes the folder's ``summary.json``."""
    top = RunFolder(config.out_dir)
    found = []
    if "evolve" in stages:
        made = {s for s in ("evolve", "aggregate") if (top.entry(s) or {}).get("status") == "done"}
        if config.seeds is None and "aggregate" in made:
            seeds = top.entry("aggregate").get("settings", {}).get("seeds")
            found.append(f"{top.path}: the summary over seeds {seeds} (this run: seed {config.seed} alone)")
        if config.seeds is not None and "evolve" in made:
            seed = top.entry("evolve").get("settings", {}).get("seed")
            found.append(f"{top.path}: the results of seed {seed} alone (this run: seeds {config.seeds})")
    subs = [config]
    if config.seeds is not None:
        split_file = config.split_file or str(config.out_dir / "splits.json")
        subs = [replace(config, out=str(config.out_dir / f"seed_{k}"), seed=k, seeds=None, split_file=split_file)
                for k in config.seeds]  # fmt: skip
    for sub in subs:
        folder = RunFolder(sub.out_dir)
        for stage in stages:
            entry = folder.entry(stage)
            if stage == "train" and sub.regressor is not None or entry is None or entry.get("status") != "done":
                continue
            settings = stage_settings(sub, stage)
            if not made_with(entry, settings):
                changes = describe_changes(entry.get("settings", {}), settings)
                found.append(f"{folder.path}: stage '{stage}' ({changes})")
    return found


def seed_runs(
    config: ExperimentConfig, seeds: list[int], progress: bool = True, *, resume: bool = True
) -> dict[str, Any]:
    """The spread over seeds of a finished run.

    ``config``'s own results are its seed's; for every other seed of ``seeds`` the whole experiment runs again in
    ``out/seed_<k>/`` on the same split (the regressor's initialisation and its synthetic masks change with the seed,
    and a box's jitter; the data and the split do not).

    Args:
        config: The finished run's config (``out/summary.json`` must exist).
        seeds: The seeds.
        progress: Show progress bars.
        resume: Read back the seeds that finished before.

    Returns:
        :func:`summarise_seeds` of the seeds' summaries.

    Raises:
        SampotError: ``out/summary.json`` is missing (evolve the run of ``config.seed`` first), or a seed's run fails.
    """
    own = config.out_dir / "summary.json"
    if not own.is_file():
        raise SampotError(f"{own} is missing: evolve the run of seed {config.seed} first (notebook 05, or `sampot "
                          "run`), then add seeds.")  # fmt: skip
    per_seed = {config.seed: read_json(own, "summary")}
    split_file = config.split_file or str(config.out_dir / "splits.json")
    for k in seeds:
        if k == config.seed:
            continue
        sub = replace(config, out=str(config.out_dir / f"seed_{k}"), seed=k, seeds=None, split_file=split_file)
        per_seed[k] = run_experiment(sub, progress=progress, resume=resume)
    return summarise_seeds(per_seed)
