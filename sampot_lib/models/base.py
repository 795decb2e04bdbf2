"""The promptable-model protocol that SAMPOT talks to.

Any segmenter that can (1) embed an image once and (2) turn prompts (points and/or a box) into mask logits
*differentiably with respect to the prompt's coordinates* plugs into prompt evolution. A model without gradients
(an ONNX export) still plugs into the gradient-free optimisers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from sampot_lib.errors import SampotError


@dataclass(frozen=True)
class ImageEmbedding:
    """An image encoded once, reused for every prompt.

    Attributes:
        features: 1 x C x h x w (no grad), in the model's own frame.
        original_size: (H, W) of the image the user gave.
        input_size: (H', W') of the image after resizing into the model's frame, before padding.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


@dataclass(frozen=True)
class MaskPrediction:
    """The masks a model predicts for a batch of prompts.

    Attributes:
        logits: B x 1 x H x W mask logits (foreground where > 0).
        confidence: B, the model's own quality estimate (SAM and LiteMedSAM: the IoU head's predicted IoU of the chosen
            output).
        resize: Where the model gives one: ``resize(size)``, the same masks' logits (B x 1 x H' x W', no gradient) at
            another output size (None: the original image's), from the same decoder output, without another decoder
            call; else None.
    """

    logits: torch.Tensor
    confidence: torch.Tensor
    resize: Callable[[tuple[int, int] | None], torch.Tensor] | None = field(default=None, repr=False, compare=False)


@runtime_checkable
class PromptableModel(Protocol):
    """What prompt evolution needs from a segmenter.

    A protocol: any object with these attributes and methods is a model.

    Attributes:
        name: The model's registry name.
        prompt_kinds: The prompt kinds the model answers well (``"click"``, ``"box"``, ...), from its record.
        differentiable: Whether gradients reach the prompt's coordinates.
    """

    name: str
    prompt_kinds: tuple[str, ...]
    differentiable: bool

    @property
    def device(self) -> torch.device:
        """The device the model runs on."""
        ...

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an image; no gradient; cached per image.

        Args:
            image: An H x W (grayscale) or H x W x 3 uint8 image.

        Returns:
            The image's embedding.
        """
        ...

    def predict(
        self,
        embedding: ImageEmbedding,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> MaskPrediction:
        """The mask logits for a batch of prompts.

        Args:
            embedding: The image's embedding.
            points: B x N x 2 (x, y) in original-image pixels, or None.
            labels: B x N (1 foreground, 0 background), or None.
            boxes: B x 4 (x0, y0, x1, y1) in original-image pixels, or None (at least one of points and boxes).
            output_size: The logits' size (H, W); None: the original image size.

        Returns:
            The prediction, its logits differentiable with respect to ``points`` and ``boxes`` where ``differentiable``.
        """
        ...


def check_prompt_tensors(points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None) -> None:
    """Raise SampotError unless the prompt tensors have the shapes :meth:`PromptableModel.predict` takes."""
    if points is None and boxes is None:
        raise SampotError("a prompt needs points, a box, or both; got neither.")
    if points is not None:
        if points.ndim != 3 or points.shape[-1] != 2:
            raise SampotError(f"points must be B x N x 2 (x, y), got shape {tuple(points.shape)}.")
        if labels is None or labels.shape != points.shape[:2]:
            got = None if labels is None else tuple(labels.shape)
            raise SampotError(f"labels must be B x N = {tuple(points.shape[:2])}, got {got}.")
    if boxes is not None:
        batch = boxes.shape[0] if points is None else points.shape[0]
        if boxes.ndim != 2 or boxes.shape != (batch, 4):
            raise SampotError(f"boxes must be B x 4 (x0, y0, x1, y1), got shape {tuple(boxes.shape)}.")
