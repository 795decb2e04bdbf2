"""The whole SAMPOT experiment on a folder-format data set, in stages that hand results on through files.

split -> regressor training set (level-set masks + the model's own masks) -> regressor -> its evaluation against
the model's confidence -> evolution of the centroid click on the test split, with and without safeguards.
Each stage reads what it needs from ``out`` and writes its results there, so notebooks can run them one by one.

The settings live in :mod:`sampot_lib.config`, the run folder (lock, manifest, split, CSV/JSON) in
:mod:`sampot_lib.runs`, the regressor's training set in :mod:`sampot_lib.training_set`. Every stage holds the
folder's lock, records itself in ``manifest.json`` and, with ``resume=True``, is skipped when it already finished
from the same settings, split and inputs.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sampot_lib.config import ExperimentConfig, stage_settings
from sampot_lib.data.folder import FolderDataset
from sampot_lib.errors import SampotError
from sampot_lib.evolve import Safeguards, evolve_prompt
from sampot_lib.metrics import dice, pearson_r
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.registry import load_model
from sampot_lib.prompts import Prompt, predict, predict_mask
from sampot_lib.regressor import (
    RegressorData,
    SegmentationRegressor,
    check_regressor,
    describe_origin,
    fit_regressor,
    load_regressor,
    predict_dice,
    save_regressor,
)
from sampot_lib.runs import (
    RunFolder,
    limit,
    open_dataset,
    read_csv,
    read_json,
    resolve_split,
    sha256_file,
    write_config,
    write_csv,
    write_json,
)
from sampot_lib.scoring import BlendScorer, ConfidenceScorer, OracleScorer, RegressorScorer, choose_blend_weight
from sampot_lib.synth import initial_prompt
from sampot_lib.training_set import data_identity, mask_hashes, model_prompts_for, regressor_samples

# A drop of this much Dice is what the paper's figure 6 shows as a catastrophe (a mask outside the lung).
CATASTROPHE_DROP = 0.2
# Issue 8's goal: no image may lose more than this much Dice ("drops" in a summary).
DROP = 0.05
# Changes smaller than this are "unchanged": below one pixel row of a lung's boundary at 1024 px.
UNCHANGED_TOL = 1e-3
#: The numbers a summary reports per safeguard setting; summarise_seeds gives their mean and spread over seeds.
HEADLINE = ("n", "improved", "unchanged", "worse", "drops", "catastrophes", "mean_gain", "median_gain",
            "mean_dice_initial", "mean_dice_evolved")  # fmt: skip
REGRESSOR_HEADLINE = ("r_regressor_synthetic", "r_regressor_all", "r_regressor_model", "r_confidence_model",
                      "r_blend_model", "r_regressor_initial", "r_confidence_initial", "r_regressor_centroid",
                      "r_confidence_centroid", "blend_weight")  # fmt: skip


def build_model(config: ExperimentConfig) -> PromptableModel:
    return load_model(config.model, config.checkpoint, config.device, mask_output=config.mask_output)


class _LazyModel:
    """The model, loaded the first time a stage needs it (with ``resume``, maybe never)."""

    def __init__(self, config: ExperimentConfig, model: PromptableModel | None = None):
        self.config, self.model = config, model

    def get(self) -> PromptableModel:
        if self.model is None:
            self.model = build_model(self.config)
        return self.model


def _lazy(config: ExperimentConfig, model: PromptableModel | _LazyModel | None) -> _LazyModel:
    return model if isinstance(model, _LazyModel) else _LazyModel(config, model)


def _begin(config: ExperimentConfig, dataset: FolderDataset | None) -> tuple[RunFolder, FolderDataset]:
    """Refuse early if another run holds the folder; validate the data set (before anything is written)."""
    folder = RunFolder(config.out_dir)
    folder.assert_unlocked()
    return folder, dataset or open_dataset(config)


def user_prompt(config: ExperimentConfig, image_id: str, truth: np.ndarray) -> Prompt:
    """The simulated user's first prompt on one test image: the centroid click (paper 3.3) or the structure's box
    jittered by ``config.box_jitter``, seeded by the run's seed and the image's id (the same box in every stage)."""
    rng = np.random.default_rng([config.seed, zlib.crc32(image_id.encode())])
    return initial_prompt(truth, config.prompt, config.box_jitter, rng)


def blend_weight(regressor: SegmentationRegressor, val: RegressorData) -> float | None:
    """The weight of :class:`~sampot_lib.scoring.BlendScorer` chosen on the validation set's model masks (the
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
    inputs = _regressor_inputs(config, path, foreign) | {"data:test masks": data_identity(test_masks)}
    return splits, split, path, foreign, test_masks, inputs


