"""The segmentation regressor's training set (paper section 3.2), free of any experiment config.

For each image: ``n_synthetic`` level-set masks of the truth (:func:`sampot_lib.method.synth.candidate_masks`) and the
model's own masks for a list of prompts (by default the centroids of three horizontal bands of the structure and
``n_outside`` clicks 5 px outside it: the paper's six model masks). Every mask is stored at the regressor's input
size as uint8 (soft values 0..255); its Dice is computed at full resolution.

Also the data-set identity the regressor's file records: a hash of each mask file used.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import N_OUTSIDE, N_SYNTHETIC, REGRESSOR_SIZE, SHARPNESS
from sampot_lib.errors import SampotError, is_place_error
from sampot_lib.method.metrics import dice
from sampot_lib.method.prompts import Prompt, as_prompt, predict
from sampot_lib.method.regressor import to_input
from sampot_lib.method.regressor_training import RegressorData
from sampot_lib.method.scoring import soft_mask
from sampot_lib.method.synth import band_prompts, candidate_masks, model_prompts, outside_prompts
from sampot_lib.models.base import ImageEmbedding, PromptableModel


class ImageMap(Protocol):
    """Runs a per-image task over image ids, results in the ids' order.

    A protocol: :class:`SerialMap` here, or :class:`~sampot_lib.experiment.parallel.Workers` over worker processes
    (which load what references name).
    """

    def map(
        self, task: Callable[..., Any], ids: Sequence[str], *, kwargs: dict[str, Any], desc: str, progress: bool
    ) -> list[Any]:
        """Run ``task`` for every image id.

        Args:
            task: ``task(id, **kwargs)``, run once per image.
            ids: The image ids.
            kwargs: The task's keyword arguments, the same for every image.
            desc: What the task does, for the progress bar and the errors.
            progress: Show a progress bar.

        Returns:
            The task's results, in the ids' order.
        """
        ...


class SerialMap:
    """``[task(id, **kwargs) for id in ids]`` in this process, with a progress bar; a failure names its image."""

    def map(
        self, task: Callable[..., Any], ids: Sequence[str], *, kwargs: dict[str, Any], desc: str, progress: bool
    ) -> list[Any]:
        """Run ``task`` for every image id, one after another.

        Args:
            task: ``task(id, **kwargs)``, run once per image.
            ids: The image ids.
            kwargs: The task's keyword arguments, the same for every image.
            desc: What the task does, for the progress bar and the errors.
            progress: Show a progress bar.

        Returns:
            The task's results, in the ids' order.

        Raises:
            SampotError: A task failed (naming its image); a full disk or a permission error is raised as it is, naming
                the place rather than blaming the image.
        """
        out = []
        for image_id in tqdm(list(ids), desc=desc, unit="image", disable=not progress):
            try:
                out.append(task(image_id, **kwargs))
            except (KeyboardInterrupt, MemoryError, SampotError):
                raise
            except Exception as exc:
                if is_place_error(exc):  # a full disk or a permission: the place named, not the image blamed
                    raise
                raise SampotError(f"{desc}: image {image_id!r} failed: {type(exc).__name__}: {exc}.") from exc
        return out


#: prompts_for_image(truth H x W bool, rng) -> [(prompt, kind label), ...]; a prompt is an (x, y) click.
PromptsForImage = Callable[[np.ndarray, np.random.Generator], list[tuple[Any, str]]]


def band_and_outside_clicks(n_outside: int) -> PromptsForImage:
    """The paper's model prompts for the regressor's training set.

    Args:
        n_outside: The random clicks 5 px outside the structure, per image.

    Returns:
        ``prompts(truth, rng)``, giving the centroids of three horizontal bands (``model_band``) and ``n_outside``
        random clicks 5 px outside the structure (``model_outside``), each with its label.
    """

    def prompts(truth: np.ndarray, rng: np.random.Generator) -> list[tuple[Any, str]]:
        inside = [(p, "model_band") for p in band_prompts(truth)]
        return inside + [(p, "model_outside") for p in outside_prompts(truth, n_outside, seed=rng)]

    return prompts


@torch.no_grad()
def model_mask(
    model: PromptableModel,
    embedding: ImageEmbedding,
    prompt: Prompt | tuple[float, float],
    sizes: Sequence[tuple[int, int]],
) -> list[tuple[np.ndarray, float]]:
    """The model's logits for one prompt at several sizes, from one decoder call where the model can resize its
    output (:attr:`~sampot_lib.models.base.MaskPrediction.resize`).

    Args:
        model: The promptable model.
        embedding: The image's embedding.
        prompt: A :class:`~sampot_lib.method.prompts.Prompt`, or an (x, y) click.
        sizes: The sizes (H, W) of the logits wanted.

    Returns:
        One (H x W logits, confidence) pair per size.
    """
    prompt = as_prompt(prompt)
    pred = predict(model, embedding, prompt, output_size=sizes[0])
    confidence = float(pred.confidence.reshape(-1)[0])
    out = [(pred.logits[0, 0].cpu().numpy(), confidence)]
    for size in sizes[1:]:
        logits = (
            pred.resize(size) if pred.resize is not None else predict(model, embedding, prompt, output_size=size).logits
        )
        out.append((logits[0, 0].cpu().numpy(), confidence))
    return out


def model_prompts_for(kind: str, n_outside: int) -> PromptsForImage:
    """The model prompts of the training set for ``kind`` prompts: the paper's band and outside clicks for
    ``click`` (:func:`band_and_outside_clicks`), boxes jittered from 0.05 to 0.3 for ``box``
    (:func:`sampot_lib.method.synth.model_prompts`)."""
    if kind == "click":
        return band_and_outside_clicks(n_outside)

    def prompts(truth: np.ndarray, rng: np.random.Generator) -> list[tuple[Any, str]]:
        return model_prompts(truth, kind, n_outside, rng)

    return prompts


def regressor_samples(
    model: PromptableModel,
    dataset: FolderDataset,
    ids: list[str],
    structure: str,
    size: int = REGRESSOR_SIZE,
    sharpness: float = SHARPNESS,
    n_synthetic: int = N_SYNTHETIC,
    n_outside: int = N_OUTSIDE,
    seed: int | np.random.Generator = 0,
    progress: bool = True,
    prompts_for_image: PromptsForImage | None = None,
    *,
    workers: ImageMap | None = None,
) -> RegressorData:
    """The regressor's training set for some images.

    Per image: ``n_synthetic`` level-set masks of ``structure``'s truth, and the model's masks
    (``sigmoid(sharpness * logits)``, as evolution shows them to the regressor) for the prompts
    ``prompts_for_image(truth, rng)`` gives.

    Each image draws its level sets, then its prompts, from its own generator seeded by (``seed``, crc32 of its id)
    (:func:`image_rng`), so an image's samples depend only on the seed and the image, never on which images came
    before it: the set is the same for the same arguments, in any order and over any :class:`ImageMap` ``workers``.

    Args:
        model: The promptable model.
        dataset: The data set.
        ids: The images.
        structure: The structure whose truth the masks are of.
        size: The regressor's input size: images and masks are stored at ``size`` x ``size`` (uint8); Dice at full
            resolution.
        sharpness: The sigmoid's slope on the model's logits.
        n_synthetic: Level-set masks per image.
        n_outside: Clicks 5 px outside the structure per image, for the default prompts.
        seed: The base seed; a generator gives one draw, the base seed.
        progress: Show a progress bar.
        prompts_for_image: ``prompts_for_image(truth H x W bool, rng) -> [(prompt, kind label), ...]``; None:
            :func:`band_and_outside_clicks` with ``n_outside``.
        workers: Where the per-image work runs; None: serially in this process (worker processes get references to
            the model and the data set instead of the objects).

    Returns:
        The training set, every image's samples in the order of ``ids``.

    Raises:
        SampotError: ``ids`` is empty, or an image failed (named).
    """
    prompts_for_image = prompts_for_image or band_and_outside_clicks(n_outside)
    base = int(seed.integers(2**32)) if isinstance(seed, np.random.Generator) else int(seed)
    parts = (workers or SerialMap()).map(
        image_samples, ids, desc="regressor set", progress=progress,
        kwargs=dict(model=model, dataset=dataset, structure=structure, size=size, sharpness=sharpness,
                    n_synthetic=n_synthetic, seed=base, prompts_for_image=prompts_for_image),
    )  # fmt: skip
    if not parts:
        raise SampotError("the regressor's training set needs at least one image; the split part is empty.")
    return RegressorData.concat(parts)


#: Tells the training set's per-image generator from the user prompt's (pipeline.user_prompt) of the same image.
_STREAM = 1


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The training set's generator of one image: seeded by the run's seed and the crc32 of the image's id."""
    return np.random.default_rng([seed, zlib.crc32(image_id.encode()), _STREAM])


