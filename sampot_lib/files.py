"""Files: the sha256 of a file, the atomic writes of bytes and text that everything which writes uses, a staged
folder for a set of files written as a whole, and the one download (resumable, checked) that fetches model
checkpoints and public data sets.

An atomic write goes to a temporary name in the target's folder, takes the umask's mode, and is renamed into place:
a reader never sees a partial file, and a failure leaves neither a partial file nor the temporary one. An
``OSError`` (disk full, read-only, no permission) is raised again with the target as its file name, so the message
names the file the user asked for.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO


def sha256_of(chunks: Iterable[bytes]) -> str:
    """Hex sha256 of a stream of byte chunks (a file's blocks, a model's tensors) without holding them all."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return sha256_of(iter(lambda: f.read(chunk), b""))


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0o666 less the umask), without changing the umask."""
    try:
        with open("/proc/self/status") as fh:  # Linux: read the umask without touching it (thread-safe)
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read the umask is to set it (and put it back at once)
    os.umask(mask)
    return 0o666 & ~mask


def move_into_place(tmp: str | Path, path: str | Path) -> Path:
    """Rename a finished temporary file ``tmp`` to ``path`` (atomic within one file system), with the umask's mode."""
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
    return Path(path)


#: Folders of devices and of the kernel's own files (/dev/stdout, /proc/self/fd/1): no place for a file of results.
SYSTEM_FOLDERS = ("/dev", "/proc", "/sys")


def system_place(path: str | Path) -> str | None:
    """The place under :data:`SYSTEM_FOLDERS` that ``path`` is or leads to (the path, a folder above it or a symbolic
    link on the way), or None: no place for a file of results (``errors.output_file`` refuses it as ``--out``, and
    :func:`atomic_write` never renames over a link that leads there). Each link is followed by hand:
    ``/dev/stdout`` -> ``/proc/self/fd/1`` -> a log file ends at a regular file, yet a rename onto ``/dev/stdout``
    replaces the link itself."""
    here = os.path.abspath(path)
    for _ in range(40):  # the OS gives up on a longer chain of links as well (ELOOP)
        here = os.path.join(os.path.realpath(os.path.dirname(here)), os.path.basename(here))
        if any(here == folder or here.startswith(folder + "/") for folder in SYSTEM_FOLDERS):
            return here
        if not os.path.islink(here):
            return None
        here = os.path.join(os.path.dirname(here), os.readlink(here))
    return None


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write the file ``path`` through ``write(binary file)`` atomically; returns ``path``.

    A symbolic link at ``path`` that leads to no regular file, or through /dev, /proc or /sys, is refused
    (``FileExistsError``): the rename would replace the link itself, such as ``/dev/stdout``.
    """
    path = Path(path)
    if path.is_dir():
        why = "a folder, where sampot writes a file; move it away or choose another name"
        raise IsADirectoryError(errno.EISDIR, why, str(path))
    if path.is_symlink() and (not path.is_file() or system_place(path) is not None):
        # the rename would replace the link itself: /dev/stdout (-> /proc/self/fd/1) would become a plain file
        why = f"a symbolic link to {os.readlink(path)}, not to a file of yours; give a file path"
        raise FileExistsError(errno.EEXIST, why, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)  # its error names the folder (e.g. a parent that is a file)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        move_into_place(tmp, path)
        tmp = None
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically."""
    return write_bytes(path, text.encode("utf-8"))


#: The file in a staging folder that names the process writing it: "<pid> <host>".
STAGE_OWNER = ".sampot-owner"
#: A staging folder whose owner is not recorded is named in a warning once it is this old (seconds).
STALE_UNKNOWN_AGE = 24 * 3600


def _owner_alive(stage: Path) -> bool | None:
    """Whether the process that wrote ``stage`` still runs; None when unknown (no owner file, another host)."""
    try:
        pid_text, host = (stage / STAGE_OWNER).read_text().split(maxsplit=1)
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host.strip() != socket.gethostname() or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process (PermissionError): it lives
        return True
    return True


def _clear_stale_stages(out: Path) -> None:
    """Remove the staging folders of ``out`` (``.<name>.*.part`` beside it) that a killed process left, saying so on
    stderr; one whose owner is unknown and older than ``STALE_UNKNOWN_AGE`` is named in a warning, never removed."""
    for stage in sorted(out.parent.glob(f".{glob.escape(out.name)}.*.part")):
        if not stage.is_dir() or stage.is_symlink():
            continue
        alive = _owner_alive(stage)
        if alive is False:
            shutil.rmtree(stage, ignore_errors=True)
            print(f"note: removed {stage}, the unfinished copy a stopped sampot was writing for {out}.",
                  file=sys.stderr)  # fmt: skip
        elif alive is None:
            try:
                age = time.time() - stage.stat().st_mtime
            except OSError:
                continue
            if age > STALE_UNKNOWN_AGE:
                warnings.warn(f"{stage} looks like an unfinished copy for {out} ({age / 3600:.0f} h old, its writer "
                              "unknown); remove it if no sampot is writing it.", UserWarning,
                              stacklevel=3)  # fmt: skip


