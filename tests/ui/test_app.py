"""`sampot app` without a browser: input checked before the server starts, the page's parts driven from code.

The browser half (the page served by Voila and clicked in Chromium) is tests/browser/test_live_widget.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import signal
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import STRUCTURE, phantom_set, tiny_regressor
from PIL import Image

from sampot_lib.cli.main import main
from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import IDLE_MINUTES, MAX_SESSIONS
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.method.regressor import load_regressor, save_regressor
from sampot_lib.method.synth import centroid_prompt
from sampot_lib.ui import app as app_mod
from sampot_lib.ui import server


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(phantom set, regressor for sam_nano on left_lung, scratch folder)."""
    tmp = tmp_path_factory.mktemp("app")
    data = phantom_set(tmp / "phantom", n=3, size=128)
    return data, tiny_regressor(data, tmp / "regressor.pt", epochs=2), tmp


@pytest.fixture
def no_server(monkeypatch):
    """Fails the test if anything tries to start Voila."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a server was started: {args}")

    monkeypatch.setattr(server.subprocess, "Popen", refuse)


def _bad_inputs(setup):
    data, regressor, tmp = setup
    not_a_set = tmp / "holiday_photos"
    (not_a_set / "misc").mkdir(parents=True, exist_ok=True)
    garbage = tmp / "xray.png"
    garbage.write_bytes(b"\x89PNG but not really")
    heart = tiny_regressor(data, tmp / "heart.pt", structure="right_lung", epochs=1)
    vit = tiny_regressor(data, tmp / "vit.pt", model="vit_b", epochs=1)
    net, meta = load_regressor(regressor)
    single = save_regressor(net, tmp / "single.pt", meta | {"mask_output": "single"})
    return {
        "not a data set": ([str(not_a_set), "--regressor", str(regressor)], "is not a usable data set"),
        "unreadable image": ([str(garbage), "--regressor", str(regressor)], "not a readable image"),
        "missing path": ([str(tmp / "nowhere"), "--regressor", str(regressor)], "nowhere"),
        "regressor for another structure": (
            [str(data), "--regressor", str(heart), "--structure", STRUCTURE], "was trained on 'right_lung'"),
        "regressor for another model": ([str(data), "--regressor", str(vit)], "scores masks of model 'vit_b'"),
        "regressor for another mask output": ([str(data), "--regressor", str(single), "--mask-output", "best"],
                                              "or use the settings it was trained with."),
        "missing regressor": ([str(data), "--regressor", str(tmp / "none.pt")], "none.pt"),
        "steps out of range": ([str(data), "--regressor", str(regressor), "--steps", "0"], "--steps"),
        "no sessions": ([str(data), "--regressor", str(regressor), "--max-sessions", "0"],
                        "--max-sessions must be a whole number in [1, 64], got 0"),
        "negative idle minutes": ([str(data), "--regressor", str(regressor), "--idle-minutes", "-1"],
                                  "--idle-minutes must be in [0, 1440], got -1"),
    }  # fmt: skip


def test_bad_input_is_one_line_before_any_server_starts(setup, no_server, capsys):
    for name, (argv, message) in _bad_inputs(setup).items():
        rc = main(["app", *argv, "--port", "1"])  # port 1: never opened, the input is refused first
        err = capsys.readouterr().err
        assert rc == 2, name
        assert message in err and err.startswith("sampot: error:"), (name, err)
        assert "Traceback" not in err and "--allow-foreign" not in err, (name, err)  # an option `app` lacks


def test_busy_port_is_refused_before_the_model_loads(setup, no_server, capsys, monkeypatch):
    data, regressor, _ = setup
    monkeypatch.setattr(server, "check_app", lambda *a, **k: pytest.fail("input checked before the port"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["app", str(data), "--regressor", str(regressor), "--port", str(port)])
    assert rc == 2 and f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_good_input_serves_the_page_on_loopback(setup, monkeypatch, capsys):
    data, regressor, _ = setup
    seen = {}

    class FakeVoila:
        def __init__(self, cmd, env, **kwargs):
            notebook = Path(cmd[3])
            seen.update(cmd=cmd, env=env, notebook=notebook.read_text(),
                        spec=json.loads((notebook.parent / "spec.json").read_text()))  # fmt: skip

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(server.subprocess, "Popen", FakeVoila)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["app", str(data), "--regressor", str(regressor), "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert f"open http://127.0.0.1:{port}/ " in out
    assert "--Voila.ip=127.0.0.1" in seen["cmd"] and f"--port={port}" in seen["cmd"]
    assert f"--template={server.TEMPLATE}" in seen["cmd"]
    template = Path(seen["env"]["JUPYTER_PATH"].split(os.pathsep)[0]) / "voila" / "templates" / server.TEMPLATE
    assert (template / "index.html.j2").is_file()
    assert seen["spec"]["source"] == str(data.resolve()) and seen["spec"]["structure"] == STRUCTURE
    assert "page(" in seen["notebook"]
    # Loopback: no token asked for, and the sessions' defaults.
    assert "--Voila.auto_token=True" not in seen["cmd"] and "token=" not in out
    assert f"--SessionLimitedKernelManager.max_sessions={MAX_SESSIONS}" in seen["cmd"]
    assert f"--MappingKernelManager.cull_idle_timeout={round(IDLE_MINUTES * 60)}" in seen["cmd"]


@pytest.mark.parametrize(
    "first, then",
    [
        (signal.SIGTERM, (signal.SIGTERM, signal.SIGTERM)),  # timeout and docker stop: the group, then again
        (signal.SIGINT, (signal.SIGINT,)),  # Ctrl-C, and Ctrl-C again while Voila stops
        (signal.SIGINT, (signal.SIGTERM,)),
        (signal.SIGTERM, (signal.SIGINT,)),
    ],
    ids=["term-term-term", "int-int", "int-term", "term-int"],
)
def test_one_stop_signal_stops_voila_once_and_more_of_them_while_it_stops_change_nothing(
    setup, monkeypatch, capsys, first, then
):
    data, regressor, _ = setup
    calls = []

    class FakeVoila:  # a stop signal reaches the app while it serves, and more of them while Voila stops its kernels
        def __init__(self, cmd, env, **kwargs):
            # Voila does not take a terminal's Ctrl-C itself: only sampot does, and stops it once
            calls.append(("start", signal.getsignal(signal.SIGINT) is signal.SIG_IGN))

        def wait(self, timeout=None):
            calls.append(("wait", timeout))
            if timeout is not None:
                for signum in then:
                    os.kill(os.getpid(), signum)
                return -15
            os.kill(os.getpid(), first)
            time.sleep(5)  # the signal interrupts this
            raise AssertionError("the signal did not stop the wait")

        def terminate(self):
            calls.append(("terminate", None))

    monkeypatch.setattr(server.subprocess, "Popen", FakeVoila)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["app", str(data), "--regressor", str(regressor), "--port", str(port)]) == -15
    assert calls == [("start", True), ("wait", None), ("terminate", None), ("wait", 20.0)]
    err = capsys.readouterr().err
    assert "internal error" not in err and "interrupted" not in err
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_remote_address_gets_a_fresh_token_printed_once_and_kept_off_the_command_line(setup, monkeypatch, capsys):
    data, regressor, _ = setup
    seen = []

    class FakeVoila:
        def __init__(self, cmd, env, **kwargs):
            seen.append((cmd, env))

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(server.subprocess, "Popen", FakeVoila)
    monkeypatch.setattr(server, "check_server", lambda host, port: None)  # no need to bind 0.0.0.0 here
    argv = ["app", str(data), "--regressor", str(regressor), "--host", "0.0.0.0", "--port", "8899"]
    assert main(argv) == 0 and main(argv) == 0
    out = capsys.readouterr().out
    tokens = re.findall(r"open http://\S+:8899/\?token=([\w-]+) ", out)
    assert len(tokens) == 2 and tokens[0] != tokens[1] and len(tokens[0]) >= 32, out  # one per start, each new
    for (cmd, env), token in zip(seen, tokens, strict=True):
        assert env["JUPYTER_TOKEN"] == token and "--Voila.auto_token=True" in cmd
        assert not any(token in arg for arg in cmd)  # other users of the machine can read a command line


def test_voila_command_limits_sessions_and_culls_idle_kernels(tmp_path):
    nb = tmp_path / "sampot.ipynb"
    cmd = server.voila_command(nb, "127.0.0.1", 8866, max_sessions=3, idle_minutes=0.1)
    assert f"--VoilaConfiguration.multi_kernel_manager_class={server.KERNEL_MANAGER}" in cmd
    assert "--SessionLimitedKernelManager.max_sessions=3" in cmd
    assert "--MappingKernelManager.cull_idle_timeout=6" in cmd and "--MappingKernelManager.cull_connected=True" in cmd
    assert f"--Voila.config_file_paths={tmp_path}" in cmd
    never = server.voila_command(nb, "127.0.0.1", 8866, idle_minutes=0)
    assert not any("cull" in arg for arg in never)
    # The config file beside the notebook sets the hook that lets a closed page free its kernel.
    spec = app_mod.AppSpec(source=str(tmp_path), regressor=str(tmp_path / "r.pt"))
    server.write_page(spec, tmp_path)
    assert "prelaunch_hook = prelaunch" in (tmp_path / "voila.py").read_text()


def test_the_kernel_manager_refuses_a_start_past_the_limit(monkeypatch):
    """Two pages asking at once for the last place: one gets it, the other HTTP 503; a place freed is taken again."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from tornado import web

    from sampot_lib.ui.sessions import SessionLimitedKernelManager

    async def fake_start(self, *, kernel_id=None, path=None, **kwargs):
        await asyncio.sleep(0.05)  # a kernel takes a while to start: the place must be held meanwhile
        self._kernels[kernel_id] = object()
        return kernel_id

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", fake_start)

    async def scenario():
        km = SessionLimitedKernelManager(max_sessions=2)
        first = await km.start_kernel()
        results = await asyncio.gather(km.start_kernel(), km.start_kernel(), return_exceptions=True)
        refused = [r for r in results if isinstance(r, web.HTTPError)]
        assert len(refused) == 1 and refused[0].status_code == 503, results
        assert "2 of 2 sessions in use" in refused[0].log_message
        assert await km.start_kernel(kernel_id=first) == first  # a running kernel is returned, not refused
        del km._kernels[first]  # its page closed
        assert await km.start_kernel() not in (first, None)

    asyncio.run(scenario())


