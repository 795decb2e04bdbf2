"""Calibrating a regressor trained elsewhere on a few labelled images of a new data set.

A regressor trained on one collection of X-rays need not rank masks well on another: scanners, pathology and label
conventions differ. Before evolving on new data, :func:`~sampot_lib.experiment.regressor_transfer.measure_transfer`
scores, on a handful of labelled images of it, the same kinds of masks the regressor is judged on (the model's own
masks and level-set masks, built by :func:`sampot_lib.method.training_set.regressor_samples` through the one scoring
path) and evolves the simulated user's prompt there: Pearson r with the true Dice, the error of its predictions, and
whether evolution helps or hurts. :func:`~sampot_lib.method.regressor_training.fine_tune` then adapts the
regressor's weights to those images, starting from its own weights.

``sampot calibrate NEW --regressor R --labelled N --out DIR`` (:func:`run_calibration`) draws the N labelled images,
seeded, from the train and validation parts of the split of run folder DIR (never its test part, so a later
``sampot run NEW --out DIR --regressor DIR/regressor_calibrated.pt`` tests on none of them), fine-tunes on 70% of
them and keeps the other 30% (at least one image) as a held-out check: the numbers before and after calibration on
those held-out images are comparable, since neither the fine-tuning nor the choice of its best epoch saw them (the
best epoch is chosen on a second draw of masks of the fine-tune images). The calibrated file records the base
regressor's record (``calibrated_from``, with its sha256) and the hash of every labelled image's mask
(``calibration_masks``): :func:`sampot_lib.method.regressor_origin.check_regressor` refuses to evaluate it on any of
them.

:mod:`sampot_lib.report.transfer` is the book's demonstration: a regressor trained on data set A, applied to B's
test images as it is and after calibration on N of B's labelled images.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.splits import load_splits, make_splits
from sampot_lib.defaults import (
    BOX_JITTER,
    CHECK_FRACTION,
    EVOLVE_MIN_GAIN,
    EVOLVE_PATIENCE,
    LR,
    MIN_LABELLED,
    N_OUTSIDE,
    N_SYNTHETIC,
    SHARPNESS,
    STEPS,
    TUNE_EPOCHS,
    TUNE_LR,
)
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig, describe_changes, made_with, same_path
from sampot_lib.experiment.provenance import calibrated_record, data_identity, image_hashes, mask_hashes
from sampot_lib.experiment.records import listed, write_json
from sampot_lib.experiment.regressor_transfer import measure_transfer, transfer_samples
from sampot_lib.experiment.runfolder import RunFolder
from sampot_lib.experiment.setup import open_dataset, resolve_split
from sampot_lib.experiment.stages import blend_weight
from sampot_lib.experiment.summary import summarise
from sampot_lib.files import sha256_file
from sampot_lib.method.prompts import Safeguards
from sampot_lib.method.regressor import load_regressor, save_regressor
from sampot_lib.method.regressor_origin import check_regressor, describe_origin, same_labelled
from sampot_lib.method.regressor_training import fine_tune
from sampot_lib.models.registry import checkpoint_identity, load_model

#: The files ``sampot calibrate`` writes into its --out (beside the split and manifest of the run folder).
CALIBRATION_FILES = ("calibration.json", "regressor_calibrated.pt")


# -- which labelled images, and the calibrated file's record ---------------------------------------------------------


def choose_labelled(
    pool: list[str],
    n: int,
    seed: int,
    check_fraction: float = CHECK_FRACTION,
    subject_of: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """A seeded choice of ``n`` of ``pool``'s ids, split into (fine-tune ids, held-out check ids): round(n *
    ``check_fraction``) checks, at least one, and at least two to fine-tune on. The same pool, n and seed give the
    same images.

    With ``subject_of`` ({id: subject}), the checks are whole subjects among the chosen images, so that no check
    image's patient is fine-tuned on (a subject that would leave fewer than two to fine-tune on is passed over; a
    choice whose every subject is too large is refused). With one image per subject the choice is the same.
    """
    if n < MIN_LABELLED:
        raise SampotError(f"calibration needs at least {MIN_LABELLED} labelled images (two to fine-tune on, one to "
                          f"check on), got {n}.")  # fmt: skip
    if n > len(pool):
        raise SampotError(f"asked for {n} labelled images, but only {len(pool)} are available.")
    rng = np.random.default_rng([seed, zlib.crc32(b"calibrate")])
    chosen = [pool[i] for i in rng.permutation(len(pool))[:n]]
    n_check = min(n - 2, max(1, round(n * check_fraction)))
    subject = subject_of or {}
    groups: dict[str, list[str]] = {}
    for image_id in chosen:  # the subjects in the order of their first chosen image
        groups.setdefault(subject.get(image_id, image_id), []).append(image_id)
    check: list[str] = []
    for images in groups.values():
        if len(check) >= n_check:
            break
        if len(check) + len(images) <= n - 2:
            check += images
    if not check:
        raise SampotError(f"the {n} labelled images belong to {len(groups)} subject(s), none of which can be held "
                          "out whole to check the calibration with two images left to fine-tune on; give a larger "
                          "--labelled.")  # fmt: skip
    return sorted(set(chosen) - set(check)), sorted(check)


# -- the whole command ------------------------------------------------------------------------------------------------


def _requested(meta: dict[str, Any], path: Path, **asked: Any) -> dict[str, Any]:
    """The settings to calibrate with: each asked value, or the regressor's own where none was asked. An asked value
    the regressor was not trained for is refused (calibration adapts to new images, not to another task)."""
    flags = {"structure": "--structure", "model": "--model", "prompt": "--prompt", "sharpness": "--sharpness",
             "mask_output": "--mask-output"}  # fmt: skip
    out = {}
    for key, want in asked.items():
        have = meta.get(key)
        if want is None:
            out[key] = have
            continue
        same = have is None or (
            abs(float(have) - float(want)) <= 1e-9 * max(1.0, abs(float(want))) if key == "sharpness"
            else str(have) == str(want)
        )  # fmt: skip
        if not same:
            raise SampotError(
                f"{flags[key]} {want} differs from the regressor's {key} {have!r} ({path}, trained on "
                f"{meta.get('data', 'an unrecorded data set')}): calibration adapts a regressor to new images, not to "
                f"another {key}; leave {flags[key]} out (or give {have}), or train a regressor for {want} with "
                "`sampot run`."
            )
        out[key] = want
    return out


def _labelled_pool(
    splits: dict[str, list[str]], dataset: FolderDataset, meta: dict[str, Any], structure: str, n: int,
    out: str | Path,
) -> tuple[list[str], dict[str, str]]:  # fmt: skip
    """(the ids labelled images may be drawn from: the train and validation parts less any image the regressor was
    trained on, {id: mask sha256}); SampotError when fewer than ``n``."""
    candidates = sorted(splits.get("train", []) + splits.get("val", []))
    hashes = mask_hashes(dataset, candidates, structure)
    images = image_hashes(dataset, candidates)
    parts = [(meta.get(f"{p}_masks", {}), meta.get(f"{p}_images", {})) for p in ("train", "val", "calibration")]
    used = {i for masks, seen in parts for i, _ in same_labelled(hashes, images, masks, seen)}
    pool = [i for i in candidates if i not in used]
    if n > len(pool):
        left = len(candidates) - len(pool)
        why = f", less {left} the regressor has already seen" if left else ""
        other = ", or a regressor trained on other images" if left else ""
        raise SampotError(
            f"--labelled {n} is more than the {len(pool)} labelled images available: the train and validation "
            f"parts of the split in {out} hold {len(candidates)}{why} (its {len(splits.get('test', []))} test images "
            "are kept for `sampot run`); "
            + (
                f"give a --labelled from {MIN_LABELLED} to {len(pool)}."
                if len(pool) >= MIN_LABELLED
                else f"calibration needs at least {MIN_LABELLED} images the regressor has not seen: use a larger data "
                f"set{other}."
            )
        )
    test = sorted(splits.get("test", []))
    test_masks, test_images = mask_hashes(dataset, test, structure), image_hashes(dataset, test)
    seen_in_test = sorted({i for masks, seen in parts for i, _ in same_labelled(test_masks, test_images, masks, seen)})
    if seen_in_test:  # `sampot run` would refuse the calibrated regressor on this split
        earlier = meta.get("calibrated_on", meta)
        where = f" (seed {earlier['seed']})" if earlier.get("seed") is not None else ""
        raise SampotError(
            f"the split in {out} puts {len(seen_in_test)} image(s) the regressor has already learned from in its test "
            f"part ({listed(seen_in_test)}), so `sampot run` could not measure the calibrated regressor there. "
            f"Calibrate with the split it was made on{where}: its --seed or --split-file, or calibrate into its run "
            "folder."
        )
    return pool, hashes


def _split_preview(folder: RunFolder, config: ExperimentConfig, dataset: FolderDataset) -> dict[str, list[str]]:
    """The split :func:`resolve_split` will give ``config``, read or made without writing it: the split file, the run
    folder's own split if it is readable, else a new one."""
    made = folder.path / "splits.json"
    for path in (config.split_file, made if made.is_file() else None):
        if path:
            try:
                return load_splits(path, dataset)
            except SampotError:
                if path == config.split_file:
                    raise
    return make_splits(dataset, config.split_fractions, seed=config.seed)


