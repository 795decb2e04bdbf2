"""Where a command's output file may go: never a device, a kernel file or a link to one (the atomic write would
rename a file over it), never stdout's ``-``, never the command's own --regressor, and never a file a run folder's
manifest lists. Each is refused before any work, and the thing at that path is left as it was.

No test here writes to /dev, /proc or /sys: the system paths are given to the checks alone (which write nothing
there), and the commands that run get links inside tmp_path."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from sampot_lib import errors as checks
from sampot_lib.cli.checks import check_args
from sampot_lib.cli.main import build_parser, main
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.errors import SampotError
from sampot_lib.experiment.runfolder import RunFolder
from sampot_lib.files import write_text
from sampot_lib.method.regressor import SegmentationRegressor, save_regressor


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 4-image phantom set at 128 px, one image and its mask, and a small regressor file."""
    root = tmp_path_factory.mktemp("outputs")
    data = write_phantom_set(root / "ph", 4, seed=0, size=128)
    save_regressor(SegmentationRegressor(32), root / "reg.pt")
    img, mask = data / "images" / "phantom_0000.png", data / "masks" / "left_lung" / "phantom_0000.png"
    return {"data": data, "img": img, "mask": mask, "reg": root / "reg.pt"}


def run_cli(argv: list, capsys) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    return rc, capsys.readouterr().err


def one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


def checked(argv: list) -> None:
    """The command line's checks alone (nothing is written but a probe file beside a place that passes)."""
    check_args(build_parser().parse_args([str(a) for a in argv]))


# -- devices, kernel files, links to them, stdout ------------------------------------------------------------------


@pytest.mark.parametrize("place", ["/dev/stdout", "/dev/null", "/dev/shm/scores.csv", "/proc/self/fd/1", "/sys/x"])
def test_a_system_path_is_refused_as_an_output_file_before_anything_is_written(files, place):
    stdout_was_a_link = os.path.islink("/dev/stdout")
    with pytest.raises(SampotError, match=f"--out {place} .*give a file path") as info:
        checks.output_file(place, "--out", example="scores.csv")
    assert "--out scores.csv" in str(info.value)
    for argv in (
        ["score", files["data"], "--regressor", files["reg"], "--out", place],
        ["heatmap", files["img"], "--mask", files["mask"], "--out", place],
        ["data", "split", files["data"], "--out", place],
    ):
        with pytest.raises(SampotError, match=f"--out {place} "):
            checked(argv)
    assert os.path.islink("/dev/stdout") == stdout_was_a_link


def test_a_link_that_leads_through_the_kernels_files_to_a_regular_file_is_refused_and_kept(files, tmp_path, capsys):
    # /dev/stdout -> /proc/self/fd/1 -> a regular file (stdout redirected to a log): every check that follows the
    # link sees a regular file, while the rename would replace the link itself. Built here from a link to an open
    # file's /proc entry, so the real /dev/stdout is never at stake.
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    log = tmp_path / "log.txt"
    with open(log, "w") as fh:
        link = tmp_path / "stdout_link"
        link.symlink_to(f"/proc/{os.getpid()}/fd/{fh.fileno()}")
        assert link.is_file()
        rc, err = run_cli(["score", files["data"], "--regressor", files["reg"], "--out", link], capsys)
        assert rc == 2 and f"--out {link} leads to /proc/" in one_line_error(err), err
        assert "give a file path (e.g. --out scores.csv)" in err
        assert link.is_symlink() and log.read_text() == ""


@pytest.mark.parametrize("target", ["null", "fifo", "missing"])
def test_a_link_to_a_device_a_pipe_or_nothing_is_refused_and_kept(files, tmp_path, capsys, target):
    places = {"null": "/dev/null", "fifo": str(tmp_path / "pipe"), "missing": str(tmp_path / "nothing.csv")}
    if target == "fifo":
        os.mkfifo(places["fifo"])
    link = tmp_path / "out.csv"
    link.symlink_to(places[target])
    for argv in (
        ["score", files["data"], "--regressor", files["reg"], "--out", link],
        ["data", "split", files["data"], "--out", link],
    ):
        rc, err = run_cli(argv, capsys)
        line = one_line_error(err)
        assert rc == 2 and f"--out {link} " in line and "give a file path (e.g. --out " in line, err
        assert os.readlink(link) == places[target]
    if target == "fifo":
        assert stat.S_ISFIFO(os.stat(places["fifo"]).st_mode)
    assert not os.path.lexists(places["missing"])


def test_a_link_to_a_regular_file_of_the_users_is_still_an_output(files, tmp_path, capsys):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "splits.json"
    link.symlink_to(real)
    rc, err = run_cli(["data", "split", files["data"], "--out", link], capsys)
    assert rc == 0, err
    assert "train" in link.read_text()


