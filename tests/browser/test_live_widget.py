"""The prompt widget used for real: `sampot app` serves it with Voila on 127.0.0.1, and headless Chromium clicks it.

Nothing leaves the machine (every request off 127.0.0.1 is blocked and fails the test); the widget's front end
(ipywidgets, anywidget, plotly's FigureWidget) comes from the installed Python packages. Checks that a click on the
image changes the mask, the regressor's score and the model's confidence shown; that the evolve button animates the
click's path and ends at the best step; that the downloaded PNG is the mask shown; that an image that cannot be read
is named on the page while the server and the other images keep working; that the title stays clear of plotly's
mode bar; and that no console error appears. Screenshots go to _build/screenshots/live/.

Opt-in (it starts a server and a browser, about a minute): `make app-test`, or `pytest tests/browser --live`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import STRUCTURE, phantom_set, tiny_regressor
from live_app import ACTION_S, PAGE_S, STATE, WHERE, click_at, serve
from PIL import Image

from sampot_lib.data.folder import FolderDataset
from sampot_lib.method.synth import centroid_prompt
from sampot_lib.report.figures import contour_xy

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "_build" / "screenshots" / "live"
STEPS = 30

# Samples the path's length every 20 ms while evolution runs, to see the animation's frames arrive.
_RECORD = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    const k = gd.data.findIndex(t => t.name === 'evolution path');
    window.__lens = [];
    window.__rec = setInterval(() => {
        const n = Array.from(gd.data[k].x || []).length, l = window.__lens;
        if (!l.length || l[l.length - 1] !== n) l.push(n);
    }, 20);
}"""

