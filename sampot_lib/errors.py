"""The one error type users see, and the checks of user-given values that raise it before any work starts.

A :class:`SampotError` says what was wrong and what to do about it. Each check returns the value it accepted
(normalised) or raises one with one line that names the thing (``name``: a flag such as ``--lr`` or a parameter
such as ``lr``), what was wrong and what to do. The command line, the experiment config and the notebooks share
them, so the same value gets the same answer everywhere. Nothing here imports from the rest of the package: a bound
that is a default number (:mod:`sampot_lib.defaults`) is passed in by the caller.
"""

from __future__ import annotations

import errno
import math
import numbers
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sampot_lib.files import SYSTEM_FOLDERS, system_place


class SampotError(ValueError):
    """Bad input or a missing resource. The message names the problem and the fix.

    The command line prints the message alone (no traceback) and exits with status 2.
    """


class PlaceError(SampotError):
    """A place where sampot writes cannot take the file (a full disk, no permission, an unusable folder named by an
    environment variable): the message names the place and the setting, never the image being worked on."""


class SampotWarning(UserWarning):
    """Input that works but is probably not what the user meant (an inverted mask, a click in the background, an
    empty split). The command line prints the message alone, on one line, and goes on."""


#: Accepted forms of a device, for messages.
DEVICE_FORMS = "cpu, cuda, cuda:N (N: the GPU's number) or mps"


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in the given range (closed unless ``low_open``/``high_open``) -> float.

    Rejects bools, strings, NaN and +-inf: a NaN compares false with every bound, so range checks alone let it in.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SampotError(f"{name} must be a number, got {_shown(value)} ({type(value).__name__}).")
    x = float(value)
    if not math.isfinite(x):
        raise SampotError(f"{name} must be a finite number, got {_shown(value)}.")
    too_low = low is not None and (x <= low if low_open else x < low)
    too_high = high is not None and (x >= high if high_open else x > high)
    if too_low or too_high:
        raise SampotError(f"{name} must be {range_text(low, high, low_open, high_open)}, got {_shown(value)}.")
    return x