@contextlib.contextmanager
def staged_folder(out: str | Path) -> Iterator[Path]:
    """A folder beside ``out`` to write a whole set of files into (a data set: images, masks, then its manifest).

    When the block ends normally, every file is moved to the same place under ``out`` (the top-level files, such as
    the manifest, last); when it raises or is interrupted, the staged files are removed and ``out`` is left as it
    was, so it never holds part of a set that a later command would take for a whole one. A staging folder of ``out``
    left by a process that was killed (SIGKILL) is removed first, with a note on stderr.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_stages(out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        (stage / STAGE_OWNER).write_text(f"{os.getpid()} {socket.gethostname()}\n")
        yield stage
        staged = [path for path in stage.rglob("*") if path.is_file() and path != stage / STAGE_OWNER]
        for path in sorted(staged, key=lambda path: (path.parent == stage, str(path))):
            target = out / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            move_into_place(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


class DownloadError(OSError):
    """The network failed a download (no connection, an HTTP error, a connection cut in the middle).

    ``part`` is the file that keeps the bytes fetched so far and ``kept`` their number (0: nothing was kept); the
    next :func:`download` of the same ``dest`` resumes from there. The cause is chained (``__cause__``).
    """

    def __init__(self, url: str, cause: BaseException, part: Path, kept: int):
        super().__init__(f"{url}: {cause}")
        self.url, self.cause, self.part, self.kept = url, cause, part, kept


class ChecksumError(ValueError):
    """A finished download is not the file that was asked for: ``what`` (``"size"`` or ``"sha256"``) is ``got``
    where ``expected`` was asked. Nothing is kept: a wrong finished file cannot be resumed into a right one."""

    def __init__(self, url: str, what: str, expected: str | int, got: str | int):
        super().__init__(f"{url}: {what} {got} where {expected} was expected")
        self.url, self.what, self.expected, self.got = url, what, expected, got


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
    progress: bool = False,
) -> tuple[Path, str]:
    """Fetch ``url`` to ``dest``; returns (``dest``, the file's sha256).

    The bytes go to ``<dest>.part``; an interrupted download leaves it, and the next call resumes it with an HTTP
    Range request (or starts over when the server ignores ranges, or when the part is longer than ``size``). Only
    a finished file whose size and sha256 match the given ones (each checked only if given) is renamed to ``dest``.

    Raises :class:`DownloadError` when the network fails, :class:`ChecksumError` when the finished file is not the
    one asked for (its part is removed), and the ``OSError`` of the disk (full, read-only, no permission) as it is,
    naming the part file: the callers say what each means to their user.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:  # a part of the full size (stopped before its check) is checked as it is
        _fetch(url, dest.name, part, have, size, timeout, progress)
    got = part.stat().st_size
    if size is not None and got < size:  # the server closed early without an error: resumable, like any cut
        cut = ConnectionError(f"the connection closed after {got:,} of {size:,} bytes")
        raise DownloadError(url, cut, part, got) from cut
    if size is not None and got != size:
        part.unlink(missing_ok=True)
        raise ChecksumError(url, "size", size, got)
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink(missing_ok=True)
        raise ChecksumError(url, "sha256", sha256.lower(), digest)
    move_into_place(part, dest)
    return dest, digest


def _fetch(url: str, name: str, part: Path, have: int, size: int | None, timeout: float, progress: bool) -> None:
    """Append ``url``'s bytes from ``have`` on to ``part``, or write them all when the server ignores the range or has
    nothing from there on. Network failures raise :class:`DownloadError`; the disk's, its ``OSError``."""
    from tqdm.auto import tqdm  # here, not at the top: tqdm.auto may import IPython, and most callers never download

    while True:
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (a recorded or user-chosen URL)
        except urllib.error.HTTPError as exc:
            if have and exc.code == 416:  # nothing from there on: the part is no start of this file; start over
                have = 0
                continue
            raise DownloadError(url, exc, part, have) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise DownloadError(url, exc, part, have) from exc
        break

    with response:
        if have and getattr(response, "status", None) != 206:  # the server ignored the range: start over
            have = 0
        total = size if size is not None else _length(response, have)
        try:
            with (
                open(part, "ab" if have else "wb") as out,
                tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=name, disable=not progress) as bar,
            ):
                while True:
                    try:
                        block = response.read(1 << 20)
                    except (http.client.HTTPException, OSError) as exc:  # the connection, not the disk
                        out.flush()
                        raise DownloadError(url, exc, part, out.tell()) from exc
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
        except DownloadError:
            raise
        except OSError as exc:  # the disk: full, read-only, no permission (its message names the part file)
            raise OSError(exc.errno, exc.strerror or str(exc), str(part)) from exc


def _length(response: object, have: int) -> int | None:
    """The whole file's length from a response's Content-Length (a 206's counts only the rest), or None."""
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) + have if value is not None else None
    except ValueError:
        return None
