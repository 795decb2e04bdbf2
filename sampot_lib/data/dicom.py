"""DICOM radiographs through pydicom: modality rescale, VOI window, MONOCHROME1 inversion -> ``H x W`` uint8.

Order follows the DICOM grayscale pipeline (PS3.4 N.2): stored values -> Modality LUT (RescaleSlope/Intercept or a
Modality LUT Sequence) -> VOI (WindowCenter/WindowWidth, or a VOI LUT Sequence) -> display, where MONOCHROME1 means
"high values are dark" and is inverted so that, as in every other input, bone is bright and air is dark.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from sampot_lib.data.pixels import to_gray, to_uint8
from sampot_lib.errors import SampotError


def _first(value: object) -> float:
    """WindowCenter/Width may be multi-valued (several presets); DICOM says the first is the default."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def window_linear(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM LINEAR VOI function (PS3.3 C.11.2.1.2.1) mapped onto 0..1; ``H x W`` float in, float out."""
    if width < 1:
        raise SampotError(f"DICOM WindowWidth {width} is below 1, which the standard forbids.")
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    out = ((values - (center - 0.5)) / (width - 1.0)) + 0.5
    return np.clip(out, 0.0, 1.0)


def _file_window(path: Path, values: np.ndarray, center: object, width: object) -> np.ndarray:
    """The file's own WindowCenter/WindowWidth applied, or SampotError naming the file when they cannot work."""
    try:
        c, w = _first(center), _first(width)
    except (TypeError, ValueError, IndexError) as exc:
        c = w = float("nan")
        why = f"unreadable ({exc})"
    else:
        why = "not finite numbers" if not (math.isfinite(c) and math.isfinite(w)) else ""
    if not why and w < 1:
        why = f"the width {w:g} is below 1, which the DICOM standard forbids"
    if why:
        raise SampotError(
            f"{path}: its DICOM window (WindowCenter {center}, WindowWidth {width}) is invalid: {why}. Fix or remove "
            "the two tags (e.g. with pydicom or dcmodify), or export the image as PNG."
        )
    return window_linear(values, c, w)


def read_dicom(
    path: str | Path,
    *,
    low_pct: float | None = None,
    high_pct: float | None = None,
    use_voi: bool = True,
) -> np.ndarray:
    """Read a single-frame DICOM image as ``H x W`` uint8 (bone bright, air dark).

    Rescale slope and intercept (or a Modality LUT) are always applied. With ``use_voi`` and no percentile window
    given, the file's own VOI window (WindowCenter/WindowWidth or VOI LUT Sequence) sets the contrast; otherwise, or
    when the file has none, the image is windowed between the percentiles (default min to max).
    MONOCHROME1 images are inverted after windowing.
    """

    path = Path(path)
    if not path.is_file():
        raise SampotError(f"{path}: no such file. Check the path, or run `sampot data check` on its folder.")
    try:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
    except (InvalidDicomError, AttributeError, KeyError, ValueError, OSError, NotImplementedError) as exc:
        raise SampotError(
            f"{path}: not a readable DICOM image ({type(exc).__name__}: {exc}). Compressed transfer syntaxes may "
            "need a pixel-data plugin (pylibjpeg, gdcm); or export the image as PNG."
        ) from exc
    if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        raise SampotError(f"{path}: DICOM has {ds.NumberOfFrames} frames; one radiograph per file is expected.")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        # Colour DICOM (RGB, YBR): pydicom converts YBR to RGB by default; take luminance.
        return to_uint8(to_gray(np.asarray(stored), name=str(path)), low_pct or 0.0, high_pct or 100.0)

    modality = np.asarray(apply_modality_lut(stored, ds))
    values = modality.astype(np.float64)
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    has_voi_lut = "VOILUTSequence" in ds
    if use_voi and low_pct is None and high_pct is None and (has_window or has_voi_lut):
        if has_window:
            unit = _file_window(path, values, ds.WindowCenter, ds.WindowWidth)
        else:
            # A tabulated VOI LUT: pydicom applies it; its output range is the LUT's, so stretch min..max.
            lut_out = np.asarray(apply_voi_lut(modality, ds), dtype=np.float64)
            lo, hi = float(lut_out.min()), float(lut_out.max())
            unit = (lut_out - lo) / (hi - lo) if hi > lo else np.zeros_like(lut_out)
        out = np.round(unit * 255.0).astype(np.uint8)
    else:
        out = to_uint8(values, 0.0 if low_pct is None else low_pct, 100.0 if high_pct is None else high_pct)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out
