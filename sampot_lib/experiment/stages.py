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

import io
import os
import sys
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sampot_lib.data.copies import identical_files
from sampot_lib.data.folder import FolderDataset
from sampot_lib.errors import SampotError
from sampot_lib.experiment.cleanup import remove_stages, with_dependents
from sampot_lib.experiment.config import ExperimentConfig, comparable_settings, settings_hash, stage_settings
from sampot_lib.experiment.parallel import DatasetRef, ModelRef, RegressorRef, Workers
from sampot_lib.experiment.provenance import (
    data_identity,
    expected_record,
    image_hashes,
    mask_hashes,
    regressor_inputs,
    regressor_record,
    regressor_source,
)
from sampot_lib.experiment.records import read_csv, read_json, write_csv, write_json
from sampot_lib.experiment.runfolder import RunFolder
from sampot_lib.experiment.setup import limit, open_dataset, preview_split, resolve_split, write_config
from sampot_lib.experiment.summary import column_r
from sampot_lib.files import sha256_file, write_bytes
from sampot_lib.method.evolve import measure_prompt
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.regressor import SegmentationRegressor, load_regressor, save_regressor
from sampot_lib.method.regressor_origin import check_regressor, describe_origin
from sampot_lib.method.regressor_training import RegressorData, fit_regressor, predict_dice
from sampot_lib.method.scoring import RegressorScorer, choose_blend_weight
from sampot_lib.method.synth import user_prompt_for
from sampot_lib.method.training_set import model_prompts_for, regressor_samples
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.registry import load_model, model_names


def build_model(config: ExperimentConfig) -> PromptableModel:
    return load_model(config.model, config.checkpoint, config.device, mask_output=config.mask_output)


class LazyModel:
    """The model, loaded the first time a stage needs it (with ``resume``, maybe never); a name no loader knows is
    refused when it is made, before a stage writes anything."""

    def __init__(self, config: ExperimentConfig, model: PromptableModel | None = None):
        # the config takes any name (a test or a plugin may register a loader), so the name is checked here
        if model is None and config.model not in model_names():
            raise SampotError(f"parameter 'model' is {config.model!r}, which no loader knows; known: "
                              f"{', '.join(model_names())}.")  # fmt: skip
        self.config, self.model = config, model

    def get(self) -> PromptableModel:
        if self.model is None:
            self.model = build_model(self.config)
        return self.model


def lazy_model(config: ExperimentConfig, model: PromptableModel | LazyModel | None) -> LazyModel:
    return model if isinstance(model, LazyModel) else LazyModel(config, model)


def model_ref(config: ExperimentConfig) -> ModelRef:
    """What a worker process loads for ``config``'s model. The workers share an embedding store, so each image is
    encoded once: ``$SAMPOT_EMBEDDINGS``, else ``out/embeddings`` (kept for later runs into the same folder)."""
    store = os.environ.get("SAMPOT_EMBEDDINGS") or str(config.out_dir.resolve() / "embeddings")
    return ModelRef(config.model, config.checkpoint, config.device, config.mask_output, store)


@contextmanager
def stage_workers(config: ExperimentConfig, workers: Workers | None) -> Iterator[Workers]:
    """``workers`` if the caller gives them (one cluster for several stages), else the config's, stopped after."""
    if workers is not None:
        yield workers
        return
    with Workers(config.workers, config.scheduler, dashboard=config.dashboard) as own:
        yield own


