"""The split file `sampot data split DIR` writes into the data set: the command says how to use it, and a run or a
regressor training given no --split-file says once, before it starts, that it makes its own split instead."""

from __future__ import annotations

import json

import pytest

from sampot_lib.cli.main import main
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.data.splits import make_splits


@pytest.fixture
def split_data(tmp_path):
    """9 phantoms of 96 px."""
    return write_phantom_set(tmp_path / "ph", 9, seed=0, size=96)


def _argv(command, data, out, ckpt, *extra) -> list[str]:
    return [command, str(data), "--out", str(out), "--model", "tiny", "--checkpoint", str(ckpt), "--max-images", "3",
            "--epochs", "1", "--regressor-size", "32", *(["--steps", "2"] if command == "run" else []),
            *map(str, extra)]  # fmt: skip


def test_a_split_file_in_the_data_set_that_a_run_does_not_use_is_named_once(split_data, tiny_checkpoint, tmp_path,
                                                                             capsys):  # fmt: skip
    data = split_data
    assert main(["data", "split", str(data), "--seed", "5", "--fractions", "1", "1", "1"]) == 0
    lying = data / "splits.json"
    said = capsys.readouterr().out.splitlines()
    assert said[-1].startswith(f"use it with: sampot run {data} --split-file {lying}"), said
    warning = (f"sampot: warning: {lying} (a split file in the data set) is not used: this run makes its own split "
               f"with seed 0; pass --split-file {lying} to use it.")  # fmt: skip
    for command in ("train-regressor", "run"):
        out = tmp_path / command
        assert main(_argv(command, data, out, tiny_checkpoint, "--seed", "0")) == 0
        err = capsys.readouterr().err
        assert err.count(warning) == 1, err
        # the run's own split, as before: seed 0 of the data set, not the file's
        made = json.loads((out / "splits.json").read_text())
        assert made["seed"] == 0 and made["splits"] == make_splits(made["subjects"], seed=0)
    # calibrate says so before it starts (here, before it reads the regressor and refuses it)
    bogus = tmp_path / "regressor.pt"
    bogus.write_bytes(b"not a regressor")
    assert (
        main(["calibrate", str(data), "--regressor", str(bogus), "--labelled", "3", "--out", str(tmp_path / "c")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count(warning.replace("this run", "this calibration")) == 1 and err.index("warning") < err.index("error")
    # Given with --split-file, it is used and nothing is said.
    out = tmp_path / "given"
    assert main(_argv("train-regressor", data, out, tiny_checkpoint, "--split-file", lying)) == 0
    assert "is not used" not in capsys.readouterr().err
