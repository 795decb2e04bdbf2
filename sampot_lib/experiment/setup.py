"""Setting an experiment up: its checked data set, the split every stage uses, its config file, the process's
settings (torch's threads, glibc's allocator), and :func:`start_run` that turns a notebook's parameters into a
:class:`Run`."""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.data.splits import load_splits, make_splits, save_splits
from sampot_lib.data.validate import structure_folders
from sampot_lib.defaults import MAX_THREADS
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.experiment.cleanup import foreign_split, reset
from sampot_lib.experiment.config import ExperimentConfig, same_path
from sampot_lib.experiment.parallel import usable_cores
from sampot_lib.experiment.presets import apply_preset
from sampot_lib.experiment.records import read_json, write_json
from sampot_lib.experiment.runfolder import RunFolder, split_hash, split_hash_of
from sampot_lib.files import sha256_file


def open_dataset(config: ExperimentConfig, *, every_structure: bool = False) -> FolderDataset:
    """The config's data set, validated, with the config's structure in it: every image and every mask of that
    structure read; the masks of other structures are neither read nor required unless ``every_structure`` (a
    notebook's :class:`Run` offers them all)."""
    have = structure_folders(config.data)
    if have and config.structure not in have:
        raise SampotError(f"structure {config.structure!r} is not in {config.data} (it has {', '.join(have)}).")
    return FolderDataset(config.data, structures=None if every_structure else [config.structure])


def _chosen_split(
    config: ExperimentConfig, dataset: FolderDataset, folder: RunFolder, force: bool
) -> tuple[dict[str, list[str]] | None, str, str]:
    """What :func:`resolve_split` starts from, read without writing anything: (the split file's or the folder's own
    split, None when a new one is to be made; why the folder's split is not used; where the split comes from).

    Raises:
        SampotError: ``out/splits.json`` is a split no run there made (unless ``split_file`` names it); a damaged
            manifest, unless ``force``; a split file that does not fit the data set.
    """
    made = folder.path / "splits.json"
    if config.split_file:
        return load_splits(config.split_file, dataset), "", f"split file {config.split_file}"
    source = f"seed {config.seed} of {config.data}"
    if not made.is_file():
        return None, "", source
    try:
        foreign = foreign_split(folder)
    except SampotError:  # a damaged manifest: nothing here can be trusted
        if not force:
            raise
        foreign = False  # the folder is started over (RunFolder.reset)
    if foreign:  # a run would replace it with its own
        raise SampotError(f"{made} is a split no sampot run in {folder.path} made: pass it with --split-file {made} "
                          "to use it, or choose another --out (--force never replaces a split you made).")  # fmt: skip
    try:
        info = {k: v for k, v in read_json(made, "split file").items() if k not in ("splits", "subjects")}
    except (SampotError, AttributeError):
        return None, f"{made} is damaged", source
    want = {"seed": config.seed, "source": str(config.data), "fractions": config.split_fractions}
    have = {"seed": info.get("seed"), "source": info.get("source"),
            "fractions": [float(v) for v in info.get("fractions") or []]}  # fmt: skip
    if same_path(have["source"], want["source"]):  # "data/x" and "./data/x" are one data set
        have["source"] = want["source"]
    if have == want:
        try:
            return load_splits(made, dataset), "", source
        except SampotError as exc:  # the data set changed since: its subjects, or its images
            if force:
                return None, f"{made} no longer fits the data set", source
            cause = str(exc).split(". ")[0]
            raise SampotError(f"the split this run made no longer fits the data set, which changed since ({cause}). "
                              f"Add --force to start {folder.path} over with a new split, or choose another "
                              "--out.") from exc  # fmt: skip
    return None, (f"{made} was made with seed {have['seed']} of {have['source']} (fractions {have['fractions']}); "
                  f"this run asks for seed {config.seed} of {config.data} (fractions "
                  f"{config.split_fractions})"), source  # fmt: skip


def preview_split(config: ExperimentConfig, dataset: FolderDataset, *, force: bool = False) -> dict[str, list[str]]:
    """The full split :func:`resolve_split` gives ``config``, read or made without writing anything (and without the
    run folder's lock): what a run checks before it makes or writes its folder.

    Args:
        config: The run's settings.
        dataset: The data set.
        force: As :func:`resolve_split`'s.

    Returns:
        The split, ``{part: image ids}``.

    Raises:
        SampotError: ``out/splits.json`` is a split no run there made, a damaged manifest (unless ``force``), or a
            split file that does not fit the data set.
    """
    splits, _, _ = _chosen_split(config, dataset, RunFolder(config.out_dir), force)
    return make_splits(dataset, config.split_fractions, seed=config.seed) if splits is None else splits


