"""Reading one image or one mask, with the checks every caller needs.

Images come back as ``H x W`` uint8 grayscale (what SAM sees after channel replication); masks as ``H x W`` bool.
Inputs may be 8-bit or 16-bit grayscale, RGB(A), float, or DICOM (see :mod:`sampot_lib.data.dicom`).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from sampot_lib.data.dicom import read_dicom
from sampot_lib.data.pixels import check_pixel_count, preprocess, too_many_pixels
from sampot_lib.defaults import MIN_IMAGE_SIDE
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.files import atomic_write

#: File name endings the folder format accepts for images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")


#: EXIF orientations (tag 0x0112) that turn the stored pixels by 90 degrees (width and height swap on display).
_TURNED = (5, 6, 7, 8)


def _path(path: str | Path) -> Path:
    """``path`` as a Path; a SampotError for a value that is no path (Path() of a number raises a TypeError that
    names no file)."""
    if not isinstance(path, (str, os.PathLike)):
        raise SampotError(f"an image path must be a str or a Path, got {path!r} ({type(path).__name__}).")
    return Path(path)


def _open(path: str | Path) -> Image.Image:
    """Open and decode an image file, turned as its EXIF orientation says (what every image viewer shows); one of
    more than :data:`~sampot_lib.defaults.MAX_IMAGE_PIXELS` pixels is refused from its header, before decoding."""
    path = _path(path)
    if not path.exists():
        raise SampotError(f"{path}: no such file. Check the path, or run `sampot data check` on its folder.")
    if not path.is_file():
        raise SampotError(f"{path}: not a regular file (a folder or a device?); give the path of an image file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by our own limit
            img = Image.open(path)
        check_pixel_count(path, *img.size, getattr(img, "n_frames", 1))
        orientation = exif_orientation(img)  # before load(): loading a multi-frame TIFF closes the file EXIF lies in
        img.load()
        if orientation not in (None, 1):
            img = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:  # past twice PIL's own limit: PIL refuses to open it at all
        stated = re.search(r"\((\d+) pixels\)", str(exc))
        raise too_many_pixels(path, f"{int(stated.group(1)):,} pixels" if stated else "its size") from exc
    except SampotError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise SampotError(f"{path}: not a readable image ({exc}). Re-export it as PNG.") from exc
    return img


def exif_orientation(img: Image.Image) -> int | None:
    """The EXIF orientation (1-8) an opened image declares, or None (no EXIF, or no orientation tag)."""
    try:
        value = img.getexif().get(0x0112)
    except (OSError, ValueError, SyntaxError):
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None


def stored_size(path: str | Path) -> tuple[int, int, int | None]:
    """(H, W, EXIF orientation) of a PNG/JPEG from its header, as stored (before the orientation is applied)."""
    with Image.open(path) as img:
        return img.size[1], img.size[0], exif_orientation(img)


def turned(orientation: int | None) -> bool:
    """Whether an EXIF orientation swaps width and height."""
    return orientation in _TURNED


def is_dicom(path: str | Path) -> bool:
    """True for a ``.dcm`` name or a file with the DICOM preamble (``DICM`` at byte 128)."""
    path = _path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_array(path: str | Path) -> np.ndarray:
    """Read an image file's pixels as they are stored (``H x W`` or ``H x W x C``, uint8/uint16/int32/float).

    A file of several frames (a TIFF stack, an animation) is refused, as a DICOM of several frames is: read as its
    first frame alone, a volume would be segmented on whichever slice happens to come first."""
    img = _open(path)
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format != "MPO":  # MPO: a camera's JPEG with its preview images; the first is the photo
        raise SampotError(
            f"{path}: holds {frames} frames (a stack or an animation); one radiograph per file is expected: save "
            "the frame you mean as a PNG of its own."
        )
    if img.mode in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif img.mode == "PA":
        img = img.convert("RGBA")
    elif img.mode in ("LA", "La"):  # grayscale with alpha: the gray channel; alpha is dropped as for RGBA
        img = img.getchannel("L")
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

    Raises:
        SampotError: An unreadable file, or an image of at least the models' smallest side whose pixels all have one
            value (nothing to segment).
    """
    if is_dicom(path):
        image = read_dicom(path, low_pct=low_pct, high_pct=high_pct)
    else:
        try:
            image = preprocess(read_array(path), low_pct=low_pct, high_pct=high_pct, name=str(path))
        except SampotError as exc:  # named once: the reader's own errors already start with the path
            named = str(exc).startswith(f"{path}:")
            raise SampotError(str(exc) if named else f"{path}: {exc}") from exc
    # a model still draws a mask on a flat image, and the regressor scores it; one too small is named for its size
    if min(image.shape[:2]) >= MIN_IMAGE_SIDE and image.min() == image.max():
        why = " (a DICOM's rescale slope or window can flatten it)" if is_dicom(path) else ""
        raise SampotError(f"{path}: every pixel has the value {image.flat[0]}{why}: there is nothing to segment; "
                          "check the file, or re-export it.")  # fmt: skip
    return image