def test_the_busy_page_says_when_to_retry():
    """Through the page hook, a refused page (503) carries Retry-After, the delay its busy page reloads after; other
    error pages do not (tornado clears headers before writing an error, so the header must survive that)."""
    from tornado import httpclient, web
    from tornado.httpserver import HTTPServer
    from tornado.testing import bind_unused_port

    from sampot_lib.ui.sessions import RETRY_AFTER_S, prelaunch

    class Page(web.RequestHandler):
        def get(self, code):
            self.set_header("Retry-After", "999")  # set before the error: must not be what the client sees
            prelaunch(self, None, "")
            raise web.HTTPError(int(code))

    async def scenario():
        sock, port = bind_unused_port()
        http = HTTPServer(web.Application([(r"/(\d+)", Page)]))
        http.add_sockets([sock])
        try:
            client = httpclient.AsyncHTTPClient()
            return {c: await client.fetch(f"http://127.0.0.1:{port}/{c}", raise_error=False) for c in (503, 404)}
        finally:
            http.stop()

    responses = asyncio.run(scenario())
    assert responses[503].code == 503 and responses[503].headers.get("Retry-After") == str(RETRY_AFTER_S)
    assert responses[404].code == 404 and "Retry-After" not in responses[404].headers
    page = (server.JUPYTER_DATA / "voila" / "templates" / server.TEMPLATE / "503.html").read_text()
    assert f'<meta http-equiv="refresh" content="{RETRY_AFTER_S}">' in page