def resolve_split(
    config: ExperimentConfig, dataset: FolderDataset, *, force: bool = False
) -> tuple[dict[str, list[str]], str]:
    """The full split every stage of this run uses and its hash (call with the folder locked).

    ``split_file`` if given; else ``out/splits.json`` if a run there made it with this config's seed, data and
    fractions; else a new seeded subject split with ``split_fractions``, written to ``out/splits.json``. A
    ``splits.json`` no run there made (``sampot data split``, a copy, an edit) is never replaced: the run is refused
    unless ``split_file`` names it.

    Args:
        config: The run's settings.
        dataset: The data set.
        force: Delete the results made on another split (:meth:`RunFolder.reset`) instead of refusing.

    Returns:
        The pair (split, hash), the split as ``{part: image ids}``.

    Raises:
        SampotError: A split different from the one that results in ``out`` were made on (saying what to do), unless
            ``force``; an ``out/splits.json`` no run there made; a split file that does not fit the data set.
    """
    folder = RunFolder(config.out_dir)
    made = folder.path / "splits.json"
    splits, reason, source = _chosen_split(config, dataset, folder, force)
    new = splits is None
    if new:
        splits = make_splits(dataset, config.split_fractions, seed=config.seed)
    digest = split_hash(splits)
    try:
        clash = folder.results_on_other_split(digest)
    except SampotError:  # a damaged manifest: nothing here can be trusted
        if not force:
            raise
        reset(folder, keep=(config.split_file, config.regressor))
        clash = []
    if clash:
        if not force:
            why = reason or "this run's split differs from the one they were made on"
            raise SampotError(
                f"{folder.path} holds results made on another split ({', '.join(clash)}); {why}. A split is never "
                f"remade under results that depend on it: give this run a new --out (or, with `sampot run` or "
                f"`train-regressor`, add --force to delete those results and start over)."
            )
        reset(folder, keep=(config.split_file, config.regressor))
    if not config.split_file and not (made.is_file() and split_hash_of(made) == digest):  # also after a reset
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


def limit(splits: dict[str, list[str]], max_images: int | None) -> dict[str, list[str]]:
    """Each split's first ``max_images`` ids (all with None)."""
    return splits if max_images is None else {k: v[:max_images] for k, v in splits.items()}


def prepare_splits(config: ExperimentConfig, dataset: FolderDataset, *, force: bool = False) -> dict[str, list[str]]:
    """The split every stage uses (see :func:`resolve_split`), each part cut to ``max_images``.

    Takes the folder's lock while it reads or writes ``splits.json``.

    Args:
        config: The run's settings.
        dataset: The data set.
        force: Delete the results made on another split instead of refusing.

    Returns:
        The split, ``{part: image ids}``.

    Raises:
        SampotError: As :func:`resolve_split`.
    """
    with RunFolder(config.out_dir).locked():
        splits, _ = resolve_split(config, dataset, force=force)
    return limit(splits, config.max_images)


def write_config(config: ExperimentConfig) -> None:
    """``out/config.json``: the settings of the run that last wrote into the folder."""
    write_json(config.out_dir / "config.json", config.to_dict())


@dataclass
class Run:
    """What a notebook chapter works on: the checked config, the data set, the split.

    Its labels name the model and the data beside every number.

    Attributes:
        config: The checked config.
        dataset: The data set.
        splits: {part: image ids}, each part cut to ``max_images``.
    """

    config: ExperimentConfig
    dataset: FolderDataset
    splits: dict[str, list[str]]

    @property
    def folder(self) -> RunFolder:
        """The run folder, ``config.out``."""
        return RunFolder(self.config.out_dir)

    @property
    def data_label(self) -> str:
        """The data's folder name, its image count and the structure."""
        return f"{Path(self.config.data).name} ({len(self.dataset.ids)} images, {self.config.structure})"

    @property
    def model_label(self) -> str:
        """The model's name, and its checkpoint file's when one is given."""
        ckpt = self.config.checkpoint
        return self.config.model + ("" if ckpt is None else f" ({Path(ckpt).name})")

    def describe(self) -> str:
        """Model, data and split in three lines.

        The data's path is shown relative to the repository root (found as :func:`start_run` finds it): the book must
        not print the folders of the machine that built it.

        Returns:
            Three lines, ``model: ...``, ``data: ...`` and ``split: ...``.
        """
        sizes = ", ".join(f"{k} {len(v)} images" for k, v in self.splits.items())
        root = repository_root()
        data = Path(self.config.data)
        shown = os.path.relpath(data, root) if data.is_absolute() else str(data)
        return f"model: {self.model_label}\ndata: {shown}: {self.data_label}\nsplit: {sizes}"