def read_user_image(path: str | Path) -> np.ndarray:
    """:func:`read_image` for a command given one image: a SampotWarning says when the file's EXIF orientation turned
    or mirrored it, since a mask drawn on the stored pixels then no longer fits."""
    image = read_image(path)
    if not is_dicom(path):
        _, _, orientation = stored_size(path)
        if orientation not in (None, 1):
            h, w = image.shape[:2]
            warnings.warn(f"{path}: its EXIF orientation {orientation} is applied, as image viewers do: it is read as "
                          f"{w}x{h} (W x H), the size its mask must have.", SampotWarning, stacklevel=2)  # fmt: skip
    return image


def check_image_side(image: np.ndarray, name: str | Path) -> None:
    """SampotError naming ``name`` unless both sides of ``image`` reach :data:`~sampot_lib.defaults.MIN_IMAGE_SIDE`
    (what the models segment; ``sampot data check`` states the same bound). Checked before a prompt is: a click
    refused for lying outside a 1 x 1 image would send the user to move the click."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise SampotError(
            f"{name}: {w}x{h} pixels; the models need at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}. Give a larger image."
        )


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


def check_mask(
    arr: np.ndarray, *, name: str = "mask", expected_shape: tuple[int, int] | None = None, allow_empty: bool = False
) -> np.ndarray:
    """Validate an in-memory mask (2-D numbers or bools, two finite values at most, not empty unless
    ``allow_empty``) and return it as bool."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise SampotError(f"{name}: mask has dtype {arr.dtype}; expected bool or numbers (e.g. 0 and 255).")
    if arr.ndim != 2:
        raise SampotError(f"{name}: mask has shape {arr.shape}; expected a 2-D array.")
    if expected_shape is not None and arr.shape != tuple(expected_shape):
        raise SampotError(
            f"{name}: mask is {arr.shape[1]}x{arr.shape[0]} (W x H) but the image is "
            f"{expected_shape[1]}x{expected_shape[0]}; masks must have the image's size."
        )
    if arr.dtype != bool:  # a bool mask is binary by its type, and the method checks its own masks often
        if arr.dtype == np.uint8:
            # bincount is ~20x faster than unique on a 1024^2 mask, and validation reads every mask of a data set.
            values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
        else:
            values = np.unique(arr)
        if not np.isfinite(values).all():  # a NaN would count as foreground, silently
            raise SampotError(f"{name}: mask holds NaN or infinite values; expected 0 and one other value.")
        if len(values) > 2 or (len(values) == 2 and values[0] != 0):
            shown = ", ".join(str(v) for v in values[:6]) + (" ..." if len(values) > 6 else "")
            raise SampotError(f"{name}: mask is not binary (values {shown}); expected 0 and one other value.")
    out = arr.astype(bool)
    if not out.any() and not allow_empty:
        raise SampotError(f"{name}: mask is empty (no foreground pixel).")
    return out


def write_png(path: str | Path, arr: np.ndarray, *, compress_level: int = 6) -> None:
    """Write an ``H x W`` uint8 or bool array (bool as 0/255) as PNG atomically (temporary name, then replace)."""
    path = Path(path)
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        raise SampotError(f"{path}: write_png needs uint8 or bool pixels, got {arr.dtype}.")
    atomic_write(path, lambda fh: Image.fromarray(arr).save(fh, format="PNG", compress_level=compress_level))


def outside_ring(mask: np.ndarray, offset: float) -> np.ndarray:
    """``H x W`` bool: the pixels ``offset`` pixels (within half a pixel) outside an ``H x W`` bool mask, where the
    regressor's training set puts its clicks outside the structure.

    The distances are computed on the mask's bounding box widened by ``offset`` + 1 px: every mask pixel lies in that
    window, so each of its pixels gets the same distance as on the whole image, and no pixel outside it is within
    ``offset`` + 1/2 of the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    ring = np.zeros(mask.shape, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return ring
    pad = int(np.ceil(offset)) + 1
    window = (slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1))
    dist = ndimage.distance_transform_edt(~mask[window])
    ring[window] = np.abs(dist - offset) <= 0.5
    return ring


def has_outside_ring(mask: np.ndarray, offset: float) -> bool:
    """Whether :func:`outside_ring` holds a pixel; answered from the bounding box when a margin is wide enough."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return False
    h, w = mask.shape
    margins = (rows[0], h - 1 - rows[-1], cols[0], w - 1 - cols[-1])
    if max(margins) > offset + 1:  # straight out from the outermost mask pixel the distance grows by 1 a pixel
        return True
    return bool(outside_ring(mask, offset).any())


def looks_inverted(mask: np.ndarray) -> bool:
    """Whether an ``H x W`` bool mask looks inverted (the structure as background): it covers most of the image
    and nearly all of its border. A lung, a heart or a nodule never touches the whole border; its inverse does."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.size == 0 or mask.mean() <= 0.5:
        return False
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return bool(border.mean() > 0.9)
