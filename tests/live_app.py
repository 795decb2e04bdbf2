"""What the live app tests share: `sampot app` started as a user starts it, and the page's state read from plotly.

The browser tests (tests/browser/test_live_*.py) start the real command in a subprocess, wait until it listens and
stop it with SIGTERM (which the command passes on to Voila, which then shuts its kernels down).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Seconds: the first page runs the one-cell notebook in a fresh kernel (imports torch, loads SAM-Nano, embeds the
# image), which takes long on two busy cores.
START_S, PAGE_S, ACTION_S = 120, 240, 120

STATE = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    const trace = name => gd.data.find(t => t.name === name) || {};
    const arr = a => (a ? Array.from(a) : []);
    return {mask_x: arr(trace('mask').x), mask_y: arr(trace('mask').y),
            path_x: arr(trace('evolution path').x), path_y: arr(trace('evolution path').y),
            click_x: arr(trace('click').x), click_y: arr(trace('click').y),
            title: gd.layout.title.text, status: document.querySelector('.sampot-status').innerText};
}"""

# Page position of image pixel (x, y): plotly's axes map data to pixels.
WHERE = """([x, y]) => {
    const gd = document.querySelector('.js-plotly-plot');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
    return {x: box.left + xa._offset + xa.l2p(x), y: box.top + ya._offset + ya.l2p(y)};
}"""

# Done when the status line is new and the figure shows the same words (its update can come later).
CLICK_DONE = """(before) => { const s = document.querySelector('.sampot-status').innerText;
    const gd = document.querySelector('.js-plotly-plot');
    return s !== before && s.includes('click at') && gd.layout.title.text === s; }"""

TOKEN_URL = re.compile(r"open (http://\S+)")


@dataclass
class Server:
    """A running `sampot app`: its port, its log file, the URL it printed (with the token, if any) and its process
    id (Voila runs as its child, the kernels as Voila's)."""

    port: int
    log: Path
    url: str
    pid: int

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(data: Path, regressor: Path, tmp: Path, *options: str, name: str = "server") -> Iterator[Server]:
    """`sampot app DATA --regressor R OPTIONS` until the block ends; the port is free one, the log ``tmp/name.log``.
    The server is reached on 127.0.0.1 whatever --host says (0.0.0.0 includes it)."""
    port, log = free_port(), tmp / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAMPOT_THREADS": "1"}
    cmd = [sys.executable, "-m", "sampot_lib.cli.main", "app", str(data), "--regressor", str(regressor),
           "--port", str(port), *options]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`sampot app` exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"`sampot app` did not listen within {START_S} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        printed = TOKEN_URL.search(log.read_text())
        assert printed, f"`sampot app` printed no URL to open:\n{log.read_text()[-3000:]}"
        yield Server(port, log, printed.group(1), proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def click_at(page, x: float, y: float, before: str) -> dict:
    """Click image pixel (x, y) on ``page`` and wait for its mask: the page's state (:data:`STATE`) then."""
    where = page.evaluate(WHERE, [x, y])
    page.mouse.click(where["x"], where["y"])
    page.wait_for_function(CLICK_DONE, arg=before, timeout=ACTION_S * 1000)
    return page.evaluate(STATE)