def open_run(
    config: ExperimentConfig, dataset: FolderDataset | None, parts: tuple[str, ...] = (), force: bool = False
) -> tuple[RunFolder, FolderDataset]:
    """Refuse early, before the run folder is made, written or (``force``) cleared: another run holding it, a data set
    that is not usable, an ``out/splits.json`` no run there made, a split whose ``parts`` (cut to ``max_images``)
    are empty, and a given regressor that learned from test images this run would measure it on."""
    folder = RunFolder(config.out_dir)
    folder.assert_unlocked()
    dataset = dataset or open_dataset(config)
    splits = limit(preview_split(config, dataset, force=force), config.max_images)
    if parts:
        _require_parts(splits, parts, config, dataset)
    if {"train", "test"} <= set(parts):  # the regressor would be measured on an X-ray it learned from
        _refuse_shared_images(splits, dataset)
    if config.regressor is not None and "test" in parts:  # the test stage checks it again, with the model's settings
        _, meta = load_regressor(config.regressor)
        test = {"test_masks": mask_hashes(dataset, splits["test"], config.structure),
                "test_images": image_hashes(dataset, splits["test"])}  # fmt: skip
        check_regressor(meta, test, allow_foreign=config.allow_foreign_regressor)
    return folder, dataset


def _refuse_shared_images(splits: dict[str, list[str]], dataset: FolderDataset) -> None:
    part_of = {i: part for part, ids in splits.items() for i in ids}
    for ids in identical_files({i: dataset.image_path(i) for i in part_of}):
        if len({part_of[i] for i in ids}) > 1:
            where = ", ".join(f"{i} ({part_of[i]})" for i in ids)
            raise SampotError(f"the same image file is in two parts of the split: {where}; the regressor would be "
                              "measured on an X-ray it learned from. Give those ids one subject in the data set's "
                              "manifest.csv (a split then keeps them in one part), or remove the copies.")  # fmt: skip


def start_over(folder: RunFolder, config: ExperimentConfig, stages: tuple[str, ...], progress: bool) -> list[str]:
    """Delete what earlier runs wrote in ``folder`` for ``stages``
    (:func:`~sampot_lib.experiment.cleanup.remove_stages`), keeping the files this run reads, and say what
    went (on stderr, with ``progress``): a new run's results are then never left beside an old run's."""
    removed = remove_stages(folder, stages, keep=(config.split_file, config.regressor, config.checkpoint))
    if removed and progress:
        print(f"note: --force: removed the earlier run's results in {folder.path}: {', '.join(removed)}.",
              file=sys.stderr)  # fmt: skip
    return removed


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


def test_stage_inputs(
    config: ExperimentConfig, folder: RunFolder, dataset: FolderDataset, force: bool
) -> tuple[dict[str, list[str]], str, Path, bool, dict[str, dict[str, str]], dict[str, str]]:
    """What the evaluation and evolution stages start from: (splits, split hash, regressor file, whether it is
    foreign, {"masks": {test id: mask hash}, "images": {test id: image hash}}, the stage's input hashes). Refuses
    an empty test part and a regressor of this folder whose training stage did not finish from this run's settings
    and split."""
    full, split = resolve_split(config, dataset, force=force)
    splits = limit(full, config.max_images)
    _require_parts(splits, ("test",), config, dataset)
    write_config(config)
    path, foreign = regressor_source(config)
    if not foreign:  # the folder's regressor must come from this run's training settings and split
        folder.require("train", stage_settings(config, "train"), split)
    test = {"masks": mask_hashes(dataset, splits["test"], config.structure),
            "images": image_hashes(dataset, splits["test"])}  # fmt: skip
    inputs = regressor_inputs(config, path, foreign) | {
        "data:test masks": data_identity(test["masks"]),
        "data:test images": data_identity(test["images"]),
    }
    return splits, split, path, foreign, test, inputs


