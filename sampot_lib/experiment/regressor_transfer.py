"""How well a regressor transfers to a new data set, measured on a few of its labelled images: Pearson r and error of
its score on the kinds of masks it is judged on, and whether evolving the simulated user's prompt helps or hurts."""

from __future__ import annotations

from typing import Any

import numpy as np

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import (
    BOX_JITTER,
    EVOLVE_MIN_GAIN,
    EVOLVE_PATIENCE,
    LR,
    N_OUTSIDE,
    N_SYNTHETIC,
    SHARPNESS,
    STEPS,
)
from sampot_lib.errors import SampotError
from sampot_lib.experiment.summary import summarise
from sampot_lib.method.evolve import evolve_prompt, truth_gain
from sampot_lib.method.metrics import pearson_or_none
from sampot_lib.method.prompts import Safeguards
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.regressor_training import RegressorData, predict_dice
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.method.synth import user_prompt_for
from sampot_lib.method.training_set import model_prompts_for, regressor_samples
from sampot_lib.models.base import PromptableModel


def transfer_samples(
    model: PromptableModel,
    dataset: FolderDataset,
    ids: list[str],
    structure: str,
    *,
    size: int,
    prompt: str = "click",
    sharpness: float = SHARPNESS,
    n_synthetic: int = N_SYNTHETIC,
    n_outside: int = N_OUTSIDE,
    seed: int | np.random.Generator = 0,
    progress: bool = False,
) -> RegressorData:
    """The masks a regressor is judged on for ``ids``, as a run's evaluation builds them.

    Args:
        model: The promptable model whose masks are judged.
        dataset: The labelled data set.
        ids: The images.
        structure: The structure (a sub-folder of the data set's ``masks/``).
        size: The regressor's input size S.
        prompt: ``click`` or ``box``: the kind of the model's training prompts.
        sharpness: The steep sigmoid's slope on the model's logits.
        n_synthetic: Level-set masks per image.
        n_outside: Model masks from prompts outside the structure, per image.
        seed: Seed (or generator) of the masks and prompts drawn.
        progress: Show a progress bar.

    Returns:
        Per image ``n_synthetic`` level-set masks and the model's masks, at S x S, each with its true Dice.
    """
    return regressor_samples(
        model, dataset, ids, structure, size, sharpness, n_synthetic, n_outside, seed, progress,
        model_prompts_for(prompt, n_outside),
    )  # fmt: skip


def score_summary(scores: np.ndarray, samples: RegressorData) -> dict[str, Any]:
    """How well ``scores`` (N, the regressor's predicted Dice of ``samples``' N masks) follow the true Dice: Pearson r
    on all masks, on the model's own masks and on the level-set masks; mean absolute and squared error; bias (mean
    predicted minus true Dice)."""
    own = samples.kind != "synthetic"
    err = scores - samples.dice
    return {
        "n_masks": int(len(samples)),
        "n_model_masks": int(own.sum()),
        "r_all": pearson_or_none(scores, samples.dice),
        "r_model": pearson_or_none(scores[own], samples.dice[own]),
        "r_synthetic": pearson_or_none(scores[~own], samples.dice[~own]),
        "mae": float(np.abs(err).mean()),
        "mse": float((err**2).mean()),
        "bias": float(err.mean()),
    }


