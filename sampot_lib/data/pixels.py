"""Pixel arrays to the form every reader returns (``H x W`` grayscale uint8, bone bright and air dark), and the
limit on how many pixels a file may hold before it is decoded."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sampot_lib.defaults import MAX_IMAGE_PIXELS
from sampot_lib.errors import SampotError, SampotWarning


def to_uint8(image: np.ndarray, low_pct: float = 0.0, high_pct: float = 100.0) -> np.ndarray:
    """Window an image of any numeric type to uint8 between two percentiles (0 and 100: min and max).

    uint8 input with the default window is returned unchanged. ``H x W`` in, ``H x W`` uint8 out.
    """
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise SampotError(f"percentile window ({low_pct}, {high_pct}) is invalid; need 0 <= low < high <= 100.")
    if image.dtype == np.uint8 and low_pct == 0.0 and high_pct == 100.0:
        return image
    if image.size == 0:
        raise SampotError(f"image has no pixels (shape {image.shape}).")
    img = image.astype(np.float64)
    if not np.isfinite(img).all():  # NaN would make every pixel NaN, and uint8 of NaN is an arbitrary value
        bad = int((~np.isfinite(img)).sum())
        raise SampotError(f"image has {bad} pixel(s) that are NaN or infinite; fix the file or export it as PNG.")
    lo, hi = np.percentile(img, [low_pct, high_pct])
    if hi <= lo:
        return np.zeros(img.shape, dtype=np.uint8)
    return np.round(np.clip((img - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def to_gray(arr: np.ndarray, *, name: str = "image") -> np.ndarray:
    """``H x W``, ``H x W x 1``, ``H x W x 3`` or ``H x W x 4`` array -> ``H x W`` in its own dtype (float for colour).

    Colour uses ITU-R 601 luminance (what PIL's "L" conversion does) and drops alpha.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        if arr.shape[-1] == 1:
            return arr[..., 0]
        rgb = arr[..., :3].astype(np.float64)
        return rgb @ np.array([0.299, 0.587, 0.114])
    if arr.ndim != 2:
        raise SampotError(f"{name}: image has shape {arr.shape}; expected a 2-D grayscale or an RGB image.")
    return arr


#: Fewer grey levels than this left by a min-to-max stretch of a wider range: a few extreme pixels set the range.
FEW_GREY_LEVELS = 32


def preprocess(
    arr: np.ndarray, *, low_pct: float | None = None, high_pct: float | None = None, name: str = "image"
) -> np.ndarray:
    """Any grayscale/RGB array (8/16-bit, int, float) -> ``H x W`` uint8 for SAM.

    Without a window, uint8 grayscale is kept as it is and everything else is stretched from min to max; give
    ``low_pct``/``high_pct`` (e.g. 0.5 and 99.5) for a percentile window that ignores a few extreme pixels
    (burned-in labels, collimator edges). A stretch that leaves fewer than :data:`FEW_GREY_LEVELS` grey levels of a
    range wider than 8 bits (one hot pixel in 12-bit data) is warned about, naming ``name``.
    """
    arr = np.asarray(arr)
    if arr.size == 0:
        raise SampotError(f"image has no pixels (shape {arr.shape}).")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    gray = to_gray(arr)
    if low_pct is None and high_pct is None and arr.dtype == np.uint8:
        # 8-bit grayscale, and luminance of 8-bit RGB, already sit on the 0..255 display scale: no stretch.
        return gray if gray.dtype == np.uint8 else np.round(gray).astype(np.uint8)
    lo = 0.0 if low_pct is None else float(low_pct)
    hi = 100.0 if high_pct is None else float(high_pct)
    out = to_uint8(gray, lo, hi)
    if low_pct is None and high_pct is None and float(gray.max()) - float(gray.min()) > 255:
        levels = int(np.count_nonzero(np.bincount(out.ravel(), minlength=256)))
        if levels < FEW_GREY_LEVELS and np.unique(gray).size > 2 * levels:  # not an image of few values anyway
            warnings.warn(f"{name}: a few extreme pixels set its grey range ({float(gray.min()):g} to "
                          f"{float(gray.max()):g}), so only {levels} of 256 grey levels are left once it is scaled "
                          "to 8 bits and the model sees little contrast; clip those pixels (a hot pixel, a burned-in "
                          "marker) or export the image with a display window.",
                          SampotWarning, stacklevel=2)  # fmt: skip
    return out


def check_pixel_count(path: str | Path, width: int, height: int, frames: int = 1) -> None:
    """SampotError naming ``path`` if an image of ``width`` x ``height`` (x ``frames``) pixels is over
    :data:`~sampot_lib.defaults.MAX_IMAGE_PIXELS`: called with the sizes a file's header states, before decoding."""
    n = int(width) * int(height) * max(1, int(frames))
    if n > MAX_IMAGE_PIXELS:
        what = f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
        raise too_many_pixels(path, f"{what} pixels ({n:,})")


def too_many_pixels(path: str | Path, what: str) -> SampotError:
    """The error for an image of more than :data:`~sampot_lib.defaults.MAX_IMAGE_PIXELS` pixels (``what``: its size)."""
    return SampotError(
        f"{path}: {what} is more than the {MAX_IMAGE_PIXELS:,} pixels sampot decodes; downsample it (a chest X-ray "
        "needs no more than about 4096 x 4096) and try again."
    )