def begin_test_stage(
    stage: str, config: ExperimentConfig, folder: RunFolder, lazy: LazyModel, path: Path, foreign: bool,
    test: dict[str, dict[str, str]], settings: dict[str, Any], split: str, inputs: dict[str, str],
) -> tuple[PromptableModel, SegmentationRegressor, dict[str, Any], list[str]]:  # fmt: skip
    """Load the model and the checked regressor, then record ``stage`` as begun: (model, regressor, its record,
    warnings about a foreign regressor)."""
    net = lazy.get()
    regressor, meta = load_regressor(path, device=config.device)
    expected = expected_record(config, net, test["masks"], test["images"])
    notes = check_regressor(meta, expected, allow_foreign=foreign and config.allow_foreign_regressor)
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
    """Train the regressor: build the train and val sets, fit it, write it with its history.

    Writes ``regressor.pt`` (with its full provenance) and ``regressor_history.csv``. With ``resume``, reuse them
    if this stage already finished from the same settings, split and masks.

    Args:
        config: The run's settings.
        model: The loaded model; None: loaded from ``config`` when needed.
        dataset: The opened data set; None: opened (and validated) from ``config.data``.
        progress: Show progress bars.
        resume: Reuse the stage's results if it already finished from the same settings, split and inputs.
        force: Start the folder's training over: delete the results made on another split instead of refusing, and,
            without ``resume``, what earlier runs wrote for this stage and every stage made from it (the
            evaluation, the evolution, a summary over seeds and their ``seed_<k>/`` folders).
        workers: Where the per-image work runs; None: ``config.workers`` / ``scheduler``.

    Returns:
        The pair (regressor, history), the fitted regressor and one row per epoch of ``regressor_history.csv``.

    Raises:
        SampotError: ``config.regressor`` names a regressor trained elsewhere (there is nothing to train), another run
            holds the folder, or the data, split or settings do not allow the stage.
    """
    if config.regressor is not None:
        raise SampotError("this run uses a regressor trained elsewhere (regressor=...): there is nothing to train.")
    folder, dataset = open_run(config, dataset, ("train", "val"), force)
    lazy = lazy_model(config, model)
    with folder.locked(), ExitStack() as stack:  # stack: the workers, started only when needed
        if force and not resume:
            start_over(folder, config, tuple(sorted(with_dependents(["train"]))), progress)
        full, split = resolve_split(config, dataset, force=force)
        write_config(config)
        splits = limit(full, config.max_images)
        _require_parts(splits, ("train", "val"), config, dataset)
        seen = {part: mask_hashes(dataset, splits[part], config.structure) for part in ("train", "val")}
        seen_images = {part: image_hashes(dataset, splits[part]) for part in ("train", "val")}
        inputs = {
            "data:train+val masks": data_identity(seen["train"] | seen["val"]),
            "data:train+val images": data_identity(seen_images["train"] | seen_images["val"]),
        }
        settings = stage_settings(config, "train")
        if resume and folder.reuse("train", settings, split, inputs, say=progress):
            regressor, _ = load_regressor(folder.path / "regressor.pt", device=config.device)
            return regressor, read_csv(folder.path / "regressor_history.csv")
        folder.begin("train", settings, split, inputs)
        net = lazy.get()
        pool = stack.enter_context(stage_workers(config, workers))
        source = pool.share(net, lambda: model_ref(config))
        data = pool.share(dataset, lambda: DatasetRef(str(dataset.root), tuple(dataset.structures)))
        common = dict(structure=config.structure, size=config.regressor_size, sharpness=config.sharpness,
                      n_synthetic=config.n_synthetic, n_outside=config.n_outside, progress=progress,
                      prompts_for_image=model_prompts_for(config.prompt, config.n_outside), workers=pool)  # fmt: skip
        # Each image draws from (seed, its id): the val set's draws differ from the train set's by their images.
        # The sets are kept on disk: another number of epochs or patience retrains without remaking them.
        store = folder.path / "regressor_set.npz"
        set_settings = comparable_settings({k: settings[k] for k in TRAINING_SET_SETTINGS})
        key = settings_hash({"settings": set_settings, "split": split, "inputs": inputs})
        sets = load_training_sets(store, key) if resume else None
        if sets is None:
            sets = {part: regressor_samples(source, data, splits[part], seed=config.seed, **common)
                    for part in ("train", "val")}  # fmt: skip
            save_training_sets(store, key, sets)
        elif progress:
            print(f"training set: reused {store.name} ({len(sets['train'])} train, {len(sets['val'])} val masks)")
        train, val = sets["train"], sets["val"]
        regressor, history = fit_regressor(
            train, val, epochs=config.epochs, batch_size=config.batch_size, lr=config.regressor_lr, seed=config.seed,
            device=config.device, progress=progress, patience=config.regressor_patience,
            rank_weight=config.rank_weight, lr_schedule=config.regressor_schedule,
            precision=config.regressor_precision,
        )  # fmt: skip
        meta = regressor_record(config, net, seen, split, train, val, history, seen_images)
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
    """Score held-out test masks with the regressor.

    Writes ``regressor_eval.csv`` (one row per mask) and Pearson r with Dice on unseen synthetic masks, on all the
    model's masks and on the user's prompts (the centroid click or the jittered box), of the regressor, of the model's
    IoU head and of their blend.

    Args:
        config: The run's settings.
        model: The loaded model; None: loaded from ``config`` when needed.
        dataset: The opened data set; None: opened (and validated) from ``config.data``.
        progress: Show progress bars.
        resume: Reuse the stage's results if it already finished from the same settings, split and inputs.
        force: Delete results made on another split instead of refusing.
        workers: Where the per-image work runs; None: ``config.workers`` / ``scheduler``.

    Returns:
        The evaluation's summary (mask counts, the correlations, the blend weight), as ``regressor_eval.json`` holds it.

    Raises:
        SampotError: Another run holds the folder, the regressor is missing or does not fit this use, or the data,
            split or settings do not allow the stage.
    """
    folder, dataset = open_run(config, dataset, ("test",), force)
    lazy = lazy_model(config, model)
    with folder.locked(), ExitStack() as stack:  # stack: the workers, started only when needed
        splits, split, path, foreign, test, inputs = test_stage_inputs(config, folder, dataset, force)
        settings = stage_settings(config, "evaluate")
        if resume and folder.reuse("evaluate", settings, split, inputs, say=progress):
            return read_json(folder.path / "regressor_eval.json", "evaluation summary")
        net, regressor, meta, notes = begin_test_stage("evaluate", config, folder, lazy, path, foreign, test,
                                                        settings, split, inputs)  # fmt: skip
        size = regressor.input_size  # a foreign regressor may read another size (then a note above says so)
        pool = stack.enter_context(stage_workers(config, workers))
        source, data, reg = shared_objects(pool, config, net, dataset, regressor, path)
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