def evolve_images(
    model: PromptableModel,
    regressor: SegmentationRegressor,
    dataset: FolderDataset,
    ids: list[str],
    structure: str,
    *,
    prompt: str = "click",
    box_jitter: float = BOX_JITTER,
    seed: int = 0,
    steps: int = STEPS,
    patience: int | None = EVOLVE_PATIENCE,
    min_gain: float = EVOLVE_MIN_GAIN,
    lr: float = LR,
    optimizer: str = "adam",
    sharpness: float = SHARPNESS,
    safeguards: Safeguards | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Evolve the simulated user's first prompt (seeded as a run seeds it) of each image with the regressor's score,
    as a run's evolution stage does; one row per image: image_id, dice0 (the user's prompt), dice (the winner),
    gain."""
    guards = safeguards if safeguards is not None else Safeguards()
    rows = []
    for image_id in ids:
        image, truth = dataset.image(image_id), dataset.mask(image_id, structure)
        start = user_prompt_for(seed, prompt, box_jitter, image_id, truth)
        scorer = RegressorScorer(regressor, image, sharpness, device=device)
        res = evolve_prompt(model, scorer, image, start, steps=steps, patience=patience, min_gain=min_gain, lr=lr,
                            optimizer=optimizer, sharpness=sharpness, safeguards=guards, seed=seed)  # fmt: skip
        rows.append({"image_id": image_id} | truth_gain(res, truth))
    return rows


def measure_transfer(
    model: PromptableModel,
    regressor: SegmentationRegressor,
    dataset: FolderDataset,
    ids: list[str],
    structure: str,
    *,
    prompt: str = "click",
    sharpness: float = SHARPNESS,
    n_synthetic: int = N_SYNTHETIC,
    n_outside: int = N_OUTSIDE,
    seed: int = 0,
    steps: int | None = STEPS,
    patience: int | None = EVOLVE_PATIENCE,
    min_gain: float = EVOLVE_MIN_GAIN,
    lr: float = LR,
    optimizer: str = "adam",
    safeguards: Safeguards | None = None,
    box_jitter: float = BOX_JITTER,
    device: str = "cpu",
    samples: RegressorData | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """How well a regressor ranks masks on labelled images, and whether evolution with it helps there.

    Args:
        model: The promptable model.
        regressor: The regressor.
        dataset: The data set.
        ids: The labelled images (at least one).
        structure: The structure.
        prompt: The user's prompt kind, ``"click"`` or ``"box"``.
        sharpness: The sigmoid's slope on the logits.
        n_synthetic: Level-set masks per image.
        n_outside: Clicks outside the structure per image.
        seed: The seed of the masks and of the users' prompts.
        steps: Evolution's model calls; None: no evolution.
        patience: Evolution's early stopping (:func:`~sampot_lib.method.evolve.evolve_prompt`).
        min_gain: The least rise that counts as progress for ``patience``.
        lr: Evolution's step size in pixels.
        optimizer: ``"adam"``, ``"cmaes"`` or ``"random"``.
        safeguards: Evolution's safeguards; None: the defaults, on.
        box_jitter: The jitter of the users' boxes.
        device: Where the regressor scores.
        samples: The masks to score (e.g. to score the same masks with two regressors); None: those
            :func:`transfer_samples` builds.
        progress: Show progress bars.

    Returns:
        A plain, JSON-ready dict of ``n_images``, ``ids``, the :func:`score_summary` of its scores of the masks and
        ``evolution``, the :func:`~sampot_lib.experiment.summary.summarise` of evolving each image's user prompt with
        ``steps``, ``lr``, ``optimizer`` and ``safeguards``, with its ``per_image`` rows (None when ``steps`` is None).

    Raises:
        SampotError: ``ids`` is empty.
    """
    if not ids:
        raise SampotError("measuring a regressor needs at least one labelled image; none were given.")
    if samples is None:
        samples = transfer_samples(model, dataset, ids, structure, size=regressor.input_size, prompt=prompt,
                                   sharpness=sharpness, n_synthetic=n_synthetic, n_outside=n_outside, seed=seed,
                                   progress=progress)  # fmt: skip
    report: dict[str, Any] = {"n_images": len(ids), "ids": list(ids)}
    report |= score_summary(predict_dice(regressor, samples, device=device), samples)
    report["evolution"] = None
    if steps is not None:
        rows = evolve_images(model, regressor, dataset, ids, structure, prompt=prompt, box_jitter=box_jitter,
                             seed=seed, steps=steps, patience=patience, min_gain=min_gain, lr=lr, optimizer=optimizer,
                             sharpness=sharpness, safeguards=safeguards, device=device)  # fmt: skip
        report["evolution"] = summarise(rows) | {"per_image": rows}
    return report
