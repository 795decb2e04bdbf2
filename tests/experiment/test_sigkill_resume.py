"""A run killed with SIGKILL (no clean-up of any kind) at several points and resumed gives, image by image, exactly
the results of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sampot_lib.data.phantom import write_phantom_set

ROOT = Path(__file__).parents[2]
#: A small run of the shipped SAM-Nano: 4 test images, both safeguard settings, 10 steps each.
SETTINGS = ["--model", "sam_nano", "--max-images", "4", "--epochs", "1", "--steps", "10", "--regressor-size", "32"]
#: What a run writes that holds its numbers (summary.json also records wall time and the folder).
RESULTS = ("evolution.csv", "trajectories.json", "regressor_eval.csv", "regressor_history.csv", "splits.json")


def _sampot(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SAMPOT_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SAMPOT_EMBEDDINGS", None)
    argv = [sys.executable, "-m", "sampot_lib", "run", str(data), "--out", str(out), *SETTINGS, *extra]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def _stage_running(out: Path, stage: str) -> bool:
    try:
        doc = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return doc.get("stages", {}).get(stage, {}).get("status") == "running"


def _parts(out: Path) -> int:
    return len(list((out / "evolve_parts").glob("*/*.json")))


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float = 0.0) -> None:
    """SIGKILL ``proc`` once ``ready()`` holds (then ``delay`` seconds later); fail if it ends first."""
    deadline = time.monotonic() + 300
    while not ready():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the kill point was never reached"
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"


@pytest.mark.slow
def test_runs_killed_at_several_points_and_resumed_give_the_uninterrupted_results(tmp_path):
    data = write_phantom_set(tmp_path / "phantom", 12, seed=0, size=128)
    whole = tmp_path / "whole"
    _finish(_sampot(data, whole))
    kill_points = {
        "training the regressor": (lambda out: _stage_running(out, "train"), 0.2),
        "after 1 evolved image": (lambda out: _parts(out) >= 1, 0.0),
        "after 3 evolved images": (lambda out: _parts(out) >= 3, 0.0),
    }
    for name, (ready, delay) in kill_points.items():
        out = tmp_path / name.replace(" ", "_")
        _kill_when(_sampot(data, out), lambda out=out, ready=ready: ready(out), delay)
        assert not (out / "summary.json").exists(), name
        _finish(_sampot(data, out, "--resume"))
        for result in RESULTS:
            assert (out / result).read_bytes() == (whole / result).read_bytes(), f"{name}: {result} differs"
        got, want = (json.loads((d / "summary.json").read_text()) for d in (out, whole))
        for summary in (got, want):
            summary.pop("seconds"), summary.pop("config")
        assert got == want, name
