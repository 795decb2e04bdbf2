"""Errors name their real cause: a full disk and a permission problem are said as such for every write, never blamed
on an image; an unusable SAMPOT_EMBEDDINGS is named; too many SAMPOT_THREADS warn; a bad size for `make book` is one
line."""

from __future__ import annotations

import errno
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import sampot_lib.files as files
from sampot_lib.cli.main import main
from sampot_lib.defaults import MAX_THREADS
from sampot_lib.errors import PlaceError, SampotError, describe_os_error
from sampot_lib.experiment.parallel import Workers, usable_cores
from sampot_lib.method.regressor import SegmentationRegressor, save_regressor
from sampot_lib.method.training_set import SerialMap
from sampot_lib.models import cache

ROOT = Path(__file__).parents[2]


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write lands on /dev/full: the write fails with ENOSPC, as on a full disk."""

    def mkstemp(prefix: str = "", suffix: str = "", dir: str | None = None) -> tuple[int, str]:
        return os.open("/dev/full", os.O_WRONLY), str(Path(dir or ".") / f"{prefix}x{suffix}")

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    monkeypatch.setattr(files, "tempfile", SimpleNamespace(mkstemp=mkstemp))  # the writers' own, not the probes'


def test_a_full_disk_while_saving_the_regressor_says_the_disk_is_full_and_names_the_file(full_disk, tmp_path):
    with pytest.raises(OSError) as info:
        save_regressor(SegmentationRegressor(32), tmp_path / "regressor.pt")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "regressor.pt")
    assert "the disk is full" in describe_os_error(info.value)
    assert not list(tmp_path.iterdir())  # no partial file left


@pytest.mark.skipif(importlib.util.find_spec("resource") is None, reason="file-size limits are POSIX")
def test_a_regressor_file_that_stops_fitting_part_way_is_said_as_too_large_not_as_a_fault(tmp_path):
    # torch's own file writer turns a write that fails part way into a RuntimeError; ulimit -f stands for the quota
    code = (
        "import resource, sys\n"
        "from sampot_lib.method.regressor import SegmentationRegressor, save_regressor\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))\n"
        "try:\n"
        "    save_regressor(SegmentationRegressor(64), sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print(exc.errno, exc.filename)\n"
    )
    target = tmp_path / "regressor.pt"
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == [str(errno.EFBIG), str(target)], done.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # no partial file left


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EROFS])
def test_a_write_failing_for_its_place_is_never_blamed_on_the_image(code):
    def task(image_id: str) -> None:
        raise OSError(code, os.strerror(code), f"/somewhere/{image_id}.npy")

    for runner in (SerialMap(), Workers()):
        with pytest.raises(OSError) as info:
            runner.map(task, ["im0"], kwargs={}, desc="regressor set", progress=False)
        assert info.value.errno == code and "failed" not in str(info.value)

    def broken(image_id: str) -> None:
        raise ValueError("a fault of this image")

    with pytest.raises(SampotError, match="image 'im0' failed"):  # the image's own faults still name it
        SerialMap().map(broken, ["im0"], kwargs={}, desc="regressor set", progress=False)


def test_an_unusable_sampot_embeddings_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(blocker / "embeddings"))
    with pytest.raises(PlaceError, match="SAMPOT_EMBEDDINGS .*is a file, so no folder can be made there"):
        cache.default_store()
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(blocker))
    with pytest.raises(PlaceError, match="SAMPOT_EMBEDDINGS .* is a file, not a folder"):
        cache.default_store()


def test_a_full_embedding_store_names_the_variable_and_is_not_an_image_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(tmp_path / "emb"))
    store = cache.default_store()

    def full(path: Path, data: bytes) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cache, "write_bytes", full)

    def task(image_id: str) -> None:
        store.save(store.key("m", np.zeros((16, 16, 3), np.uint8)), torch.zeros(1, 2, 4, 4), (16, 16))

    for runner in (SerialMap(), Workers()):
        with pytest.raises(PlaceError) as info:
            runner.map(task, ["im0"], kwargs={}, desc="evolve", progress=False)
        message = str(info.value)
        assert "SAMPOT_EMBEDDINGS" in message and "the disk is full" in message and "im0" not in message


def test_more_threads_than_cores_warn_in_one_line(tmp_path, monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # this test process keeps its threads
    cores = usable_cores()
    monkeypatch.setenv("SAMPOT_THREADS", str(cores + 1))
    root = tmp_path / "set"
    assert main(["data", "phantom", "--n", "1", "--size", "64", "--out", str(root)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "SAMPOT_THREADS" in line]
    assert err == [
        f"sampot: warning: SAMPOT_THREADS={cores + 1} is more than the {cores} core(s) this process may use: the "
        f"threads wait on each other and a run can be many times slower; set SAMPOT_THREADS={cores} or less."
    ]
    monkeypatch.setenv("SAMPOT_THREADS", str(cores))
    assert main(["data", "check", str(root)]) == 0
    assert "SAMPOT_THREADS" not in capsys.readouterr().err
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("value", ["0", "-1", "2.5", "abc", "\u00b2", "1" + "0" * 20, str(MAX_THREADS + 1)])
def test_an_unusable_thread_count_is_one_line_naming_its_range(tmp_path, monkeypatch, capsys, value):
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setenv("SAMPOT_THREADS", value)
    assert main(["data", "phantom", "--n", "1", "--size", "64", "--out", str(tmp_path / "set")]) == 2
    err = capsys.readouterr().err
    assert f"must be a whole number from 1 to {MAX_THREADS}" in err and "internal error" not in err
    assert not (tmp_path / "set").exists()


def _build_book():
    spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_book_with_a_non_numeric_size_stops_in_one_line():
    book = _build_book()
    with pytest.raises(SystemExit, match=r"PHANTOM_SIZE='big': must be a whole number"):
        book.parameters_from_env({"PHANTOM_SIZE": "big"})
    with pytest.raises(SystemExit, match=r"LR='fast': must be a number"):
        book.parameters_from_env({"LR": "fast"})
    with pytest.raises(SystemExit, match=r"SEEDS='0 one': must be numbers separated by spaces or commas"):
        book.parameters_from_env({"SEEDS": "0 one"})
    env = {**os.environ, "PHANTOM_SIZE": "big", "SAMPOT_THREADS": "1"}
    argv = [sys.executable, "scripts/build_book.py", "--only", "02_prompt_sensitivity"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["PHANTOM_SIZE='big': must be a whole number; set it so, or unset it "
                                                "for the default."]  # fmt: skip
