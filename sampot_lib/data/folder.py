"""The folder format for data sets: a folder read as a data set once :mod:`sampot_lib.data.validate` has passed it.

Layout::

    DIR/images/<id>.<png|jpg|jpeg|dcm>
    DIR/masks/<structure>/<id>.png        binary (0 and one other value), same size as the image
    DIR/manifest.csv                      optional; columns ``id`` and, optionally, the subject's (``subject``,
                                          ``subject_id``, ``patient``, ``PatientID``: case, ``_``, ``-`` and spaces
                                          are ignored)

Every image needs a mask for every structure a command uses (a structure is a sub-folder of ``masks/``; a command
for one structure does not read the others). Images of one subject share a subject id in the manifest; without one,
each image is its own subject.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sampot_lib.data.io import (
    is_dicom,
    read_image,
    read_mask,
    stored_size,
    turned,
)
from sampot_lib.data.validate import validate_folder
from sampot_lib.errors import SampotError, SampotWarning


class FolderDataset:
    """A folder-format data set: ``ids``, ``structures``, ``subject_of(id)``, ``image(id)``, ``mask(id, s)``.

    Construction validates the folder (all problems in one SampotError) unless ``validate=False``, in which case
    only names are checked and errors surface when a file is read. What is usable but probably a mistake (e.g. an
    inverted mask) gives one :class:`~sampot_lib.errors.SampotWarning` for the lot.

    Args:
        root: The data set's folder (``images/``, ``masks/<structure>/``, optionally ``manifest.csv``).
        validate: Read and check every file now; False: check only names.
        structures: The mask sub-folders required and checked (one name may be given as a string); the others are
            not read. None: all found; empty: none (the images and the manifest only).
        training: Its masks are truths to train and evaluate on (see :func:`validate_folder`); False for masks that
            are only scored.

    Raises:
        SampotError: The folder is not a usable data set (every problem listed).

    Attributes:
        root: The folder, as a path.
        ids: The image ids, sorted.
        structures: The structures: the mask sub-folders used.
        report: What the validation found (:func:`validate_folder`).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        validate: bool = True,
        structures: Iterable[str] | None = None,
        training: bool = True,
    ):
        self.root = Path(root)
        report = validate_folder(self.root, structures=structures, check_contents=validate, training=training)
        if not report.ok:
            raise SampotError(
                f"{self.root} is not a usable data set:\n"
                + "\n".join(f"  - {p}" for p in report.problems)
                + "\nFix these (see `sampot data check DIR`) and try again."
            )
        if report.warnings:  # one line for the lot: `sampot data check` lists them all
            more = f" and {len(report.warnings) - 1} more" if len(report.warnings) > 1 else ""
            warnings.warn(
                f"{self.root}: {report.warnings[0]}{more} (see `sampot data check {self.root}`).",
                SampotWarning, stacklevel=2,
            )  # fmt: skip
        self.report = report
        self.ids: list[str] = report.ids
        self.structures: list[str] = report.structures
        self._subjects = report.subjects
        self._files = {p.stem: p for p in (self.root / "images").iterdir() if p.stem in set(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"FolderDataset({str(self.root)!r}: {len(self)} images, structures {self.structures})"

    @property
    def subjects(self) -> list[str]:
        """Distinct subject ids, sorted."""
        return sorted(set(self._subjects.values()))

    def subject_of(self, image_id: str) -> str:
        """The subject an image belongs to.

        Args:
            image_id: The image's id.

        Returns:
            The subject id (the image's own id when the manifest names none).

        Raises:
            SampotError: No image has that id.
        """
        self._check_id(image_id)
        return self._subjects[image_id]

    def image_path(self, image_id: str) -> Path:
        """The image file of an image id.

        Args:
            image_id: The image's id.

        Returns:
            The path of ``images/<id>.<png|jpg|jpeg|dcm>``.

        Raises:
            SampotError: No image has that id.
        """
        self._check_id(image_id)
        return self._files[image_id]

    def mask_path(self, image_id: str, structure: str) -> Path:
        """The mask file of an image id and a structure.

        Args:
            image_id: The image's id.
            structure: The structure (a mask sub-folder).

        Returns:
            The path of ``masks/<structure>/<id>.png``.

        Raises:
            SampotError: No image has that id, or the data set has no such structure.
        """
        self._check_id(image_id)
        if structure not in self.structures:
            raise SampotError(
                f"structure '{structure}' is not in {self.root} (structures: {', '.join(self.structures)})."
            )
        return self.root / "masks" / structure / f"{image_id}.png"

    def image(self, image_id: str, *, low_pct: float | None = None, high_pct: float | None = None) -> np.ndarray:
        """Read an image as grayscale.

        Args:
            image_id: The image's id.
            low_pct: The lower percentile of a window that ignores a few extreme pixels (e.g. 0.5); None: 0, the
                minimum. Without either percentile, 8-bit grayscale is kept as it is and other images are stretched
                from min to max.
            high_pct: The upper percentile of the window (e.g. 99.5); None: 100, the maximum.

        Returns:
            The image, H x W uint8.

        Raises:
            SampotError: No image has that id, or its file cannot be read.
        """
        return read_image(self.image_path(image_id), low_pct=low_pct, high_pct=high_pct)

    def mask(self, image_id: str, structure: str) -> np.ndarray:
        """Read the mask of one structure.

        Args:
            image_id: The image's id.
            structure: The structure (a mask sub-folder).

        Returns:
            The mask, H x W bool.

        Raises:
            SampotError: No such image or structure, or a mask that is not binary or is empty.
        """
        path = self.mask_path(image_id, structure)
        return read_mask(path)

    def image_size(self, image_id: str) -> tuple[int, int]:
        """An image's size as read (EXIF orientation applied), without decoding the pixels (PNG/JPEG).

        Args:
            image_id: The image's id.

        Returns:
            (H, W).
        """
        path = self.image_path(image_id)
        if is_dicom(path):
            return read_image(path).shape  # type: ignore[return-value]
        h, w, orientation = stored_size(path)
        return (w, h) if turned(orientation) else (h, w)

    def _check_id(self, image_id: str) -> None:
        if image_id not in self._subjects:
            raise SampotError(f"image id '{image_id}' is not in {self.root} ({len(self.ids)} images).")


Dataset = FolderDataset
