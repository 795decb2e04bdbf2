"""A run folder (``--out``): its files, its lock, its manifest, and the split every stage shares.

- **Lock.** One run writes into a folder at a time: ``.sampot.lock`` is held (an OS file lock, released by the
  kernel if the process dies, so it is never stale) for as long as a stage works; a second run into the same folder
  is refused at once, naming the first one.
- **Manifest.** ``manifest.json`` records, for each stage (``split``, ``train``, ``evaluate``, ``evolve``, ...), what
  its files were made from (the settings it depends on and their hash, the split's hash, the hashes of its input
  files), the hashes of the files it wrote, and whether it finished. So an interrupted run (a stage left
  ``running``), a file changed since (another run, a hand edit) or results made from an older regressor are
  detected and named (:meth:`RunFolder.problems`, :meth:`RunFolder.require`), and ``--resume`` reuses exactly the
  stages whose inputs are unchanged.
- **Split.** A split is never remade while results that depend on it exist, and a ``splits.json`` no run there made
  (``sampot data split``, a copy, an edit) is never replaced: the run is refused, saying what to do.
- **Starting over.** ``--force`` deletes what earlier runs wrote for the stages it redoes
  (:mod:`sampot_lib.experiment.cleanup`), so that no old result is left beside a new one; other files stay.
- **Files.** CSV and JSON written atomically; JSON never holds NaN or Infinity (refused, or written as null and
  named).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sampot_lib import __version__
from sampot_lib.data.splits import load_splits
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import describe_changes, made_with, settings_hash
from sampot_lib.experiment.records import read_json, write_json
from sampot_lib.files import sha256_file, write_text

MANIFEST = "manifest.json"
LOCK = ".sampot.lock"
OWNER = ".sampot.lock.owner"
MANIFEST_FORMAT = "sampot-manifest/1"
#: Which stages' results are made from which: redoing a stage makes these stale.
DEPENDENTS: dict[str, tuple[str, ...]] = {
    "split": ("train", "evaluate", "evolve", "aggregate", "calibrate"),
    "train": ("evaluate", "evolve", "aggregate"),
    "evaluate": ("evolve", "aggregate"),
    "evolve": ("aggregate",),
}
#: Result files an older sampot (before the manifest) wrote; their presence means results exist.
RESULT_FILES = ("regressor.pt", "regressor_history.csv", "regressor_eval.csv", "regressor_eval.json",
                "evolution.csv", "trajectories.json", "summary.json")  # fmt: skip

# Locks this process holds, by lock path: a stage called inside run_experiment takes the lock its caller holds.
_HELD: dict[str, list[Any]] = {}


def split_hash(splits: dict[str, list[str]]) -> str:
    """sha256 of a split ({train, val, test: ids}) in canonical JSON: two runs used the same split iff equal."""
    doc = {k: list(splits[k]) for k in sorted(splits)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the run folder -------------------------------------------------------------------------------------------------


class RunFolder:
    """An output folder with its lock and manifest (see the module's docstring).

    Args:
        path: The folder (made when first locked).

    Attributes:
        path: The folder, as a path.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        """The manifest's file in the folder."""
        return self.path / MANIFEST

    def _check_dir(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise SampotError(f"output folder {self.path} is a file; give --out a folder (new or a run's).")

    # -- lock --
    def _key(self) -> str:
        return str((self.path / LOCK).resolve())

    def assert_unlocked(self) -> None:
        """Refuse now, before any work, if another process holds this folder's lock.

        Raises:
            SampotError: Another process holds the lock, or the folder is a file.
        """
        self._check_dir()
        if self.path.is_dir() and self._key() not in _HELD:
            with self.locked():
                pass

    @contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's lock (re-entrant within this process), for a ``with`` block.

        Yields:
            The folder itself, locked until the block ends.

        Raises:
            SampotError: Another process holds the lock, or the folder cannot be made or locked.
        """

        self._check_dir()
        key = self._key()
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield self
            finally:
                _HELD[key][1] -= 1
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SampotError(f"cannot create the output folder {self.path} ({exc.strerror}).") from exc
        lock = FileLock(str(self.path / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise SampotError(self._busy()) from None
        except OSError as exc:
            raise SampotError(f"cannot lock {self.path / LOCK} ({exc.strerror}); is the folder writable?") from exc
        _HELD[key] = [lock, 1]
        try:
            owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": " ".join(sys.argv)}
            write_text(self.path / OWNER, json.dumps(owner) + "\n")
            yield self
        finally:
            del _HELD[key]
            (self.path / OWNER).unlink(missing_ok=True)
            lock.release()

    def _busy(self) -> str:
        try:
            o = json.loads((self.path / OWNER).read_text())
            who = f"pid {o['pid']} on {o['host']}, started {o['started']}: {o['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            who = "another process"
        return (f"another sampot run is writing to {self.path} ({who}); wait for it to finish, or give this run "
                "another --out.")  # fmt: skip

    # -- manifest --
    def manifest(self) -> dict[str, Any]:
        """The folder's manifest.

        Returns:
            ``{"format", "stages": {name: entry}}``; an empty one if the folder has none.

        Raises:
            SampotError: The manifest file is not a sampot run manifest.
        """
        if not self.manifest_path.is_file():
            return {"format": MANIFEST_FORMAT, "stages": {}}
        try:
            doc = read_json(self.manifest_path, "run manifest")
        except SampotError as exc:  # nothing recorded here can be trusted: say how to go on
            raise SampotError(f"{str(exc).rstrip('.')}; use another --out, or --force to start this folder "
                              "over.") from None  # fmt: skip
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("stages"), dict):
            raise SampotError(f"{self.manifest_path} is not a sampot run manifest; use another --out, or --force to "
                              "start this folder over.")  # fmt: skip
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        write_json(self.manifest_path, doc)

    def entry(self, stage: str) -> dict[str, Any] | None:
        """A stage's record in the manifest.

        Args:
            stage: The stage's name.

        Returns:
            The record, or None if the stage has none.
        """
        return self.manifest()["stages"].get(stage)

    def begin(self, stage: str, settings: dict[str, Any], split: str | None, inputs: dict[str, str]) -> None:
        """Record that a stage starts (status ``running``); the results of stages made from it become stale.

        Args:
            stage: The stage's name (``split``, ``train``, ``evaluate``, ``evolve``, ...).
            settings: The settings it is made from.
            split: The hash of the split it is made on, or None.
            inputs: The hashes of its inputs, {name: sha256}.
        """
        doc = self.manifest()
        old = doc["stages"].get(stage)
        # Writing the same split again (its file rewritten) leaves what was made on it valid.
        same_split = stage == "split" and old is not None and old.get("split_hash") == split
        doc["stages"][stage] = {
            "status": "running", "settings": settings, "settings_hash": settings_hash(settings), "split_hash": split,
            "inputs": inputs, "outputs": {}, "started": _now(), "pid": os.getpid(), "sampot_version": __version__,
        }  # fmt: skip
        for dep in () if same_split else DEPENDENTS.get(stage, ()):
            entry = doc["stages"].get(dep)
            if entry is not None and entry["status"] != "stale":
                entry["status"] = "stale"
                entry["stale_because"] = f"its input stage '{stage}' was redone at {_now()}"
        self._save(doc)

    def finish(self, stage: str, outputs: list[str]) -> None:
        """Record that a stage finished, with the hash of each file it wrote.

        Args:
            stage: The stage's name.
            outputs: The files it wrote, relative to the folder.

        Raises:
            SampotError: The stage was not recorded as running (another process changed the manifest).
        """
        doc = self.manifest()
        entry = doc["stages"].get(stage)
        if entry is None or entry["status"] != "running":
            raise SampotError(f"{self.manifest_path}: stage '{stage}' finished but was not recorded as running; "
                              "another process changed the manifest.")  # fmt: skip
        entry["outputs"] = {name: sha256_file(self.path / name) for name in outputs}
        entry["status"] = "done"
        entry["finished"] = _now()
        self._save(doc)

    def record(self, stage: str, settings: dict[str, Any], split: str | None, inputs: dict[str, str],
               outputs: list[str]) -> None:  # fmt: skip
        """:meth:`begin` and :meth:`finish` at once, for a stage whose work is writing its outputs (the split).

        Args:
            stage: The stage's name (``split``, ``train``, ``evaluate``, ``evolve``, ...).
            settings: The settings it is made from.
            split: The hash of the split it is made on, or None.
            inputs: The hashes of its inputs, {name: sha256}.
            outputs: The files it wrote, relative to the folder.
        """
        self.begin(stage, settings, split, inputs)
        self.finish(stage, outputs)

    def _entry_problem(self, stage: str, entry: dict[str, Any]) -> str | None:
        """Why ``stage``'s recorded results cannot be trusted as they are, or None."""
        if entry["status"] == "running":
            live = entry.get("pid") == os.getpid() and self._key() in _HELD
            if not live:
                files = ", ".join(RESULTS_OF.get(stage, ())) or "(none)"
                return (f"stage '{stage}' was interrupted (started {entry.get('started')}, never finished): its "
                        f"files {files} are missing, partial or older")  # fmt: skip
            return None
        if entry["status"] == "stale":
            return f"stage '{stage}' is stale: {entry.get('stale_because', 'an input changed')}"
        for name, digest in entry.get("outputs", {}).items():
            p = self.path / name
            if not p.is_file():
                return f"{name} (written by stage '{stage}') is missing"
            if sha256_file(p) != digest:
                return f"{name} changed after stage '{stage}' wrote it (another run or a hand edit wrote it)"
        for name, digest in entry.get("inputs", {}).items():
            p = self.path / name
            if name.startswith("file:") or not p.is_file():
                continue  # an input outside the folder or a data-set identity: checked by its consumer
            if sha256_file(p) != digest:
                return f"stage '{stage}' was made from an older {name} (it has changed since)"
        return None

    def problems(self, *, stages: bool = True) -> list[str]:
        """Every reason the folder's results cannot all be trusted.

        Args:
            stages: Include each recorded stage's own problem; False when :meth:`reuse` will say it as the stage
                is reached, so that it is said once.

        Returns:
            One line per problem (interrupted, stale, changed or missing files); empty when there is none.
        """
        doc = self.manifest()
        out = []
        for stage, entry in doc["stages"].items() if stages else ():
            why = self._entry_problem(stage, entry)
            if why:
                out.append(f"{self.path}: {why}")
        if not doc["stages"]:
            legacy = [n for n in RESULT_FILES if (self.path / n).is_file()]
            if legacy:
                out.append(f"{self.path}: {', '.join(legacy)} have no record in {MANIFEST} (written by an older "
                           "sampot, or by hand)")  # fmt: skip
        return out

    def require(self, stage: str, settings: dict[str, Any] | None = None, split: str | None = None) -> dict[str, Any]:
        """The finished, unchanged record of a stage.

        Args:
            stage: The stage's name.
            settings: The settings it must have been made with; None: any.
            split: The hash of the split it must have been made on; None: any.

        Returns:
            The stage's record.

        Raises:
            SampotError: The record is missing, interrupted, stale, changed since, or made with other settings or
                another split, naming the problem and what to do.
        """
        entry = self.entry(stage)
        fix = "run that stage again (sampot run, or the chapter that writes it), or --force to start over"
        if entry is None:
            legacy = [n for n in RESULTS_OF.get(stage, ()) if (self.path / n).is_file()]
            if legacy:
                raise SampotError(f"{self.path}: {', '.join(legacy)} have no record in {MANIFEST} (an older sampot "
                                  f"or a hand copy made them); {fix}, or pass a regressor on purpose with "
                                  "--regressor PATH.")  # fmt: skip
            raise SampotError(f"{self.path}: stage '{stage}' has not run here yet; {fix}.")
        why = self._entry_problem(stage, entry)
        if why:
            raise SampotError(f"{self.path}: {why}; {fix}.")
        if split is not None and entry.get("split_hash") != split:
            raise SampotError(f"{self.path}: stage '{stage}' was made on another split than this run's; {fix}.")
        if settings is not None and not made_with(entry, settings):
            diff = describe_changes(entry.get("settings", {}), settings)
            raise SampotError(f"{self.path}: stage '{stage}' was made with other settings ({diff}); {fix}.")
        return entry

    def reusable(self, stage: str, settings: dict[str, Any], split: str | None, inputs: dict[str, str]) -> str | None:
        """Whether a stage finished here from exactly these settings, split and inputs, its files unchanged.

        Args:
            stage: The stage's name (``split``, ``train``, ``evaluate``, ``evolve``, ...).
            settings: The settings it is made from.
            split: The hash of the split it is made on, or None.
            inputs: The hashes of its inputs, {name: sha256}.

        Returns:
            None if ``--resume`` may skip the stage; else why not.
        """
        entry = self.entry(stage)
        if entry is None:
            return f"stage '{stage}' has not run here"
        if entry["status"] == "running":  # here too: a stage that raised in this process (a notebook) left it so
            return f"stage '{stage}' did not finish"
        why = self._entry_problem(stage, entry)
        if why:
            return why
        if not made_with(entry, settings):
            return f"stage '{stage}' was made with other settings ({describe_changes(entry['settings'], settings)})"
        if entry.get("split_hash") != split:
            return f"stage '{stage}' was made on another split"
        if entry.get("inputs") != inputs:
            changed = sorted(k for k in set(entry.get("inputs", {})) | set(inputs)
                             if entry.get("inputs", {}).get(k) != inputs.get(k))  # fmt: skip
            return f"stage '{stage}' was made from other inputs ({', '.join(changed)} changed)"
        return None

    def reuse(
        self, stage: str, settings: dict[str, Any], split: str | None, inputs: dict[str, str], *, say: bool = True
    ) -> bool:
        """Whether ``--resume`` may keep a stage's results (:meth:`reusable`).

        Args:
            stage: The stage's name (``split``, ``train``, ``evaluate``, ``evolve``, ...).
            settings: The settings it is made from.
            split: The hash of the split it is made on, or None.
            inputs: The hashes of its inputs, {name: sha256}.
            say: When it may not, and the stage had run here, print which stage is redone and why (on stderr).

        Returns:
            True if the results may be kept.
        """
        why = self.reusable(stage, settings, split, inputs)
        if why is not None and say and self.entry(stage) is not None:
            print(f"note: {why}; redoing it.", file=sys.stderr)
        return why is None

    def results_on_other_split(self, split: str) -> list[str]:
        """The files here that depend on another split.

        Args:
            split: The split's hash.

        Returns:
            The files' names, sorted (from the manifest, or an older sampot's files when the folder's splits.json is
            another split).
        """
        doc = self.manifest()
        files: list[str] = []
        for stage, entry in doc["stages"].items():
            if stage != "split" and entry.get("split_hash") not in (None, split):
                files += [n for n in (entry.get("outputs") or {n: "" for n in RESULTS_OF.get(stage, ())})
                          if (self.path / n).is_file()]  # fmt: skip
        if not doc["stages"] and (self.path / "splits.json").is_file():
            if split_hash_of(self.path / "splits.json") != split:
                files += [n for n in RESULT_FILES if (self.path / n).is_file()]
        return sorted(set(files))

    def forget(self, stages: Iterable[str]) -> None:
        """Drop the records of stages from the manifest (their files are the caller's to delete).

        Args:
            stages: The stages whose records go (those not recorded are passed over).
        """
        doc, stages = self.manifest(), set(stages)
        if stages & set(doc["stages"]):
            for s in stages:
                doc["stages"].pop(s, None)
            self._save(doc)


#: The files each stage writes.
RESULTS_OF: dict[str, tuple[str, ...]] = {
    "split": ("splits.json",),
    "train": ("regressor.pt", "regressor_history.csv"),
    "evaluate": ("regressor_eval.csv", "regressor_eval.json"),
    "evolve": ("evolution.csv", "trajectories.json", "summary.json"),
    "aggregate": ("summary.json",),
    "calibrate": ("calibration.json", "regressor_calibrated.pt"),
}


def split_hash_of(path: Path) -> str | None:
    try:
        return split_hash(load_splits(path))
    except SampotError:
        return None
