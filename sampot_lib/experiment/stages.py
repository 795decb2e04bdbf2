"""The whole SAMPOT experiment on a folder-format data set, in stages that hand results on through files.

split -> regressor training set (level-set masks + the model's own masks) -> regressor -> its evaluation against
the model's confidence -> evolution of the centroid click on the test split, with and without safeguards.
Each stage reads what it needs from ``out`` and writes its results there, so notebooks can run them one by one.

The settings live in :mod:`sampot_lib.experiment.config`, the run folder (lock, manifest, split, CSV/JSON) in
:mod:`sampot_lib.experiment.runfolder`, the regressor's training set in :mod:`sampot_lib.method.training_set`. Every
stage holds the folder's lock, records itself in ``manifest.json`` and, with ``resume=True``, is skipped when it already
finished from the same settings, split and inputs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import RULE
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig, settings_hash, stage_settings
from sampot_lib.experiment.parallel import DatasetRef, ModelRef, RegressorRef, Workers
from sampot_lib.experiment.provenance import (
    data_identity,
    expected_record,
    mask_hashes,
    regressor_inputs,
    regressor_record,
    regressor_source,
)
from sampot_lib.experiment.records import read_csv, read_json, write_csv, write_json
from sampot_lib.experiment.runfolder import RunFolder, StageParts, as_stored
from sampot_lib.experiment.setup import limit, open_dataset, resolve_split, write_config
from sampot_lib.experiment.summary import column_r, selection_metrics, share_of_oracle_gain, summarise
from sampot_lib.files import sha256_file
from sampot_lib.method.evolve import EvolutionStep, Safeguards, evolve_prompt, measure_prompt, truth_gain
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.regressor import (
    RegressorData,
    SegmentationRegressor,
    check_regressor,
    describe_origin,
    fit_regressor,
    load_regressor,
    predict_dice,
    save_regressor,
)
from sampot_lib.method.scoring import BlendScorer, ConfidenceScorer, OracleScorer, RegressorScorer, choose_blend_weight
from sampot_lib.method.selection import DoNoHarm, choose_margin
from sampot_lib.method.synth import user_prompt_for
from sampot_lib.method.training_set import model_prompts_for, regressor_samples
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.registry import load_model


def build_model(config: ExperimentConfig) -> PromptableModel:
    return load_model(config.model, config.checkpoint, config.device, mask_output=config.mask_output)


class LazyModel:
    """The model, loaded the first time a stage needs it (with ``resume``, maybe never)."""

    def __init__(self, config: ExperimentConfig, model: PromptableModel | None = None):
        self.config, self.model = config, model

    def get(self) -> PromptableModel:
        if self.model is None:
            self.model = build_model(self.config)
        return self.model


def _lazy(config: ExperimentConfig, model: PromptableModel | LazyModel | None) -> LazyModel:
    return model if isinstance(model, LazyModel) else LazyModel(config, model)


def model_ref(config: ExperimentConfig) -> ModelRef:
    """What a worker process loads for ``config``'s model. The workers share an embedding store, so each image is
    encoded once: ``$SAMPOT_EMBEDDINGS``, else ``out/embeddings`` (kept for later runs into the same folder)."""
    store = os.environ.get("SAMPOT_EMBEDDINGS") or str(config.out_dir.resolve() / "embeddings")
    return ModelRef(config.model, config.checkpoint, config.device, config.mask_output, store)


@contextmanager
def _workers(config: ExperimentConfig, workers: Workers | None) -> Iterator[Workers]:
    """``workers`` if the caller gives them (one cluster for several stages), else the config's, stopped after."""
    if workers is not None:
        yield workers
        return
    with Workers(config.workers, config.scheduler) as own:
        yield own


def open_run(config: ExperimentConfig, dataset: FolderDataset | None) -> tuple[RunFolder, FolderDataset]:
    """Refuse early if another run holds the folder; validate the data set (before anything is written)."""
    folder = RunFolder(config.out_dir)
    folder.assert_unlocked()
    return folder, dataset or open_dataset(config)


