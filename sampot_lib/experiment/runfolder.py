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
- **Split.** A split is never remade while results that depend on it exist: the run is refused, saying what to do.
- **Files.** CSV and JSON written atomically; JSON never holds NaN or Infinity (refused, or written as null and
  named).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from sampot_lib import __version__
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.data.splits import load_splits, make_splits, save_splits
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig, apply_preset, settings_hash
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


# -- CSV and JSON -------------------------------------------------------------------------------------------------


def split_hash(splits: dict[str, list[str]]) -> str:
    """sha256 of a split ({train, val, test: ids}) in canonical JSON: two runs used the same split iff equal."""
    doc = {k: list(splits[k]) for k in sorted(splits)}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the run folder -------------------------------------------------------------------------------------------------


class RunFolder:
    """An output folder with its lock and manifest (see the module's docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def _check_dir(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise SampotError(f"output folder {self.path} is a file; give --out a folder (new or a run's).")

    # -- lock --
    def _key(self) -> str:
        return str((self.path / LOCK).resolve())

    def assert_unlocked(self) -> None:
        """Refuse now, before any work, if another process holds this folder's lock."""
        self._check_dir()
        if self.path.is_dir() and self._key() not in _HELD:
            with self.locked():
                pass

    @contextmanager
    def locked(self) -> Iterator[RunFolder]:
        """Hold the folder's lock (re-entrant within this process); SampotError if another process holds it."""

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
        """The manifest ({"format", "stages": {name: entry}}); an empty one if the folder has none."""
        if not self.manifest_path.is_file():
            return {"format": MANIFEST_FORMAT, "stages": {}}
        doc = read_json(self.manifest_path, "run manifest")
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or not isinstance(doc.get("stages"), dict):
            raise SampotError(f"{self.manifest_path} is not a sampot run manifest; use another --out, or --force to "
                              "start this folder over.")  # fmt: skip
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        write_json(self.manifest_path, doc)

    def entry(self, stage: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(stage)

    def begin(self, stage: str, settings: dict[str, Any], split: str | None, inputs: dict[str, str]) -> None:
        """Record that ``stage`` starts (status ``running``) from these settings, split hash and input hashes; the
        results of stages made from it become stale."""
        doc = self.manifest()
        old = doc["stages"].get(stage)
        # Writing the same split again (its file rewritten) leaves what was made on it valid.
        same_split = stage == "split" and old is not None and old.get("split_hash") == split
        doc["stages"][stage] = {
            "status": "running", "settings": settings, "settings_hash": settings_hash(settings), "split_hash": split,
            "inputs": inputs, "outputs": {}, "started": _now(), "pid": os.getpid(), "sampot_version": _version(),
        }  # fmt: skip
        for dep in () if same_split else DEPENDENTS.get(stage, ()):
            entry = doc["stages"].get(dep)
            if entry is not None and entry["status"] != "stale":
                entry["status"] = "stale"
                entry["stale_because"] = f"its input stage '{stage}' was redone at {_now()}"
        self._save(doc)

    def finish(self, stage: str, outputs: list[str]) -> None:
        """Record that ``stage`` finished, with the hash of each file it wrote (names relative to the folder)."""
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
        """begin + finish for a stage whose work is writing its outputs (the split)."""
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

    def problems(self) -> list[str]:
        """Every reason the folder's results cannot all be trusted: interrupted, stale, changed or missing files."""
        doc = self.manifest()
        out = []
        for stage, entry in doc["stages"].items():
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
        """The finished, unchanged record of ``stage``; SampotError naming the problem (missing, interrupted,
        stale, changed since, or made with other settings or another split) and what to do."""
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
        if settings is not None and entry.get("settings_hash") != settings_hash(settings):
            diff = describe_changes(entry.get("settings", {}), settings)
            raise SampotError(f"{self.path}: stage '{stage}' was made with other settings ({diff}); {fix}.")
        return entry

    def reusable(self, stage: str, settings: dict[str, Any], split: str | None, inputs: dict[str, str]) -> str | None:
        """None if ``stage`` finished here from exactly these settings, split and inputs and its files are
        unchanged (``--resume`` may skip it); else why not."""
        entry = self.entry(stage)
        if entry is None:
            return f"stage '{stage}' has not run here"
        if entry["status"] == "running":  # here too: a stage that raised in this process (a notebook) left it so
            return f"stage '{stage}' did not finish"
        why = self._entry_problem(stage, entry)
        if why:
            return why
        if entry.get("settings_hash") != settings_hash(settings):
            return f"stage '{stage}' was made with other settings ({describe_changes(entry['settings'], settings)})"
        if entry.get("split_hash") != split:
            return f"stage '{stage}' was made on another split"
        if entry.get("inputs") != inputs:
            changed = sorted(k for k in set(entry.get("inputs", {})) | set(inputs)
                             if entry.get("inputs", {}).get(k) != inputs.get(k))  # fmt: skip
            return f"stage '{stage}' was made from other inputs ({', '.join(changed)} changed)"
        return None

    def results_on_other_split(self, split: str) -> list[str]:
        """Files here that depend on a split other than ``split`` (from the manifest, or an older sampot's files
        when the folder's splits.json is another split)."""
        doc = self.manifest()
        files: list[str] = []
        for stage, entry in doc["stages"].items():
            if stage != "split" and entry.get("split_hash") not in (None, split):
                files += [n for n in (entry.get("outputs") or {n: "" for n in RESULTS_OF.get(stage, ())})
                          if (self.path / n).is_file()]  # fmt: skip
        if not doc["stages"] and (self.path / "splits.json").is_file():
            if _split_hash_of(self.path / "splits.json") != split:
                files += [n for n in RESULT_FILES if (self.path / n).is_file()]
        return sorted(set(files))

    def reset(self) -> list[str]:
        """Start the folder over: delete every file sampot recorded (or an older sampot's result files), the
        split, config and manifest; other files are left alone. Returns the names removed."""
        removed = []
        try:
            stages = self.manifest()["stages"]
        except SampotError:
            stages = {}
        names = {n for e in stages.values() for n in (e.get("outputs") or {})}
        names |= {n for s in stages for n in RESULTS_OF.get(s, ())}
        names |= set(RESULT_FILES) | {"splits.json", "config.json", MANIFEST}
        for name in sorted(names):
            p = self.path / name
            if p.is_file():
                p.unlink()
                removed.append(name)
        return removed


#: The files each stage writes.
RESULTS_OF: dict[str, tuple[str, ...]] = {
    "split": ("splits.json",),
    "train": ("regressor.pt", "regressor_history.csv"),
    "evaluate": ("regressor_eval.csv", "regressor_eval.json"),
    "evolve": ("evolution.csv", "trajectories.json", "summary.json"),
    "aggregate": ("summary.json",),
    "calibrate": ("calibration.json", "regressor_calibrated.pt"),
}


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """"epochs 3 -> 5, steps 2 -> 4": the settings that differ."""
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:6]]
    return ", ".join(shown) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "") or "none"


