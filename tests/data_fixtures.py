"""Tiny folder-format data sets for tests and examples (made on the fly; nothing real)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def lung_pair(h: int = 32, w: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """``H x W`` bool masks (left_lung on the image's right, right_lung on the image's left) as bool masks."""
    left = np.zeros((h, w), bool)
    right = np.zeros((h, w), bool)
    left[4:-4, w // 2 + 3 : w - 4] = True
    right[4:-4, 4 : w // 2 - 3] = True
    return left, right


def make_folder(root: Path, n: int = 4, h: int = 32, w: int = 40, manifest: bool = False) -> Path:
    """Write ``n`` random-noise images with two rectangular lung masks each; subjects pair images if manifest."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for s in ("left_lung", "right_lung"):
        (root / "masks" / s).mkdir(parents=True)
    left, right = lung_pair(h, w)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(left.astype(np.uint8) * 255).save(root / "masks" / "left_lung" / f"im{i}.png")
        Image.fromarray(right.astype(np.uint8) * 255).save(root / "masks" / "right_lung" / f"im{i}.png")
    if manifest:
        rows = ["id,subject"] + [f"im{i},subj{i // 2}" for i in range(n)]
        (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def dicom_dataset(pixels, photometric: str = "MONOCHROME2", bits: int = 12, signed: bool = False, **tags):
    """A single-frame grayscale DICOM dataset (pydicom) of 16-bit ``pixels`` with ``bits`` stored, and ``tags``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    return ds