def test_the_template_drops_every_cdn_link():
    """The stylesheet lines of Voila's lab template that point off the machine are the ones the app's template
    filters out (the browser test then checks that the page requests nothing from outside)."""
    text = (server.JUPYTER_DATA / "voila" / "templates" / server.TEMPLATE / "index.html.j2").read_text()
    assert "extends 'lab/index.html.j2'" in text and "'https://' not in line" in text


def test_app_click_download_and_a_bad_image(setup, tmp_path):
    data, regressor, _ = setup
    spec = app_mod.check_app(data, regressor)
    app = app_mod.SampotApp(spec)
    ids = FolderDataset(data).ids
    assert list(app.picker.options) == ids and app.picker.layout.display is None
    assert app.mask_png() is None and "Click on the image" in app.download.value

    truth = FolderDataset(data).mask(ids[0], STRUCTURE)
    app.widget.click(*centroid_prompt(truth))
    png = np.asarray(Image.open(io.BytesIO(app.mask_png())))
    assert png.shape == truth.shape and np.array_equal(png > 0, app.widget.mask)
    assert f'download="{ids[0]}_{STRUCTURE}_mask.png"' in app.download.value and "clicked mask" in app.download.value
    app.widget.steps.value = 2
    app.widget.evolve(animate=False)
    assert "evolved (best step) mask" in app.download.value
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(app.mask_png()))) > 0, app.widget.result.best_mask)

    # A copy of the set whose second image breaks after the start: named on the page, the others still open.
    broken = tmp_path / "set"
    shutil.copytree(data, broken)
    app2 = app_mod.SampotApp(app_mod.check_app(broken, regressor), model=app.model, regressor=app.regressor)
    (broken / "images" / f"{ids[1]}.png").write_bytes(b"garbage")
    app2.picker.value = ids[1]
    assert app2.widget is None and app2.holder.children == () and app2.download.value == ""
    assert f"image {ids[1]} cannot be shown" in app2.message.value and "not a readable image" in app2.message.value
    app2.picker.value = ids[2]
    assert app2.widget is not None and app2.message.value == "" and app2.holder.children == (app2.widget.app,)