def user_prompt(config: ExperimentConfig, image_id: str, truth: np.ndarray) -> Prompt:
    """The simulated user's first prompt on one test image: the centroid click (paper 3.3) or the structure's box
    jittered by ``config.box_jitter``, seeded by the run's seed and the image's id (the same box in every stage)."""
    return user_prompt_for(config.seed, config.prompt, config.box_jitter, image_id, truth)


def blend_weight(regressor: SegmentationRegressor, val: RegressorData) -> float | None:
    """The weight of :class:`~sampot_lib.method.scoring.BlendScorer` chosen on the validation set's model masks (the
    regressor's scores and the model's IoU predictions against their true Dice); None without three of them."""
    own = val.kind != "synthetic"
    if own.sum() < 3 or val.confidence is None:
        return None
    return choose_blend_weight(predict_dice(regressor, val.subset(own)), val.confidence[own], val.dice[own])


def _test_stage_inputs(
    config: ExperimentConfig, folder: RunFolder, dataset: FolderDataset, force: bool
) -> tuple[dict[str, list[str]], str, Path, bool, dict[str, str], dict[str, str]]:
    """What the evaluation and evolution stages start from: (splits, split hash, regressor file, whether it is
    foreign, {test id: mask hash}, the stage's input hashes). Refuses an empty test part and a regressor of this
    folder whose training stage did not finish from this run's settings and split."""
    full, split = resolve_split(config, dataset, force=force)
    splits = limit(full, config.max_images)
    _require_parts(splits, ("test",), config, dataset)
    write_config(config)
    path, foreign = regressor_source(config)
    if not foreign:  # the folder's regressor must come from this run's training settings and split
        folder.require("train", stage_settings(config, "train"), split)
    test_masks = mask_hashes(dataset, splits["test"], config.structure)
    inputs = regressor_inputs(config, path, foreign) | {"data:test masks": data_identity(test_masks)}
    return splits, split, path, foreign, test_masks, inputs


def _begin_test_stage(
    stage: str, config: ExperimentConfig, folder: RunFolder, lazy: LazyModel, path: Path, foreign: bool,
    test_masks: dict[str, str], settings: dict[str, Any], split: str, inputs: dict[str, str],
) -> tuple[PromptableModel, SegmentationRegressor, dict[str, Any], list[str]]:  # fmt: skip
    """Load the model and the checked regressor, then record ``stage`` as begun: (model, regressor, its record,
    warnings about a foreign regressor)."""
    net = lazy.get()
    regressor, meta = load_regressor(path, device=config.device)
    notes = check_regressor(meta, expected_record(config, net, test_masks), allow_foreign=foreign)
    folder.begin(stage, settings, split, inputs)
    return net, regressor, meta, notes


def _require_parts(
    splits: dict[str, list[str]], parts: tuple[str, ...], config: ExperimentConfig, dataset: FolderDataset
) -> None:
    """Refuse, before any work, a stage whose split parts are empty, naming them."""
    empty = [p for p in parts if not splits.get(p)]
    if empty:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        raise SampotError(
            f"the {' and '.join(empty)} part of the split of {config.data} is empty ({sizes} images of "
            f"{len(dataset.ids)}); this stage needs images there: use a larger data set or a --split-file with "
            "other parts."
        )


