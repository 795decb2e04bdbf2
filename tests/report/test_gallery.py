"""The full-size results drawn: the gallery's panels and the spread of each score over seeds."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from sampot_lib.report.gallery import GalleryPanel, extremes, gallery_figure, spread_figure


def _panel(shift: int, coords: tuple[float, ...]) -> GalleryPanel:
    image = np.zeros((40, 50), dtype=np.uint8)
    truth = np.zeros((40, 50), dtype=bool)
    truth[10:30, 10:30] = True
    return GalleryPanel(image, truth, np.roll(truth, shift, axis=1), truth, coords, coords, f"shift {shift}")


def test_the_gallery_draws_every_panel_with_one_legend_entry_per_outline():
    fig = gallery_figure([_panel(3, (5.0, 5.0, 35.0, 35.0)), _panel(-4, (20.0, 20.0))], "t", columns=2)
    images = [t for t in fig.data if isinstance(t, go.Image)]
    assert len(images) == 2
    legend = [t.name for t in fig.data if not isinstance(t, go.Image) and t.showlegend]
    assert legend == ["truth", "user's mask", "evolved mask", "user's prompt", "evolved prompt"]
    boxes = [t for t in fig.data if t.name == "user's prompt"]
    assert list(boxes[0].x) == [5.0, 35.0, 35.0, 5.0, 5.0] and boxes[1].mode == "markers"  # a box, then a click
    assert [a.text for a in fig.layout.annotations] == ["shift 3", "shift -4"]


def test_extremes_are_the_most_improved_then_the_most_damaged():
    rows = [{"image_id": str(i), "group": "on", "gain": g} for i, g in enumerate([0.1, -0.2, 0.05, 0.0, -0.01])]
    rows.append({"image_id": "x", "group": "oracle", "gain": 0.9})
    assert [r["image_id"] for r in extremes(rows, "on", 2)] == ["0", "2", "1", "4"]


def test_the_spread_figure_draws_the_sd_over_seeds_at_the_main_jitter():
    index = [{"run": "r", "jitter": "0.05", "scorer": "regressor", "mean_dice_initial": 0.95, "mean_dice_final": 0.99}]
    index += [{"run": "r", "jitter": "0.1", "scorer": s, "mean_dice_initial": 0.8, "mean_dice_final": f}
              for s, f in (("regressor", 0.84), ("regressor", 0.86), ("oracle", 0.9), ("oracle", 0.9))]  # fmt: skip
    fig = spread_figure(index, ["regressor", "oracle", "blend"])
    traces = {t.name: t for t in fig.data}
    assert list(traces) == ["user's prompt", "regressor", "oracle"]  # no blend rows: no trace
    assert traces["user's prompt"].y == (0.8,) and traces["regressor"].y[0] == pytest.approx(0.85)
    assert traces["regressor"].error_y.array[0] == pytest.approx(np.std([0.84, 0.86], ddof=1))