def _begin_test_stage(
    stage: str, config: ExperimentConfig, folder: RunFolder, lazy: _LazyModel, path: Path, foreign: bool,
    test_masks: dict[str, str], settings: dict[str, Any], split: str, inputs: dict[str, str],
) -> tuple[PromptableModel, SegmentationRegressor, dict[str, Any], list[str]]:  # fmt: skip
    """Load the model and the checked regressor, then record ``stage`` as begun: (model, regressor, its record,
    warnings about a foreign regressor)."""
    net = lazy.get()
    regressor, meta = load_regressor(path, device=config.device)
    notes = check_regressor(meta, _expected(config, net, test_masks), allow_foreign=foreign)
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


def regressor_source(config: ExperimentConfig) -> tuple[Path, bool]:
    """(regressor file, whether it is foreign: given with ``config.regressor`` rather than trained in ``out``)."""
    if config.regressor is not None:
        return Path(config.regressor), True
    return config.out_dir / "regressor.pt", False


def _expected(config: ExperimentConfig, model: PromptableModel, test_masks: dict[str, str] | None) -> dict[str, Any]:
    return {
        "model": config.model, "mask_output": getattr(model, "mask_output", config.mask_output),
        "structure": config.structure, "prompt": config.prompt, "sharpness": config.sharpness,
        "input_size": config.regressor_size, "test_masks": test_masks,
    }  # fmt: skip


def _regressor_inputs(config: ExperimentConfig, path: Path, foreign: bool) -> dict[str, str]:
    if not path.is_file():
        raise SampotError(f"regressor file {path} does not exist; train one with `sampot train-regressor` or "
                          "`sampot run`.")  # fmt: skip
    return {("file:" + str(path.resolve())) if foreign else path.name: sha256_file(path)}


def train_regressor_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    force: bool = False,
) -> tuple[SegmentationRegressor, list[dict[str, float]]]:
    """Build the train and val sets, fit the regressor, write ``regressor.pt`` (with its full provenance) and
    ``regressor_history.csv``. With ``resume``, reuse them if this stage already finished from the same settings,
    split and masks."""
    if config.regressor is not None:
        raise SampotError("this run uses a regressor trained elsewhere (regressor=...): there is nothing to train.")
    folder, dataset = _begin(config, dataset)
    lazy = _lazy(config, model)
    with folder.locked():
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
        common = dict(structure=config.structure, size=config.regressor_size, sharpness=config.sharpness,
                      n_synthetic=config.n_synthetic, n_outside=config.n_outside, progress=progress,
                      prompts_for_image=model_prompts_for(config.prompt, config.n_outside))  # fmt: skip
        # The val set draws from the same seed as the train set, as before the move (numbers unchanged).
        train = regressor_samples(net, dataset, splits["train"], seed=config.seed, **common)
        val = regressor_samples(net, dataset, splits["val"], seed=config.seed, **common)
        regressor, history = fit_regressor(
            train, val, epochs=config.epochs, batch_size=config.batch_size, lr=config.regressor_lr, seed=config.seed,
            device=config.device, progress=progress,
        )  # fmt: skip
        meta = provenance(config, net, seen, split, train, val, history)
        meta["blend_weight"] = blend_weight(regressor, val)
        save_regressor(regressor, folder.path / "regressor.pt", meta)
        write_csv(folder.path / "regressor_history.csv", history)
        folder.finish("train", ["regressor.pt", "regressor_history.csv"])
    return regressor, history