def train_regressor_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    force: bool = False,
    workers: Workers | None = None,
) -> tuple[SegmentationRegressor, list[dict[str, float]]]:
    """Build the train and val sets, fit the regressor, write ``regressor.pt`` (with its full provenance) and
    ``regressor_history.csv``. With ``resume``, reuse them if this stage already finished from the same settings,
    split and masks. ``workers``: where the per-image work runs (default: ``config.workers`` / ``scheduler``)."""
    if config.regressor is not None:
        raise SampotError("this run uses a regressor trained elsewhere (regressor=...): there is nothing to train.")
    folder, dataset = open_run(config, dataset)
    lazy = _lazy(config, model)
    with folder.locked(), ExitStack() as stack:  # stack: the workers, started only when needed
        full, split = resolve_split(config, dataset, force=force)
        write_config(config)
        splits = limit(full, config.max_images)
        _require_parts(splits, ("train", "val"), config, dataset)
        seen = {part: mask_hashes(dataset, splits[part], config.structure) for part in ("train", "val")}
        inputs = {"data:train+val masks": data_identity(seen["train"] | seen["val"])}
        settings = stage_settings(config, "train")
        if resume and folder.reusable("train", settings, split, inputs) is None:
            regressor, _ = load_regressor(folder.path / "regressor.pt", device=config.device)
            return regressor, read_csv(folder.path / "regressor_history.csv")
        folder.begin("train", settings, split, inputs)
        net = lazy.get()
        pool = stack.enter_context(_workers(config, workers))
        source = pool.share(net, lambda: model_ref(config))
        data = pool.share(dataset, lambda: DatasetRef(str(dataset.root)))
        common = dict(structure=config.structure, size=config.regressor_size, sharpness=config.sharpness,
                      n_synthetic=config.n_synthetic, n_outside=config.n_outside, progress=progress,
                      prompts_for_image=model_prompts_for(config.prompt, config.n_outside), workers=pool)  # fmt: skip
        # Each image draws from (seed, its id): the val set's draws differ from the train set's by their images.
        train = regressor_samples(source, data, splits["train"], seed=config.seed, **common)
        val = regressor_samples(source, data, splits["val"], seed=config.seed, **common)
        regressor, history = fit_regressor(
            train, val, epochs=config.epochs, batch_size=config.batch_size, lr=config.regressor_lr, seed=config.seed,
            device=config.device, progress=progress,
        )  # fmt: skip
        meta = regressor_record(config, net, seen, split, train, val, history)
        meta["blend_weight"] = blend_weight(regressor, val)
        save_regressor(regressor, folder.path / "regressor.pt", meta)
        write_csv(folder.path / "regressor_history.csv", history)
        folder.finish("train", ["regressor.pt", "regressor_history.csv"])
    return regressor, history


