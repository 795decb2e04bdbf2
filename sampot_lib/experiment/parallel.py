"""Per-image work over worker processes: in this process, on a local Dask cluster, or on a cluster you run.

A stage's per-image loop (the regressor's training set, the evaluation's user prompts, evolution) is one call of
:meth:`Workers.map`: a task function, the image ids, and small keyword values. The results come back in the ids'
order, with a progress bar as the serial loop had.

- ``Workers()`` or ``Workers(workers=1)``: serially in this process, no Dask at all (tests, notebooks, one image).
- ``Workers(workers=N)`` (N > 1): a ``dask.distributed.LocalCluster`` of N worker processes, one task at a time each.
- ``Workers(scheduler="tcp://host:8786")``: join a cluster someone started (``dask scheduler`` and ``dask worker``
  on each node, by hand or by dask-jobqueue on Slurm, dask-kubernetes, ...).

Threads: torch in a worker process uses ``threads`` threads. For a LocalCluster of N workers the rule is
:func:`threads_per_worker`: the usable cores split evenly, at least one each (N = cores gives one thread each: on a
shared machine a process that owns its one thread is not stalled by another's, which two torch threads fighting
for one core are). On a joined cluster each worker takes ``$SAMPOT_THREADS`` of its own machine, else 1: start one
worker process per core (``dask worker ADDRESS --nworkers auto --nthreads 1``) or one per GPU.

What travels to a worker is small: a task gets *references* (:class:`ModelRef`, :class:`RegressorRef`,
:class:`DatasetRef`: names, paths, hashes), and each worker process loads what a reference names once, keeping it
for every later task (:func:`resolve`). Serially, the caller's own objects are used as they are
(:meth:`Workers.share`). Results equal the serial run's as long as every image's work depends only on the run's
settings and that image (never on which images came before it), and the workers use as many torch threads as the
serial run (a float sum may differ in its last bits with another thread count).

Faults: a task that raises is retried once (:data:`RETRIES`: a transient fault such as a network disk); a task
whose worker process died is re-run by Dask on another worker (``distributed.scheduler.allowed-failures`` times,
default 3). A task that still fails stops the map with a :class:`~sampot_lib.errors.SampotError` naming the image;
no result is ever silently missing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm.auto import tqdm

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import WORKERS_PER_CORE
from sampot_lib.errors import SampotError, is_place_error
from sampot_lib.method.regressor import load_regressor
from sampot_lib.models.registry import load_model

T = TypeVar("T")

#: Automatic retries of a task that raised on a worker (a transient fault; a deterministic one fails again, quickly).
RETRIES = 1


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_workers(workers: int, name: str = "workers") -> None:
    """SampotError unless ``workers`` local worker processes are at most :data:`WORKERS_PER_CORE` per core this
    process may use: each is a process with its own copy of the model, so a few more than the cores only wait on each
    other, and thousands exhaust the machine while the cluster starts (it never answers)."""
    cores = usable_cores()
    if workers > WORKERS_PER_CORE * cores:
        raise SampotError(
            f"{name} {workers} is more than {WORKERS_PER_CORE} per core for the {cores} core(s) this process may use "
            f"(each worker is a process with its own model); give {name} {WORKERS_PER_CORE * cores} or fewer "
            f"({cores} runs fastest), or join a cluster of several machines with --scheduler."
        )


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """torch threads of each of ``workers`` local worker processes: ``max(1, cores // workers)``."""
    return max(1, (cores or usable_cores()) // max(1, workers))


# -- references: what a task is given instead of a big object ---------------------------------------------------------


class Ref:
    """A picklable name of something big that a worker process loads once (:func:`resolve`)."""

    def load(self) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class ModelRef(Ref):
    """A promptable model by what :func:`~sampot_lib.models.registry.load_model` needs. ``embeddings``: the folder
    of the embedding store the workers share (each image encoded once, whichever worker asks first)."""

    model: str
    checkpoint: str | None = None
    device: str = "cpu"
    mask_output: str | int | None = None
    embeddings: str | None = None

    def load(self) -> Any:
        return load_model(self.model, self.checkpoint, self.device, mask_output=self.mask_output,
                          embeddings=self.embeddings)  # fmt: skip


@dataclass(frozen=True)
class RegressorRef(Ref):
    """A regressor file and its sha256 (a retrained file at the same path is a new reference, loaded anew)."""

    path: str
    sha256: str
    device: str = "cpu"

    def load(self) -> Any:
        return load_regressor(self.path, device=self.device)[0]


@dataclass(frozen=True)
class DatasetRef(Ref):
    """A folder-format data set by its folder and the structures the caller opened it with (the caller validated it;
    a worker only reads its files, and needs no masks of the other structures either)."""

    root: str
    structures: tuple[str, ...] | None = None

    def load(self) -> Any:
        wanted = None if self.structures is None else list(self.structures)
        return FolderDataset(self.root, validate=False, structures=wanted)


_LOADED: dict[Ref, Any] = {}
_LOAD_LOCK = threading.Lock()


def resolve(obj: Any) -> Any:
    """The object a :class:`Ref` names, loaded once per process and kept (keyed by every field of the reference);
    anything else is returned as it is."""
    if not isinstance(obj, Ref):
        return obj
    with _LOAD_LOCK:
        if obj not in _LOADED:
            _LOADED[obj] = obj.load()
        return _LOADED[obj]


# -- running a task on a worker ---------------------------------------------------------------------------------------

_PINNED: list[int] = []


def _pin_threads(threads: int | None) -> None:
    """Set this worker process's torch threads once: ``threads``, else $SAMPOT_THREADS, else 1. Before torch is
    imported, the environment says it (torch and OpenMP read it when they load); after, torch is told."""
    if _PINNED:
        return
    n = threads or int(os.environ.get("SAMPOT_THREADS") or 1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:  # else a task that imports it later starts with n threads (and is told at its next task)
        torch.set_num_threads(n)
        _PINNED.append(n)


def _on_worker(
    task: Callable[..., T], image_id: str, threads: int | None, kwargs: dict[str, Any]
) -> tuple[T, list[tuple[str, type[Warning]]]]:
    """``task``'s result on a worker, and the warnings it raised there ([(message, category)]): the caller warns
    them again in its own process, where the user sees them."""
    _pin_threads(threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        result = task(image_id, **{k: resolve(v) for k, v in kwargs.items()})
    return result, [(str(w.message), w.category) for w in caught]


#: Where a LocalCluster's dashboard listens when asked for (this machine only); a taken port gets another.
DASHBOARD_ADDRESS = "127.0.0.1:8787"
#: Where the scheduler's HTTP server listens without --dashboard: dask serves one even then (on 8787 by default), and
#: a second run beside the first would be told "Port 8787 is already in use"; a free port of this machine instead.
QUIET_ADDRESS = "127.0.0.1:0"


def check_dashboard() -> None:
    """SampotError unless the Dask dashboard can be drawn (it needs bokeh, in the ``dashboard`` extra)."""
    if importlib.util.find_spec("bokeh") is None:
        raise SampotError("--dashboard needs bokeh, which draws the Dask dashboard: pip install 'sampot[dashboard]' "
                          "(or bokeh>=3.1), or run without --dashboard.")  # fmt: skip


def _failure(desc: str, image_id: str, exc: BaseException) -> SampotError:
    """One line naming the image whose task failed and why (callers re-raise a full disk or a permission problem,
    an :func:`~sampot_lib.errors.is_place_error`, as it is: its path is the cause, not the image)."""
    killed = type(exc).__name__ == "KilledWorker"
    if killed:
        why = ("the worker processes that ran it died each time (out of memory? a crash in a native library?); "
               "give the workers more memory or use fewer of them")  # fmt: skip
    elif isinstance(exc, SampotError):
        why = str(exc)
    else:
        why = f"{type(exc).__name__}: {exc} (run again with --debug for the traceback)"
    return SampotError(f"{desc}: image {image_id!r} failed: {why}. Nothing of this stage was written; fix or leave "
                       "out that image and run again (--resume keeps the finished stages).")  # fmt: skip


class Workers:
    """Where per-image work runs (see the module's text). ``workers``: None or 1 serial, N > 1 a LocalCluster of N
    processes; ``scheduler``: the address of a running Dask scheduler to join (not with ``workers``). ``threads``:
    torch threads per worker process (default: :func:`threads_per_worker` locally, $SAMPOT_THREADS or 1 on a joined
    cluster). The cluster starts at the first parallel :meth:`map` and stops at :meth:`close` (or the ``with``
    block's end); a joined cluster is left running."""

    def __init__(
        self,
        workers: int | None = None,
        scheduler: str | None = None,
        *,
        threads: int | None = None,
        dashboard: bool = False,
    ):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise SampotError(f"workers must be a whole number >= 1 (1: in this process), got {workers!r}.")
        if workers is not None and workers > 1 and scheduler is not None:
            raise SampotError("give workers or a scheduler address, not both: a joined cluster has its own workers.")
        if workers is not None and workers > 1:
            check_workers(workers)
        self.workers, self.scheduler, self.dashboard = workers, scheduler, dashboard
        if dashboard and scheduler is None and (workers or 1) <= 1:
            raise SampotError("--dashboard shows a Dask cluster at work: add --workers N (N > 1) or --scheduler "
                              "ADDRESS.")  # fmt: skip
        if dashboard and scheduler is None:
            check_dashboard()
        self.threads = threads if threads is not None else (threads_per_worker(workers) if self.local else None)
        self._client: Any = None
        self._cluster: Any = None

    @property
    def local(self) -> bool:
        """Whether this starts its own LocalCluster."""
        return self.scheduler is None and (self.workers or 1) > 1

    @property
    def parallel(self) -> bool:
        """Whether tasks run in other processes (then they must get references, not big objects)."""
        return self.scheduler is not None or self.local

    def __repr__(self) -> str:
        where = f"scheduler {self.scheduler}" if self.scheduler else f"{self.workers or 1} worker(s)"
        return f"Workers({where}, {self.threads or 'default'} thread(s) each)"

    def share(self, local: Any, ref: Ref | Callable[[], Ref]) -> Any:
        """``local`` (the caller's object) when serial, else ``ref`` (a :class:`Ref`, or a function making it)."""
        if not self.parallel:
            return local
        return ref if isinstance(ref, Ref) else ref()

    def client(self) -> Any:
        """The ``dask.distributed.Client``, started (or joined) on first use."""
        if self._client is not None:
            return self._client
        from distributed import Client, LocalCluster

        try:
            if self.scheduler is not None:
                self._client = Client(self.scheduler, timeout="20s")
            else:
                n = self.threads or 1
                # Dask's nannies set OMP_NUM_THREADS=1 in a new worker; this sets our split (also for a worker
                # that replaces one that died).
                env = {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n), "SAMPOT_THREADS": str(n)}
                # Worker and scheduler warnings (memory, a lost worker) reach the log; their routine news does not.
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                             dashboard_address=DASHBOARD_ADDRESS if self.dashboard else QUIET_ADDRESS,
                                             silence_logs=logging.WARNING, env=env)  # fmt: skip
                self._client = Client(self._cluster)
            if self.dashboard:
                print(f"Dask dashboard: {self._client.dashboard_link}", file=sys.stderr, flush=True)
        except MemoryError:  # Dask read another protocol's reply (a web page) as the length of a message
            self.close()
            if self.scheduler is None:
                raise
            raise SampotError(f"the server at {self.scheduler} is not a Dask scheduler (its reply is not Dask's); "
                              "give the address `dask scheduler` prints (port 8786 by default; 8787 is its "
                              "dashboard).") from None  # fmt: skip
        except (OSError, TimeoutError) as exc:
            self.close()
            where = f"the Dask scheduler at {self.scheduler}" if self.scheduler else "a local Dask cluster"
            raise SampotError(f"could not start or reach {where} ({type(exc).__name__}: {exc}); check the address "
                              "and that `dask scheduler` runs there, or use --workers N.") from exc  # fmt: skip
        return self._client

    def map(
        self,
        task: Callable[..., T],
        ids: Sequence[str],
        *,
        kwargs: dict[str, Any] | None = None,
        desc: str = "images",
        progress: bool = True,
        on_result: Callable[[str, T], None] | None = None,
    ) -> list[T]:
        """``[task(id, **kwargs) for id in ids]``, spread over the workers; results in the ids' order.

        ``task`` must be a module-level function (a worker imports it); ``kwargs`` small values and :class:`Ref` s,
        which the task gets loaded (:func:`resolve`). ``on_result(id, result)`` runs here as each image finishes (in
        finishing order), e.g. to save it for a resumed run. A failed task raises SampotError naming its image (the rest
        are cancelled)."""
        kwargs = kwargs or {}
        ids = list(ids)
        if not self.parallel:
            kwargs = {k: resolve(v) for k, v in kwargs.items()}
            out = []
            for image_id in tqdm(ids, desc=desc, unit="image", disable=not progress):
                try:
                    result = task(image_id, **kwargs)
                except (KeyboardInterrupt, MemoryError):
                    raise
                except Exception as exc:
                    if is_place_error(exc):
                        raise
                    raise _failure(desc, image_id, exc) from exc
                if on_result is not None:
                    on_result(image_id, result)
                out.append(result)
            return out
        return self._map_dask(task, ids, kwargs, desc, progress, on_result)

    def _map_dask(
        self,
        task: Callable[..., T],
        ids: list[str],
        kwargs: dict[str, Any],
        desc: str,
        progress: bool,
        on_result: Callable[[str, T], None] | None,
    ) -> list[T]:
        from distributed import as_completed

        client = self.client()
        tag = uuid.uuid4().hex[:8]  # unique keys: a rerun never collides with an earlier map's results
        slug = "".join(c if c.isalnum() else "-" for c in desc)
        futures = [
            client.submit(
                _on_worker, task, image_id, self.threads, kwargs, key=f"{slug}-{k}-{tag}", pure=False, retries=RETRIES
            )  # fmt: skip
            for k, image_id in enumerate(ids)
        ]
        index = {f.key: k for k, f in enumerate(futures)}
        results: list[Any] = [None] * len(ids)
        try:
            with tqdm(total=len(ids), desc=desc, unit="image", disable=not progress) as bar:
                for future in as_completed(futures):
                    k = index[future.key]
                    if future.status != "finished":
                        exc = future.exception()
                        if is_place_error(exc):
                            raise exc
                        raise _failure(desc, ids[k], exc) from exc
                    results[k], caught = future.result()
                    for message, category in caught:  # a worker's warnings, said here as serially
                        warnings.warn(f"{desc}: image {ids[k]!r}: {message}", category, stacklevel=2)
                    future.release()  # its result lives here now; the worker may forget it
                    if on_result is not None:
                        on_result(ids[k], results[k])
                    bar.update()
        finally:
            client.cancel([f for f in futures if not f.done()])
        return results

    def close(self) -> None:
        """Stop the LocalCluster this started (a joined cluster keeps running)."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            # A worker still freeing torch after the nanny's 4 s is killed, its work done: dask's warning about it
            # would alarm a user after a successful run.
            nanny = logging.getLogger("distributed.nanny")
            level = nanny.level
            nanny.setLevel(logging.ERROR)
            try:
                cluster.close()
            finally:
                nanny.setLevel(level)

    def __enter__(self) -> Workers:
        if self.scheduler is not None:  # joined now, so a wrong address fails before a run writes anything
            self.client()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