def _version() -> str:
    return __version__


# -- the data set and the split --------------------------------------------------------------------------------------


def open_dataset(config: ExperimentConfig) -> FolderDataset:
    """The config's data set, validated (every file read), with the config's structure in it."""
    dataset = FolderDataset(config.data)
    if config.structure not in dataset.structures:
        raise SampotError(
            f"structure {config.structure!r} is not in {config.data} (it has {', '.join(dataset.structures)})."
        )
    return dataset


def resolve_split(
    config: ExperimentConfig, dataset: FolderDataset, *, force: bool = False
) -> tuple[dict[str, list[str]], str]:
    """The full split every stage of this run uses and its hash (call with the folder locked).

    ``split_file`` if given; else ``out/splits.json`` if it was made with this config's seed, data and fractions;
    else a new seeded subject split with ``split_fractions``, written to ``out/splits.json``. A split different from
    the one that results in ``out`` were made on is refused (SampotError saying what to do); ``force`` deletes those
    results instead (:meth:`RunFolder.reset`).
    """
    folder = RunFolder(config.out_dir)
    made = folder.path / "splits.json"
    splits, reason = None, ""
    source = f"seed {config.seed} of {config.data}"
    if config.split_file:
        splits = load_splits(config.split_file, dataset)
        source = f"split file {config.split_file}"
    elif made.is_file():
        try:
            info = {k: v for k, v in read_json(made, "split file").items() if k not in ("splits", "subjects")}
        except (SampotError, AttributeError):
            info, reason = None, f"{made} is damaged"
        if info is not None:
            want = {"seed": config.seed, "source": str(config.data), "fractions": config.split_fractions}
            have = {"seed": info.get("seed"), "source": info.get("source"),
                    "fractions": [float(v) for v in info.get("fractions") or []]}  # fmt: skip
            if _same_path(have["source"], want["source"]):  # "data/x" and "./data/x" are one data set
                have["source"] = want["source"]
            if have == want:
                splits = load_splits(made, dataset)
            else:
                reason = (f"{made} was made with seed {have['seed']} of {have['source']} (fractions "
                          f"{have['fractions']}); this run asks for seed {config.seed} of {config.data} (fractions "
                          f"{config.split_fractions})")  # fmt: skip
    new = splits is None
    if new:
        splits = make_splits(dataset, config.split_fractions, seed=config.seed)
    digest = split_hash(splits)
    try:
        clash = folder.results_on_other_split(digest)
    except SampotError:  # a damaged manifest: nothing here can be trusted
        if not force:
            raise
        folder.reset()
        clash = []
    if clash:
        if not force:
            why = reason or "this run's split differs from the one they were made on"
            raise SampotError(
                f"{folder.path} holds results made on another split ({', '.join(clash)}); {why}. A split is never "
                f"remade under results that depend on it: give this run a new --out, or add --force to delete "
                f"those results and start over."
            )
        folder.reset()
    if new and not (made.is_file() and _split_hash_of(made) == digest):
        subjects = {i: dataset.subject_of(i) for i in dataset.ids}
        save_splits(made, splits, seed=config.seed, fractions=config.split_fractions, subjects=subjects,
                    source=str(config.data))  # fmt: skip
    entry = folder.entry("split")
    if entry is None or entry.get("split_hash") != digest or folder._entry_problem("split", entry):
        settings = {"source": source, "seed": config.seed, "fractions": config.split_fractions}
        outputs = [] if config.split_file else ["splits.json"]
        inputs = {"file:" + str(config.split_file): sha256_file(config.split_file)} if config.split_file else {}
        folder.record("split", settings, digest, inputs, outputs)
    return splits, digest


