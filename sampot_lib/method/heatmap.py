"""Prompt sensitivity (paper fig. 1): the Dice of the model's mask for clicks on a grid inside the structure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from sampot_lib.data.io import check_mask
from sampot_lib.defaults import SHARPNESS
from sampot_lib.errors import SampotError, whole
from sampot_lib.method.metrics import dice
from sampot_lib.method.prompts import Prompt, predict
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.sam import check_image


@dataclass(frozen=True)
class Heatmap:
    """The clicks of a heat-map and what each gave.

    Attributes:
        points: The clicks, N x 2, (x, y).
        dice: The Dice of each click's mask, N.
        confidence: The model's confidence, N.
        score: The regressor's score, N (NaN without a regressor).
    """

    points: np.ndarray
    dice: np.ndarray
    confidence: np.ndarray
    score: np.ndarray

    @property
    def spread(self) -> float:
        """Max - min Dice: how much the click's place matters."""
        return float(self.dice.max() - self.dice.min())

    def as_image(self, shape: tuple[int, int], step: int) -> np.ndarray:
        """Each click's Dice painted over its grid cell, for overlays.

        Args:
            shape: The image's shape (H, W).
            step: The grid's spacing in pixels.

        Returns:
            An H x W float image, NaN outside the cells.
        """
        out = np.full(shape, np.nan)
        half = step // 2
        for (x, y), d in zip(self.points.astype(int), self.dice, strict=True):
            out[max(y - half, 0) : y + step - half, max(x - half, 0) : x + step - half] = d
        return out


def grid_points(mask: np.ndarray, step: int) -> np.ndarray:
    """The clicks on a regular grid, centred on a mask, that fall inside it.

    Args:
        mask: The mask, H x W.
        step: The grid's spacing in pixels (a whole number >= 1; beyond the mask's longer side, one click).

    Returns:
        The clicks, N x 2 (x, y), float32.

    Raises:
        SampotError: ``mask`` is not a usable mask, or ``step`` is not a whole number >= 1.
    """
    mask = check_mask(mask)
    # a float step would index the mask with floats; one beyond the mask's side gives the same single click (and an
    # astronomical one would overflow numpy's integers)
    step = min(whole(step, "grid step", low=1), max(mask.shape))
    ys, xs = np.nonzero(mask)
    x0 = xs.min() + ((xs.max() - xs.min()) % step) // 2
    y0 = ys.min() + ((ys.max() - ys.min()) % step) // 2
    gx, gy = np.meshgrid(np.arange(x0, xs.max() + 1, step), np.arange(y0, ys.max() + 1, step))
    inside = mask[gy.ravel(), gx.ravel()]
    return np.stack([gx.ravel()[inside], gy.ravel()[inside]], axis=1).astype(np.float32)


@torch.no_grad()
def dice_heatmap(
    model: PromptableModel,
    image: np.ndarray,
    mask: np.ndarray,
    step: int = 32,
    regressor: SegmentationRegressor | None = None,
    sharpness: float = SHARPNESS,
    progress: bool = True,
) -> Heatmap:
    """Segment from every grid click inside a structure and score each click's mask (paper fig. 1).

    Each mask is scored against ``mask`` (its true Dice) and, with a regressor, by it (through
    :class:`~sampot_lib.method.scoring.RegressorScorer`, as evolution scores). One click at a time: on a CPU,
    batching clicks is slower per click (the decoder copies the image embedding per prompt).

    Args:
        model: The promptable model.
        image: The image, H x W (or H x W x 3) uint8.
        mask: The structure's true mask, H x W, binary and not empty.
        step: The grid's spacing in pixels (a whole number >= 1); the grid is centred on the mask.
        regressor: A segmentation regressor that also scores every mask, or None.
        sharpness: Slope of the sigmoid the regressor sees on the logits.
        progress: Show a progress bar.

    Returns:
        A :class:`Heatmap` of the clicks (N x 2, (x, y)), the Dice of each click's mask (N), the model's confidence
        (N) and the regressor's score (N, NaN without a regressor).

    Raises:
        SampotError: ``image`` is not an H x W (x 3) uint8 array, ``mask`` is empty, not binary or not of the image's
            size, ``regressor`` is not a regressor, ``step`` is not a whole number >= 1, or no grid point falls inside
            the mask.
    """
    check_image(image)
    if regressor is not None and not isinstance(regressor, SegmentationRegressor):
        raise SampotError(f"regressor must be a SegmentationRegressor (load_regressor or load_shipped_regressor) or "
                          f"None, got {type(regressor).__name__}.")  # fmt: skip
    mask = check_mask(mask, expected_shape=image.shape[:2])
    points = grid_points(mask, step)
    if len(points) == 0:
        raise SampotError(f"no grid point of step {step} falls inside the mask; use a smaller step.")
    emb = model.embed(image)
    scorer = RegressorScorer(regressor, image, sharpness, device=model.device) if regressor is not None else None
    dices, confs, scores = [], [], []
    for x, y in tqdm(points, desc="heat-map", unit="click", disable=not progress):
        click = Prompt.click(float(x), float(y))
        pred = predict(model, emb, click)
        dices.append(dice(pred.logits[0, 0].cpu().numpy() > 0, mask))
        confs.append(float(pred.confidence))
        if scorer is not None:
            small = predict(model, emb, click, output_size=(scorer.size, scorer.size))
            scores.append(float(scorer(small.logits, small.confidence)))
        else:
            scores.append(np.nan)
    return Heatmap(points, np.array(dices), np.array(confs), np.array(scores))