def test_the_page_places_only_the_prompt_kind_its_regressor_scores(setup, tmp_path):
    data, regressor, _ = setup
    both = app_mod.SampotApp(app_mod.check_app(data, regressor))  # a record without a prompt kind: either
    assert list(both.mode.options) == ["click", "box"] and both.mode.layout.display is None
    box = tiny_regressor(data, tmp_path / "box.pt", epochs=1, prompt="box")
    app = app_mod.SampotApp(app_mod.check_app(data, box), model=both.model)
    assert list(app.mode.options) == ["box"] and app.mode.layout.display == "none"
    assert app.mode.value == "box" and app.widget.prompt_mode == "box"  # SAM-Nano alone would start with a click
    with pytest.raises(SampotError, match="the regressor scores masks from box prompts, not from click prompts"):
        app.widget.prompt_mode = "click"
    app.widget.click(30, 30)
    app.widget.click(90, 100)
    assert app.widget.prompt.kind == "box"
    clicks = tiny_regressor(data, tmp_path / "click.pt", epochs=1, prompt="click")
    assert list(app_mod.SampotApp(app_mod.check_app(data, clicks), model=both.model).mode.options) == ["click"]


def test_app_on_one_image_has_no_picker_and_no_truth(setup, tmp_path):
    data, regressor, _ = setup
    image = next((data / "images").iterdir())
    spec = app_mod.check_app(image, regressor)
    app = app_mod.SampotApp(spec)
    assert list(app.picker.options) == [image.stem] and app.picker.layout.display == "none"
    assert app.widget is not None and app.widget.gt_mask is None


def test_widget_shows_errors_in_its_status_line_and_reports_mask_changes(setup):
    data, regressor, _ = setup
    app = app_mod.SampotApp(app_mod.check_app(data, regressor))
    w = app.widget
    changes = []
    w.on_change(lambda widget: changes.append(widget.mask))
    w._safely(w.evolve)  # what the button does before any click
    assert "place a prompt first" in w.status.value and w.result is None
    w._safely(w.click, -50.0, 10.0)
    assert "outside" in w.status.value and changes == []
    w.click(60, 60)
    assert len(changes) == 1 and changes[0] is w.last["mask"]


def test_page_says_why_the_app_cannot_start(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    spec = app_mod.AppSpec(source=str(tmp_path / "gone"), regressor=str(tmp_path / "gone.pt"))
    spec.save(tmp_path / "spec.json")
    app_mod.page(tmp_path / "spec.json")
    assert len(shown) == 1 and "The app cannot start" in shown[0].data and "gone.pt" in shown[0].data


def test_check_app_takes_the_structure_from_the_regressor_and_rejects_one_the_data_lacks(setup, tmp_path):
    data, regressor, _ = setup
    assert app_mod.check_app(data, regressor).structure == STRUCTURE
    other = tmp_path / "set"
    shutil.copytree(data, other)
    (other / "masks" / STRUCTURE).rename(other / "masks" / "heart")
    with pytest.raises(SampotError, match="has masks of heart, right_lung, but the regressor is for 'left_lung'"):
        app_mod.check_app(other, regressor)


def test_the_app_warns_of_the_images_its_regressor_learned_from(setup, tmp_path):
    from sampot_lib.files import sha256_file
    from sampot_lib.method.regressor import load_regressor, save_regressor

    data, regressor, _ = setup
    ids = FolderDataset(data).ids
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampotWarning)  # a regressor that records no training images: no warning
        app_mod.check_app(data, regressor)
    net, meta = load_regressor(regressor)
    seen = save_regressor(net, tmp_path / "seen.pt", meta | {
        "train_images": {"other_name": sha256_file(data / "images" / f"{ids[1]}.png")}, "val_images": {}})  # fmt: skip
    with pytest.warns(SampotWarning, match=rf"1 of the {len(ids)} images is among the regressor's training or "
                      rf"validation images \({ids[1]} \(= its other_name\)\)"):  # fmt: skip
        app_mod.check_app(data, seen)
    with pytest.warns(SampotWarning, match="the image is among the regressor's training"):
        app_mod.check_app(data / "images" / f"{ids[1]}.png", seen)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampotWarning)
        app_mod.check_app(data / "images" / f"{ids[0]}.png", seen)
