"""Copies inside a data set: the same image file under several ids (a leak when a split separates them) and the same
mask file for several images (fine for drawn shapes, a mistake for real X-rays)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sampot_lib.files import sha256_file


def identical_files(paths: dict[str, Path], subject_of: dict[str, str] | None = None) -> list[list[str]]:
    """The groups of ids (each sorted, two or more) whose files ({id: file}) are byte-identical: for images, the same
    X-ray under several ids, which a split may put in training and in test. With ``subject_of``, only groups that
    span several subjects (one subject's copies always share a part)."""
    by_hash: dict[str, list[str]] = {}
    for image_id in sorted(paths):
        by_hash.setdefault(sha256_file(paths[image_id]), []).append(image_id)
    subject = subject_of or {}
    return [ids for ids in by_hash.values() if len({subject.get(i, i) for i in ids}) > 1]


def identical_masks_note(masks_dir: Path, structure: str, ids: Iterable[str]) -> str | None:
    """A note naming masks of one structure that are byte-identical files, or None."""
    paths = {i: masks_dir / structure / f"{i}.png" for i in ids}
    groups = [[f"{i}.png" for i in g] for g in identical_files({i: p for i, p in paths.items() if p.is_file()})]
    if not groups:
        return None
    shown = "; ".join(" = ".join(g[:3]) + (f" (+{len(g) - 3})" if len(g) > 3 else "") for g in groups[:3])
    more = f" and {len(groups) - 3} more group(s)" if len(groups) > 3 else ""
    return (
        f"masks/{structure}/: identical mask files for different images: {shown}{more}. Fine for drawn test "
        "shapes; for real images a mask copied to another image is wrong for it. A regressor's leak check tells "
        "images apart by image and mask together, so identical masks alone are never taken for a leak."
    )
