"""The segmentation regressor: predicts Dice from (image, mask) with no ground truth (paper section 3.2).

Five convolution layers with batch norm and leaky ReLU, a sigmoid on the output; its file format, and the score of
one mask. Training is in :mod:`sampot_lib.method.regressor_training`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sampot_lib.data.io import check_mask
from sampot_lib.defaults import (
    MAX_REGRESSOR_SIZE,
)
from sampot_lib.errors import SampotError, SampotWarning, regressor_size
from sampot_lib.errors import device as checked_device
from sampot_lib.files import write_bytes
from sampot_lib.models.sam import check_image

_FORMAT = "sampot-regressor/1"


def to_input(x: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Resize an image or a mask to the regressor's input.

    Area averaging: a downsampled mask gets soft edges.

    Args:
        x: An H x W image (uint8, 0..255; H x W x 3 is averaged to gray) or mask (bool or float 0..1).
        size: The side of the result.

    Returns:
        A 1 x 1 x size x size float tensor in 0..1.
    """
    t = torch.tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x  # a flipped view has negative strides
    t = t.float()
    if t.ndim == 3 and t.shape[-1] == 3:
        t = t.mean(-1)
    if t.max() > 1.0:
        t = t / 255.0
    t = t[None, None] if t.ndim == 2 else t
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="area")
    return t


class SegmentationRegressor(nn.Module):
    """Predicts the Dice of a mask from (image, mask), both B x 1 x S x S in 0..1; returns B scores in (0, 1).

    Four stride-2 convolutions (3 x 3, batch norm, leaky ReLU) halve the size four times; a fifth convolution the
    size of what is left (S/16) reads the whole map, so the score can depend on where the mask lies, not only on
    its texture; a sigmoid makes it a Dice-like score.

    Args:
        input_size: S: a multiple of 16 from 32 to :data:`~sampot_lib.defaults.MAX_REGRESSOR_SIZE`.
        widths: The channels of the stride-2 convolutions.

    Raises:
        SampotError: An ``input_size`` out of range or not a multiple of 16.

    Attributes:
        input_size: S.
        widths: The channels of the stride-2 convolutions.
        net: The layers.
    """

    def __init__(self, input_size: int = 128, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        regressor_size(input_size, "regressor input_size", high=MAX_REGRESSOR_SIZE)
        self.input_size = input_size
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        channels = 2
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.LeakyReLU(0.1),
            ]
            channels = width
        final = input_size // 2 ** len(widths)
        layers.append(nn.Conv2d(channels, 1, final))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predict the Dice of masks.

        Args:
            image: The images, B x 1 x S x S in 0..1.
            mask: The masks, B x 1 x S x S in 0..1.

        Returns:
            B scores in (0, 1).

        Raises:
            SampotError: An image or a mask not S x S (resize with :func:`to_input`).
        """
        s = self.input_size
        if image.shape[-2:] != (s, s) or mask.shape[-2:] != (s, s):
            raise SampotError(
                f"regressor expects {s}x{s} inputs, got image {tuple(image.shape[-2:])} and mask "
                f"{tuple(mask.shape[-2:])}; resize with sampot_lib.method.regressor.to_input."
            )
        logits = self.net(torch.cat([image, mask], dim=1))
        # the sigmoid in at least float32 even under bfloat16 autocast: a score near 1 keeps its third decimal
        return torch.sigmoid(logits.to(torch.promote_types(logits.dtype, torch.float32))).flatten()

    def config(self) -> dict[str, Any]:
        """The architecture's settings, as saved with the weights.

        Returns:
            The constructor's arguments, ``{"input_size": S, "widths": [...]}``.
        """
        return {"input_size": self.input_size, "widths": list(self.widths)}


def save_regressor(model: SegmentationRegressor, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write a regressor's weights, architecture settings and meta to a file, atomically (with the umask's file mode).

    Args:
        model: The regressor.
        path: The file to write.
        meta: The record of what it learned from; None: an empty one.

    Returns:
        ``path``.
    """
    payload = {"format": _FORMAT, "config": model.config(), "state_dict": model.state_dict(), "meta": meta or {}}
    # Serialised in memory first: torch's zip writer turns a failed write (a full disk) into a RuntimeError, where
    # writing the bytes gives the OSError (ENOSPC, EFBIG) that names the cause.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_bytes(path, buffer.getvalue())


