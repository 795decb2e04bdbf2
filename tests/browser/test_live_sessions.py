"""`sampot app` under several users and hostile pages, served for real (Voila) and opened in headless Chromium.

Checks that four pages open at once each get a kernel of their own and the mask of their own image and click (the
same mask and numbers the widget computes in this process), that a fifth page gets the busy page (HTTP 503) until a
page is closed; that on an address other than the loopback one a request without the printed token is refused and
one with it served; that an idle page's kernel is shut down and its place comes back; and that a page cannot run
code of its choosing in its kernel (an execute_request over the kernel's websocket is dropped). Writes the kernels'
memory after an evolution to _build/app_memory.json (the README's app section quotes it).

Opt-in (it starts servers and a browser, a few minutes): `pytest tests/browser --live -k sessions`.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import websocket
from app_fixtures import STRUCTURE, phantom_set, tiny_regressor
from live_app import ACTION_S, CLICK_DONE, PAGE_S, STATE, WHERE, serve

from sampot_lib.data.folder import FolderDataset
from sampot_lib.method.synth import centroid_prompt
from sampot_lib.report.figures import contour_xy
from sampot_lib.ui import app as app_mod
from sampot_lib.ui.sessions import RETRY_AFTER_S

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = 4
BUSY = "Busy, try again in a minute"


@pytest.fixture(scope="module")
def setup(live, tmp_path_factory):
    """(phantom set of SESSIONS images of 256 px, regressor for sam_nano on the left lung, scratch folder)."""
    tmp = tmp_path_factory.mktemp("sessions")
    data = phantom_set(tmp / "phantom", n=SESSIONS, size=256)
    return data, tiny_regressor(data, tmp / "regressor.pt"), tmp


def _get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    """GET ``path`` on 127.0.0.1:``port`` without following a redirect: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PAGE_S)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode(errors="replace")
    finally:
        conn.close()


def _same_line(a: list, b: list) -> bool:
    """Two contour coordinate lists (None separating contours) are the same line."""
    if len(a) != len(b) or [v is None for v in a] != [v is None for v in b]:
        return False
    x, y = (np.array([v for v in c if v is not None], float) for c in (a, b))
    return bool(np.allclose(x, y, atol=1e-6))


def _kernels(server_pid: int) -> list[psutil.Process]:
    """The kernel processes under the server (the command -> Voila -> one ipykernel per page)."""
    return [p for p in psutil.Process(server_pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]


def test_four_pages_at_once_each_get_their_own_mask_and_a_fifth_is_busy(setup, browser):
    data, regressor, tmp = setup
    dataset = FolderDataset(data)
    ids = dataset.ids
    contexts = [browser.new_context(viewport={"width": 1280, "height": 1100}) for _ in range(SESSIONS + 1)]
    try:
        with serve(data, regressor, tmp, "--max-sessions", str(SESSIONS), name="four") as server:
            pages = [c.new_page() for c in contexts[:SESSIONS]]
            for page in pages:  # all four requests in flight before any page has rendered
                page.goto(server.url, wait_until="commit", timeout=PAGE_S * 1000)
            for page in pages:
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=PAGE_S * 1000)
            assert len(_kernels(server.pid)) == SESSIONS

            # A fifth page: the busy page, HTTP 503, while the four are open.
            fifth = contexts[SESSIONS].new_page()
            response = fifth.goto(server.url, timeout=PAGE_S * 1000)
            assert response.status == 503 and BUSY in fifth.inner_text("body"), fifth.content()[:2000]
            assert f"{SESSIONS} of {SESSIONS} sessions in use" in fifth.inner_text("body")

            # Page k opens image k (page 0 keeps the first), then each clicks its image's left lung, all four
            # clicks sent before any result is read.
            for k, page in enumerate(pages[1:], start=1):
                old = page.query_selector(".js-plotly-plot")
                page.select_option(".sampot-picker select", ids[k])
                page.wait_for_function("(el) => !el.isConnected", arg=old, timeout=ACTION_S * 1000)
                page.wait_for_selector(".js-plotly-plot .main-svg", timeout=ACTION_S * 1000)
            before = [page.evaluate(STATE)["status"] for page in pages]
            for k, page in enumerate(pages):
                where = page.evaluate(WHERE, list(centroid_prompt(dataset.mask(ids[k], STRUCTURE))))
                page.mouse.click(where["x"], where["y"])
            for page, status in zip(pages, before, strict=True):
                page.wait_for_function(CLICK_DONE, arg=status, timeout=ACTION_S * 1000)
            shown = [page.evaluate(STATE) for page in pages]

            # Each page shows what the widget computes here for its own image and click: mask, score, Dice.
            here = app_mod.SampotApp(app_mod.check_app(data, regressor))
            for k, state in enumerate(shown):
                here.open(ids[k])
                here.widget.click(state["click_x"][0], state["click_y"][0])
                mx, my = contour_xy(here.widget.mask)
                assert state["status"].strip() == here.widget.status.value.strip(), (k, state["status"])
                assert _same_line(state["mask_x"], mx) and _same_line(state["mask_y"], my), f"page {k}: not its mask"
            for a in range(SESSIONS):
                for b in range(a + 1, SESSIONS):
                    assert not _same_line(shown[a]["mask_x"], shown[b]["mask_x"]), (a, b)

            # Evolve on all four at once; then each kernel's memory, the figure the README quotes.
            for page in pages:
                page.click(".sampot-evolve")
            for page in pages:
                page.wait_for_function(
                    "() => document.querySelector('.sampot-status').innerText.includes('best of')",
                    timeout=ACTION_S * 1000 * 2,
                )  # fmt: skip
            rss = sorted(p.memory_info().rss / 2**20 for p in _kernels(server.pid))
            assert len(rss) == SESSIONS
            out = ROOT / "_build" / "app_memory.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"model": "sam_nano", "image_px": 256, "kernels": SESSIONS,
                                       "rss_mib": [round(r) for r in rss]}, indent=1) + "\n")  # fmt: skip
            print(f"kernel RSS after one evolution, MiB: {[round(r) for r in rss]}")

            # Closing a page frees its place (Voila shuts its kernel down on the page's unload): the fifth gets in.
            pages[0].close(run_before_unload=True)
            deadline = time.monotonic() + 60
            while (status := fifth.goto(server.url, wait_until="commit", timeout=PAGE_S * 1000).status) == 503:
                assert time.monotonic() < deadline, "closing a page did not free its place within 60 s"
                time.sleep(2)
            assert status == 200
            fifth.wait_for_selector(".js-plotly-plot .main-svg", timeout=PAGE_S * 1000)
    finally:
        for c in contexts:
            c.close()


