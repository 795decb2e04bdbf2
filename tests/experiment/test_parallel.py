"""Per-image work over Dask workers: the serial run's numbers, one encoding per image, faults named."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import socketserver
import threading
import warnings
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from parallel_tasks import dies_once, fails_on_b, warns

from sampot_lib import SampotError
from sampot_lib.cli.main import main
from sampot_lib.data.folder import FolderDataset
from sampot_lib.experiment import evolution as evolution_module
from sampot_lib.experiment import parallel as parallel_module
from sampot_lib.experiment.config import STAGE_SETTINGS, ExperimentConfig
from sampot_lib.experiment.parallel import Workers, threads_per_worker
from sampot_lib.experiment.records import read_json
from sampot_lib.experiment.runner import run_experiment
from sampot_lib.method.training_set import regressor_samples
from sampot_lib.models import SamModel

RESULTS = ("evolution.csv", "regressor_eval.csv", "regressor_history.csv", "trajectories.json", "regressor_eval.json")


def _config(data, out, **kw) -> ExperimentConfig:
    base = dict(data=str(data), out=str(out), n_synthetic=4, n_outside=1, regressor_size=32, epochs=2, steps=3,
                max_images=3)  # fmt: skip
    return ExperimentConfig(**(base | kw))


def _used_ids(out) -> list[str]:
    splits = json.loads((out / "splits.json").read_text())["splits"]
    return [i for part in ("train", "val", "test") for i in splits[part][:3]]


def _summary(out) -> dict:
    summary = read_json(out / "summary.json")
    summary.pop("config"), summary.pop("seconds")  # where the run ran (workers) and how long: nothing else differs
    return summary


# -- the serial run's numbers, whatever runs them -------------------------------------------------------------------


def test_a_run_over_two_worker_processes_gives_the_serial_numbers(phantoms, tmp_path, monkeypatch):
    # SAM-Nano (shipped with the package: a worker process loads it by name) at one torch thread per process, as
    # the serial run here has: a float sum may differ in its last bits with another thread count.
    monkeypatch.setattr("sampot_lib.experiment.parallel.usable_cores", lambda: 2)
    monkeypatch.delenv("SAMPOT_EMBEDDINGS", raising=False)
    serial = _config(phantoms, tmp_path / "serial", model="sam_nano")
    run_experiment(serial, progress=False)
    spread = replace(serial, out=str(tmp_path / "spread"), workers=2)
    run_experiment(spread, progress=False)
    a, b = tmp_path / "serial", tmp_path / "spread"
    for name in RESULTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert _summary(a) == _summary(b)
    assert read_json(b / "config.json")["workers"] == 2
    # the workers shared one embedding store in the run folder: one entry per image used, no temporary file left
    entries = list((b / "embeddings").rglob("*.safetensors"))
    assert len(entries) == len(_used_ids(b)) == 9
    assert not list((b / "embeddings").rglob("*.tmp")) and not (b / "evolve_parts").exists()


def test_each_image_draws_its_training_samples_from_its_own_generator(phantoms, tiny_model):
    dataset = FolderDataset(phantoms)
    ids = dataset.ids[:3]
    forward = regressor_samples(tiny_model, dataset, ids, "left_lung", size=32, n_synthetic=3, n_outside=2, seed=4,
                                progress=False)  # fmt: skip
    backward = regressor_samples(tiny_model, dataset, ids[::-1], "left_lung", size=32, n_synthetic=3, n_outside=2,
                                 seed=4, progress=False)  # fmt: skip
    alone = regressor_samples(tiny_model, dataset, ids[1:2], "left_lung", size=32, n_synthetic=3, n_outside=2, seed=4,
                              progress=False)  # fmt: skip
    for image_id in ids:
        f, b = forward.image_id == image_id, backward.image_id == image_id
        np.testing.assert_array_equal(forward.masks[f], backward.masks[b])
        np.testing.assert_array_equal(forward.dice[f], backward.dice[b])
    np.testing.assert_array_equal(alone.masks, forward.masks[forward.image_id == ids[1]])
    other = regressor_samples(tiny_model, dataset, ids[1:2], "left_lung", size=32, n_synthetic=3, n_outside=2,
                              seed=5, progress=False)  # fmt: skip
    assert not np.array_equal(other.masks, alone.masks)  # the seed still matters


def test_where_the_work_runs_is_no_stage_setting(phantoms, tiny_checkpoint, tmp_path, monkeypatch):
    assert not {"workers", "scheduler"} & {k for keys in STAGE_SETTINGS.values() for k in keys}
    config = _config(phantoms, tmp_path / "run", model="tiny", checkpoint=str(tiny_checkpoint))
    first = run_experiment(config, progress=False)

    def no_cluster(self):
        raise AssertionError("a finished run was redone over workers")

    monkeypatch.setattr(Workers, "client", no_cluster)
    again = run_experiment(replace(config, workers=2), progress=False, resume=True)
    first.pop("config"), again.pop("config")
    assert again == first


# -- each image encoded once per run ----------------------------------------------------------------------------------


def test_a_whole_run_encodes_each_image_it_uses_once(phantoms, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(tmp_path / "emb"))
    encoded: list[bytes] = []
    real = SamModel._encode

    def counted(self, rgb):
        encoded.append(rgb.tobytes())
        return real(self, rgb)

    monkeypatch.setattr(SamModel, "_encode", counted)
    config = _config(phantoms, tmp_path / "run", model="tiny", checkpoint=str(tiny_checkpoint))
    run_experiment(config, progress=False)
    # train, val and test images: the regressor's sets, the evaluation and evolution (two groups) all reuse them
    assert len(encoded) == len(set(encoded)) == len(_used_ids(tmp_path / "run")) == 9
    encoded.clear()
    run_experiment(replace(config, out=str(tmp_path / "later")), progress=False)  # a later run: all from the store
    assert encoded == []


# -- faults: named by image, never silently missing; an interrupted evolution resumes ---------------------------------


def test_a_failing_image_is_named_and_a_resumed_evolution_redoes_only_what_is_missing(
    phantoms, tiny_checkpoint, tmp_path, monkeypatch
):
    config = _config(phantoms, tmp_path / "run", model="tiny", checkpoint=str(tiny_checkpoint))
    clean = _config(phantoms, tmp_path / "clean", model="tiny", checkpoint=str(tiny_checkpoint))
    run_experiment(clean, progress=False)
    test_ids = json.loads((tmp_path / "clean" / "splits.json").read_text())["splits"]["test"][:3]
    real = evolution_module._evolve_image
    calls: list[str] = []

    def failing(image_id, **kwargs):
        calls.append(image_id)
        if image_id == test_ids[-1]:
            raise ValueError("a fault in this image")
        return real(image_id, **kwargs)

    monkeypatch.setattr(evolution_module, "_evolve_image", failing)
    with pytest.raises(SampotError, match=rf"evolution: image '{test_ids[-1]}' failed: ValueError: a fault"):
        run_experiment(config, progress=False)
    out = tmp_path / "run"
    assert not (out / "evolution.csv").exists() and not (out / "summary.json").exists()  # no partial output
    assert read_json(out / "manifest.json")["stages"]["evolve"]["status"] == "running"
    calls.clear()
    monkeypatch.setattr(evolution_module, "_evolve_image", lambda image_id, **kw: calls.append(image_id) or real(
        image_id, **kw))  # fmt: skip
    run_experiment(config, progress=False, resume=True)
    assert calls == [test_ids[-1]]  # the finished images were kept, the failed one redone
    for name in RESULTS:
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    assert _summary(out) == _summary(tmp_path / "clean") and not (out / "evolve_parts").exists()


def test_worker_faults_are_retried_or_named(tmp_path, monkeypatch):
    from distributed import KilledWorker

    monkeypatch.setattr("sampot_lib.experiment.parallel.usable_cores", lambda: 2)
    with Workers(workers=2) as pool:
        assert pool.threads == threads_per_worker(2, 2) == 1
        assert pool.map(fails_on_b, ["a", "c", "d"], kwargs={"scale": 2}, progress=False) == [194, 198, 200]
        with pytest.raises(SampotError, match=r"squares: image 'b' failed: ValueError: b is broken"):
            pool.map(fails_on_b, ["a", "b", "c"], kwargs={"scale": 2}, desc="squares", progress=False)
        marker = str(tmp_path / "died")
        assert pool.map(dies_once, ["a", "b", "c", "d"], kwargs={"marker": marker}, progress=False) == list("ABCD")
        assert os.path.exists(marker)  # a worker did die running "c", and its image still came back
        with pytest.warns(UserWarning, match=r"scan: image 'e': something odd about e"):  # said here, naming it
            assert pool.map(warns, ["e"], desc="scan", progress=False) == ["e"]
    # A task whose workers keep dying ends as Dask's KilledWorker (after 3 deaths by default: slow to provoke here).
    with pytest.raises(SampotError, match=r"evolution: image 'c' failed: the worker processes that ran it died"):
        raise parallel_module._failure("evolution", "c", KilledWorker("evolution-2", None, 3))


def test_workers_run_in_this_process_without_dask(monkeypatch):
    monkeypatch.setattr(Workers, "client", lambda self: pytest.fail("a serial map started Dask"))
    for pool in (Workers(), Workers(1)):
        assert not pool.parallel
        assert pool.map(fails_on_b, ["c", "a"], kwargs={"scale": 1}, progress=False) == [99, 97]
        with pytest.raises(SampotError, match="image 'b' failed"):
            pool.map(fails_on_b, ["a", "b"], kwargs={"scale": 1}, progress=False)


def test_closing_the_cluster_keeps_dasks_killed_worker_warning_from_the_user_and_others_not(caplog):
    class SlowToStop:  # as a LocalCluster whose worker outlived the nanny's 4 s
        def close(self):
            logging.getLogger("distributed.nanny").warning("Worker process still alive after 4.0 seconds, killing")
            logging.getLogger("distributed.scheduler").warning("a lost worker")

    pool = Workers(workers=2)
    pool._cluster = SlowToStop()
    with caplog.at_level(logging.WARNING):
        pool.close()
    assert [r.getMessage() for r in caplog.records] == ["a lost worker"]
    assert logging.getLogger("distributed.nanny").level == logging.NOTSET  # as it was
    caplog.clear()
    logging.getLogger("distributed.nanny").warning("later news")  # only the close is quietened
    assert [r.getMessage() for r in caplog.records] == ["later news"]


def test_a_cluster_without_dashboard_leaves_port_8787_to_others(capfd):
    with socket.socket() as busy:  # another run's dashboard, or a Jupyter dask session
        try:
            busy.bind(("127.0.0.1", 8787))
        except OSError:
            pytest.skip("port 8787 is taken here already")
        busy.listen()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Workers(workers=2) as pool:
                assert pool.map(fails_on_b, ["a"], kwargs={"scale": 1}, progress=False) == [97]
    said = [str(w.message) for w in caught] + [capfd.readouterr().err]
    assert not any("8787" in text for text in said), said


def test_the_dashboard_is_served_on_this_machine_and_its_address_printed(capsys):
    pytest.importorskip("bokeh")
    with Workers(workers=2, dashboard=True) as pool:
        assert pool.map(fails_on_b, ["a"], kwargs={"scale": 1}, progress=False) == [97]
    err = capsys.readouterr().err
    assert re.search(r"^Dask dashboard: http://127\.0\.0\.1:\d+/status$", err, re.M), err


def test_the_dashboard_needs_a_cluster_and_bokeh(phantoms, tmp_path, capsys, monkeypatch):
    rc = main(["run", str(phantoms), "--out", str(tmp_path / "o"), "--max-images", "3", "--dashboard"])
    err = capsys.readouterr().err
    assert rc == 2 and "--dashboard shows a Dask cluster at work: add --workers N" in err
    no_bokeh = SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None))
    monkeypatch.setattr(parallel_module, "importlib", no_bokeh)
    rc = main(["run", str(phantoms), "--out", str(tmp_path / "o"), "--max-images", "3", "--workers", "2",
               "--dashboard"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "--dashboard needs bokeh" in err and "sampot[dashboard]" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


# -- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "0"], "--workers must be a whole number >= 1, got 0"),
        (["--scheduler", "node1"], "--scheduler must be a Dask scheduler address like tcp://node1:8786"),
        (["--scheduler", "tcp://node1:99999"], "--scheduler must be a Dask scheduler address"),
    ],
)
def test_cli_refuses_bad_workers_and_scheduler(phantoms, tmp_path, capsys, extra, message):
    out = tmp_path / "o"
    rc = main(["run", str(phantoms), "--out", str(out), "--max-images", "3", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


class _WebServer(socketserver.BaseRequestHandler):
    """Answers anything with an HTTP error, as a web server at a mistyped port would."""

    def handle(self) -> None:
        self.request.settimeout(2)
        try:
            self.request.recv(1024)
            self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        except OSError:
            pass


def test_a_scheduler_address_where_no_dask_scheduler_answers_fails_before_anything_is_written(
    phantoms, tmp_path, capsys
):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _WebServer) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        port = web.server_address[1]
        cases = [
            (f"tcp://127.0.0.1:{closed}", f"nothing answers at 127.0.0.1:{closed}"),
            (f"tcp://127.0.0.1:{port}", f"the server at tcp://127.0.0.1:{port} is not a Dask scheduler"),
        ]
        for address, message in cases:
            out = tmp_path / "o"
            rc = main(["run", str(phantoms), "--out", str(out), "--max-images", "3", "--scheduler", address])
            err = capsys.readouterr().err
            assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
            assert not out.exists()
        web.shutdown()


@pytest.mark.parametrize(
    "bad, message",
    [({"workers": 0}, "'workers' must be >= 1"), ({"workers": 2.0}, "'workers' must be int"),
     ({"scheduler": "http://x:1"}, "'scheduler' must be a Dask scheduler address"),
     ({"workers": 2, "scheduler": "x:8786"}, "not both")],
)  # fmt: skip
def test_config_refuses_bad_workers_and_scheduler(bad, message):
    with pytest.raises(SampotError, match=message):
        ExperimentConfig(data="d", out="o", **bad)
    assert ExperimentConfig(data="d", out="o", scheduler=" tcp://node1:8786 ").scheduler == "tcp://node1:8786"


def test_local_workers_are_bounded_at_four_per_usable_core():
    from sampot_lib.defaults import WORKERS_PER_CORE
    from sampot_lib.experiment.parallel import check_workers, usable_cores

    most = WORKERS_PER_CORE * usable_cores()
    check_workers(most)  # a few more than the cores: slow, allowed
    with pytest.raises(SampotError, match=f"give workers {most} or fewer"):
        check_workers(most + 1)
