"""The evolution stage: the user's prompt of every test image evolved with each score of the run, the do-no-harm rule's
margin chosen on the validation split, and the summary with the selection metrics."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import RULE
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig, comparable_settings, settings_hash, stage_settings
from sampot_lib.experiment.parallel import Workers
from sampot_lib.experiment.provenance import cpu_model, versions
from sampot_lib.experiment.records import read_json, write_csv, write_json
from sampot_lib.experiment.stage_parts import StageParts, as_stored
from sampot_lib.experiment.stages import (
    begin_test_stage,
    lazy_model,
    open_run,
    shared_objects,
    stage_workers,
    test_stage_inputs,
    user_prompt,
)
from sampot_lib.experiment.summary import selection_metrics, share_of_oracle_gain, summarise
from sampot_lib.files import sha256_file
from sampot_lib.method.evolve import EvolutionStep, Safeguards, evolve_prompt, truth_gain
from sampot_lib.method.regressor_origin import describe_origin
from sampot_lib.method.scoring import BlendScorer, ConfidenceScorer, OracleScorer, RegressorScorer
from sampot_lib.method.selection import DoNoHarm, choose_margin
from sampot_lib.models.base import PromptableModel


def evolve_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    force: bool = False,
    workers: Workers | None = None,
) -> dict[str, Any]:
    """Evolve the user's prompt of every test image with each of ``config.scorers``.

    The regressor runs with the safeguards on, and off for clicks; the others with them on; the regressor also on each
    extra box jitter. Writes ``evolution.csv`` (one row per image and group), ``trajectories.json`` and
    ``summary.json``.

    Each finished image is kept in ``out/evolve_parts/<key>/<id>.json`` (key: a hash of the stage's settings, split and
    inputs) until the stage finishes, when the folder is deleted; with ``resume``, an interrupted stage redoes only the
    images it has no part of. Without ``resume`` every image is redone.

    Args:
        config: The run's settings.
        model: The loaded model; None: loaded from ``config`` when needed.
        dataset: The opened data set; None: opened (and validated) from ``config.data``.
        progress: Show progress bars.
        resume: Reuse the stage if it already finished from the same settings, split and inputs, and the finished
            images of an interrupted one.
        force: Delete results made on another split instead of refusing.
        workers: Where the per-image work runs; None: ``config.workers`` / ``scheduler``.

    Returns:
        The summary, as ``summary.json`` holds it. Per group, counts improved / unchanged / worse / drops /
        catastrophes and mean Dice; the share of the oracle's gain; the regressor's evaluation when that stage
        finished here from the same regressor; the data sets involved.

    Raises:
        SampotError: Another run holds the folder, the regressor is missing or does not fit this use (or records no
            blend weight for ``blend``), or the data, split or settings do not allow the stage.
    """
    started = time.perf_counter()
    folder, dataset = open_run(config, dataset, ("test",), force)
    lazy = lazy_model(config, model)
    with folder.locked(), ExitStack() as stack:  # stack: the workers, started only when needed
        splits, split, path, foreign, test, inputs = test_stage_inputs(config, folder, dataset, force)
        evaluation = None
        if folder.reusable("evaluate", stage_settings(config, "evaluate"), split, inputs) is None:
            evaluation = read_json(folder.path / "regressor_eval.json", "evaluation summary")
            inputs["regressor_eval.json"] = sha256_file(folder.path / "regressor_eval.json")
        settings = stage_settings(config, "evolve")
        if resume and folder.reuse("evolve", settings, split, inputs, say=progress):
            return read_json(folder.path / "summary.json", "summary")
        net, regressor, meta, notes = begin_test_stage("evolve", config, folder, lazy, path, foreign, test,
                                                        settings, split, inputs)  # fmt: skip
        # (summary group, scorer, safeguards, user's box jitter): the regressor with the safeguards, and for clicks
        # without them too (the paper's setting), every other scorer with them, and the regressor on the extra
        # jitters of the user's box.
        plan = [("on", "regressor", "on", config.box_jitter)]
        if config.prompt == "click":
            plan.append(("off", "regressor", "off", config.box_jitter))
        plan = [p for p in plan if "regressor" in config.scorers]
        plan += [(name, name, "on", config.box_jitter) for name in config.scorers if name not in ("regressor", RULE)]
        if config.prompt == "box" and "regressor" in config.scorers:
            plan += [(f"jitter_{j:g}", "regressor", "on", j) for j in config.extra_jitters if j != config.box_jitter]
        weight = meta.get("blend_weight")
        if "blend" in config.scorers and weight is None:
            raise SampotError(f"the regressor {path} records no blend weight (trained by an older sampot); retrain it "
                              "or drop 'blend' from the scorers.")  # fmt: skip
        pool = stack.enter_context(stage_workers(config, workers))
        source, data, reg = shared_objects(pool, config, net, dataset, regressor, path)
        task = dict(config=config, model=source, dataset=data, regressor=reg, weight=weight)
        rule, rule_choice = None, None
        if RULE in config.scorers:
            rule, rule_choice = _do_no_harm(config, splits, pool, task, weight, path, progress)
        key = settings_hash({"settings": comparable_settings(settings), "split": split, "inputs": inputs})
        parts = StageParts(folder.path / "evolve_parts", key, keep=resume)
        done = parts.load(splits["test"])
        todo = [i for i in splits["test"] if i not in done]
        fresh = pool.map(_evolve_image, todo, desc="evolution", progress=progress, on_result=parts.save,
                         kwargs=task | dict(plan=plan, rule=rule, truth_per_step=True))  # fmt: skip
        done |= {i: as_stored(r) for i, r in zip(todo, fresh, strict=True)}  # as a resumed run reads them back
        rows = [row for i in splits["test"] for row in done[i]["rows"]]
        trajectories = {key: t for i in splits["test"] for key, t in done[i]["trajectories"].items()}
        write_csv(folder.path / "evolution.csv", rows)
        nonfinite = write_json(folder.path / "trajectories.json", trajectories, indent=None, nonfinite="null")
        groups = list(dict.fromkeys([p[0] for p in plan] + ([RULE] if rule is not None else [])))
        summary: dict[str, Any] = {}
        for group in groups:
            mine = [r for r in rows if r["group"] == group]
            summary[group] = summarise(mine) | selection_metrics(mine, trajectories)
        for group in groups:
            # the oracle evolved the main jitter's boxes only: another jitter's users have no oracle to compare with
            oracle = summary.get("oracle") if not group.startswith("jitter_") else None
            summary[group]["share_of_oracle_gain"] = share_of_oracle_gain(summary[group], oracle)
        if "on" in summary and summary["on"]["share_of_oracle_gain"] is not None:
            summary["share_of_oracle_gain"] = summary["on"]["share_of_oracle_gain"]
        if rule_choice is not None:
            summary["rule_validation"] = rule_choice
        if evaluation is not None:
            summary["regressor"] = evaluation
        summary["data"] = str(config.data)
        summary["regressor_file"] = str(path) if foreign else path.name  # its own: relative to the folder
        summary["regressor_origin"] = describe_origin(meta)
        summary["regressor_foreign"] = notes
        if nonfinite:
            summary["nonfinite_in_trajectories"] = nonfinite
        summary["config"] = config.to_dict()
        summary["torch_threads"] = torch.get_num_threads()  # another thread count moves the numbers a little
        summary["cpu"] = cpu_model()  # so does another kind of CPU
        if str(config.device).startswith("cuda"):  # and a GPU: its float sums run in another order
            summary["gpu"] = torch.cuda.get_device_name(torch.device(config.device))
        summary["versions"] = versions()
        summary["test_data_identity"] = {k: v for k, v in inputs.items() if k.startswith("data:")}
        summary["seconds"] = round(time.perf_counter() - started, 1)
        write_json(folder.path / "summary.json", summary)
        folder.finish("evolve", ["evolution.csv", "trajectories.json", "summary.json"])
        parts.clear()
    return summary


def _evolve_image(
    image_id: str, *, config: ExperimentConfig, model: Any, dataset: Any, regressor: Any,
    plan: list[tuple[str, str, str, float]], weight: float | None, rule: DoNoHarm | None = None,
    truth_per_step: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """One image's evolution for every (group, scorer, safeguards, box jitter) of ``plan``: {"rows": its rows of
    ``evolution.csv``, "trajectories": {"<id>/<group>": record}} (a task a worker may run). ``rule``: also the
    regressor's evolution (group "on") with the do-no-harm rule's winner, as group ``do-no-harm``; both rows carry
    ``rule_predicted_gain``, the predicted gain of the winner the rule judged (empty in the other rows).
    ``truth_per_step``: every step records its true Dice (a full-size mask per step), for the selection metrics."""
    guarded = Safeguards(**config.safeguards)
    image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
    reg = RegressorScorer(regressor, image, config.sharpness, device=config.device)
    scorers = {"regressor": reg, "confidence": ConfidenceScorer(reg.size),
               "oracle": OracleScorer(truth, reg.size, config.sharpness, config.device)}  # fmt: skip
    if weight is not None:
        scorers["blend"] = BlendScorer(reg, weight)
    rows, trajectories, done = [], {}, {}
    for group, scorer_name, guard_name, jitter in plan:
        guards = guarded if guard_name == "on" else Safeguards.off()
        key = (scorer_name, guards, jitter)  # with the safeguards off in the config, "on" and "off" are one run
        if key not in done:
            start = user_prompt(replace(config, box_jitter=jitter), image_id, truth)
            done[key] = evolve_prompt(
                model, scorers[scorer_name], image, start, steps=config.steps, patience=config.patience,
                min_gain=config.min_gain, lr=config.lr, optimizer=config.optimizer, sharpness=config.sharpness,
                safeguards=guards, seed=config.seed, gt_mask=truth if truth_per_step else None,
            )  # fmt: skip
        res = done[key]
        runs = [(group, scorer_name, res)]
        judged = None  # the rule's predicted gain of the winner it judged, so another margin can be applied later
        if rule is not None and group == "on":
            runs.append((RULE, scorer_name, rule.apply(res)))
            judged = rule.predicted_gain(res)
        for name, scored_by, run in runs:
            rows.append({
                "image_id": image_id, "group": name, "scorer": scored_by, "safeguards": guard_name,
                "box_jitter": jitter if config.prompt == "box" else "", "x0": run.initial.x, "y0": run.initial.y,
                "x": run.best.x, "y": run.best.y, "best_step": run.best_step, "score0": run.initial.score,
                "score": run.best.score, "coords0": _coords_text(run.initial.coords),
                "coords": _coords_text(run.best.coords),
            } | truth_gain(run, truth) | {"rule_predicted_gain": judged if name in ("on", RULE) else None})  # fmt: skip
            trajectories[f"{image_id}/{name}"] = run.to_dict()
    return {"rows": rows, "trajectories": trajectories}


def _coords_text(coords: tuple[float, ...]) -> str:
    """A prompt's coordinates as one CSV cell: space-separated, in full (a box: x0 y0 x1 y1)."""
    return " ".join(repr(float(v)) for v in coords)


