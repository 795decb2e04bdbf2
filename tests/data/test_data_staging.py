"""A data set written through a staging folder: a staging folder that a killed writer (SIGKILL) left beside the
output is removed by the next writer of that output; one whose writer lives, or is unknown, is kept."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.files import staged_folder

STAGE_OWNER = ".sampot-owner"  # the file in a staging folder that names its writer: "<pid> <host>"


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _stage(out, tag: str, owner: str | None):
    stage = out.parent / f".{out.name}.{tag}.part"
    (stage / "images").mkdir(parents=True)
    (stage / "images" / "x.png").write_bytes(b"half a set")
    if owner is not None:
        (stage / STAGE_OWNER).write_text(owner)
    return stage


def test_a_killed_writers_staging_folder_is_removed_by_the_next_write_and_said(tmp_path, capsys):
    out = tmp_path / "ph"
    killed = _stage(out, "killed", f"{_dead_pid()} {socket.gethostname()}\n")
    running = _stage(out, "running", f"{os.getpid()} {socket.gethostname()}\n")
    unknown_new = _stage(out, "unknown_new", None)
    unknown_old = _stage(out, "unknown_old", None)
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(unknown_old, (day_ago, day_ago))
    other = _stage(tmp_path / "other", "killed", f"{_dead_pid()} {socket.gethostname()}\n")  # another output's
    with pytest.warns(UserWarning, match=r"unknown_old\.part looks like an unfinished copy for .*ph \(48 h old"):
        write_phantom_set(out, 2, seed=0, size=64)
    assert not killed.exists() and running.is_dir() and unknown_new.is_dir() and unknown_old.is_dir()
    assert other.is_dir()
    assert (
        f"note: removed {killed}, the unfinished copy a stopped sampot was writing for {out}."
        in capsys.readouterr().err
    )
    assert sorted(p.name for p in (out / "images").iterdir()) == ["phantom_0000.png", "phantom_0001.png"]
    assert not (out / STAGE_OWNER).exists()  # the owner file stays in the staging folder


def test_a_staging_folder_names_its_writer_while_it_writes(tmp_path):
    with staged_folder(tmp_path / "set") as stage:
        assert (stage / STAGE_OWNER).read_text().split() == [str(os.getpid()), socket.gethostname()]
    assert not stage.exists() and not (tmp_path / "set" / STAGE_OWNER).exists()