def load_regressor(
    path: str | Path, input_size: int | None = None, device: str = "cpu"
) -> tuple[SegmentationRegressor, dict[str, Any]]:
    """Load a regressor saved by :func:`save_regressor`.

    Args:
        path: The regressor file (e.g. a run folder's ``regressor.pt``).
        input_size: If given, the file must be a regressor for that input size; None: any.
        device: Where to put the regressor.

    Returns:
        The pair (regressor, meta), the regressor in eval mode and the file's record of what it learned from (also
        set as the regressor's ``provenance`` attribute; empty when the file has none).

    Raises:
        SampotError: A missing, foreign or damaged file, or a folder, named with what to do; a regressor for
            another input size than ``input_size``; a device that does not exist here.
    """
    device = checked_device(device)
    retrain = "train one with `sampot train-regressor` (or `sampot run`)"
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise SampotError(f"the regressor must be given as a file path, got {path!r}; {retrain}.")
    path = Path(path)
    if path.is_dir():
        inside = path / "regressor.pt"
        hint = f"give the file, e.g. --regressor {inside}" if inside.is_file() else f"give a file, or {retrain}"
        raise SampotError(f"regressor {path} is a folder, not a file; {hint}.")
    if path.exists() and not path.is_file():
        raise SampotError(f"regressor {path} is not a regular file (a device, a pipe or a socket); give the "
                          f"regressor's file, or {retrain}.")  # fmt: skip
    if not path.is_file():
        raise SampotError(f"regressor file {path} does not exist; check the path, or {retrain}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        # Not torch's own message: it advises weights_only=False, which would run code from an untrusted file.
        raise SampotError(
            f"regressor file {path} cannot be read ({type(exc).__name__}): it is damaged (e.g. cut short) or not a "
            f"PyTorch file; {retrain}."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        what = "not a sampot regressor file"
        if isinstance(payload, dict) and any(str(k).startswith(("image_encoder.", "model")) for k in payload):
            what += " (it looks like a SAM checkpoint: pass it as --checkpoint)"
        raise SampotError(f"{path} is {what}; expected format {_FORMAT}, written by `sampot train-regressor`.")
    cfg = payload.get("config")
    try:
        size, widths = int(cfg["input_size"]), tuple(int(w) for w in cfg["widths"])
    except (TypeError, KeyError, ValueError) as exc:
        raise SampotError(f"regressor file {path} is damaged: unreadable settings ({cfg!r}); {retrain}.") from exc
    if input_size is not None and size != input_size:
        raise SampotError(
            f"regressor {path} was trained for {size}x{size} inputs, not "
            f"{input_size}x{input_size}; retrain it or use a matching --regressor-size."
        )
    try:
        model = SegmentationRegressor(size, widths)
        model.load_state_dict(payload.get("state_dict"))
    except (SampotError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise SampotError(
            f"regressor file {path} is damaged: its weights do not match its settings (input {size}, widths "
            f"{list(widths)}); {retrain}."
        ) from exc
    state = model.state_dict()
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # it would score every mask NaN, and evolution would fail far from the cause
        raise SampotError(f"regressor file {path} is damaged: its weights hold NaN or infinite values ({bad[0]}"
                          f"{' and more' if len(bad) > 1 else ''}); {retrain}.")  # fmt: skip
    meta = payload.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise SampotError(f"regressor file {path} is damaged: its record of what it learned from is a "
                          f"{type(meta).__name__}, not a record; {retrain}.")  # fmt: skip
    # The module carries what it learned from, so a consumer handed only the module (the widget) can check it.
    model.provenance = meta
    return model.to(device).eval(), meta


@torch.no_grad()
def score_mask(regressor: SegmentationRegressor, image: np.ndarray, mask: np.ndarray) -> float:
    """The regressor's predicted Dice of any binary mask of an image.

    The image and the mask are both resized to the regressor's input by area averaging, as its training set's
    synthetic masks were. The regressor is put in eval mode.

    Args:
        regressor: The segmentation regressor.
        image: The image, H x W or H x W x 3, uint8.
        mask: A binary mask of the image, H x W (bool, 0/1 or 0/255).

    Returns:
        The predicted Dice, in (0, 1).

    Raises:
        SampotError: ``regressor`` is not a regressor; ``image`` is not an H x W (x 3) uint8 image of at least the
            models' smallest side; ``mask`` is not of the image's size, or not binary (an empty or a full mask is
            scored).
    """
    if not isinstance(regressor, SegmentationRegressor):
        raise SampotError(f"score_mask needs a SegmentationRegressor (load_regressor or load_shipped_regressor), got "
                          f"{type(regressor).__name__}.")  # fmt: skip
    image = check_image(image)  # a uint16 or float image would be scaled as if it were 0..255
    # resized to the input alone, a mask of another image would score silently; 0/7 is 0/1, not 0/0.03
    mask = check_mask(mask, expected_shape=image.shape[:2], allow_empty=True)
    if not mask.any():  # stacklevel 3: past torch's no_grad wrapper, to the caller
        warnings.warn("the mask is empty: its true Dice is 0 whatever the regressor predicts.", SampotWarning,
                      stacklevel=3)  # fmt: skip
    size = regressor.input_size
    device = next(regressor.parameters()).device
    img, msk = to_input(image, size).to(device), to_input(mask.astype(np.float32), size).to(device)
    return float(regressor.eval()(img, msk)[0])