def whole(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """A whole number (int, not bool; no float) in ``[low, high]`` -> int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SampotError(f"{name} must be a whole number, got {_shown(value)} ({type(value).__name__}).")
    n = int(value)
    if (low is not None and n < low) or (high is not None and n > high):
        raise SampotError(f"{name} must be a whole number {range_text(low, high, False, False)}, got {n}.")
    return n


def fraction(value: Any, name: str) -> float:
    """A number in [0, 1] (an IoU, a Dice, a share) -> float."""
    return number(value, name, low=0.0, high=1.0)


def range_text(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """A range in words, as the messages state it: ``>= 1``, ``> 0``, ``in [0, 1]``, ``<= 5``."""

    def show(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {show(low)}"
    return f"{'<' if high_open else '<='} {show(high)}"


def regressor_size(value: Any, name: str = "regressor size", *, high: int) -> int:
    """The segmentation regressor's input size: a multiple of 16, at least 32 (four stride-2 layers, then a
    final convolution over what is left, which must be at least 2 x 2) and at most ``high``
    (:data:`~sampot_lib.defaults.MAX_REGRESSOR_SIZE`: a larger one exhausts memory on the first image)."""
    n = whole(value, name)
    if n < 32 or n > high or n % 16:
        near = min(high, max(32, 16 * round(n / 16)))
        raise SampotError(f"{name} must be a multiple of 16 from 32 to {high} (e.g. {near} or 128), got {n}.")
    return n


def seed(value: Any, name: str = "seed") -> int:
    """A random seed: 0 .. 2**32 - 1 (what numpy and torch both accept)."""
    return whole(value, name, low=0, high=2**32 - 1)


def device_form(value: Any, name: str = "device") -> re.Match[str]:
    """The form of a device name (cpu, cuda, cuda:N, mps), not whether it exists here: a config may be written on
    one machine to run on another, which :func:`device` then checks."""
    text = str(value).strip().lower()
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", text)
    if m is None or (m[2] is not None and m[1] != "cuda"):
        raise SampotError(f"{name} {_shown(value)} is not a device; use {DEVICE_FORMS}.")
    return m


def device(value: Any, name: str = "device") -> str:
    """A torch device that exists on this machine -> its canonical name (``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    ``cuda``/``cuda:N`` need a CUDA GPU (and N below the number of GPUs); ``mps`` needs Apple's Metal backend.
    """
    m = device_form(value, name)
    text = m[0]
    if m[1] == "cpu":
        return "cpu"
    import torch  # here: the other checks run before torch is loaded, and most commands never ask for a GPU

    if m[1] == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise SampotError(f"{name} mps: Apple's Metal (MPS) backend is not available here; use --device cpu.")
        return "mps"
    if not torch.cuda.is_available():
        raise SampotError(f"{name} {text}: no CUDA GPU is available on this machine; use --device cpu.")
    count = torch.cuda.device_count()
    if m[2] is not None and int(m[2]) >= count:
        have = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
        raise SampotError(f"{name} {text}: this machine has {count} CUDA GPU(s) ({have}); use one of those.")
    return text


def _given(path: str | Path, name: str) -> Path:
    """``path`` as a Path; an empty string is refused (``Path("")`` would quietly mean the current folder)."""
    if isinstance(path, str) and not path.strip():
        raise SampotError(f"{name} is empty; give a path.")
    return Path(path)


def input_file(path: str | Path, name: str, *, hint: str = "check the path") -> Path:
    """An existing regular file (not a folder, a device or a pipe) -> Path."""
    path = _given(path, name)
    if path.is_dir():
        raise SampotError(f"{name} {path} is a folder, not a file; {hint}.")
    if path.exists() and not path.is_file():
        raise SampotError(f"{name} {path} is not a regular file (a device, a pipe or a socket); {hint}.")
    if not path.is_file():
        raise SampotError(f"{name} {path}: no such file; {hint}.")
    return path


def input_dir(path: str | Path, name: str, *, hint: str = "check the path") -> Path:
    """An existing folder -> Path."""
    path = _given(path, name)
    if path.is_file():
        raise SampotError(f"{name} {path} is a file, not a folder; {hint}.")
    if not path.is_dir():
        raise SampotError(f"{name} {path}: no such folder; {hint}.")
    return path


def output_dir(path: str | Path, name: str = "--out", *, files: Iterable[str] = ()) -> Path:
    """A folder sampot may create (if missing) and write into; ``files``: names it will write there, none of which
    may be a folder. Nothing is created: the nearest existing folder above gets a probe file that is removed."""
    path = _given(path, name)
    if path.exists() and not path.is_dir():
        raise SampotError(f"{name} {path} is a file, not a folder; give a folder (it is created if missing).")
    for f in files:
        if (path / f).is_dir():
            raise SampotError(
                f"{path / f} is a folder, but sampot writes a file of that name there; move it away or choose "
                f"another {name}."
            )
    _probe(path, name)
    return path


def output_file(path: str | Path, name: str = "--out", *, example: str | None = None) -> Path:
    """A file sampot may (over)write: not a folder, in a folder that exists or can be created, writable; not ``-``
    (no stdout), nothing under /dev, /proc or /sys and no link that leads there or to anything but a regular file
    (the atomic write would rename a file over it)."""
    given = path
    path = _given(path, name)
    suggestion = f" (e.g. {path / example})" if example else ""
    instead = f" (e.g. {name} {example})" if example else ""
    if str(given).strip() == "-":
        raise SampotError(f"{name} -: sampot writes to a file, not to stdout; give a file name{instead}.")
    place = system_place(path)
    if place is not None:
        what = "is" if place == os.path.abspath(path) else f"leads to {place},"
        raise SampotError(f"{name} {path} {what} a device or a file of the system (under {', '.join(SYSTEM_FOLDERS)}), "
                          f"where sampot writes no results; give a file path{instead}.")  # fmt: skip
    if path.is_dir():
        raise SampotError(f"{name} {path} is a folder; give a file name{suggestion}.")
    if isinstance(given, str) and given.endswith(("/", os.sep)):  # Path() drops the slash that says "a folder"
        raise SampotError(f"{name} {given} names a folder (it ends in '/'), where sampot writes one file; give a file "
                          f"name{suggestion}.")  # fmt: skip
    if path.is_symlink() and not path.is_file():
        raise SampotError(f"{name} {path} is a symbolic link to {os.readlink(path)}, which is not a regular file (a "
                          f"device, a pipe, a socket or nothing); give a file path{instead}.")  # fmt: skip
    if path.exists() and not path.is_file():
        # A device (/dev/full, /dev/null), a named pipe or a socket: the atomic write would replace it with a regular
        # file (as root, even a device node) and report success.
        raise SampotError(f"{name} {path} is not a regular file (a device, a pipe or a socket); give a file name.")
    _probe(path.parent, name, for_file=path)
    return path


def cache_dir(path: str | Path, name: str = "cache folder") -> Path:
    """The checkpoint cache (``$SAMPOT_CACHE``): a folder, or a place where one can be made, writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SampotError(
            f"{name} {path} is a file, not a folder; point $SAMPOT_CACHE (or --cache-dir) at a folder, or unset it."
        )
    _probe(path, name)
    return path


def _probe(folder: Path, name: str, *, for_file: Path | None = None) -> None:
    """Raise SampotError unless a file can be created in ``folder`` (or, if it is missing, in the nearest existing
    folder above it, where it would be made). Tries for real: permissions bits say nothing for root, or on a
    read-only mount."""
    target = for_file if for_file is not None else folder
    here = folder if str(folder) else Path(".")
    while not here.exists():
        if here.parent == here:
            break
        here = here.parent
    if here.exists() and not here.is_dir():
        raise SampotError(f"{name} {target}: {here} is a file, so no folder can be made there; choose another path.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sampot-write-check.", dir=here)
    except OSError as exc:
        raise SampotError(f"{name} {target}: cannot write in {here} ({_cause(exc)}); {_hint(exc)}.") from exc
    os.close(fd)
    os.unlink(probe)


def _cause(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or -1)
    text = exc.strerror or str(exc)
    return f"{text}, {code}" if code else text


_HINTS = {
    errno.ENOSPC: "the disk is full; free some space, or write somewhere else",
    errno.EDQUOT: "your disk quota is used up; free some space, or write somewhere else",
    errno.EROFS: "that file system is read-only; write somewhere else",
    errno.EACCES: "you have no permission there; write somewhere else or change its permissions",
    errno.EPERM: "the operation is not permitted there; write somewhere else or change its permissions",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "it is a folder where a file is expected; give a file name",
    errno.EEXIST: "something of that name is in the way; move it or choose another name",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ELOOP: "the path has a symbolic-link loop; check the path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
    errno.EXDEV: "the temporary file and its destination are on different file systems; report this",
}
#: errno values that the user (or their machine's setup) can fix: reported with exit status 2, not 1.
USER_ERRNOS = frozenset(set(_HINTS) - {errno.EXDEV})


#: errno values that blame the place a file is written or read (a full disk, a permission), never its contents.
PLACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EMFILE})