def provenance(
    config: ExperimentConfig,
    model: PromptableModel,
    seen: dict[str, dict[str, str]],
    split: str,
    train: Any,
    val: Any,
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """What a regressor file records about what it learned from (checked by :func:`check_regressor`)."""
    from sampot_lib import __version__

    ckpt = Path(config.checkpoint).name if config.checkpoint else f"{config.model} (registry)"
    return {
        "data": str(config.data), "data_name": Path(config.data).name,
        "data_identity": data_identity(seen["train"] | seen["val"]), "split_hash": split, "seed": config.seed,
        "structure": config.structure, "model": config.model, "checkpoint": ckpt,
        "mask_output": getattr(model, "mask_output", config.mask_output), "prompt": config.prompt,
        "input_size": config.regressor_size, "sharpness": config.sharpness, "sampot_version": __version__,
        "n_train_ids": len(seen["train"]), "n_val_ids": len(seen["val"]),
        "train_masks": seen["train"], "val_masks": seen["val"],
        "n_train": len(train), "n_val": len(val), "epochs": config.epochs,
        "best_val_mse": min(h["val_mse"] for h in history),
    }  # fmt: skip


def load_run_regressor(
    config: ExperimentConfig,
    model: PromptableModel,
    test_ids: list[str] | None = None,
    dataset: FolderDataset | None = None,
) -> tuple[SegmentationRegressor, dict[str, Any], list[str]]:
    """The regressor a stage (or a notebook chapter) of this run uses, checked: (regressor, its record, warnings).

    Its own (``out/regressor.pt``) must come from a finished, unchanged training stage of this folder and fit the
    model, structure, prompt kind, sharpness and input size, and have seen none of ``test_ids``; a foreign one
    (``config.regressor``) is checked the same way, but a mismatch is returned as a warning instead.
    """
    path, foreign = regressor_source(config)
    if not foreign:
        RunFolder(config.out_dir).require("train", stage_settings(config, "train"))
    regressor, meta = load_regressor(path, device=config.device)
    test = mask_hashes(dataset, test_ids, config.structure) if test_ids and dataset is not None else None
    warnings = check_regressor(meta, _expected(config, model, test), allow_foreign=foreign)
    return regressor, meta, warnings


def evaluate_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Score held-out test masks with the regressor: ``regressor_eval.csv`` (one row per mask) and Pearson r with
    Dice on unseen synthetic masks, on all the model's masks and on the user's prompts (the centroid click or the
    jittered box), of the regressor, of the model's IoU head and of their blend."""
    folder, dataset = _begin(config, dataset)
    lazy = _lazy(config, model)
    with folder.locked():
        splits, split, path, foreign, test_masks, inputs = _test_stage_inputs(config, folder, dataset, force)
        settings = stage_settings(config, "evaluate")
        if resume and folder.reusable("evaluate", settings, split, inputs) is None:
            return read_json(folder.path / "regressor_eval.json", "evaluation summary")
        net, regressor, meta, notes = _begin_test_stage("evaluate", config, folder, lazy, path, foreign, test_masks,
                                                        settings, split, inputs)  # fmt: skip
        size = regressor.input_size  # a foreign regressor may read another size (then a note above says so)
        test = regressor_samples(
            net, dataset, splits["test"], config.structure, size, config.sharpness, config.n_synthetic,
            config.n_outside, config.seed, progress, model_prompts_for(config.prompt, config.n_outside),
        )  # fmt: skip
        scores = predict_dice(regressor, test, device=config.device)
        weight = meta.get("blend_weight")
        rows = [
            {"image_id": i, "kind": k, "dice": float(d), "regressor": float(s), "confidence": "" if np.isnan(c) else
             float(c)}
            for i, k, d, s, c in zip(test.image_id, test.kind, test.dice, scores, test.confidence, strict=True)
        ]  # fmt: skip
        initial_kind = "model_centroid" if config.prompt == "click" else "model_user_box"
        for image_id in tqdm(splits["test"], desc="user prompts", unit="image", disable=not progress):
            image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
            prompt = user_prompt(config, image_id, truth)
            emb = net.embed(image)
            scorer = RegressorScorer(regressor, image, config.sharpness, device=config.device)
            with torch.no_grad():  # the score evolution's step 0 gets for the same prompt
                small = predict(net, emb, prompt, output_size=(scorer.size, scorer.size))
                score = float(scorer(small.logits, small.confidence))
            true = dice(predict_mask(net, emb, prompt), truth)
            rows.append({"image_id": image_id, "kind": initial_kind, "dice": true, "regressor": score,
                         "confidence": float(small.confidence)})  # fmt: skip
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
            "r_regressor_synthetic": _r(synth, "regressor"),
            "r_regressor_all": _r(rows, "regressor"),
            "r_regressor_model": _r(own, "regressor"),
            "r_confidence_model": _r(own, "confidence"),
            "r_blend_model": _r(own, "blend") if weight is not None else None,
            "r_regressor_initial": _r(initial, "regressor"),
            "r_confidence_initial": _r(initial, "confidence"),
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


def _r(rows: list[dict[str, Any]], column: str) -> float | None:
    """Pearson r of ``column`` with the true Dice; None when it is undefined (under 3 rows, or a constant)."""
    if len(rows) < 3:
        return None
    r = pearson_r([row[column] for row in rows], [row["dice"] for row in rows])
    return None if np.isnan(r) else r


def evolve_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
    *,
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Evolve the user's prompt of every test image with each of ``config.scorers`` (the regressor with the safeguards
    on, and off for clicks; the others with them on; the regressor on each extra box jitter): ``evolution.csv`` (one
    row per image and group), ``trajectories.json``, and ``summary.json`` (per group: counts improved / unchanged /
    worse / drops / catastrophes and mean Dice; the share of the oracle's gain; the regressor's evaluation when that
    stage finished here from the same regressor; the data sets involved)."""
    folder, dataset = _begin(config, dataset)
    lazy = _lazy(config, model)
    with folder.locked():
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
        guarded = Safeguards(**config.safeguards)
        # (summary group, scorer, safeguards, user's box jitter): the regressor with the safeguards, and for clicks
        # without them too (the paper's setting), every other scorer with them, and the regressor on the extra
        # jitters of the user's box.
        plan = [("on", "regressor", "on", config.box_jitter)]
        if config.prompt == "click":
            plan.append(("off", "regressor", "off", config.box_jitter))
        plan = [p for p in plan if "regressor" in config.scorers]
        plan += [(name, name, "on", config.box_jitter) for name in config.scorers if name != "regressor"]
        if config.prompt == "box" and "regressor" in config.scorers:
            plan += [(f"jitter_{j:g}", "regressor", "on", j) for j in config.extra_jitters if j != config.box_jitter]
        weight = meta.get("blend_weight")
        if "blend" in config.scorers and weight is None:
            raise SampotError(f"the regressor {path} records no blend weight (trained by an older sampot); retrain it "
                              "or drop 'blend' from the scorers.")  # fmt: skip
        rows, trajectories = [], {}
        for image_id in tqdm(splits["test"], desc="evolution", unit="image", disable=not progress):
            image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
            reg = RegressorScorer(regressor, image, config.sharpness, device=config.device)
            scorers = {"regressor": reg, "confidence": ConfidenceScorer(reg.size),
                       "oracle": OracleScorer(truth, reg.size, config.sharpness, config.device)}  # fmt: skip
            if weight is not None:
                scorers["blend"] = BlendScorer(reg, weight)
            for group, scorer_name, guard_name, jitter in plan:
                start = user_prompt(replace(config, box_jitter=jitter), image_id, truth)
                # No per-step true Dice (a full-size mask per step): only the first and the winning masks count.
                res = evolve_prompt(
                    net, scorers[scorer_name], image, start, steps=config.steps, lr=config.lr,
                    optimizer=config.optimizer, sharpness=config.sharpness,
                    safeguards=guarded if guard_name == "on" else Safeguards.off(), seed=config.seed,
                )  # fmt: skip
                d0, d1 = dice(res.initial_mask, truth), dice(res.best_mask, truth)
                rows.append({
                    "image_id": image_id, "group": group, "scorer": scorer_name, "safeguards": guard_name,
                    "box_jitter": jitter if config.prompt == "box" else "", "x0": res.initial.x, "y0": res.initial.y,
                    "x": res.best.x, "y": res.best.y, "best_step": res.best_step, "score0": res.initial.score,
                    "score": res.best.score, "dice0": d0, "dice": d1, "gain": d1 - d0,
                })  # fmt: skip
                trajectories[f"{image_id}/{group}"] = res.to_dict()
        write_csv(folder.path / "evolution.csv", rows)
        nonfinite = write_json(folder.path / "trajectories.json", trajectories, indent=None, nonfinite="null")
        summary: dict[str, Any] = {group: summarise([r for r in rows if r["group"] == group])
                                   for group in dict.fromkeys(p[0] for p in plan)}  # fmt: skip
        if "oracle" in summary and "on" in summary and summary["oracle"]["mean_gain"] > 0:
            summary["share_of_oracle_gain"] = summary["on"]["mean_gain"] / summary["oracle"]["mean_gain"]
        if evaluation is not None:
            summary["regressor"] = evaluation
        summary["data"] = str(config.data)
        summary["regressor_file"] = str(path) if foreign else path.name  # its own: relative to the folder
        summary["regressor_origin"] = describe_origin(meta)
        summary["regressor_foreign"] = notes
        if nonfinite:
            summary["nonfinite_in_trajectories"] = nonfinite
        summary["config"] = config.to_dict()
        write_json(folder.path / "summary.json", summary)
        folder.finish("evolve", ["evolution.csv", "trajectories.json", "summary.json"])
    return summary


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of improved / unchanged / worse images, mean and median gain, and catastrophes (drop > 0.2)."""
    gains = np.array([float(r["gain"]) for r in rows])
    if len(gains) == 0:
        raise SampotError("no evolution results to summarise: the test split is empty.")
    return {
        "n": len(gains),
        "improved": int((gains > UNCHANGED_TOL).sum()),
        "unchanged": int((np.abs(gains) <= UNCHANGED_TOL).sum()),
        "worse": int((gains < -UNCHANGED_TOL).sum()),
        "drops": int((gains < -DROP).sum()),
        "catastrophes": int((gains < -CATASTROPHE_DROP).sum()),
        "mean_gain": float(gains.mean()),
        "median_gain": float(np.median(gains)),
        "mean_dice_initial": float(np.mean([float(r["dice0"]) for r in rows])),
        "mean_dice_evolved": float(np.mean([float(r["dice"]) for r in rows])),
    }