def _do_no_harm(
    config: ExperimentConfig, splits: dict[str, list[str]], pool: Workers, task: dict[str, Any], weight: float | None,
    path: Path, progress: bool,
) -> tuple[DoNoHarm, dict[str, Any]]:  # fmt: skip
    """The do-no-harm rule of this run: its predicted gain is the blend of the regressor and the IoU head (the blend
    weight chosen on the validation masks), its margin ``config.margin`` or, when None, chosen on evolutions of the
    validation images (:func:`~sampot_lib.method.selection.choose_margin`); never on test. Returns the rule and what
    the choice was made from (the trade-off curve)."""
    if weight is None:
        raise SampotError(f"the do-no-harm rule needs the regressor's blend weight, which {path} does not record "
                          "(trained by an older sampot): retrain it, or drop 'do-no-harm' from --scorers.")  # fmt: skip
    if config.margin is not None:
        return DoNoHarm(config.margin, weight), {"margin": config.margin, "chosen_on": "given (--margin)"}
    val = splits.get("val", [])
    if not val:
        raise SampotError(
            "the do-no-harm rule chooses its margin on the validation split, which is empty here: "
            "give --margin M (a predicted Dice gain in [0, 1]) or a split with validation images."
        )
    plan = [("on", "regressor", "on", config.box_jitter)]
    done = pool.map(_evolve_image, val, desc="do-no-harm: validation", progress=progress, kwargs=task | {"plan": plan})
    probe = DoNoHarm(0.0, weight)
    predicted, true = [], []
    for part in done:
        record, row = part["trajectories"], part["rows"][0]
        steps = next(iter(record.values()))
        best, first = EvolutionStep(**steps["best"]), EvolutionStep(**steps["initial"])
        predicted.append(probe.predicted(best) - probe.predicted(first))
        true.append(row["gain"])
    choice = choose_margin(np.array(predicted), np.array(true))
    return DoNoHarm(choice["margin"], weight), choice | {"chosen_on": f"{len(val)} validation images", "n": len(val)}
