"""The folder format's validator: every problem of a data set at once, each with what to do, before any work.

It reads every file as a run does (an EXIF orientation applied, DICOM through pydicom), so a folder it passes is one
a run can use; see :mod:`sampot_lib.data.folder` for the layout.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from sampot_lib.data.copies import identical_files, identical_masks_note
from sampot_lib.data.io import (
    IMAGE_SUFFIXES,
    has_outside_ring,
    is_dicom,
    looks_inverted,
    read_image,
    read_mask,
    stored_size,
    turned,
)
from sampot_lib.defaults import MIN_IMAGE_SIDE, OUTSIDE_OFFSET
from sampot_lib.errors import SampotError

MANIFEST = "manifest.csv"


# The manifest's subject column, compared as :func:`_subject_column_key` gives it: ``subject``, ``Subject_ID``,
# ``PatientID`` (DICOM's tag name), ``patient-id`` and ``Patient ID`` all name it.
_SUBJECT_COLUMN_KEYS = ("subject", "subjectid", "patient", "patientid")
#: Other names a patient key goes by in exports, which a manifest's note points out when no subject column is found.
_PATIENT_LIKE_KEYS = ("mrn", "pid", "case", "caseid", "subj", "subjid", "patno", "medicalrecordnumber")


def _subject_column_key(name: str) -> str:
    """A manifest column's name as compared with ``_SUBJECT_COLUMN_KEYS``: lower case, without ``_``, ``-`` and
    spaces."""
    return re.sub(r"[\s_-]", "", name).lower()


def _subject_column(columns: list[str], problems: list[str]) -> str | None:
    """The manifest's subject column, or None when it has none; two that name the subject are a problem."""
    found = [c for c in columns if _subject_column_key(c) in _SUBJECT_COLUMN_KEYS]
    if len(found) > 1:
        named = " and ".join(repr(c) for c in found)
        problems.append(f"{MANIFEST}: columns {named} {'both' if len(found) == 2 else 'all'} name the subject; keep "
                        "one (remove or rename the others).")  # fmt: skip
    return found[0] if found else None


def _case_twins(subjects: Iterable[str]) -> list[tuple[str, str]]:
    """Pairs of distinct subject ids that differ only in letter case, e.g. ('P1', 'p1')."""
    first: dict[str, str] = {}
    twins = []
    for subject in sorted(set(subjects)):
        key = subject.casefold()
        if key in first:
            twins.append((first[key], subject))
        else:
            first[key] = subject
    return twins


@dataclass
class Report:
    """What :func:`validate_folder` found. ``problems`` is empty when the folder is usable.

    Attributes:
        root: The folder.
        ids: The image ids, sorted.
        structures: The structures (sub-folders of ``masks/``).
        subjects: {image id: subject id} (the image's own id where the manifest gives none).
        sizes: How many images have each (width, height).
        masks_checked: How many mask files were read.
        problems: What makes the folder unusable, one line each with what to do.
        warnings: Usable, but probably a mistake (an inverted mask).
        notes: Usable, worth knowing (an EXIF orientation applied).
    """

    root: Path
    ids: list[str] = field(default_factory=list)
    structures: list[str] = field(default_factory=list)
    subjects: dict[str, str] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    masks_checked: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems

    @property
    def n_subjects(self) -> int:
        """The number of distinct subjects."""
        return len(set(self.subjects.values()))

    def format(self) -> str:
        """A human-readable report.

        Returns:
            The counts, then every problem, warning and note, one per line.
        """
        sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in self.sizes.most_common(5))
        if len(self.sizes) > 5:
            sizes += f", ... ({len(self.sizes)} sizes)"
        lines = [
            f"{self.root}",
            f"  images:     {len(self.ids)}",
            f"  subjects:   {self.n_subjects}",
            f"  structures: {', '.join(self.structures) or '(none)'}",
            f"  masks:      {self.masks_checked} checked",
            f"  sizes (W x H): {sizes or '(none)'}",
        ]
        if self.ok:
            lines.append("OK: no problems found.")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  - {p}" for p in self.problems)
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines.extend(f"  - {w}" for w in self.warnings)
        if self.notes:
            lines.append(f"{len(self.notes)} note(s):")
            lines.extend(f"  - {n}" for n in self.notes)
        return "\n".join(lines)