_TITLE_AND_MODEBAR = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    return {title: box(gd.querySelector('.gtitle')), modebar: box(gd.querySelector('.modebar'))};
}"""

_NUMBERS = re.compile(r"at \((\d+), (\d+)\): score ([\d.]+), confidence ([\d.]+)")


@pytest.fixture(scope="module")
def served(live, tmp_path_factory):
    """`sampot app` on a phantom set with a tiny regressor: (url, data folder, log file)."""
    tmp = tmp_path_factory.mktemp("app")
    data = phantom_set(tmp / "phantom", n=3, size=256)
    regressor = tiny_regressor(data, tmp / "regressor.pt")
    with serve(data, regressor, tmp, "--steps", str(STEPS)) as server:
        yield server.url, data, server.log


def _parse(status: str) -> tuple[float, float, float, float]:
    m = _NUMBERS.search(status)
    assert m, f"no click, score and confidence in the status line: {status!r}"
    return tuple(float(v) for v in m.groups())  # type: ignore[return-value]


def _same_line(a: list, b: list) -> bool:
    """Two contour coordinate lists (None separating contours) are the same line."""
    if len(a) != len(b) or [v is None for v in a] != [v is None for v in b]:
        return False
    x, y = (np.array([v for v in c if v is not None], float) for c in (a, b))
    return bool(np.allclose(x, y, atol=1e-6))


def test_live_app_click_evolve_download_and_bad_image(served, browser):
    url, data, log = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    host = url.rstrip("/")
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 1100}, accept_downloads=True)

    def route(r):
        if r.request.url.startswith((host + "/", "data:", "blob:")) or r.request.url == host:
            r.continue_()
        else:
            problems.append(f"request leaves the machine: {r.request.url}")
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console error: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    dataset = FolderDataset(data)
    first = dataset.ids[0]
    left = dataset.mask(first, STRUCTURE)
    right = dataset.mask(first, "right_lung")
    cell = max(left.shape) / 128  # the widget catches clicks on a 128-cell grid

    def shot(name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    try:
        page.goto(url, wait_until="domcontentloaded", timeout=PAGE_S * 1000)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=PAGE_S * 1000)
        page.wait_for_selector(".sampot-status", timeout=ACTION_S * 1000)
        shot("01_loaded")
        start = page.evaluate(STATE)
        assert start["mask_x"] == [] and start["click_x"] == [], start

        # A click inside the left lung, then one inside the right lung: a different mask, score and confidence.
        x1, y1 = centroid_prompt(left)
        s1 = click_at(page, x1, y1, start["status"])
        shot("02_click_left_lung")
        cx, cy, score1, conf1 = _parse(s1["status"])
        assert abs(cx - x1) <= cell + 0.5 and abs(cy - y1) <= cell + 0.5, (s1["status"], x1, y1)
        assert len(s1["mask_x"]) > 10 and abs(s1["click_x"][0] - x1) <= cell, s1["click_x"]
        assert s1["title"].startswith("click at"), s1["title"]

        x2, y2 = centroid_prompt(right)
        s2 = click_at(page, x2, y2, s1["status"])
        shot("03_click_right_lung")
        _, _, score2, conf2 = _parse(s2["status"])
        assert not _same_line(s1["mask_x"], s2["mask_x"]), "the mask did not change with the click"
        assert (score1, conf1) != (score2, conf2) and score1 != score2 and conf1 != conf2, (s1["status"], s2["status"])

        # The title stays clear of plotly's mode bar (shown on hover).
        page.mouse.move(page.evaluate(WHERE, [10, 10])["x"], page.evaluate(WHERE, [10, 10])["y"])
        page.wait_for_timeout(300)
        boxes = page.evaluate(_TITLE_AND_MODEBAR)
        t, m = boxes["title"], boxes["modebar"]
        assert t[3] <= m[1] or m[3] <= t[1] or t[2] <= m[0] or m[2] <= t[0], f"title under the mode bar: {boxes}"

        # Evolve from the left lung's click: the path grows frame by frame and ends at the best step.
        s3 = click_at(page, x1, y1, s2["status"])
        page.evaluate(_RECORD)
        page.click(".sampot-evolve")
        page.wait_for_function(
            "() => { const s = document.querySelector('.sampot-status').innerText;"
            " const t = document.querySelector('.js-plotly-plot').layout.title.text;"
            " return s.includes('best of') && t.includes('best of') && s.startsWith(t); }",
            timeout=ACTION_S * 1000,
        )  # fmt: skip
        lens = page.evaluate("() => { clearInterval(window.__rec); return window.__lens; }")
        shot("04_evolved")
        end = page.evaluate(STATE)
        frames = [n for n in lens if n > 0]
        run = int(re.search(r"best of (\d+) steps", end["status"]).group(1))  # early stopping may end it sooner
        assert 1 <= run <= STEPS, end["status"]
        assert frames == sorted(frames) and frames[-1] == run + 1, lens
        assert len(set(frames)) >= 5, f"the path did not animate (path lengths seen: {lens})"
        best = int(re.search(r"\(step (\d+)\)", end["status"]).group(1))
        assert f"(step {best})" in end["title"], end["title"]
        assert end["click_x"] == [end["path_x"][best]] and end["click_y"] == [end["path_y"][best]], (end, best)
        if best != 0:  # the best step's mask replaced the click's
            assert not _same_line(s3["mask_x"], end["mask_x"])

        # The download is the mask shown, as a 0/255 PNG of the image's size.
        assert "evolved (best step)" in page.inner_text(".sampot-download")
        with page.expect_download(timeout=ACTION_S * 1000) as download:
            page.click(".sampot-download-link")
        png = Image.open(io.BytesIO(Path(download.value.path()).read_bytes()))
        mask = np.asarray(png)
        assert download.value.suggested_filename == f"{first}_{STRUCTURE}_mask.png"
        assert mask.shape == left.shape and set(np.unique(mask)) <= {0, 255} and mask.any()
        mx, my = contour_xy(mask > 0)
        assert _same_line(mx, end["mask_x"]) and _same_line(my, end["mask_y"]), "downloaded mask != mask shown"

        # An image that went bad after the start: the page says so, the server and the other images still work.
        bad = dataset.image_path(dataset.ids[2])
        bad.write_bytes(b"not a PNG any more")
        page.select_option(".sampot-picker select", dataset.ids[2])
        page.wait_for_function(
            "() => document.querySelector('.sampot-message').innerText.includes('cannot be shown')",
            timeout=ACTION_S * 1000,
        )
        shot("05_bad_image")
        message = page.inner_text(".sampot-message")
        assert dataset.ids[2] in message and "not a readable image" in message, message
        assert page.locator(".js-plotly-plot").count() == 0
        page.select_option(".sampot-picker select", dataset.ids[1])
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=ACTION_S * 1000)
        assert page.inner_text(".sampot-message").strip() == ""
        other = dataset.mask(dataset.ids[1], STRUCTURE)
        s4 = click_at(page, *centroid_prompt(other), page.evaluate(STATE)["status"])
        shot("06_other_image")
        assert len(s4["mask_x"]) > 10

        # Box mode: the toggle, then two clicks at opposite corners draw a box; its mask and scores replace the click's.
        page.get_by_role("button", name="box", exact=True).click()
        page.wait_for_function(  # the kernel has the new mode: the status says what a click does now
            "() => document.querySelector('.sampot-status').innerText.includes('opposite corners')",
            timeout=ACTION_S * 1000,
        )  # fmt: skip
        ys, xs = np.nonzero(other)
        corners = [(float(xs.max()) + 4, float(ys.max()) + 4), (float(xs.min()) - 4, float(ys.min()) - 4)]
        for k, (x, y) in enumerate(corners):
            where = page.evaluate(WHERE, [x, y])
            page.wait_for_timeout(700)  # plotly takes two clicks within 300 ms for a double-click (a zoom reset)
            page.mouse.click(where["x"], where["y"])
            shot(f"07_box_corner_{k}")
            wanted = "click the opposite corner" if k == 0 else "box at"
            page.wait_for_function(
                "(w) => document.querySelector('.sampot-status').innerText.includes(w)", arg=wanted,
                timeout=ACTION_S * 1000,
            )  # fmt: skip
        page.wait_for_function(
            "() => { const gd = document.querySelector('.js-plotly-plot');"
            " const b = gd.data.find(t => t.name === 'box'); return b && Array.from(b.x || []).length === 5; }",
            timeout=ACTION_S * 1000,
        )  # fmt: skip
        shot("08_box")
        s5 = page.evaluate(STATE)
        box_x = page.evaluate(
            "() => Array.from(document.querySelector('.js-plotly-plot').data.find(t => t.name === 'box').x)"
        )
        assert min(box_x) <= xs.min() and max(box_x) >= xs.max(), (box_x, xs.min(), xs.max())
        assert s5["status"].startswith("box at") and not _same_line(s4["mask_x"], s5["mask_x"]), s5["status"]
    finally:
        context.close()
    assert not problems, "\n".join(problems) + f"\n--- server log ---\n{log.read_text()[-3000:]}"