def _same_path(a: Any, b: Any) -> bool:
    try:
        return a == b or Path(str(a)).resolve() == Path(str(b)).resolve()
    except (OSError, RuntimeError):
        return False


def _split_hash_of(path: Path) -> str | None:
    try:
        return split_hash(load_splits(path))
    except SampotError:
        return None


def limit(splits: dict[str, list[str]], max_images: int | None) -> dict[str, list[str]]:
    """Each split's first ``max_images`` ids (all with None)."""
    return splits if max_images is None else {k: v[:max_images] for k, v in splits.items()}


def prepare_splits(config: ExperimentConfig, dataset: FolderDataset, *, force: bool = False) -> dict[str, list[str]]:
    """The split every stage uses (see :func:`resolve_split`), each part cut to ``max_images``. Takes the folder's
    lock while it reads or writes ``splits.json``."""
    with RunFolder(config.out_dir).locked():
        splits, _ = resolve_split(config, dataset, force=force)
    return limit(splits, config.max_images)


def write_config(config: ExperimentConfig) -> None:
    """``out/config.json``: the settings of the run that last wrote into the folder."""
    write_json(config.out_dir / "config.json", config.to_dict())


@dataclass
class Run:
    """What a notebook chapter works on: the checked config, the data set, the split, and labels that name the
    model and the data beside every number."""

    config: ExperimentConfig
    dataset: FolderDataset
    splits: dict[str, list[str]]

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.config.out_dir)

    @property
    def data_label(self) -> str:
        return f"{Path(self.config.data).name} ({len(self.dataset.ids)} images, {self.config.structure})"

    @property
    def model_label(self) -> str:
        ckpt = self.config.checkpoint
        return self.config.model + ("" if ckpt is None else f" ({Path(ckpt).name})")

    def describe(self) -> str:
        """Model, data and split in three lines. The data's path is shown relative to the repository root (found as
        :func:`start_run` finds it): the book must not print the folders of the machine that built it."""
        sizes = ", ".join(f"{k} {len(v)} images" for k, v in self.splits.items())
        here = Path.cwd()
        root = next((p for p in [here, *here.parents] if (p / "pyproject.toml").is_file()), here)
        data = Path(self.config.data)
        shown = os.path.relpath(data, root) if data.is_absolute() else str(data)
        return f"model: {self.model_label}\ndata: {shown}: {self.data_label}\nsplit: {sizes}"


