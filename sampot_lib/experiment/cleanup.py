"""Starting a run folder over (``--force``): what earlier runs wrote there is deleted, stage by stage, so that no old
result is left beside a new one; the user's other files, a split they made and the files the run reads stay.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sampot_lib.errors import SampotError
from sampot_lib.experiment.runfolder import (
    DEPENDENTS,
    LOCK,
    MANIFEST,
    OWNER,
    RESULT_FILES,
    RESULTS_OF,
    RunFolder,
)
from sampot_lib.files import sha256_file

#: Files a stage writes beside its recorded results: the training set the regressor was fitted on (kept for
#: ``--resume``), and the run's page made from the evolution's results (by ``sampot run``).
WRITTEN_BESIDE: dict[str, tuple[str, ...]] = {
    "train": ("regressor_set.npz",),
    "evolve": ("summary.html",),
    "aggregate": ("summary.html",),
}


def with_dependents(stages: Iterable[str]) -> set[str]:
    """``stages`` and every stage made from them (``DEPENDENTS``, followed to the end)."""
    out, todo = set(), list(stages)
    while todo:
        stage = todo.pop()
        if stage not in out:
            out.add(stage)
            todo += DEPENDENTS.get(stage, ())
    return out


def foreign_split(folder: RunFolder) -> bool:
    """Whether the folder's ``splits.json`` is one no run here wrote (``sampot data split``, a copy, an edit).

    A run's own split is recorded by the manifest's ``split`` stage with the file's hash; in a folder without a
    manifest, an older sampot's split lies beside its ``config.json`` or result files.

    Args:
        folder: The run folder.

    Returns:
        True if ``splits.json`` exists and no run here wrote it as it is now.

    Raises:
        SampotError: The manifest is damaged (nothing recorded here can be trusted).
    """
    made = folder.path / "splits.json"
    if not made.is_file():
        return False
    stages = folder.manifest()["stages"]
    if not stages:
        return not any((folder.path / n).is_file() for n in (*RESULT_FILES, "config.json"))
    recorded = ((stages.get("split") or {}).get("outputs") or {}).get("splits.json")
    return recorded != sha256_file(made)


def reset(folder: RunFolder, keep: Iterable[str | Path | None] = ()) -> list[str]:
    """Start the folder over, deleting what sampot wrote there.

    Every file sampot recorded (or an older sampot's result files), the folder's own split, config and manifest
    are deleted; a split no run here wrote (:func:`foreign_split`), the files in ``keep`` and other files
    are left alone.

    Args:
        folder: The run folder.
        keep: Files the coming run reads (its split file, its regressor): never deleted.

    Returns:
        The names removed.
    """
    try:
        stages = folder.manifest()["stages"]
    except SampotError:
        stages = {}
    names = {n for e in stages.values() for n in (e.get("outputs") or {})}
    names |= {n for s in stages for n in RESULTS_OF.get(s, ())}
    names |= set(RESULT_FILES) | {"splits.json", "config.json", MANIFEST}
    try:
        foreign = foreign_split(folder)
    except SampotError:  # a damaged manifest: the split beside it is the run's that wrote it
        foreign = False
    if foreign:
        names.discard("splits.json")
    return _delete(folder, names, keep)


def _delete(folder: RunFolder, names: set[str], keep: Iterable[str | Path | None]) -> list[str]:
    """Delete the files ``names`` of the folder, except those of ``keep``; returns the names deleted, sorted."""
    removed = []
    for name in sorted(names - _kept(folder, keep)):
        path = folder.path / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    return removed


def _kept(folder: RunFolder, keep: Iterable[str | Path | None]) -> set[str]:
    """The names, relative to the folder, of the files of ``keep`` that lie in it."""
    here = folder.path.resolve()
    out = set()
    for path in keep:
        if path is not None:
            p = Path(path).resolve()
            if p.parent == here:
                out.add(p.name)
    return out


def remove_stages(folder: RunFolder, stages: Iterable[str], keep: Iterable[str | Path | None] = ()) -> list[str]:
    """Delete what ``stages`` wrote here, and their records, so that no result of an earlier run is left beside a
    new run's.

    The files are those the manifest records, and the names the stages write (``RESULTS_OF``,
    ``WRITTEN_BESIDE``); for ``aggregate``, the seeds' run folders ``seed_<k>/`` are emptied of what sampot
    wrote there and removed when nothing else is left in them. A damaged manifest: the whole folder is started
    over (:func:`reset`). Other files are left alone.

    Args:
        folder: The run folder.
        stages: The stages (``train``, ``evaluate``, ``evolve``, ``aggregate``, ...), as they are: not the stages
            made from them.
        keep: Files the coming run reads (its split file, its regressor): never deleted.

    Returns:
        The names removed (a seed's folder as ``seed_<k>/``; one kept for other files in it as
        ``seed_<k>/ (kept: it holds other files)``).
    """
    try:
        doc = folder.manifest()
    except SampotError:
        return reset(folder, keep)
    stages = set(stages)
    recorded = doc["stages"]
    names = {n for s in stages for n in (*RESULTS_OF.get(s, ()), *WRITTEN_BESIDE.get(s, ()))}
    names |= {n for s in stages & set(recorded) for n in (recorded[s].get("outputs") or {})}
    if not recorded:  # an older sampot's results (no manifest) are all made from one another
        names |= set(RESULT_FILES)
    removed = _delete(folder, names, keep)
    if "aggregate" in stages:
        removed += _remove_seed_folders(folder, recorded.get("aggregate"), keep)
    folder.forget(stages)
    return removed


def _remove_seed_folders(
    folder: RunFolder, aggregate: dict[str, Any] | None, keep: Iterable[str | Path | None]
) -> list[str]:
    """Empty and remove the seeds' run folders: those the aggregate records, and every ``seed_<k>/`` holding a
    manifest (a run over seeds that stopped before its aggregate)."""
    seeds = ((aggregate or {}).get("settings") or {}).get("seeds") or []
    found = {folder.path / f"seed_{k}" for k in seeds}
    found |= {p for p in folder.path.glob("seed_*") if p.name[5:].isdigit() and (p / MANIFEST).is_file()}
    removed = []
    for sub_path in sorted(p for p in found if p.is_dir()):
        sub = RunFolder(sub_path)
        reset(sub, keep)
        for name in (*WRITTEN_BESIDE["train"], *WRITTEN_BESIDE["evolve"], OWNER, LOCK):
            if sub.path.joinpath(name).is_file() and name not in _kept(sub, keep):
                sub.path.joinpath(name).unlink()
        try:
            sub_path.rmdir()
            removed.append(f"{sub_path.name}/")
        except OSError:  # files sampot did not write are in it: the user's, kept with their folder
            removed.append(f"{sub_path.name}/ (kept: it holds other files)")
    return removed