def _refuse_mixing(folder: RunFolder, data: str | Path, settings: dict[str, Any], inputs: dict[str, str],
                   force: bool) -> None:  # fmt: skip
    """SampotError when ``folder`` holds a run on another data set, or (unless ``force``) a calibration made with other
    settings or another regressor: calibrating there would mix or silently replace results."""
    for stage in ("train", "evaluate", "evolve", "calibrate"):
        entry = folder.entry(stage) or {}
        made_on = entry.get("settings", {}).get("data")
        if entry.get("status") == "done" and made_on is not None and not same_path(made_on, data):
            raise SampotError(f"{folder.path} holds a run on another data set ({made_on}; stage '{stage}'): give "
                              f"calibrate a run folder of {data}, or a new --out.")  # fmt: skip
    entry = folder.entry("calibrate") or {}
    if force or entry.get("status") != "done":
        return
    if not made_with(entry, settings):
        why = f"other settings: {describe_changes(entry.get('settings', {}), settings)}"
    elif sorted(v for k, v in entry.get("inputs", {}).items() if k.startswith("file:")) != sorted(inputs.values()):
        why = "another regressor"
    else:
        return
    raise SampotError(f"{folder.path} holds a calibration made with {why}. Give calibrate another --out, or add "
                      "--force to replace it.")  # fmt: skip


