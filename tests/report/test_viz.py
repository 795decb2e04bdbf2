"""Figures of sampot_lib.report.figures and the prompt widget, on toy inputs (fast)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
from conftest import disk_image

from sampot_lib.errors import SampotError
from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.heatmap import dice_heatmap
from sampot_lib.method.metrics import dice
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.synth import candidate_masks
from sampot_lib.report import figures as viz
from sampot_lib.report import metric_figures


def test_image_trace_places_pixels_in_original_coordinates():
    image = np.zeros((1000, 500), np.uint8)
    trace = viz.image_trace(image, max_size=100)
    assert trace.source.startswith("data:image/png;base64,")
    assert trace.dx == pytest.approx(10.0) and trace.dy == pytest.approx(10.0)
    with pytest.raises(SampotError):
        viz.image_uri(np.zeros((4, 4), np.float32))


def test_contour_of_a_square_follows_its_edge():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 4:10] = True
    xs, ys = viz.contour_xy(mask)
    pts = np.array([(x, y) for x, y in zip(xs, ys, strict=True) if x is not None])
    assert pts[:, 0].min() == pytest.approx(3.5) and pts[:, 0].max() == pytest.approx(9.5)
    assert pts[:, 1].min() == pytest.approx(4.5) and pts[:, 1].max() == pytest.approx(14.5)


def test_heatmap_figure_puts_each_dice_under_its_click(tiny_model, disk):
    image, mask = disk
    hm = dice_heatmap(tiny_model, image, mask, step=16, progress=False)
    fig = viz.heatmap_figure(image, hm.points, hm.dice, truth=mask, step=16, confidence=hm.confidence)
    heat = next(t for t in fig.data if isinstance(t, go.Heatmap))
    z = np.array(heat.z, dtype=float)
    assert np.isfinite(z).sum() == len(hm.points)
    for (x, y), d in zip(hm.points, hm.dice, strict=True):
        assert z[list(heat.y).index(y), list(heat.x).index(x)] == pytest.approx(d)
    assert "spread" in fig.layout.title.text
    with pytest.raises(SampotError):
        viz.heatmap_figure(image, hm.points, hm.dice[:-1])


def test_level_set_figure_has_one_panel_per_mask(disk):
    image, mask = disk
    cands = candidate_masks(mask, 6, seed=0)
    fig = viz.level_set_figure(image, mask, [c.mask for c in cands], [c.dice for c in cands],
                               [c.offset for c in cands], cols=3)  # fmt: skip
    assert sum(isinstance(t, go.Image) for t in fig.data) == len(cands)
    assert f"Dice {cands[0].dice:.2f}" in fig.layout.annotations[0].text


def test_training_curves_mark_the_best_epoch():
    history = [{"epoch": e, "train_mse": 1 / e, "val_mse": abs(e - 3) + 0.1} for e in range(1, 6)]
    fig = metric_figures.training_curves(history)
    assert list(fig.data[2].x) == [3]
    with pytest.raises(SampotError):
        metric_figures.training_curves([])


def test_score_scatter_reports_r_and_splits_kinds():
    fig = metric_figures.score_scatter([0.1, 0.5, 0.9], [0.2, 0.4, 0.8], r=0.987, kinds=["a", "b", "a"])
    assert "0.99" in fig.layout.title.text
    assert [t.name for t in fig.data[1:]] == ["a", "b"]
    assert "undefined" in metric_figures.score_scatter([0.1], [0.2], r=None).layout.title.text


def test_trajectory_slider_moves_click_and_mask(tiny_model, disk):
    image, mask = disk
    reg = SegmentationRegressor(32).eval()
    res = evolve_prompt(tiny_model, reg, image, (40, 50), steps=3, lr=5, gt_mask=mask)
    steps = res.to_dict()["trajectory"]
    masks = {0: res.initial_mask, res.best_step: res.best_mask}
    fig = viz.trajectory_figure(image, steps, masks=masks, truth=mask, best_step=res.best_step)
    slider = fig.layout.sliders[0]
    assert len(slider.steps) == 4
    last = slider.steps[-1].args
    assert last[0]["x"][1] == [steps[-1]["x"]] and last[0]["y"][1] == [steps[-1]["y"]]
    assert len(slider.steps[0].args[0]["x"][0]) > 0  # step 0 has a mask outline


def test_evolution_scatter_one_trace_per_setting():
    rows = [
        {"image_id": "a", "safeguards": "on", "dice0": 0.5, "dice": 0.6},
        {"image_id": "a", "safeguards": "off", "dice0": 0.5, "dice": 0.1},
    ]
    fig = metric_figures.evolution_scatter(rows)
    assert [t.name for t in fig.data] == ["unchanged", "safeguards on", "safeguards off"]
    # the axes fit the data (not the whole 0-1 square), alike on both, so the unit line stays the diagonal
    lo, hi = fig.layout.xaxis.range
    assert tuple(fig.layout.yaxis.range) == (lo, hi) and 0.05 <= lo < 0.1 and 0.6 < hi <= 0.65
    assert list(fig.data[0].x) == [lo, hi] == list(fig.data[0].y)
    with pytest.raises(SampotError):
        metric_figures.evolution_scatter([])


def test_margin_curve_marks_the_chosen_margin():
    curve = [{"margin": 0.0, "mean_gain": 0.02, "harmed": 2, "moved": 5},
             {"margin": 0.05, "mean_gain": 0.015, "harmed": 0, "moved": 3},
             {"margin": 1.0, "mean_gain": 0.0, "harmed": 0, "moved": 0}]  # fmt: skip
    fig = metric_figures.margin_curve_figure(curve, 0.05)
    assert list(fig.data[0].x) == [2, 0, 0] and list(fig.data[0].y) == [0.02, 0.015, 0.0]
    assert (fig.data[1].x[0], fig.data[1].y[0]) == (0, 0.015) and fig.data[1].name == "chosen: 0.05"


def test_show_returns_offline_html_in_book_builds(monkeypatch):
    fig = go.Figure(go.Scatter(x=[1], y=[2]))
    monkeypatch.delenv(viz.BOOK_ENV, raising=False)
    assert viz.show(fig) is fig
    monkeypatch.setenv(viz.BOOK_ENV, "1")
    html = viz.show(fig).data
    assert "Plotly.newPlot" in html and "cdn" not in html.lower()


def test_prompt_widget_click_and_evolve(tiny_model):
    pytest.importorskip("anywidget")
    from sampot_lib.ui.widget import PromptWidget

    image, mask = disk_image()
    reg = SegmentationRegressor(32).eval()
    w = PromptWidget(tiny_model, reg, image, gt_mask=mask, steps=2, frame_delay=0)
    assert w.button.disabled
    with pytest.raises(SampotError):
        w.evolve()
    m = w.click(40, 50)
    assert m["mask"].shape == image.shape and m["dice"] == dice(m["mask"], mask)
    assert list(w.figure.data[w._click].x) == [40]
    assert not w.button.disabled
    res = w.evolve(animate=False)
    assert len(w.figure.data[w._path].x) == 3 == len(res.trajectory)
    # The click's score and Dice are evolution's step 0: one scoring path.
    assert m["score"] == pytest.approx(res.initial.score, abs=1e-6) and m["dice"] == pytest.approx(res.initial.dice)
    assert np.array_equal(m["mask"], res.initial_mask)
    assert "best of 2 steps" in w.status.value
    with pytest.raises(SampotError):
        w.click(500, 5)  # outside the 96 px image
