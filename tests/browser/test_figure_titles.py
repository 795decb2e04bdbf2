"""Every figure of sampot_lib.report.figures, displayed as the book displays it (viz.show), drawn in headless
Chromium: no title or subplot title runs under plotly's mode bar. Opt-in with the live tests (`make app-test`); no
server needed.

Long titles on purpose: the mode bar sits in the figure's top right corner, so a long title is what reaches it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly

from sampot_lib.method.synth import candidate_masks
from sampot_lib.report import figures as viz
from sampot_lib.report import metric_figures

LONG = "a title as long as the book's longest, naming the model, the data set and every number beside it"

_BOXES = """() => Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => {
    const box = el => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    const titles = [...gd.querySelectorAll('.gtitle'), ...gd.querySelectorAll('.annotation-text')]
        .filter(t => t.textContent.trim());
    return {id: gd.id, modebar: box(gd.querySelector('.modebar')), titles: titles.map(t => [t.textContent, box(t)])};
})"""


def _figures():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    mask = (xx - 40) ** 2 + (yy - 50) ** 2 <= 25**2
    image = np.where(mask, 60, 190).astype(np.uint8)
    cands = candidate_masks(mask, 4, 0)
    points = np.array([(x, y) for y in range(20, 80, 16) for x in range(20, 60, 16)], float)
    steps = [{"step": i, "x": 40.0 + i, "y": 50.0, "score": 0.5 + 0.01 * i, "dice": 0.6} for i in range(4)]
    rows = [{"image_id": f"im{i}", "safeguards": s, "dice0": a, "dice": b} for s in ("on", "off")
            for i, (a, b) in enumerate(zip(rng.random(5), rng.random(5), strict=True))]  # fmt: skip
    history = [{"epoch": e, "train_mse": 1 / e, "val_mse": 1.2 / e} for e in range(1, 6)]
    return {
        "heatmap": viz.heatmap_figure(image, points, rng.random(len(points)), truth=mask, step=16, title=LONG),
        "level_sets": viz.level_set_figure(image, mask, [c.mask for c in cands], [c.dice for c in cands]),
        "training": metric_figures.training_curves(history),
        "scatter": metric_figures.score_scatter([0.1, 0.5, 0.9], [0.2, 0.4, 0.8], r=0.9, title=LONG),
        "trajectory": viz.trajectory_figure(image, steps, masks={0: mask}, truth=mask, best_step=2, title=LONG),
        "evolution": metric_figures.evolution_scatter(rows, title=LONG),
        "margins": metric_figures.margin_curve_figure(
            [
                {"margin": 0.0, "mean_gain": 0.02, "harmed": 2, "moved": 5},
                {"margin": 0.1, "mean_gain": 0.01, "harmed": 0, "moved": 2},
            ],
            0.1,
            LONG,
        ),
    }


def _overlap(a: list[float], b: list[float]) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def test_no_title_runs_under_the_mode_bar(live, browser, tmp_path, monkeypatch):
    monkeypatch.setenv(viz.BOOK_ENV, "1")  # show() returns the HTML the book embeds
    figures = _figures()
    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    body = "".join(f"<h2>{name}</h2>{viz.show(fig).data}" for name, fig in figures.items())
    page_path = tmp_path / "figures.html"
    page_path.write_text(f"<html><head><script src='{js.as_uri()}'></script></head><body>{body}</body></html>")
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    problems: list[str] = []
    context.route("**/*", lambda r: r.continue_() if r.request.url.startswith(("file:", "data:")) else r.abort())
    page = context.new_page()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto(page_path.as_uri(), wait_until="load")
    page.wait_for_timeout(500)
    drawn = page.evaluate(_BOXES)
    context.close()
    assert len(drawn) == len(figures) and not problems, problems
    under = [f"{name}: {text!r}" for name, fig in zip(figures, drawn, strict=True)
             for text, box in fig["titles"] if _overlap(box, fig["modebar"])]  # fmt: skip
    assert not under, "under the mode bar:\n" + "\n".join(under)