def evaluate_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    force: bool = False,
    workers: Workers | None = None,
) -> dict[str, Any]:
    """Score held-out test masks with the regressor: ``regressor_eval.csv`` (one row per mask) and Pearson r with
    Dice on unseen synthetic masks, on all the model's masks and on the user's prompts (the centroid click or the
    jittered box), of the regressor, of the model's IoU head and of their blend. ``workers``: where the per-image
    work runs (default: ``config.workers`` / ``scheduler``)."""
    folder, dataset = open_run(config, dataset)
    lazy = _lazy(config, model)
    with folder.locked(), ExitStack() as stack:  # stack: the workers, started only when needed
        splits, split, path, foreign, test_masks, inputs = _test_stage_inputs(config, folder, dataset, force)
        settings = stage_settings(config, "evaluate")
        if resume and folder.reusable("evaluate", settings, split, inputs) is None:
            return read_json(folder.path / "regressor_eval.json", "evaluation summary")
        net, regressor, meta, notes = _begin_test_stage("evaluate", config, folder, lazy, path, foreign, test_masks,
                                                        settings, split, inputs)  # fmt: skip
        size = regressor.input_size  # a foreign regressor may read another size (then a note above says so)
        pool = stack.enter_context(_workers(config, workers))
        source, data, reg = _shared(pool, config, net, dataset, regressor, path)
        test = regressor_samples(
            source, data, splits["test"], config.structure, size, config.sharpness, config.n_synthetic,
            config.n_outside, config.seed, progress, model_prompts_for(config.prompt, config.n_outside), workers=pool,
        )  # fmt: skip
        scores = predict_dice(regressor, test, device=config.device)
        weight = meta.get("blend_weight")
        rows = [
            {"image_id": i, "kind": k, "dice": float(d), "regressor": float(s), "confidence": "" if np.isnan(c) else
             float(c)}
            for i, k, d, s, c in zip(test.image_id, test.kind, test.dice, scores, test.confidence, strict=True)
        ]  # fmt: skip
        initial_kind = "model_centroid" if config.prompt == "click" else "model_user_box"
        rows += pool.map(
            _user_prompt_row,
            splits["test"],
            desc="user prompts",
            progress=progress,
            kwargs=dict(config=config, model=source, dataset=data, regressor=reg, kind=initial_kind),
        )
        write_csv(folder.path / "regressor_eval.csv", rows)
        synth = [r for r in rows if r["kind"] == "synthetic"]
        own = [r for r in rows if r["kind"] != "synthetic"]  # every mask of the model's, the user's prompts too
        initial = [r for r in rows if r["kind"] == initial_kind]
        if weight is not None:
            for r in own:
                r["blend"] = weight * r["regressor"] + (1 - weight) * r["confidence"]
        summary = {
            "n_synthetic": len(synth),
            "n_model": len(own),
            "n_initial": len(initial),
            "r_regressor_synthetic": column_r(synth, "regressor"),
            "r_regressor_all": column_r(rows, "regressor"),
            "r_regressor_model": column_r(own, "regressor"),
            "r_confidence_model": column_r(own, "confidence"),
            "r_blend_model": column_r(own, "blend") if weight is not None else None,
            "r_regressor_initial": column_r(initial, "regressor"),
            "r_confidence_initial": column_r(initial, "confidence"),
            "blend_weight": weight,
            "regressor_foreign": notes,
            "regressor_origin": describe_origin(meta),
        }
        if config.prompt == "click":  # the paper's names (chapter 3, the CLI): the initial prompt is the centroid
            summary |= {"n_centroid": len(initial), "r_regressor_centroid": summary["r_regressor_initial"],
                        "r_confidence_centroid": summary["r_confidence_initial"]}  # fmt: skip
        write_json(folder.path / "regressor_eval.json", summary)
        folder.finish("evaluate", ["regressor_eval.csv", "regressor_eval.json"])
    return summary