def test_remote_address_needs_the_token_and_an_idle_page_frees_its_place(setup, browser):
    data, regressor, tmp = setup
    options = ("--host", "0.0.0.0", "--max-sessions", "1", "--idle-minutes", "0.1")  # 6 s
    with serve(data, regressor, tmp, *options, name="remote") as server:
        token = re.search(r"\?token=([\w-]+)$", server.url)
        assert token and len(token.group(1)) >= 32, server.url
        token = token.group(1)
        assert token not in " ".join(psutil.Process(server.pid).children()[0].cmdline())  # off the command line

        # Without the token, or with a wrong one: sent to the login page, no kernel started. The kernels' API: 403.
        for path in ("/", "/?token=wrong"):
            status, headers, _ = _get(server.port, path)
            assert status == 302 and "/login" in headers["Location"], (path, status, headers)
        assert _get(server.port, f"/api/kernels/{uuid.uuid4()}")[0] == 403
        assert _kernels(server.pid) == []

        # With it: the page. It holds the one place, so a second request is refused as busy.
        context = browser.new_context()
        try:
            page = context.new_page()
            assert page.goto(f"http://127.0.0.1:{server.port}/?token={token}", timeout=PAGE_S * 1000).status == 200
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=PAGE_S * 1000)
            status, headers, body = _get(server.port, f"/?token={token}")
            assert status == 503 and BUSY in body, (status, body[:500])
            assert headers.get("Retry-After") == str(RETRY_AFTER_S), headers

            # Left idle (the tab still open), its kernel is shut down after 6 s and the place comes back.
            deadline = time.monotonic() + 90
            while (status := _get(server.port, f"/?token={token}")[0]) == 503:
                assert time.monotonic() < deadline, f"the idle page's place did not come back:\n{server.tail()}"
                time.sleep(2)
            assert status == 200
            assert "Culling 'idle' kernel" in server.log.read_text()
        finally:
            context.close()


def test_the_page_cannot_run_code_in_its_kernel(setup, tmp_path):
    """What a hostile page could send: an execute_request on its kernel's websocket. Voila's kernel manager drops
    it (only the widgets' message types pass); a kernel_info_request sent after it is answered, so the channel
    works and the kernel, which answers in order, had the execute_request's turn before."""
    data, regressor, tmp = setup
    marker = tmp_path / "executed"
    with serve(data, regressor, tmp, "--max-sessions", "1", name="hostile") as server:
        status, _, body = _get(server.port, "/")
        assert status == 200
        kernel = re.search(r'"kernelId": "([0-9a-f-]{36})"', body)
        assert kernel, body[:2000]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/api/kernels/{kernel.group(1)}/channels", timeout=ACTION_S
        )
        try:

            def send(msg_type: str, content: dict) -> str:
                msg_id = uuid.uuid4().hex
                header = {"msg_id": msg_id, "msg_type": msg_type, "username": "page", "session": uuid.uuid4().hex,
                          "version": "5.3", "date": ""}  # fmt: skip
                ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                                    "channel": "shell", "buffers": []}))  # fmt: skip
                return msg_id

            code = f"open({str(marker)!r}, 'w').write('the page ran code')"
            request = {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                       "allow_stdin": False, "stop_on_error": True}  # fmt: skip
            run = send("execute_request", request)
            info = send("kernel_info_request", {})
            replies = []
            while not any(m["msg_type"] == "kernel_info_reply" for m in replies):
                replies.append(json.loads(ws.recv()))
        finally:
            ws.close()
        answers_to_run = [m["msg_type"] for m in replies if m["parent_header"].get("msg_id") == run]
        assert answers_to_run == [], answers_to_run
        assert any(m["parent_header"].get("msg_id") == info for m in replies)
        assert not marker.exists()
        assert 'message of type "execute_request", which is not allowed' in server.log.read_text()