def run_calibration(
    data: str | Path,
    regressor: str | Path,
    out: str | Path,
    n_labelled: int,
    *,
    seed: int = 0,
    epochs: int = TUNE_EPOCHS,
    tune_lr: float = TUNE_LR,
    structure: str | None = None,
    model: str | None = None,
    checkpoint: str | None = None,
    mask_output: str | int | None = None,
    prompt: str | None = None,
    sharpness: float | None = None,
    box_jitter: float | None = None,
    steps: int = STEPS,
    patience: int | None = EVOLVE_PATIENCE,
    min_gain: float = EVOLVE_MIN_GAIN,
    lr: float = LR,
    optimizer: str = "adam",
    safeguards: Safeguards | None = None,
    n_synthetic: int = N_SYNTHETIC,
    n_outside: int = N_OUTSIDE,
    split_file: str | None = None,
    device: str = "cpu",
    check_fraction: float = CHECK_FRACTION,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """``sampot calibrate``: fine-tune a foreign regressor on labelled images, measured before and after.

    It measures the regressor on ``n_labelled`` labelled images of ``data``, fine-tunes it on most of them, and
    measures it again on the held-out rest.

    Writes ``calibration.json`` and ``regressor_calibrated.pt`` into the run folder ``out`` (atomically). The images
    come from the train and validation parts of ``out``'s split (made as ``sampot run`` makes it, with ``seed``, or from
    ``split_file``), leaving out any the base regressor saw. Every input is checked before anything is written.

    Args:
        data: The data set's folder.
        regressor: The foreign regressor's file.
        out: The run folder.
        n_labelled: The labelled images to use, a whole number of at least 3 (two to fine-tune on, one to check on).
        seed: The split's seed, and the choice of images and of masks.
        epochs: The fine-tuning's epochs.
        tune_lr: The fine-tuning's learning rate.
        structure: The structure; None: the regressor's (a different one asked for is refused).
        model: The model; None: the regressor's (a different one is refused).
        checkpoint: A local checkpoint for the model; None: its packaged or downloaded weights.
        mask_output: The model's mask output; None: the regressor's (a different one is refused).
        prompt: The prompt kind; None: the regressor's (a different one is refused).
        sharpness: The sigmoid's slope; None: the regressor's (a different one is refused).
        box_jitter: The jitter of the users' boxes (box prompts only); None: the default.
        steps: Evolution's model calls.
        patience: Evolution's early stopping.
        min_gain: The least rise that counts as progress for ``patience``.
        lr: Evolution's step size in pixels.
        optimizer: ``"adam"``, ``"cmaes"`` or ``"random"``.
        safeguards: Evolution's safeguards; None: the defaults, on.
        n_synthetic: Level-set masks per image.
        n_outside: Clicks outside the structure per image.
        split_file: A split JSON to use instead of making one.
        device: Where the model and the regressor run.
        check_fraction: The share of the labelled images held out to check on (at least one).
        progress: Show progress bars.
        force: Replace an earlier calibration in ``out`` made with other settings or another regressor.

    Returns:
        The report ``calibration.json`` holds (the inputs and settings, the fine-tune and check images, the
        measurements before, and on the check images before and after
        (:func:`~sampot_lib.experiment.regressor_transfer.measure_transfer`), the training history and a
        recommendation).

    Raises:
        SampotError: An input out of range or that does not fit the regressor, more labelled images than the data
            set has, too few images the regressor never saw, or an ``out`` holding a run on another data set or
            (unless ``force``) another calibration.
    """

    if isinstance(n_labelled, bool) or not isinstance(n_labelled, int) or n_labelled < MIN_LABELLED:
        raise SampotError(f"--labelled must be a whole number of at least {MIN_LABELLED} (two images to fine-tune "
                          f"on, one to check on), got {n_labelled!r}.")  # fmt: skip
    path = Path(regressor)
    base, meta = load_regressor(path, device=device)
    req = _requested(meta, path, structure=structure, model=model, prompt=prompt, sharpness=sharpness,
                     mask_output=mask_output)  # fmt: skip
    guards = safeguards if safeguards is not None else Safeguards()
    if box_jitter is not None and (req["prompt"] or "click") != "box":
        raise SampotError("--box-jitter sets the jitter of the users' boxes, and this calibration's prompts are "
                          "clicks: leave it out, or calibrate a box regressor.")  # fmt: skip
    box_jitter = BOX_JITTER if box_jitter is None else box_jitter
    config = ExperimentConfig(
        data=str(data), out=str(out), structure=req["structure"] or "left_lung", model=req["model"] or "sam_nano",
        checkpoint=checkpoint, mask_output=req["mask_output"], device=device, split_file=split_file, seed=seed,
        n_synthetic=n_synthetic, n_outside=n_outside, regressor_size=base.input_size, steps=steps,
        patience=patience, min_gain=min_gain, lr=lr,
        sharpness=float(req["sharpness"] if req["sharpness"] is not None else SHARPNESS), safeguards=asdict(guards),
        prompt=req["prompt"] or "click", box_jitter=box_jitter, optimizer=optimizer, regressor=str(path),
    )  # fmt: skip
    folder = RunFolder(config.out_dir)
    folder.assert_unlocked()
    dataset = open_dataset(config)
    net = load_model(config.model, config.checkpoint, device, mask_output=config.mask_output)
    expected = {"model": config.model, "checkpoint": checkpoint_identity(config.model, config.checkpoint),
                "mask_output": getattr(net, "mask_output", config.mask_output),
                "structure": config.structure, "prompt": config.prompt, "sharpness": config.sharpness}  # fmt: skip
    notes = check_regressor(meta, expected, can_allow=False)
    settings = {"n_labelled": n_labelled, "seed": seed, "epochs": epochs, "tune_lr": tune_lr,
                "check_fraction": check_fraction, "structure": config.structure, "model": config.model,
                "mask_output": expected["mask_output"], "prompt": config.prompt, "sharpness": config.sharpness,
                "box_jitter": box_jitter, "steps": steps, "patience": patience,
                "min_gain": min_gain, "lr": lr, "optimizer": optimizer,
                "safeguards": asdict(guards), "n_synthetic": n_synthetic, "n_outside": n_outside}  # fmt: skip
    regressor_input = {"file:" + str(path.resolve()): sha256_file(path)}
    _refuse_mixing(folder, data, settings, regressor_input, force)
    # The split this folder will use, looked at before anything is written (resolve_split writes a new one).
    _labelled_pool(_split_preview(folder, config, dataset), dataset, meta, config.structure, n_labelled, out)
    with folder.locked():
        full, split = resolve_split(config, dataset)
        pool, hashes = _labelled_pool(full, dataset, meta, config.structure, n_labelled, out)
        subjects = {i: dataset.subject_of(i) for i in pool}
        fine_ids, check_ids = choose_labelled(pool, n_labelled, seed, check_fraction, subject_of=subjects)
        labelled = {i: hashes[i] for i in fine_ids + check_ids}
        inputs = regressor_input | {"data:labelled masks": data_identity(labelled)}
        folder.begin("calibrate", settings, split, inputs)
        common = dict(size=base.input_size, prompt=config.prompt, sharpness=config.sharpness,
                      n_synthetic=n_synthetic, n_outside=n_outside, progress=progress)  # fmt: skip
        evolve = dict(prompt=config.prompt, sharpness=config.sharpness, n_synthetic=n_synthetic, n_outside=n_outside,
                      seed=seed, steps=steps, patience=patience, min_gain=min_gain, lr=lr, optimizer=optimizer,
                      safeguards=guards, box_jitter=box_jitter, device=device)  # fmt: skip
        all_ids = sorted(labelled)
        samples = transfer_samples(net, dataset, all_ids, config.structure, seed=seed, **common)
        # The best epoch is chosen on a second draw of masks of the fine-tune images: the check images stay unseen.
        tune_val = transfer_samples(net, dataset, fine_ids, config.structure, seed=np.random.default_rng([seed, 1]),
                                    **common)  # fmt: skip
        in_fine = np.isin(samples.image_id, fine_ids)
        before = measure_transfer(net, base, dataset, all_ids, config.structure, samples=samples, **evolve)
        tuned, history = fine_tune(base, samples.subset(in_fine), tune_val, epochs=epochs, lr=tune_lr, seed=seed,
                                   device=device, progress=progress)  # fmt: skip
        check = samples.subset(~in_fine)
        # The base on the check images: the same masks, and the evolution rows `before` already has for them.
        before_check = measure_transfer(net, base, dataset, check_ids, config.structure, samples=check,
                                        **(evolve | {"steps": None}))  # fmt: skip
        rows = [r for r in before["evolution"]["per_image"] if r["image_id"] in set(check_ids)]
        before_check["evolution"] = summarise(rows) | {"per_image": rows}
        after_check = measure_transfer(net, tuned, dataset, check_ids, config.structure, samples=check, **evolve)
        record = calibrated_record(meta, path, data=data, fine_masks={i: labelled[i] for i in fine_ids},
                                   check_masks={i: labelled[i] for i in check_ids}, split_hash=split, seed=seed,
                                   settings=settings, history=history,
                                   labelled_images=image_hashes(dataset, sorted(labelled)))  # fmt: skip
        record["blend_weight"] = blend_weight(tuned, tune_val)
        report = {
            "data": str(data), "regressor": str(path), "regressor_sha256": inputs["file:" + str(path.resolve())],
            "regressor_origin": describe_origin(meta),
            "regressor_notes": notes, "calibrated_regressor": "regressor_calibrated.pt",
            "regressor_size": config.regressor_size, "settings": settings,
            "fine_tune_ids": fine_ids, "check_ids": check_ids, "split_hash": split,
            "before": before, "check_before": before_check, "check_after": after_check, "history": history,
        }  # fmt: skip
        report["recommendation"] = recommendation(report)
        save_regressor(tuned, folder.path / "regressor_calibrated.pt", record)
        write_json(folder.path / "calibration.json", report)
        folder.finish("calibrate", list(CALIBRATION_FILES))
    return report


def format_or_na(x: float | None, fmt: str = ".2f") -> str:
    return "n/a" if x is None else format(x, fmt)


def recommendation(report: dict[str, Any]) -> str:
    """One paragraph for the user: how the regressor ranks masks on the labelled images before calibration, on the
    held-out ones before and after, whether evolution helped, and which regressor to use."""
    b, cb, ca = report["before"], report["check_before"], report["check_after"]
    n_check = ca["n_images"]
    na = format_or_na
    text = (f"the regressor ranks masks here with r={na(b['r_all'])} (the model's masks {na(b['r_model'])}, mean "
            f"error {b['mae']:.3f}) on the {b['n_images']} labelled images before calibration; on the {n_check} "
            f"held-out one(s) r={na(cb['r_all'])} before, {na(ca['r_all'])} after calibration (mean error "
            f"{cb['mae']:.3f} -> {ca['mae']:.3f})")  # fmt: skip
    if b.get("evolution"):
        e, eb, ea = b["evolution"], cb["evolution"], ca["evolution"]
        text += (f"; evolution helped on {e['improved']} of {e['n']} and hurt on {e['worse']} (mean gain "
                 f"{e['mean_gain']:+.3f}) before, on the held-out: {eb['mean_gain']:+.3f} before, "
                 f"{ea['mean_gain']:+.3f} after")  # fmt: skip
    r_before, r_after = (-1.0 if x is None else x for x in (cb["r_all"], ca["r_all"]))  # undefined r: no ranking
    better = ca["mse"] < cb["mse"] and r_after >= r_before
    worse = ca["mse"] > cb["mse"] and r_after < r_before
    advice = ("Use the calibrated regressor" if better else "Calibration did not help: keep the base regressor"
              if worse else "Mixed result: label more images before trusting either")  # fmt: skip
    if b.get("evolution") and b["evolution"]["mean_gain"] < 0 and not better:
        advice += "; evolution hurts here with the base regressor: do not evolve with it"
    history = report.get("history") or []
    if history and min(history, key=lambda row: row["val_mse"])["epoch"] == 0:  # the starting weights were kept
        advice += ("; the calibrated regressor is the base one unchanged: no fine-tuning epoch lowered its error on "
                   "the labelled images it is tuned against (label more images, or try other --epochs or "
                   "--tune-lr)")  # fmt: skip
    return f"{text}. {advice} ({n_check} held-out image(s): a rough check)."