#: What a data set's check says of an entry that is neither a file nor a folder.
NOT_A_FILE = "not a regular file (a pipe, a socket or a device): sampot reads only files there; replace it by the file."


def _image_files(images_dir: Path, problems: list[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():  # skipped without a word, the images a user sorted into it would drop out of every run
            problems.append(f"images/{path.name}/: a folder; only the files directly in images/ are read: move its "
                            "images up into images/, or the folder out of the data set.")  # fmt: skip
            continue
        if path.exists() and not path.is_file():  # reading a pipe would wait for a writer for ever
            problems.append(f"images/{path.name}: {NOT_A_FILE}")
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(
                f"images/{path.name}: unsupported file type; use one of {', '.join(IMAGE_SUFFIXES)} (or remove it)."
            )
            continue
        if path.stem in found:
            problems.append(f"images/{path.name}: id '{path.stem}' also used by images/{found[path.stem].name}.")
            continue
        found[path.stem] = path
    return found


def _patient_like(columns: list[str], rows: list[dict[str, str]]) -> list[str]:
    """The columns of a manifest without a subject column whose name reads like a patient key (``MRN``, ``pid``,
    ``case_id``, ``patient_number``) and whose values repeat across rows, as one patient's would."""
    found = []
    for column in columns:
        key = _subject_column_key(column)
        person = any(key.startswith(w) for w in ("patient", "subject", "participant"))
        named = key in _PATIENT_LIKE_KEYS or (person and key.endswith(("id", "number", "no", "num", "code")))
        values = [(row.get(column) or "").strip() for row in rows]
        if column != "id" and named and all(values) and len(set(values)) < len(values):
            found.append(column)
    return found


def _read_manifest(path: Path, problems: list[str], notes: list[str] | None = None) -> dict[str, str] | None:
    """manifest.csv -> {id: subject}; None when absent or unusable (problems are recorded; ``notes`` gets a column
    that looks like a patient key but is not read as one)."""
    if path.exists() and not path.is_file():  # a folder of that name: the subjects it should give would be lost
        problems.append(f"{MANIFEST}: is a folder (or another non-file); replace it with the CSV file, or remove it.")
        return None
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{MANIFEST}: unreadable ({exc}).")
        return None
    if not rows:
        problems.append(f"{MANIFEST}: has no rows; remove it or list one row per image.")
        return None
    columns = header
    longer = [i for i, row in enumerate(rows, start=2) if None in row]  # DictReader files surplus fields under None
    if longer:
        shown = ", ".join(str(i) for i in longer[:5]) + (f" and {len(longer) - 5} more" if len(longer) > 5 else "")
        problems.append(
            f"{MANIFEST}: line(s) {shown} have more fields than its header ({', '.join(header)}); add the missing "
            "column name(s) to the header or remove the extra fields (a comma inside a value needs quotes)."
        )
        return None
    if "id" not in columns:
        problems.append(f"{MANIFEST}: no 'id' column (columns: {', '.join(columns)}).")
        return None
    subject_col = _subject_column(columns, problems)
    for column in _patient_like(columns, rows) if subject_col is None and notes is not None else ():
        notes.append(f"{MANIFEST}: column '{column}' repeats its values as a patient's id would, but sampot reads the "
                     "subject from a column named subject, subject_id, patient or patient_id; each image counts as "
                     f"its own subject. If '{column}' names the patient, rename it to subject.")  # fmt: skip
    out: dict[str, str] = {}
    for i, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        image_id = row["id"]
        if not image_id:
            problems.append(f"{MANIFEST} line {i}: empty id.")
            continue
        if image_id in out:
            problems.append(f"{MANIFEST} line {i}: id '{image_id}' listed twice.")
            continue
        subject = row.get(subject_col, "") if subject_col else ""
        out[image_id] = subject or image_id
    return out


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image as a run reads it: decoded in full by the run's reader (channels, bit depth, EXIF
    orientation), so that whatever the check passes, a run reads."""
    return read_image(path).shape  # type: ignore[return-value]


def _orientation(path: Path) -> int | None:
    """The image's EXIF orientation when it turns or mirrors the stored pixels (not 1), else None."""
    if is_dicom(path):
        return None
    try:
        orientation = stored_size(path)[2]
    except (OSError, ValueError, SyntaxError):
        return None
    return orientation if orientation not in (None, 1) else None


def _mask_problem(exc: SampotError, mpath: Path, image: Path, orientation: int | None, shape: tuple[int, int]) -> str:
    """A mask's problem as the report states it; a size mismatch that the image's EXIF orientation explains says so."""
    if turned(orientation):
        try:
            stored = read_mask(mpath).shape
        except SampotError:
            stored = None
        if stored == (shape[1], shape[0]):
            return (
                f"mask is {stored[1]}x{stored[0]} (W x H): the size of images/{image.name} as stored, but the "
                f"image's EXIF orientation {orientation} turns it to {shape[1]}x{shape[0]} (as image viewers show "
                "it and sampot reads it); draw the mask on the turned image, or save the image without the "
                "orientation tag."
            )
    return _short(exc, mpath)


def structure_folders(root: str | Path) -> list[str]:
    """The structures a data set has masks of, without reading any mask.

    Args:
        root: The data set's folder.

    Returns:
        The names of the sub-folders of ``root/masks/``, sorted (none when it has no such folder).
    """
    masks_dir = Path(root) / "masks"
    if not masks_dir.is_dir():
        return []
    return sorted(p.name for p in masks_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def validate_folder(
    root: str | Path,
    *,
    structures: Iterable[str] | None = None,
    check_contents: bool = True,
    progress: bool = False,
    training: bool = True,
) -> Report:
    """Check a folder-format data set and collect every problem instead of stopping at the first.

    Problems are missing masks, size mismatches, non-binary or empty masks, unreadable files and manifest errors.

    Args:
        root: The data set's folder.
        structures: The mask sub-folders required and checked (one name may be given as a string); the others are
            not read. None: all found; empty: none (the images and the manifest only, ``masks/`` not looked at).
        check_contents: Read and check every file; False: check only names.
        progress: Show a progress bar.
        training: The masks are truths a regressor's training set is drawn from: a mask with no margin around the
            structure is a problem. False (masks only scored): a warning.

    Returns:
        What it found; its ``problems`` are empty when the folder is usable.
    """
    root = Path(root)
    report = Report(root=root)
    problems = report.problems
    if isinstance(structures, str):  # one name, not its letters
        structures = [structures]
    if root.exists() and not root.is_dir():
        problems.append(f"{root}: is a file, not a folder; give the data set's folder (images/, masks/<structure>/).")
        return report
    if not root.is_dir():
        problems.append(f"{root}: no such folder.")
        return report
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir():
        problems.append(f"{root}: no images/ folder; expected images/<id>.png and masks/<structure>/<id>.png.")
        return report
    files = _image_files(images_dir, problems)
    if not files:
        problems.append("images/: no images found.")
    found_structures = structure_folders(root)
    wanted = sorted(structures) if structures is not None else found_structures
    if structures is None or wanted:  # a command that reads no mask (a split) does not look at masks/
        if not masks_dir.is_dir():
            problems.append(f"{root}: no masks/ folder; expected masks/<structure>/<id>.png.")
        elif not wanted:
            problems.append("masks/: no structure sub-folders (e.g. masks/left_lung/).")
    for s in wanted:
        if s not in found_structures and masks_dir.is_dir():
            problems.append(f"masks/{s}/: missing; every image needs a mask for structure '{s}'.")
    report.structures = [s for s in wanted if s in found_structures]

    manifest = _read_manifest(root / MANIFEST, problems, report.notes)
    ids = sorted(files)
    if manifest is not None:
        for image_id in sorted(set(manifest) - set(files)):
            problems.append(f"{MANIFEST}: id '{image_id}' has no image in images/.")
        for image_id in sorted(set(files) - set(manifest)):
            problems.append(f"images/{files[image_id].name}: not listed in {MANIFEST}.")
    report.ids = ids
    # "José" typed on two machines (NFC and NFD) is one patient
    report.subjects = {i: unicodedata.normalize("NFC", (manifest or {}).get(i, i)) for i in ids}
    twins = _case_twins(report.subjects.values()) if manifest is not None else []
    if twins:  # kept apart: ids are compared as written, so these two subjects may land in different splits
        more = f" (and {len(twins) - 1} more such pair(s))" if len(twins) > 1 else ""
        report.warnings.append(
            f"{MANIFEST}: subjects '{twins[0][0]}' and '{twins[0][1]}' differ only in letter case{more}; they count as "
            "two subjects, so a split may put their images in different parts: if they are one subject, write its "
            "id the same way on every row."
        )

    # Masks without an image usually mean a renamed or deleted image.
    miscased: set[tuple[str, str]] = set()  # (structure, id) of a mask named <id>.PNG: reported once, as such
    for s in report.structures:
        for mpath in sorted((masks_dir / s).iterdir()):
            if mpath.name.startswith("."):
                continue
            if mpath.is_dir():
                problems.append(f"masks/{s}/{mpath.name}/: a folder; only the files directly in masks/{s}/ are read: "
                                f"move its masks up into masks/{s}/, or the folder out of the data set.")  # fmt: skip
                continue
            if mpath.exists() and not mpath.is_file():
                problems.append(f"masks/{s}/{mpath.name}: {NOT_A_FILE}")
            elif mpath.suffix.lower() != ".png":
                problems.append(f"masks/{s}/{mpath.name}: masks must be PNG files.")
            elif mpath.suffix != ".png" and not (mpath.parent / f"{mpath.stem}.png").is_file():
                # read as <id>.png, which a case-sensitive file system does not find
                miscased.add((s, mpath.stem))
                problems.append(f"masks/{s}/{mpath.name}: mask files are read as <id>.png, in lower case: rename it "
                                f"to {mpath.stem}.png.")  # fmt: skip
            elif mpath.stem not in files:
                problems.append(f"masks/{s}/{mpath.name}: no image with id '{mpath.stem}'.")

    iterator: Iterable[str] = ids
    if progress:
        iterator = tqdm(ids, desc=f"checking {root.name}", unit="image")
    for image_id in iterator:
        shape: tuple[int, int] | None = None
        orientation: int | None = None
        image = files[image_id]
        if check_contents:
            try:
                shape = _image_size(image)
                report.sizes[(shape[1], shape[0])] += 1
            except SampotError as exc:
                problems.append(f"images/{image.name}: not usable ({_short(exc, image)}).")
            if shape is not None and min(shape) < MIN_IMAGE_SIDE:
                problems.append(
                    f"images/{image.name}: {shape[1]}x{shape[0]} pixels; the models need at least "
                    f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}."
                )
            orientation = _orientation(image)
            if orientation is not None and shape is not None:
                report.notes.append(
                    f"images/{image.name}: EXIF orientation {orientation}; sampot applies it, as image viewers do, "
                    f"and reads the image as {shape[1]}x{shape[0]} (W x H); its masks must match that."
                )
        for s in report.structures:
            mpath = masks_dir / s / f"{image_id}.png"
            if not mpath.is_file():
                if (s, image_id) not in miscased and not mpath.exists():  # one that exists is named above
                    problems.append(f"masks/{s}/{image_id}.png: missing (image images/{files[image_id].name}).")
                continue
            if check_contents:
                report.masks_checked += 1
                try:
                    mask = read_mask(mpath, expected_shape=shape)
                except SampotError as exc:
                    problems.append(f"masks/{s}/{image_id}.png: {_mask_problem(exc, mpath, image, orientation, shape)}")
                    continue
                if not has_outside_ring(mask, OUTSIDE_OFFSET):
                    (problems if training else report.warnings).append(
                        f"masks/{s}/{image_id}.png: leaves no pixel {OUTSIDE_OFFSET:g} px outside the structure "
                        "(it fills the image, or nearly), where the regressor's training set clicks; give the image "
                        f"a margin of at least {OUTSIDE_OFFSET:g} px around the structure, or leave it out."
                    )
                if looks_inverted(mask):
                    report.warnings.append(
                        f"masks/{s}/{image_id}.png: covers {mask.mean():.0%} of the image and nearly all its border; "
                        "is it inverted (structure black, background white)?"
                    )
    if check_contents:
        copies = identical_files({i: files[i] for i in ids}, report.subjects)
        if copies:
            shown = "; ".join(" = ".join(g) for g in copies[:3]) + (
                f" and {len(copies) - 3} more" if len(copies) > 3 else ""
            )
            report.warnings.append(
                f"the same image file under several ids ({shown}), with different subjects: a split may put one copy "
                "in training and another in test. Give each group one subject in manifest.csv, or remove the copies."
            )
        for s in report.structures:
            note = identical_masks_note(masks_dir, s, ids)
            if note:
                report.notes.append(note)
    return report


def _short(exc: Exception, path: Path) -> str:
    """Drop the leading path from an io error message (the report already names the file)."""
    msg = str(exc)
    prefix = f"{path}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg
