"""Files: the sha256 of a file, and the atomic writes of bytes and text that everything which writes uses.

An atomic write goes to a temporary name in the target's folder, takes the umask's mode, and is renamed into place:
a reader never sees a partial file, and a failure leaves neither a partial file nor the temporary one. An
``OSError`` (disk full, read-only, no permission) is raised again with the target as its file name, so the message
names the file the user asked for.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
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


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write the file ``path`` through ``write(binary file)`` atomically; returns ``path``."""
    path = Path(path)
    if path.is_dir():
        why = "a folder, where sampot writes a file; move it away or choose another name"
        raise IsADirectoryError(errno.EISDIR, why, str(path))
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


