"""The full-size results drawn: the spread of each score's result over seeds, and a gallery of the test images a run
improved most and damaged most, with the user's prompt and the winner's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sampot_lib.errors import SampotError
from sampot_lib.report.figures import MASK_COLOR, TRUTH_COLOR, contour_trace, image_axes, image_trace
from sampot_lib.report.results import main_jitter, mean_sd, seed_groups

#: Colour of the user's own prompt and mask (the winner's is MASK_COLOR).
USER_COLOR = "#1f77b4"


def spread_figure(index: list[dict[str, Any]], scorers: Sequence[str], title: str | None = None) -> go.Figure:
    """Mean Dice after evolution for each run and score or rule, with the sd over seeds as error bars.

    The user's prompt's mean Dice is drawn as a line marker.

    Args:
        index: The index rows.
        scorers: The scores or rules, a trace each, in this order (one with no result is left out).
        title: The title; None: a default.

    Returns:
        The figure, one x per run.

    Raises:
        SampotError: The index is empty.
    """
    groups = seed_groups(index)
    runs = list(dict.fromkeys(key[0] for key in groups))
    if not runs:
        raise SampotError("no results to draw: the index is empty.")
    main = {run: main_jitter(groups, run) for run in runs}
    fig = go.Figure()
    initial = [mean_sd(groups.get((run, main[run], "regressor"), []), "mean_dice_initial")[0] for run in runs]
    fig.add_trace(go.Scatter(x=runs, y=initial, mode="markers", name="user's prompt",
                             marker={"symbol": "line-ew-open", "size": 28, "color": "black"}))  # fmt: skip
    for scorer in scorers:
        stats = [mean_sd(groups.get((run, main[run], scorer), []), "mean_dice_final") for run in runs]
        if all(mean is None for mean, _ in stats):
            continue
        fig.add_trace(
            go.Scatter(
                x=runs, y=[m for m, _ in stats], mode="markers", name=scorer,
                error_y={"type": "data", "array": [sd or 0.0 for _, sd in stats], "visible": True},
            )
        )  # fmt: skip
    fig.update_layout(title=title or "Mean Dice after evolution (bars: sd over seeds)", height=420,
                      yaxis={"title": "mean Dice, test split"}, scattermode="group")  # fmt: skip
    return fig


@dataclass(frozen=True)
class GalleryPanel:
    """One test image of the gallery.

    Attributes:
        image: The image.
        truth: Its true mask.
        initial_mask: The user's prompt's mask.
        final_mask: The winner's mask.
        initial_coords: The user's prompt's coordinates (a click: x, y; a box: x0, y0, x1, y1).
        final_coords: The winner's prompt's coordinates.
        caption: The panel's caption.
    """

    image: np.ndarray
    truth: np.ndarray
    initial_mask: np.ndarray
    final_mask: np.ndarray
    initial_coords: tuple[float, ...]
    final_coords: tuple[float, ...]
    caption: str


def _prompt_trace(coords: Sequence[float], name: str, color: str, dash: str) -> go.Scatter:
    if len(coords) == 4:
        x0, y0, x1, y1 = coords
        return go.Scatter(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0], mode="lines", name=name,
                          line={"color": color, "dash": dash, "width": 1.5}, hoverinfo="skip")  # fmt: skip
    return go.Scatter(x=[coords[0]], y=[coords[1]], mode="markers", name=name, hoverinfo="skip",
                      marker={"color": color, "size": 10, "symbol": "x"})  # fmt: skip


def gallery_figure(panels: Sequence[GalleryPanel], title: str, columns: int = 4) -> go.Figure:
    """Gallery panels side by side.

    Each image is drawn with the true outline (green), the user's prompt and mask (blue, dashed) and the winner's
    (orange).

    Args:
        panels: The panels (at least one).
        title: The title.
        columns: The panels per row.

    Returns:
        The figure.

    Raises:
        SampotError: ``panels`` is empty.
    """
    if not panels:
        raise SampotError("the gallery has no images.")
    rows = -(-len(panels) // columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[p.caption for p in panels],
                        horizontal_spacing=0.02, vertical_spacing=0.08)  # fmt: skip
    for i, panel in enumerate(panels):
        row, col = i // columns + 1, i % columns + 1
        traces = [
            image_trace(panel.image),
            contour_trace(panel.truth, "truth", TRUTH_COLOR, width=1.5),
            contour_trace(panel.initial_mask, "user's mask", USER_COLOR, dash="dash"),
            contour_trace(panel.final_mask, "evolved mask", MASK_COLOR),
            _prompt_trace(panel.initial_coords, "user's prompt", USER_COLOR, "dot"),
            _prompt_trace(panel.final_coords, "evolved prompt", MASK_COLOR, "solid"),
        ]
        for trace in traces:
            if not isinstance(trace, go.Image):  # an image has no legend entry
                trace.showlegend = i == 0
                trace.legendgroup = trace.name
            fig.add_trace(trace, row=row, col=col)
        image_axes(fig, panel.image.shape[:2], row, col)
    fig.update_layout(title=title, height=300 * rows + 80, legend={"orientation": "h", "y": -0.05})
    return fig


def extremes(rows: Sequence[Mapping[str, Any]], group: str, n: int) -> list[Mapping[str, Any]]:
    """The ``n`` rows of ``group`` with the largest Dice gain, then the ``n`` with the lowest (each list without the
    other's images, lowest first in the second)."""
    mine = sorted((r for r in rows if r["group"] == group), key=lambda r: float(r["gain"]), reverse=True)
    top = mine[:n]
    rest = [r for r in mine if r not in top]
    return top + rest[::-1][:n]