def _shared(
    pool: Workers, config: ExperimentConfig, net: PromptableModel, dataset: FolderDataset,
    regressor: SegmentationRegressor, path: Path,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """(model, data set, regressor) as a stage's tasks get them: these objects serially, references (names, paths,
    the regressor file's hash) that each worker process loads once when the work is spread."""
    if not pool.parallel:
        return net, dataset, regressor
    return model_ref(config), DatasetRef(str(dataset.root)), RegressorRef(str(path), sha256_file(path), config.device)


def _user_prompt_row(
    image_id: str, *, config: ExperimentConfig, model: Any, dataset: Any, regressor: Any, kind: str
) -> dict[str, Any]:
    """The evaluation's row of one test image's user prompt: true Dice, the regressor's score (the score evolution's
    step 0 gets for the same prompt) and the model's confidence (a task a worker may run)."""
    image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
    scorer = RegressorScorer(regressor, image, config.sharpness, device=config.device)
    m = measure_prompt(model, model.embed(image), user_prompt(config, image_id, truth), scorer, truth)
    return {"image_id": image_id, "kind": kind, "dice": m["dice"], "regressor": m["score"],
            "confidence": m["confidence"]}  # fmt: skip


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
    """Evolve the user's prompt of every test image with each of ``config.scorers`` (the regressor with the safeguards
    on, and off for clicks; the others with them on; the regressor on each extra box jitter): ``evolution.csv`` (one
    row per image and group), ``trajectories.json``, and ``summary.json`` (per group: counts improved / unchanged /
    worse / drops / catastrophes and mean Dice; the share of the oracle's gain; the regressor's evaluation when that
    stage finished here from the same regressor; the data sets involved).

    ``workers``: where the per-image work runs (default: ``config.workers`` / ``scheduler``). Each finished image is
    kept in ``out/evolve_parts/<key>/<id>.json`` (key: a hash of the stage's settings, split and inputs) until the
    stage finishes, when the folder is deleted; with ``resume``, an interrupted stage redoes only the images it has
    no part of. Without ``resume`` every image is redone."""
    folder, dataset = open_run(config, dataset)
    lazy = _lazy(config, model)
    with folder.locked(), ExitStack() as stack:  # stack: the workers, started only when needed
        splits, split, path, foreign, test_masks, inputs = _test_stage_inputs(config, folder, dataset, force)
        evaluation = None
        if folder.reusable("evaluate", stage_settings(config, "evaluate"), split, inputs) is None:
            evaluation = read_json(folder.path / "regressor_eval.json", "evaluation summary")
            inputs["regressor_eval.json"] = sha256_file(folder.path / "regressor_eval.json")
        settings = stage_settings(config, "evolve")
        if resume and folder.reusable("evolve", settings, split, inputs) is None:
            return read_json(folder.path / "summary.json", "summary")
        net, regressor, meta, notes = _begin_test_stage("evolve", config, folder, lazy, path, foreign, test_masks,
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
        pool = stack.enter_context(_workers(config, workers))
        source, data, reg = _shared(pool, config, net, dataset, regressor, path)
        task = dict(config=config, model=source, dataset=data, regressor=reg, weight=weight)
        rule, rule_choice = None, None
        if RULE in config.scorers:
            rule, rule_choice = _do_no_harm(config, splits, pool, task, weight, path, progress)
        parts = StageParts(folder.path / "evolve_parts", settings_hash({"settings": settings, "split": split,
                                                                     "inputs": inputs}), keep=resume)  # fmt: skip
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
            summary[group]["share_of_oracle_gain"] = share_of_oracle_gain(summary[group], summary.get("oracle"))
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
    regressor's evolution (group "on") with the do-no-harm rule's winner, as group ``do-no-harm``.
    ``truth_per_step``: every step records its true Dice (a full-size mask per step), for the selection metrics."""
    guarded = Safeguards(**config.safeguards)
    image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
    reg = RegressorScorer(regressor, image, config.sharpness, device=config.device)
    scorers = {"regressor": reg, "confidence": ConfidenceScorer(reg.size),
               "oracle": OracleScorer(truth, reg.size, config.sharpness, config.device)}  # fmt: skip
    if weight is not None:
        scorers["blend"] = BlendScorer(reg, weight)
    rows, trajectories = [], {}
    for group, scorer_name, guard_name, jitter in plan:
        start = user_prompt(replace(config, box_jitter=jitter), image_id, truth)
        res = evolve_prompt(
            model, scorers[scorer_name], image, start, steps=config.steps, lr=config.lr,
            optimizer=config.optimizer, sharpness=config.sharpness,
            safeguards=guarded if guard_name == "on" else Safeguards.off(), seed=config.seed,
            gt_mask=truth if truth_per_step else None,
        )  # fmt: skip
        runs = [(group, scorer_name, res)]
        if rule is not None and group == "on":
            runs.append((RULE, scorer_name, rule.apply(res)))
        for name, scored_by, run in runs:
            rows.append({
                "image_id": image_id, "group": name, "scorer": scored_by, "safeguards": guard_name,
                "box_jitter": jitter if config.prompt == "box" else "", "x0": run.initial.x, "y0": run.initial.y,
                "x": run.best.x, "y": run.best.y, "best_step": run.best_step, "score0": run.initial.score,
                "score": run.best.score,
            } | truth_gain(run, truth))  # fmt: skip
            trajectories[f"{image_id}/{name}"] = run.to_dict()
    return {"rows": rows, "trajectories": trajectories}


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
        raise SampotError("the do-no-harm rule chooses its margin on the validation split, which is empty here: "
                          "give --margin M (a predicted Dice gain in [0, 1]) or a split with validation images.")
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
    return DoNoHarm(choice["margin"], weight), choice | {"chosen_on": f"{len(val)} validation images"}