def is_place_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a :class:`PlaceError` or an OSError of the disk or its permissions (:data:`PLACE_ERRNOS`):
    reported as it is, with its path, rather than as a failure of the image being worked on."""
    return isinstance(exc, PlaceError) or (isinstance(exc, OSError) and exc.errno in PLACE_ERRNOS)


def writable_folder(path: str | Path, name: str) -> Path:
    """``path`` as a folder that exists or can be made, and where a file can be written; SampotError naming
    ``name`` (e.g. an environment variable) and the cause otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PlaceError(f"{name} {path} is a file, not a folder; give a folder, or unset it.")
    try:
        _probe(path, name)
    except SampotError as exc:
        raise PlaceError(str(exc)) from exc.__cause__
    return path


def _hint(exc: OSError) -> str:
    return _HINTS.get(exc.errno or -1, "check the path and the disk")


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the path(s), the cause (with the errno name) and what to do."""
    where = exc.filename if exc.filename is not None else None
    if where is not None and exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    if where is None:
        return f"{_cause(exc)}; {_hint(exc)}."
    return f"{where}: {_cause(exc)}; {_hint(exc)}."


#: Each safeguard's range, (low, high, low_open, high_open): :func:`check_safeguards` and the command line's options
#: read the same bounds.
SAFEGUARD_RANGES: dict[str, tuple[float, float | None, bool, bool]] = {
    "trust_radius": (0.0, None, True, False),
    "min_overlap": (0.0, 1.0, False, False),
    "max_area_ratio": (1.0, None, False, False),
    "min_box_size": (0.0, 1.0, False, True),
}
SAFEGUARD_MEANINGS = {"trust_radius": " (a fraction of the image's longer side)", "min_overlap": " (an IoU)",
                      "max_area_ratio": " (an area factor)"}  # fmt: skip


def check_safeguards(guards: dict[str, Any]) -> None:
    """The safeguards dict: known keys, and limits that can work (None switches a limit off)."""
    for key, value in guards.items():
        if key == "keep_in_image":
            if not isinstance(value, bool):
                raise SampotError(f"safeguard 'keep_in_image' must be true or false, got {value!r}.")
            continue
        if key not in SAFEGUARD_RANGES:
            raise SampotError(f"unknown safeguard {key!r}; known: keep_in_image, {', '.join(SAFEGUARD_RANGES)}.")
        if value is None:
            continue
        low, high, low_open, high_open = SAFEGUARD_RANGES[key]
        try:
            number(value, key, low=low, high=high, low_open=low_open, high_open=high_open)
        except SampotError:
            rule = range_text(low, high, low_open, high_open) + SAFEGUARD_MEANINGS.get(key, "")
            raise SampotError(f"safeguard {key!r} must be None or a finite number {rule}, got {value!r}.") from None
