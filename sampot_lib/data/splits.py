"""Subject-level train / validation / test splits, seeded and saved to JSON so every notebook uses the same one.

The paper split 122 subjects into 41 training, 28 validation and 53 test subjects; the default fractions are those
proportions. A subject's images always land in one split.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sampot_lib.defaults import PAPER_FRACTIONS
from sampot_lib.errors import SampotError
from sampot_lib.files import write_text

SPLIT_NAMES = ("train", "val", "test")
FORMAT_VERSION = 1


def _subject_map(dataset: Any) -> dict[str, str]:
    """{image id: subject} from a FolderDataset-like object, a mapping, or a plain list of ids."""
    if isinstance(dataset, Mapping):
        return {str(k): str(v) for k, v in dataset.items()}
    if hasattr(dataset, "ids") and hasattr(dataset, "subject_of"):
        return {i: dataset.subject_of(i) for i in dataset.ids}
    if isinstance(dataset, Sequence) and not isinstance(dataset, str):
        return {str(i): str(i) for i in dataset}
    raise SampotError(f"cannot split {type(dataset).__name__}: give a FolderDataset, a list of ids or a dict.")


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Share ``n`` subjects among the splits in proportion to ``fractions`` (largest remainder; every split with
    a positive fraction gets at least one subject when ``n`` allows)."""
    try:
        f = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError):
        f = np.full(0, np.nan)  # not numbers: refused just below, by the same message
    if f.ndim != 1 or len(f) != len(SPLIT_NAMES) or not np.isfinite(f).all() or (f < 0).any() or f.max() <= 0:
        raise SampotError(
            f"split fractions {list(fractions)} are invalid: give three finite non-negative numbers (train, val, test) "
            "with a positive sum, e.g. 41 28 53."
        )
    f = f / f.max()  # scaled first: the sum of fractions near the float maximum would overflow to inf
    want = f / f.sum() * n
    counts = np.floor(want).astype(int)
    for i in np.argsort(-(want - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    # Never leave a requested split empty while another can spare a subject.
    for i in np.flatnonzero((counts == 0) & (f > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return counts.tolist()


def make_splits(dataset: Any, fractions: Sequence[float] = PAPER_FRACTIONS, seed: int = 0) -> dict[str, list[str]]:
    """Assign whole subjects at random (seeded) to ``train``/``val``/``test`` -> {split: sorted image ids}.

    ``dataset``: a FolderDataset, a list of image ids (one subject each) or a dict {image id: subject}.
    ``fractions`` are normalised; they count subjects, not images.
    """
    subject_of = _subject_map(dataset)
    if not subject_of:
        raise SampotError("cannot split an empty data set.")
    subjects = sorted(set(subject_of.values()))
    counts = split_counts(len(subjects), fractions)
    order = np.random.default_rng(seed).permutation(len(subjects))
    bounds = np.cumsum([0, *counts])
    split_of_subject = {}
    for name, lo, hi in zip(SPLIT_NAMES, bounds[:-1], bounds[1:], strict=True):
        for k in order[lo:hi]:
            split_of_subject[subjects[k]] = name
    out: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for image_id in sorted(subject_of):
        out[split_of_subject[subject_of[image_id]]].append(image_id)
    return out


def save_splits(
    path: str | Path,
    splits: Mapping[str, Sequence[str]],
    *,
    seed: int,
    fractions: Sequence[float],
    subjects: Mapping[str, str] | None = None,
    source: str | None = None,
) -> Path:
    """Write the split file (JSON, atomically) recording seed, fractions, counts and, if given, the subjects."""
    path = Path(path)
    _check_disjoint(splits, path)
    if subjects is not None:
        _check_subjects(splits, subjects, path)
    doc: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "seed": int(seed),
        "fractions": [float(x) for x in fractions],
        "source": source,
        "counts": {k: len(v) for k, v in splits.items()},
        "splits": {k: list(v) for k, v in splits.items()},
    }
    if subjects is not None:
        doc["subjects"] = {k: subjects[k] for k in sorted(subjects)}
        doc["subject_counts"] = {k: len({subjects[i] for i in v}) for k, v in splits.items()}
    write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def _read_doc(path: Path) -> dict[str, Any]:
    """The split file's JSON object, or SampotError naming the file and what to do."""
    remake = (f"make a new one with `sampot data split DIR --out {path}`, or run without it (with no --split-file a "
              "run makes its own split)")  # fmt: skip
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SampotError(f"{path}: no such split file; make one with `sampot data split DIR --out {path}`.") from exc
    except IsADirectoryError as exc:
        raise SampotError(f"{path} is a folder, not a split file; give the JSON from `sampot data split`.") from exc
    except UnicodeDecodeError as exc:
        raise SampotError(f"{path}: not a split file (not text: {exc.reason} at byte {exc.start}); {remake}.") from exc
    except json.JSONDecodeError as exc:
        raise SampotError(f"{path}: damaged split file (bad JSON: {exc}; cut short?); {remake}.") from exc
    if not isinstance(doc, dict):
        raise SampotError(f"{path}: not a split file (JSON {type(doc).__name__}, not an object); {remake}.")
    return doc


def _is_name(value: Any) -> bool:
    """An id or subject as a split file may hold it: a string, or a whole number (taken as its digits)."""
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def load_splits(path: str | Path, dataset: Any = None) -> dict[str, list[str]]:
    """Read a split file -> {split: image ids}; with ``dataset``, check every id exists there and, where the data set
    names subjects (a manifest's subject column), that no subject has images in two splits.

    A missing, damaged or foreign file raises SampotError naming it (an OSError such as no permission is left to
    the caller's handler, which names the file too).
    """
    path = Path(path)
    doc = _read_doc(path)
    splits = doc.get("splits")
    if not isinstance(splits, dict) or set(splits) != set(SPLIT_NAMES):
        raise SampotError(f"{path}: a split file needs 'splits' with keys {', '.join(SPLIT_NAMES)}.")
    for k in SPLIT_NAMES:
        ids = splits[k]
        if not isinstance(ids, list) or not all(_is_name(i) for i in ids):
            raise SampotError(f"{path}: split '{k}' must be a list of image ids (names), got {str(ids)[:60]}.")
    splits = {k: [str(i) for i in splits[k]] for k in SPLIT_NAMES}
    subjects = doc.get("subjects")
    if subjects is not None and not (isinstance(subjects, dict) and all(_is_name(v) for v in subjects.values())):
        raise SampotError(f"{path}: 'subjects' must map image ids to subject names.")
    _check_disjoint(splits, path)
    if isinstance(subjects, dict):
        _check_subjects(splits, {str(k): str(v) for k, v in subjects.items()}, path)
    if dataset is not None:
        known = set(_subject_map(dataset))
        # "é" typed by hand (NFC) is one id with the "e" + accent a macOS file name holds (NFD)
        spelled = {unicodedata.normalize("NFC", i): i for i in known}
        splits = {k: [i if i in known else spelled.get(unicodedata.normalize("NFC", i), i) for i in v]
                  for k, v in splits.items()}  # fmt: skip
        _check_disjoint(splits, path)  # two spellings of one id in two parts
        missing = sorted({i for v in splits.values() for i in v} - known)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise SampotError(
                f"{path}: {len(missing)} id(s) are not in the data set ({shown}); the split was made for "
                "another data set. Make a new one with `sampot data split`."
            )
        if not (isinstance(dataset, Sequence) and not isinstance(dataset, str)):
            # A hand-written split, or one made before the manifest had its subject column, records no subjects.
            _check_subjects(splits, _subject_map(dataset), path, source="the data set's manifest")
    return splits


def split_info(path: str | Path) -> dict[str, Any]:
    """The split file's metadata (seed, fractions, counts, source) without the id lists."""
    doc = _read_doc(Path(path))
    return {k: v for k, v in doc.items() if k not in ("splits", "subjects")}


def empty_parts(splits: Mapping[str, Sequence[str]]) -> list[str]:
    """The names of the splits that hold no image (e.g. ``val`` of a set with two subjects)."""
    return [k for k in SPLIT_NAMES if not splits.get(k)]


def _check_disjoint(splits: Mapping[str, Sequence[str]], where: Path) -> None:
    seen: dict[str, str] = {}
    for name, ids in splits.items():
        for i in ids:
            if i in seen and seen[i] == name:
                raise SampotError(f"{where}: image '{i}' is listed twice in '{name}'; list each image once.")
            if i in seen:
                raise SampotError(f"{where}: image '{i}' is in both '{seen[i]}' and '{name}'.")
            seen[i] = name


def _check_subjects(
    splits: Mapping[str, Sequence[str]], subjects: Mapping[str, str], where: Path, source: str = ""
) -> None:
    """A subject's images must all sit in one split (otherwise test images leak into training).

    ``source`` names where the subjects come from when not from the split file itself.
    """
    split_of: dict[str, str] = {}
    for name, ids in splits.items():
        for i in ids:
            subj = subjects.get(i, i)
            if split_of.setdefault(subj, name) != name:
                if source:
                    raise SampotError(
                        f"{where}: subject '{subj}' ({source}) has images in both '{split_of[subj]}' and "
                        f"'{name}': a patient's images must stay in one part, or what is measured on one part was "
                        "learned from another. Make a split by subject with `sampot data split DIR --out FILE`, "
                        "or move that subject's images into one part of the split file."
                    )
                raise SampotError(
                    f"{where}: subject '{subj}' has images in both '{split_of[subj]}' and '{name}'; "
                    "a subject must stay in one split."
                )