def apply_thread_setting() -> int | None:
    """Set torch's thread count from ``$SAMPOT_THREADS`` (the book's kernels and the CLI alike); returns it, or None
    when unset. The same settings give the same numbers only at the same thread count: float sums in another order
    change the regressor's training slightly, and that moves evolved Dice by up to about 0.01 per image (measured on
    phantoms with SAM-Nano, 1 against 2 threads)."""
    value = os.environ.get("SAMPOT_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise SampotError(f"SAMPOT_THREADS={value!r} must be a whole number >= 1 (torch's threads), or unset.")

    torch.set_num_threads(int(value))
    return int(value)


def start_run(
    *,
    data: str | Path | None,
    out: str | Path,
    phantom_n: int = 60,
    phantom_size: int = 512,
    root: str | Path | None = None,
    force: bool = False,
    **params: Any,
) -> Run:
    """Turn a notebook's parameters into a :class:`Run`.

    Relative paths (``data``, ``out``, ``checkpoint``, ``split_file``, ``regressor``) are taken from the repository
    root (``root``, default: the nearest folder above the working directory with a pyproject.toml), wherever the
    kernel started. ``data=None`` uses the phantom set at ``_build/data/phantom``, written (``phantom_n`` images of
    ``phantom_size`` px, seeded) if missing. Every parameter is checked by :class:`ExperimentConfig`; a ``preset``
    parameter starts from that preset's values. ``$SAMPOT_THREADS`` sets torch's thread count (the book's build runs
    on few cores).
    """

    apply_thread_setting()
    here = Path.cwd()
    base = Path(root) if root else next((p for p in [here, *here.parents] if (p / "pyproject.toml").is_file()), here)

    def at_base(path: str | Path | None) -> str | None:
        return None if path is None else str(path if Path(path).is_absolute() else base / path)

    if data is None:
        data = base / "_build" / "data" / "phantom"
        if not (data / "manifest.csv").is_file():
            print(f"writing {phantom_n} phantoms of {phantom_size} px to {data}")
            write_phantom_set(data, phantom_n, params.get("seed", 0), size=phantom_size, progress=True)
    for key in ("checkpoint", "split_file", "regressor"):
        if key in params:
            params[key] = at_base(params[key])
    preset = params.pop("preset", None)
    values = {"data": at_base(data), "out": at_base(out), **params}
    config = apply_preset(preset, **values) if preset else ExperimentConfig(**values)
    dataset = open_dataset(config)
    return Run(config, dataset, prepare_splits(config, dataset, force=force))