def shared_objects(
    pool: Workers, config: ExperimentConfig, net: PromptableModel, dataset: FolderDataset,
    regressor: SegmentationRegressor, path: Path,
) -> tuple[Any, Any, Any]:  # fmt: skip
    """(model, data set, regressor) as a stage's tasks get them: these objects serially, references (names, paths,
    the regressor file's hash) that each worker process loads once when the work is spread."""
    if not pool.parallel:
        return net, dataset, regressor
    data = DatasetRef(str(dataset.root), tuple(dataset.structures))
    return model_ref(config), data, RegressorRef(str(path), sha256_file(path), config.device)


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


#: The settings the regressor's training set depends on (the stage's others only change the fitting).
TRAINING_SET_SETTINGS = ("data", "structure", "split_file", "split_fractions", "seed", "max_images", "model",
                         "checkpoint", "mask_output", "n_synthetic", "n_outside", "regressor_size", "sharpness",
                         "prompt")  # fmt: skip


def save_training_sets(path: Path, key: str, sets: dict[str, RegressorData]) -> None:
    """Write the train and val sets with the hash of what made them into ``path`` (an .npz, atomically)."""
    arrays = {"key": np.array(key)}
    for part, data in sets.items():
        for name in RegressorData._FIELDS:
            value = getattr(data, name) if name != "confidence" else data._confidence()
            arrays[f"{part}.{name}"] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def load_training_sets(path: Path, key: str | None) -> dict[str, RegressorData] | None:
    """The sets :func:`save_training_sets` wrote under ``key`` (None: whatever made them); None when absent, made from
    other settings or inputs, or unreadable (then they are made again)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if key is not None and str(stored["key"]) != key:
                return None
            return {part: RegressorData(*(stored[f"{part}.{name}"] for name in RegressorData._FIELDS))
                    for part in ("train", "val")}  # fmt: skip
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None
