"""Scoring a mask: the one place that turns the model's mask logits into the number evolution maximises.

Every scorer takes mask logits B x 1 x S x S at its own ``size`` (the model resizes its low-resolution logits
straight to S, never to the full image first) and the model's confidence (B), and returns B scores, higher is better,
differentiable with respect to the logits (and so to the prompt's coordinates):

- :class:`RegressorScorer`: the paper's segmentation regressor on ``sigmoid(sharpness * logits)``;
- :class:`ConfidenceScorer`: the model's own IoU head (SAM's "confidence");
- :class:`BlendScorer`: a weighted blend of the two, its weight chosen on a validation split;
- :class:`OracleScorer`: soft Dice with the true mask. It needs the truth, so it is the **ceiling** any learned score
  can reach, never a method.

Training-set creation, evaluation, evolution, the heat-map and the widget all score through these classes, so the
evaluation's centroid score is evolution's step-0 score.
"""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch

from sampot_lib.defaults import REGRESSOR_SIZE, SHARPNESS
from sampot_lib.errors import SampotError, number
from sampot_lib.method.metrics import pearson_r
from sampot_lib.method.regressor import SegmentationRegressor, to_input


def soft_mask(logits: torch.Tensor, sharpness: float) -> torch.Tensor:
    """A near-binary mask in (0, 1) that still passes gradients (paper 3.3).

    Args:
        logits: The mask logits.
        sharpness: The sigmoid's slope.

    Returns:
        ``sigmoid(sharpness * logits)``, of the logits' shape.
    """
    return torch.sigmoid(sharpness * logits)


