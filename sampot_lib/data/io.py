"""Reading one image or one mask, with the checks every caller needs.

Images come back as ``H x W`` uint8 grayscale (what SAM sees after channel replication); masks as ``H x W`` bool.
Inputs may be 8-bit or 16-bit grayscale, RGB(A), float, or DICOM (see :mod:`sampot_lib.data.dicom`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from sampot_lib.errors import SampotError

#: File name endings the folder format accepts for images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


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


def preprocess(arr: np.ndarray, *, low_pct: float | None = None, high_pct: float | None = None) -> np.ndarray:
    """Any grayscale/RGB array (8/16-bit, int, float) -> ``H x W`` uint8 for SAM.

    Without a window, uint8 grayscale is kept as it is and everything else is stretched from min to max; give
    ``low_pct``/``high_pct`` (e.g. 0.5 and 99.5) for a percentile window that ignores a few extreme pixels
    (burned-in labels, collimator edges).
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
    return to_uint8(gray, lo, hi)


def _open(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise SampotError(f"{path}: no such file. Check the path, or run `sampot data check` on its folder.")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SampotError(f"{path}: not a readable image ({exc}). Re-export it as PNG.") from exc
    return img


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm`` name or a file with the DICOM preamble (``DICM`` at byte 128)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_array(path: str | Path) -> np.ndarray:
    """Read an image file's pixels as they are stored (``H x W`` or ``H x W x C``, uint8/uint16/int32/float)."""
    img = _open(path)
    if img.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    elif img.mode == "1":
        img = img.convert("L")
    arr = np.asarray(img)
    if arr.dtype.byteorder == ">":  # PIL's "I;16B"
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def read_image(path: str | Path, *, low_pct: float | None = None, high_pct: float | None = None) -> np.ndarray:
    """Read a grayscale, RGB or DICOM image file as ``H x W`` uint8 grayscale.

    8-bit grayscale is kept as it is; 16-bit and float images are windowed from min to max (or between the given
    percentiles); RGB is converted to luminance (chest X-rays are grayscale; SAM's three channels get the same
    values). DICOM goes through :func:`sampot_lib.data.dicom.read_dicom` (rescale, VOI window, MONOCHROME1).
    """
    if is_dicom(path):
        from sampot_lib.data.dicom import read_dicom

        return read_dicom(path, low_pct=low_pct, high_pct=high_pct)
    arr = read_array(path)
    try:
        return preprocess(arr, low_pct=low_pct, high_pct=high_pct)
    except SampotError as exc:
        raise SampotError(f"{path}: {exc}") from exc


def read_mask(path: str | Path, *, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary mask file (0 and one other value, e.g. 0/255) as ``H x W`` bool.

    Raises SampotError for a non-binary or empty mask, or one whose size differs from ``expected_shape``.
    """
    arr = np.asarray(_open(path))
    if arr.ndim == 3:
        if not (arr[..., :1] == arr[..., : min(arr.shape[-1], 3)]).all():
            raise SampotError(f"{path}: mask has colour; save it as a single-channel 0/255 PNG.")
        arr = arr[..., 0]
    return check_mask(arr, name=str(path), expected_shape=expected_shape)


def check_mask(arr: np.ndarray, *, name: str = "mask", expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate an in-memory mask (2-D, two values at most, not empty) and return it as bool."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise SampotError(f"{name}: mask has shape {arr.shape}; expected a 2-D array.")
    if expected_shape is not None and arr.shape != tuple(expected_shape):
        raise SampotError(
            f"{name}: mask is {arr.shape[1]}x{arr.shape[0]} (W x H) but the image is "
            f"{expected_shape[1]}x{expected_shape[0]}; masks must have the image's size."
        )
    if arr.dtype == np.uint8:
        # bincount is ~20x faster than unique on a 1024^2 mask, and validation reads every mask of a data set.
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        values = np.unique(arr)
    if arr.dtype != bool and (len(values) > 2 or (len(values) == 2 and values[0] != 0)):
        shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise SampotError(f"{name}: mask is not binary (values {shown}); expected 0 and one other value.")
    out = arr.astype(bool)
    if not out.any():
        raise SampotError(f"{name}: mask is empty (no foreground pixel).")
    return out


def file_mode() -> int:
    """The mode a new file gets from this process's umask (0o644 under the usual umask 0o022).

    tempfile.mkstemp makes 0o600 files whatever the umask; files renamed into place from it are given this mode so
    that a colleague can read a data set or a run that you wrote, as with any other program's output.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:  # Linux: read it without changing it
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read the umask is to set it (and put it back at once)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(binary file)`` atomically: a temporary name in the same folder, the umask's
    mode, then os.replace. A failure leaves neither a partial file nor the temporary one.

    An OSError (disk full, read-only, no permission) is raised again with ``path`` as its file name, so that the
    message names the file the user asked for, not the temporary one.
    """
    path = Path(path)
    if path.is_dir():
        raise SampotError(f"{path} is a folder, but sampot writes a file of that name; move it away or choose another.")
    path.parent.mkdir(parents=True, exist_ok=True)  # its error names the folder (e.g. a parent that is a file)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def write_png(path: str | Path, arr: np.ndarray, *, compress_level: int = 6) -> None:
    """Write an ``H x W`` uint8 or bool array (bool as 0/255) as PNG atomically (temporary name, then replace)."""
    path = Path(path)
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise SampotError(f"{path}: write_png needs uint8 or bool pixels, got {arr.dtype}.")
    atomic_write(path, lambda fh: Image.fromarray(arr).save(fh, format="PNG", compress_level=compress_level))


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (temporary name in the same folder, then os.replace)."""
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def looks_inverted(mask: np.ndarray) -> bool:
    """Whether an ``H x W`` bool mask looks inverted (the structure as background): it covers most of the image
    and nearly all of its border. A lung, a heart or a nodule never touches the whole border; its inverse does."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.size == 0 or mask.mean() <= 0.5:
        return False
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return bool(border.mean() > 0.9)