def test_a_dash_is_no_stdout_and_no_file_named_dash(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, example in (
        (["score", files["data"], "--regressor", files["reg"], "--out", "-"], "scores.csv"),
        (["heatmap", files["img"], "--mask", files["mask"], "--out", "-"], "heatmap.csv"),
        (["data", "split", files["data"], "--out", "-"], "splits.json"),
    ):
        rc, err = run_cli(argv, capsys)
        line = one_line_error(err)
        assert rc == 2 and "--out -: sampot writes to a file, not to stdout" in line, err
        assert f"give a file name (e.g. --out {example})" in line
    assert list(tmp_path.iterdir()) == []


def test_the_atomic_write_never_renames_over_a_link_to_a_device_or_a_kernel_file(tmp_path):
    null_link, proc_link = tmp_path / "null_link", tmp_path / "proc_link"
    null_link.symlink_to("/dev/null")
    proc_link.symlink_to("/proc/self/fd/1")
    for link in (null_link, proc_link):
        with pytest.raises(OSError, match="symbolic link") as info:
            write_text(link, "x")
        assert info.value.filename == str(link)
        assert link.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if not p.is_symlink()] == []  # no temporary file left


# -- the command's own regressor ---------------------------------------------------------------------------------


def test_an_output_that_is_the_commands_regressor_is_refused_and_the_regressor_kept(files, tmp_path, capsys):
    reg = tmp_path / "R.pt"
    shutil.copy(files["reg"], reg)
    hard = tmp_path / "hard.pt"  # the same file by another name
    os.link(reg, hard)
    before = reg.read_bytes()
    for out in (reg, hard):
        for argv in (
            ["score", files["img"], files["mask"], "--regressor", reg, "--out", out],
            ["heatmap", files["img"], "--mask", files["mask"], "--regressor", reg, "--step", 64, "--out", out],
        ):
            rc, err = run_cli(argv, capsys)
            line = one_line_error(err)
            assert rc == 2 and f"{out} is the --regressor file (R.pt), and the output would replace it" in line, err
            assert "give --out another file" in line
    assert reg.read_bytes() == before
    # the model's weights are an input too
    ckpt = tmp_path / "weights.pt"
    shutil.copy(files["reg"], ckpt)
    weights = ckpt.read_bytes()
    argv = ["heatmap", files["img"], "--mask", files["mask"], "--checkpoint", ckpt, "--step", 64, "--out", ckpt]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and f"{ckpt} is the --checkpoint file (weights.pt)" in one_line_error(err), err
    assert ckpt.read_bytes() == weights


# -- a run folder's files --------------------------------------------------------------------------------------


def _run_folder(root: Path, data: Path) -> Path:
    """A run folder as `sampot run` leaves it: its split and results, each recorded in its manifest.json."""
    run = root / "run"
    assert main(["data", "split", str(data), "--out", str(run / "splits.json")]) == 0
    folder = RunFolder(run)
    folder.record("split", {"seed": 0}, "h", {}, ["splits.json"])
    for name in ("config.json", "regressor.pt", "regressor_set.npz", "regressor_eval.csv", "regressor_eval.json",
                 "evolution.csv"):  # fmt: skip
        write_text(run / name, "x\n")
    folder.record("train", {}, "h", {"data:train images": "0"}, ["regressor.pt"])
    folder.record("evaluate", {}, "h", {"regressor.pt": "0"}, ["regressor_eval.csv", "regressor_eval.json"])
    folder.begin("evolve", {}, "h", {"regressor.pt": "0"})  # interrupted: its files are the run's all the same
    return run


def test_a_file_a_run_folders_manifest_lists_is_never_an_output(files, tmp_path, capsys):
    run = _run_folder(tmp_path, files["data"])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    cases = [
        ["data", "split", files["data"], "--seed", 3, "--out", run / "splits.json"],
        ["score", files["data"], "--regressor", files["reg"], "--out", run / "evolution.csv"],
        ["score", files["data"], "--regressor", files["reg"], "--out", run / "manifest.json"],
        ["heatmap", files["img"], "--mask", files["mask"], "--out", run / "regressor_eval.csv"],
        # written by the run beside its recorded outputs: its settings and the regressor's training set
        ["score", files["data"], "--regressor", files["reg"], "--out", run / "config.json"],
        ["score", files["data"], "--regressor", files["reg"], "--out", run / "regressor_set.npz"],
    ]
    for argv in cases:
        rc, err = run_cli(argv, capsys)
        line = one_line_error(err)
        assert rc == 2 and f"--out {argv[-1]} is a file of the run folder {run}" in line, err
        assert "choose another --out" in line
    # `data split RUN` writes RUN/splits.json unless told otherwise: the message says it is the default
    rc, err = run_cli(["data", "split", run], capsys)
    assert rc == 2 and f"the default --out {run / 'splits.json'} is a file of the run folder" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # a file the manifest does not list, and a manifest.json that is no run's, leave the place free
    rc, err = run_cli(["score", files["data"], "--regressor", files["reg"], "--out", run / "mine.csv"], capsys)
    assert rc == 0, err
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"name": "a package manifest"}')
    rc, err = run_cli(["data", "split", files["data"], "--out", other / "splits.json"], capsys)
    assert rc == 0, err
    assert "train" in (other / "splits.json").read_text()