def image_samples(
    image_id: str,
    *,
    model: PromptableModel,
    dataset: FolderDataset,
    structure: str,
    size: int,
    sharpness: float,
    n_synthetic: int,
    seed: int,
    prompts_for_image: PromptsForImage,
) -> RegressorData:
    """One image's part of :func:`regressor_samples` (a task a worker may run: references are loaded there)."""
    rng = image_rng(seed, image_id)
    image, truth = dataset.image(image_id), dataset.mask(image_id, structure)
    small_img = _u8(to_input(image, size))
    embedding = model.embed(image)
    masks, dices, kinds, confs = [], [], [], []
    for cand in candidate_masks(truth, n_synthetic, seed=rng):
        masks.append(_u8(to_input(cand.mask, size)))
        dices.append(cand.dice)
        kinds.append("synthetic")
        confs.append(np.nan)
    for prompt, kind in prompts_for_image(truth, rng):
        (full, conf), (small, _) = model_mask(model, embedding, prompt, [image.shape[:2], (size, size)])
        masks.append(_u8(soft_mask(torch.as_tensor(small), sharpness)))  # as evolution shows it to the regressor
        dices.append(dice(full > 0, truth))
        kinds.append(kind)
        confs.append(conf)
    n = len(masks)
    return RegressorData(
        images=np.repeat(small_img[None], n, axis=0), masks=np.stack(masks),
        dice=np.array(dices, dtype=np.float32), kind=np.array(kinds), image_id=np.array([image_id] * n),
        confidence=np.array(confs, dtype=np.float32),
    )  # fmt: skip


def _u8(t: torch.Tensor) -> np.ndarray:
    return (t.squeeze().clamp(0, 1) * 255).round().byte().numpy()