def repository_root() -> Path:
    """The nearest folder above the working directory with a pyproject.toml (the working directory if none): a
    notebook's relative paths are taken from there, wherever its kernel started."""
    here = Path.cwd()
    return next((p for p in [here, *here.parents] if (p / "pyproject.toml").is_file()), here)


def from_root(path: str | Path, root: Path | None = None) -> Path:
    """``path`` as given when absolute, else under ``root`` (default: :func:`repository_root`)."""
    path = Path(path)
    return path if path.is_absolute() else (root or repository_root()) / path


#: glibc's mallopt parameters: the size above which a block gets its own mapping, and the free memory at the heap's
#: top that is given back to the system.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEPT_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep the memory torch frees, for its next tensors, instead of giving it back at once.

    By default glibc maps every large block afresh and unmaps it when freed, so each training batch's activations
    fault their pages in again. Kept, a process training the regressor on SAM-Nano's paper-preset set (paired runs of
    three epochs) spent 1.8 s of system time instead of 6.0 and finished 7 to 13% sooner (1 and 2 threads); its peak
    resident memory rose by 0.3 to 0.45 GB. A process-wide setting, so the command line, the app and the book's
    kernels make it, never an import of the package.

    Returns:
        Whether the setting was made (False off glibc, where the allocator is left as it is).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEPT_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEPT_BYTES))


def apply_process_settings() -> int | None:
    """:func:`keep_freed_memory`, then :func:`apply_thread_setting`; returns the thread count it set, or None."""
    keep_freed_memory()
    return apply_thread_setting()


def apply_thread_setting() -> int | None:
    """Set torch's thread count from ``$SAMPOT_THREADS`` (the book's kernels and the CLI alike); returns it, or None
    when unset. The same settings give the same numbers only at the same thread count: float sums in another order
    change the regressor's training slightly, and that moves evolved Dice by up to about 0.01 per image (measured on
    phantoms with SAM-Nano, 1 against 2 threads). More threads than the cores this process may use warn (one
    line): torch's threads then wait on each other, and a run can take many times as long."""
    value = os.environ.get("SAMPOT_THREADS", "").strip()
    if not value:
        return None
    # ASCII digits only: str.isdigit() also accepts superscripts such as "²", which int() refuses
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_THREADS:
        raise SampotError(f"SAMPOT_THREADS={value!r} must be a whole number from 1 to {MAX_THREADS} (torch's "
                          "threads), or unset.")  # fmt: skip
    threads = int(value)
    cores = usable_cores()
    if threads > cores:
        warnings.warn(
            f"SAMPOT_THREADS={threads} is more than the {cores} core(s) this process may use: the threads wait on "
            f"each other and a run can be many times slower; set SAMPOT_THREADS={cores} or less.",
            SampotWarning, stacklevel=2,
        )  # fmt: skip
    torch.set_num_threads(threads)
    return threads


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
    root, wherever the kernel started. ``$SAMPOT_THREADS`` sets torch's thread count (the book's build runs on few
    cores).

    Args:
        data: The data set's folder; None: the phantom set at ``_build/data/phantom``, written (seeded) if missing.
        out: The run folder.
        phantom_n: The phantom set's images, when it is written.
        phantom_size: Their size in px.
        root: The repository root; None: the nearest folder above the working directory with a pyproject.toml.
        force: Delete the results made on another split instead of refusing.
        **params: Every other :class:`ExperimentConfig` field, each checked by it; a ``preset`` parameter starts from
            that preset's values.

    Returns:
        The run, with the checked config, the opened data set and its split.

    Raises:
        SampotError: A parameter :class:`ExperimentConfig` refuses, a data set that is not usable, or a split that
            clashes with the results in ``out``.
    """

    apply_process_settings()
    base = Path(root) if root else repository_root()

    def at_base(path: str | Path | None) -> str | None:
        return None if path is None else str(from_root(path, base))

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
    dataset = open_dataset(config, every_structure=True)
    return Run(config, dataset, prepare_splits(config, dataset, force=force))