def summarise_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1) over seeds of every headline number of per-seed summaries
    ({seed: summary as :func:`evolve_stage` returns it}).

    Returns {"seeds", "mean": {"on": {...}, "off": {...}, "regressor": {...}}, "sd": (the same layout), "n": (how
    many seeds had the number: an undefined r is left out), "per_seed"}. sd is None with fewer than two values.
    """
    if not per_seed:
        raise SampotError("no per-seed results to summarise.")
    # every evolution group any seed has ("on", "off", "confidence", "oracle", "jitter_0.05", ...) and the evaluation
    groups = {g: HEADLINE for s in per_seed.values() for g, v in s.items() if isinstance(v, dict) and "mean_gain" in v}
    groups["regressor"] = REGRESSOR_HEADLINE
    mean: dict[str, dict[str, float | None]] = {}
    sd: dict[str, dict[str, float | None]] = {}
    count: dict[str, dict[str, int]] = {}
    for group, keys in groups.items():
        mean[group], sd[group], count[group] = {}, {}, {}
        for key in keys:
            vals = np.array([float(s[group][key]) for s in per_seed.values()
                             if group in s and s[group].get(key) is not None], dtype=np.float64)  # fmt: skip
            count[group][key] = len(vals)
            mean[group][key] = float(vals.mean()) if len(vals) else None
            sd[group][key] = float(vals.std(ddof=1)) if len(vals) > 1 else None
    return {"seeds": [int(k) for k in per_seed], "sd_ddof": 1, "mean": mean, "sd": sd, "n": count,
            "per_seed": {str(k): v for k, v in per_seed.items()}}  # fmt: skip


def _run_one(
    config: ExperimentConfig, dataset: FolderDataset, model: _LazyModel, progress: bool, resume: bool, force: bool
) -> dict[str, Any]:
    if config.regressor is None:
        train_regressor_stage(config, model, dataset, progress, resume=resume, force=force)
    evaluate_stage(config, model, dataset, progress, resume=resume, force=force)
    return evolve_stage(config, model, dataset, progress, resume=resume, force=force)


def run_experiment(
    config: ExperimentConfig, progress: bool = True, *, resume: bool = False, force: bool = False
) -> dict[str, Any]:
    """All stages with one model load and one validation of the data set: train the regressor (unless
    ``config.regressor`` names one), evaluate it, evolve the test split.

    With ``config.seeds``, the regressor training and the evolution run once per seed in ``out/seed_<k>/``, all on
    the split made with ``config.seed``, and ``out/summary.json`` holds the mean and spread over seeds
    (:func:`summarise_seeds`). ``resume``: reuse every stage that finished from the same settings, split and inputs;
    ``force``: delete results made on another split instead of refusing.
    """
    folder, dataset = _begin(config, None)  # validated once: every file of the set is read
    model = _LazyModel(config)
    if progress and folder.path.is_dir() and not force:  # say what was found before reusing or redoing it
        for problem in folder.problems():
            print(f"note: {problem}; {'redoing what it affects' if resume else 'every stage is redone'}.",
                  file=sys.stderr)  # fmt: skip
    if config.seeds is None:
        return _run_one(config, dataset, model, progress, resume, force)
    with folder.locked():
        _, split = resolve_split(config, dataset, force=force)
        write_config(config)
        split_file = config.split_file or str(folder.path / "splits.json")
        per_seed = {}
        for k in config.seeds:
            sub = replace(config, out=str(folder.path / f"seed_{k}"), seed=k, seeds=None, split_file=split_file)
            per_seed[k] = _run_one(sub, dataset, model, progress, resume, force)
        inputs = {f"seed_{k}/summary.json": sha256_file(folder.path / f"seed_{k}" / "summary.json")
                  for k in config.seeds}  # fmt: skip
        folder.begin("aggregate", {"seeds": config.seeds}, split, inputs)
        summary = summarise_seeds(per_seed) | {"config": config.to_dict()}
        write_json(folder.path / "summary.json", summary)
        folder.finish("aggregate", ["summary.json"])
    return summary