class Scorer(Protocol):
    """What evolution maximises: a score of mask logits, higher is better.

    A protocol: any object with these attributes and this call is a scorer.

    Attributes:
        name: What the score is.
        size: The side S of the square logits it scores.
    """

    name: str
    size: int

    def __call__(self, logits: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Score masks.

        Args:
            logits: Mask logits, B x 1 x S x S.
            confidence: The model's confidences, B.

        Returns:
            B scores, higher is better.
        """
        ...


class RegressorScorer:
    """The segmentation regressor's predicted Dice for masks of one image.

    The regressor is copied, frozen and put in eval mode on ``device``: scoring never changes the caller's network
    (its ``requires_grad`` flags, train/eval mode or BatchNorm statistics).

    Args:
        regressor: The segmentation regressor.
        image: The image the masks are of, H x W (or H x W x 3) uint8.
        sharpness: Slope of the sigmoid on the logits: the regressor scores ``sigmoid(sharpness * logits)``.
        device: Where the copy scores; None: the regressor's own device.

    Raises:
        SampotError: ``regressor`` is not a regressor, ``sharpness`` is not a finite number > 0, or the image holds
            NaN or infinite values.

    Attributes:
        name: ``"regressor"``.
        size: S, the side of the square logits it scores (the regressor's input size).
        sharpness: The sigmoid's slope.
        regressor: The frozen copy.
        image: The image as the regressor reads it, 1 x 1 x S x S float in 0..1.
    """

    name = "regressor"

    def __init__(
        self,
        regressor: SegmentationRegressor,
        image: np.ndarray,
        sharpness: float = SHARPNESS,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(regressor, SegmentationRegressor):
            raise SampotError(f"RegressorScorer needs a SegmentationRegressor (load_regressor or load_shipped_"
                              f"regressor), got {type(regressor).__name__}.")  # fmt: skip
        sharpness = number(sharpness, "sharpness", low=0, low_open=True)
        image = np.asarray(image)
        if image.dtype.kind == "f" and not np.isfinite(image).all():  # every score would be NaN
            raise SampotError("the image holds NaN or infinite values; give a uint8 image (0..255).")
        device = torch.device(device) if device is not None else next(regressor.parameters()).device
        self.regressor = copy.deepcopy(regressor).to(device).eval().requires_grad_(False)
        self.size = self.regressor.input_size
        self.sharpness = float(sharpness)
        self.image = to_input(image, self.size).to(device)  # 1 x 1 x S x S in 0..1

    def __call__(self, logits: torch.Tensor, confidence: torch.Tensor | None = None) -> torch.Tensor:
        """Score masks of the image.

        Args:
            logits: Mask logits, B x 1 x S x S.
            confidence: The model's confidences (B); not read (the :class:`Scorer` protocol passes them).

        Returns:
            B predicted Dice scores in (0, 1), differentiable with respect to ``logits``.
        """
        mask = soft_mask(logits.to(self.image.device), self.sharpness)
        return self.regressor(self.image.expand(mask.shape[0], -1, -1, -1), mask)


class ConfidenceScorer:
    """The model's own IoU prediction (what SAM reports as its confidence).

    Args:
        size: S, the side of the square logits the model is asked for; they are not looked at.

    Attributes:
        name: ``"confidence"``.
        size: S.
    """

    name = "confidence"

    def __init__(self, size: int = REGRESSOR_SIZE) -> None:
        self.size = size

    def __call__(self, logits: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Score masks by the model's confidence.

        Args:
            logits: Mask logits, B x 1 x S x S; not read.
            confidence: The model's confidences, B.

        Returns:
            ``confidence`` itself.
        """
        return confidence


class BlendScorer:
    """``weight * regressor + (1 - weight) * confidence``.

    Args:
        regressor: The regressor's scorer.
        weight: The regressor's weight in [0, 1], chosen on a validation split (:func:`choose_blend_weight`), never on
            the images it is reported on.

    Raises:
        SampotError: ``weight`` is not in [0, 1].

    Attributes:
        name: ``"blend"``.
        size: S, the regressor's.
        regressor: The regressor's scorer.
        weight: The regressor's weight.
    """

    name = "blend"

    def __init__(self, regressor: RegressorScorer, weight: float) -> None:
        if not (np.isfinite(weight) and 0 <= weight <= 1):
            raise SampotError(f"blend weight must be in [0, 1], got {weight!r}.")
        self.regressor, self.weight, self.size = regressor, float(weight), regressor.size

    def __call__(self, logits: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        """Score masks by the blend.

        Args:
            logits: Mask logits, B x 1 x S x S.
            confidence: The model's confidences, B.

        Returns:
            B blended scores, differentiable with respect to ``logits``.
        """
        reg = self.regressor(logits, confidence)
        return self.weight * reg + (1 - self.weight) * confidence.to(reg)


class OracleScorer:
    """Soft Dice of ``sigmoid(sharpness * logits)`` with the true mask at ``size``: the ceiling, not a method.

    Args:
        truth: The true mask, H x W.
        size: S, the side of the square logits it scores (the truth is resized to it).
        sharpness: The sigmoid's slope.
        device: Where the truth is kept and the score computed.

    Attributes:
        name: ``"oracle"``.
        size: S.
        sharpness: The sigmoid's slope.
        truth: The true mask as scored, 1 x 1 x S x S float.
    """

    name = "oracle"

    def __init__(
        self,
        truth: np.ndarray,
        size: int = REGRESSOR_SIZE,
        sharpness: float = SHARPNESS,
        device: torch.device | str = "cpu",
    ):
        self.size, self.sharpness = size, float(sharpness)
        self.truth = to_input(np.asarray(truth, dtype=bool).astype(np.float32), size).to(device)

    def __call__(self, logits: torch.Tensor, confidence: torch.Tensor | None = None) -> torch.Tensor:
        """Score masks by their soft Dice with the truth.

        Args:
            logits: Mask logits, B x 1 x S x S.
            confidence: The model's confidences; not read.

        Returns:
            B soft Dice scores in [0, 1], differentiable with respect to ``logits``.
        """
        mask = soft_mask(logits.to(self.truth.device), self.sharpness)
        inter = (mask * self.truth).flatten(1).sum(1)
        total = mask.flatten(1).sum(1) + self.truth.flatten(1).sum()
        return 2 * inter / total.clamp_min(1e-6)


def choose_blend_weight(regressor_scores: np.ndarray, confidences: np.ndarray, dice: np.ndarray) -> float:
    """The blend weight whose scores correlate best (Pearson r) with the true Dice.

    Pass validation-split scores of the model's own masks only.

    Args:
        regressor_scores: The regressor's scores.
        confidences: The model's confidences of the same masks.
        dice: The masks' true Dice.

    Returns:
        The weight in {0, 0.05, ..., 1}; 1 when no weight gives a finite r.
    """

    best_w, best_r = 1.0, -np.inf
    for w in np.linspace(0, 1, 21):
        r = pearson_r(w * np.asarray(regressor_scores) + (1 - w) * np.asarray(confidences), dice)
        if np.isfinite(r) and r > best_r:
            best_w, best_r = float(w), r
    return best_w
