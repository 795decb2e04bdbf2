"""Per-image results of a stage that has not finished: what ``--resume`` picks up after an interruption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sampot_lib.files import write_text


def part_text(result: dict[str, Any]) -> str:
    """``result`` as a part file's text."""
    # NaN stays NaN (Python's JSON reads it back); numpy scalars become Python numbers
    return json.dumps(result, allow_nan=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def as_stored(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` as its part file holds it (tuples as lists, numpy scalars as numbers): a fresh and a resumed
    run then write the same bytes."""
    return json.loads(part_text(result))


class StageParts:
    """Per-image results of an unfinished stage, one JSON file each, under ``root/<key>/`` (``key``: the hash of
    what the results depend on, so a part from other settings is never used). ``keep=False`` starts afresh."""

    def __init__(self, root: Path, key: str, keep: bool):
        self.root, self.dir = root, root / key[:16]
        if root.is_dir():  # parts of other settings, or every part when not resuming, are of no use
            for old in root.iterdir():
                if keep and old == self.dir:
                    continue
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)

    def load(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """{id: stored result} of every readable part of ``ids`` (a damaged one is redone)."""
        out = {}
        for image_id in ids:
            try:
                out[image_id] = json.loads((self.dir / f"{image_id}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return out

    def save(self, image_id: str, result: dict[str, Any]) -> None:
        """Write one image's part atomically (a temporary name renamed into place)."""
        write_text(self.dir / f"{image_id}.json", part_text(result))

    def clear(self) -> None:
        """Remove every part (the stage finished)."""
        shutil.rmtree(self.root, ignore_errors=True)
