"""DICOM radiographs through pydicom: modality rescale, VOI window, MONOCHROME1 inversion -> ``H x W`` uint8.

Order follows the DICOM grayscale pipeline (PS3.4 N.2): stored values -> Modality LUT (RescaleSlope/Intercept or a
Modality LUT Sequence) -> VOI (WindowCenter/WindowWidth with its VOI LUT Function, LINEAR, LINEAR_EXACT or SIGMOID;
or a VOI LUT Sequence) -> display, where MONOCHROME1 means "high values are dark" and is inverted so that, as in
every other input, bone is bright and air is dark. Each LUT step is pydicom's own function (``pydicom.pixels``:
``apply_modality_lut``, ``apply_windowing``, ``apply_voi``); this module only maps their output onto 0..255.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

from sampot_lib.data.pixels import check_pixel_count, to_gray, to_uint8
from sampot_lib.errors import SampotError


def _first(value: object) -> float:
    """WindowCenter/Width may be multi-valued (several presets); DICOM says the first is the default."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


def _window(path: Path, ds: Any, values: np.ndarray) -> np.ndarray:
    """The file's WindowCenter/WindowWidth through pydicom's ``apply_windowing`` (its VOILUTFunction: LINEAR,
    LINEAR_EXACT or SIGMOID), mapped onto 0..1; or SampotError naming the file and the tags."""

    center, width = ds.WindowCenter, ds.WindowWidth
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    try:
        c, w = _first(center), _first(width)
    except (TypeError, ValueError, IndexError) as exc:
        why = f"unreadable ({exc})"
    else:
        why = "not finite numbers" if not (math.isfinite(c) and math.isfinite(w)) else ""
    if not why and function == "LINEAR" and w < 1:
        why = f"the width {w:g} is below 1, which the DICOM standard forbids"
    if not why and function != "LINEAR" and w <= 0:
        why = f"the width {w:g} is not above 0, which the DICOM standard requires for {function}"
    if why:
        raise SampotError(
            f"{path}: its DICOM window (WindowCenter {center}, WindowWidth {width}) is invalid: {why}. Fix or remove "
            "the two tags (e.g. with pydicom or dcmodify), or export the image as PNG."
        )
    try:
        with np.errstate(over="ignore"):  # SIGMOID far from its centre: exp overflows to inf, and 1 / inf is 0
            out = np.asarray(apply_windowing(values, ds), dtype=np.float64)
            # pydicom maps onto the range of the stored values (after the rescale); what it gives inputs far below
            # and far above the window is that range's two ends, for every VOI LUT Function.
            far = abs(w) * 100.0
            low, high = np.asarray(apply_windowing(np.array([c - far, c + far]), ds), dtype=np.float64)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SampotError(
            f"{path}: its DICOM window cannot be applied (VOI LUT Function (0028,1056) {function!r}, WindowCenter "
            f"{center}, WindowWidth {width}): {exc}. Fix or remove the tags, or export the image as PNG."
        ) from exc
    return np.clip((out - low) / (high - low), 0.0, 1.0) if high != low else np.zeros_like(out)


def _voi_lut(path: Path, ds: Any, values: np.ndarray) -> np.ndarray:
    """The file's first VOI LUT (VOI LUT Sequence, (0028,3010)) through pydicom's ``apply_voi``, mapped onto 0..1 by
    the table's own lowest and highest entries; or SampotError naming the file and the tag."""

    tag = "VOI LUT Sequence (0028,3010)"
    item = ds.VOILUTSequence[0]
    missing = [f"{name} {number}" for name, number in (("LUTDescriptor", "(0028,3002)"), ("LUTData", "(0028,3006)"))
               if item.get(name) is None]  # fmt: skip
    if missing:
        raise SampotError(
            f"{path}: its {tag} has no {' and no '.join(missing)}, so the VOI LUT cannot be applied; remove the "
            "sequence (the image is then windowed by WindowCenter/WindowWidth, or min to max), or export as PNG."
        )
    if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
        values = values.astype(np.int64)  # a table is indexed by whole numbers: no float warning from pydicom
    try:
        out = np.asarray(apply_voi(values, ds), dtype=np.float64)
        descriptor = [int(v) for v in item.LUTDescriptor]
        entries, first = descriptor[0] or 2**16, descriptor[1]
        table = np.asarray(apply_voi(np.arange(first, first + entries, dtype=np.int64), ds), dtype=np.float64)
    except (NotImplementedError, ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise SampotError(
            f"{path}: its {tag} cannot be applied by pydicom ({type(exc).__name__}: {exc}). Remove the sequence or "
            "fix its LUT Descriptor (0028,3002), or export the image as PNG."
        ) from exc
    low, high = float(table.min()), float(table.max())
    return (out - low) / (high - low) if high > low else np.zeros_like(out)


def read_dicom(
    path: str | Path,
    *,
    low_pct: float | None = None,
    high_pct: float | None = None,
    use_voi: bool = True,
) -> np.ndarray:
    """Read a single-frame DICOM image as ``H x W`` uint8 (bone bright, air dark).

    Rescale slope and intercept (or a Modality LUT) are always applied. With ``use_voi`` and no percentile window
    given, the file's own VOI sets the contrast: its VOI LUT Sequence if it has one, else WindowCenter/WindowWidth
    with its VOILUTFunction (LINEAR by default, LINEAR_EXACT, SIGMOID), each applied by pydicom; otherwise, or when
    the file has neither, the image is windowed between the percentiles (default min to max). MONOCHROME1 images
    are inverted after windowing. A VOI that cannot be applied is refused (SampotError naming the file and tag).
    """

    path = Path(path)
    if not path.is_file():
        raise SampotError(f"{path}: no such file. Check the path, or run `sampot data check` on its folder.")
    try:
        ds = pydicom.dcmread(path, defer_size="1 MB")  # the pixel data stays on disk until its size is checked
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        check_pixel_count(path, int(ds.Columns), int(ds.Rows), frames)
        stored = ds.pixel_array
    except SampotError:  # its own size limit, already named
        raise
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
    has_voi_lut = bool(ds.get("VOILUTSequence"))
    if use_voi and low_pct is None and high_pct is None and (has_window or has_voi_lut):
        # Both present: the table wins, as in pydicom's apply_voi_lut (prefer_lut=True).
        unit = _voi_lut(path, ds, modality) if has_voi_lut else _window(path, ds, values)
        out = np.round(unit * 255.0).astype(np.uint8)
    else:
        out = to_uint8(values, 0.0 if low_pct is None else low_pct, 100.0 if high_pct is None else high_pct)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out
