"""Plotly figures for the book and the prompt widget: drawing only, no algorithm.

Images are embedded as small PNG data URIs (``go.Image(source=...)``) placed in original-pixel coordinates, so a
1024 px X-ray costs tens of kilobytes in the HTML rather than a million numbers; masks are drawn as contour lines.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots
from skimage import measure

from sampot_lib.errors import SampotError

#: Set to "1" by scripts/build_book.py: figures then display as HTML that uses the site's own plotly.js.
BOOK_ENV = "SAMPOT_BOOK_HTML"
#: Longest side of an image embedded in a figure (display only; coordinates stay in original pixels).
DISPLAY_SIZE = 384

TRUTH_COLOR = "#2ca02c"
MASK_COLOR = "#ff7f0e"
PATH_COLOR = "#d62728"


#: Height in px of plotly's mode bar (top right corner, shown on hover) with its padding: titles go below it.
MODEBAR_PX = 30
_TITLE_PX = 24  # one line of title at plotly's default 17 px font
_SUBPLOT_TITLE_PX = 22  # one line of subplot title (16 px font) above the top row of panels


def clear_modebar(fig: go.Figure) -> go.Figure:
    """Keep a figure's titles out from under plotly's mode bar, which otherwise covers the end of a long title.

    The title goes just below the mode bar's band, and the top margin grows (never shrinks) to hold the mode bar, the
    title and the subplot titles of the top row.

    Args:
        fig: The figure, changed in place.

    Returns:
        ``fig``.
    """
    title = bool(fig.layout.title.text)
    top_row = any(a.yref == "paper" and a.yanchor == "bottom" and a.y is not None and a.y >= 0.99
                  for a in fig.layout.annotations)  # fmt: skip
    if not (title or top_row):
        return fig
    need = MODEBAR_PX + (_TITLE_PX if title else 0) + (_SUBPLOT_TITLE_PX if top_row else 0) + 6
    if title:
        fig.update_layout(title={"y": 1, "yref": "container", "yanchor": "top", "pad": {"t": MODEBAR_PX}})
    if fig.layout.margin.t is not None and fig.layout.margin.t < need:  # None: plotly's default of 100 px
        fig.update_layout(margin={"t": need})
    return fig


def show(fig: go.Figure) -> Any:
    """What a notebook cell should display for a figure (its titles moved clear of the mode bar first).

    Args:
        fig: The figure.

    Returns:
        In the book build (``SAMPOT_BOOK_HTML=1``) an ``IPython.display.HTML`` holding the figure's div and a script
        that draws it with the plotly.js the site serves from ``_static/`` (myst-nb drops plotly's own mime type, and
        the site must work offline); in a live kernel the figure itself.
    """
    clear_modebar(fig)
    if os.environ.get(BOOK_ENV) == "1":
        from IPython.display import HTML

        return HTML(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}))
    return fig


def image_uri(image: np.ndarray, max_size: int = DISPLAY_SIZE) -> tuple[str, float]:
    """A PNG data URI of an image, shrunk for display.

    Args:
        image: An H x W (or H x W x 3/4) uint8 image.
        max_size: The longest side shown, in px.

    Returns:
        The pair (uri, scale), the scale being original px per shown px (what places the image back in original
        coordinates).

    Raises:
        SampotError: ``image`` is not an H x W (x 3) uint8 image.
    """
    if image.ndim not in (2, 3) or image.dtype != np.uint8:
        raise SampotError(f"expected an H x W (x 3) uint8 image, got {image.dtype} of shape {image.shape}.")
    pil = Image.fromarray(image)
    h, w = image.shape[:2]
    scale = max(h, w) / max_size if max(h, w) > max_size else 1.0
    if scale > 1.0:
        pil = pil.resize((max(1, round(w / scale)), max(1, round(h / scale))), Image.BILINEAR)
    if pil.mode == "L":
        pil = pil.convert("RGB")  # go.Image draws a data-URI source as RGB(A)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), scale


def image_trace(image: np.ndarray, max_size: int = DISPLAY_SIZE, name: str = "image") -> go.Image:
    """An image as a trace whose pixel (i, j) sits at x = j, y = i of the original image (y axis downwards).

    Args:
        image: An H x W (or H x W x 3/4) uint8 image.
        max_size: The longest side shown, in px.
        name: The trace's name.

    Returns:
        The trace, its image a small PNG data URI.
    """
    uri, scale = image_uri(image, max_size)
    # A shown pixel covers ``scale`` original pixels; centre it on the block it stands for.
    offset = (scale - 1) / 2
    return go.Image(source=uri, x0=offset, dx=scale, y0=offset, dy=scale, name=name, hoverinfo="skip")


def contour_xy(mask: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """The boundary of a mask as x, y lists for a line trace.

    Args:
        mask: The mask, H x W bool.

    Returns:
        The pair (xs, ys), separate contours split by None.
    """
    xs: list[float | None] = []
    ys: list[float | None] = []
    padded = np.pad(np.asarray(mask, dtype=float), 1)  # closes contours that touch the image border
    for c in measure.find_contours(padded, 0.5):
        c = c[:: max(1, len(c) // 400)] - 1  # a few hundred points per contour is plenty on screen
        xs += [*c[:, 1].round(1).tolist(), c[0, 1].round(1), None]
        ys += [*c[:, 0].round(1).tolist(), c[0, 0].round(1), None]
    return xs, ys


def contour_trace(mask: np.ndarray, name: str, color: str, dash: str = "solid", width: float = 2) -> go.Scatter:
    """The boundary of a mask as a line trace.

    Args:
        mask: The mask, H x W bool.
        name: The trace's name.
        color: The line's colour.
        dash: The line's dash style.
        width: The line's width in px.

    Returns:
        The trace (no hover).
    """
    xs, ys = contour_xy(mask)
    return go.Scatter(
        x=xs, y=ys, mode="lines", name=name, line={"color": color, "dash": dash, "width": width}, hoverinfo="skip"
    )


def image_axes(fig: go.Figure, shape: tuple[int, int], row: int | None = None, col: int | None = None) -> None:
    """Fix an image panel to the image's extent, y downwards, square pixels, no ticks.

    Args:
        fig: The figure, changed in place.
        shape: The image's (H, W).
        row: The panel's row in a figure of subplots; None: a figure of one panel.
        col: The panel's column.
    """
    h, w = shape
    kw = {"row": row, "col": col} if row is not None else {}
    x_name = fig.get_subplot(row, col).xaxis.plotly_name.replace("axis", "") if row is not None else "x"
    fig.update_xaxes(range=[-0.5, w - 0.5], showticklabels=False, showgrid=False, zeroline=False, **kw)
    fig.update_yaxes(
        range=[h - 0.5, -0.5], showticklabels=False, showgrid=False, zeroline=False, scaleanchor=x_name, **kw
    )


def heatmap_figure(
    image: np.ndarray,
    points: np.ndarray,
    dice: np.ndarray,
    truth: np.ndarray | None = None,
    step: int = 32,
    confidence: np.ndarray | None = None,
    title: str | None = None,
) -> go.Figure:
    """Paper fig. 1: the Dice of each grid click's mask painted over the image (hover shows it per click).

    Args:
        image: The image, H x W uint8.
        points: N x 2 (x, y) grid clicks of spacing ``step``.
        dice: N, the Dice of each click's mask.
        truth: The true mask, drawn as a contour; None: not drawn.
        step: The grid's spacing in px.
        confidence: N, the model's confidence per click (shown on hover), or None.
        title: The title; None: the number of clicks and the Dice spread.

    Returns:
        The figure.

    Raises:
        SampotError: ``points`` is not N x 2 with one Dice each.
    """
    points = np.asarray(points, dtype=float)
    dice = np.asarray(dice, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != len(dice):
        raise SampotError(f"points must be N x 2 with one Dice each; got {points.shape} and {dice.shape}.")
    xs, ys = np.unique(points[:, 0]), np.unique(points[:, 1])
    z = np.full((len(ys), len(xs)), np.nan)
    conf = np.full_like(z, np.nan)
    ix, iy = np.searchsorted(xs, points[:, 0]), np.searchsorted(ys, points[:, 1])
    z[iy, ix] = dice
    if confidence is not None:
        conf[iy, ix] = confidence
    fig = go.Figure(image_trace(image))
    fig.add_trace(
        go.Heatmap(
            x=xs, y=ys, z=z, customdata=conf, zmin=0, zmax=1, colorscale="Viridis", opacity=0.75, name="Dice",
            colorbar={"title": "Dice"}, hoverongaps=False,
            hovertemplate="click (%{x:.0f}, %{y:.0f})<br>Dice %{z:.3f}<br>confidence %{customdata:.3f}<extra></extra>",
        )
    )  # fmt: skip
    if truth is not None:
        fig.add_trace(contour_trace(truth, "ground truth", TRUTH_COLOR))
    spread = float(np.nanmax(dice) - np.nanmin(dice))
    fig.update_layout(
        title=title or f"Dice by click position ({len(dice)} clicks, spread {spread:.2f})",
        width=520, height=520, margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False,
    )  # fmt: skip
    image_axes(fig, image.shape[:2])
    return fig


def level_set_figure(
    image: np.ndarray,
    truth: np.ndarray,
    masks: Sequence[np.ndarray],
    dices: Sequence[float],
    offsets: Sequence[float] | None = None,
    cols: int = 4,
) -> go.Figure:
    """Paper fig. 3: synthetic masks (orange) against the truth (green), one panel each, titled with their Dice.

    Args:
        image: The image, H x W uint8.
        truth: The true mask.
        masks: The synthetic masks (at least one).
        dices: Their Dice, one per mask.
        offsets: Their level offsets in px, added to the titles; None: not shown.
        cols: The panels per row.

    Returns:
        The figure.

    Raises:
        SampotError: No mask, or not one Dice per mask.
    """
    if len(masks) == 0 or len(masks) != len(dices):
        raise SampotError(f"need one Dice per mask and at least one mask; got {len(masks)} masks, {len(dices)} Dice.")
    n = len(masks)
    rows = -(-n // cols)
    titles = [
        f"Dice {d:.2f}" + (f", offset {o:+.0f} px" if offsets is not None else "")
        for d, o in zip(dices, offsets if offsets is not None else [0] * n, strict=True)
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.01, vertical_spacing=0.06)
    img = image_trace(image, max_size=160)
    truth_xy = contour_xy(truth)
    for k, mask in enumerate(masks):
        r, c = k // cols + 1, k % cols + 1
        fig.add_trace(img, row=r, col=c)
        fig.add_trace(
            go.Scatter(x=truth_xy[0], y=truth_xy[1], mode="lines", line={"color": TRUTH_COLOR, "width": 1.5},
                       name="truth", showlegend=k == 0, hoverinfo="skip"),
            row=r, col=c,
        )  # fmt: skip
        trace = contour_trace(mask, "synthetic mask", MASK_COLOR, width=1.5)
        trace.showlegend = k == 0
        fig.add_trace(trace, row=r, col=c)
        image_axes(fig, image.shape[:2], row=r, col=c)
    fig.update_annotations(font_size=11)
    fig.update_layout(height=230 * rows + 60, autosize=True, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def trajectory_figure(
    image: np.ndarray,
    steps: Sequence[Mapping[str, Any]],
    masks: Mapping[int, np.ndarray] | None = None,
    truth: np.ndarray | None = None,
    best_step: int | None = None,
    title: str = "Prompt evolution",
    prompt_kind: str = "click",
) -> go.Figure:
    """Paper fig. 5: the prompt's path over the image, with a step slider that moves the prompt.

    The slider shows each step's mask; beside the image, the score (and the true Dice, when known) per step.

    Args:
        image: The image, H x W uint8.
        steps: The trajectory: dicts with step, x, y, score and optionally dice and coords (as
            ``EvolutionResult.to_dict()``).
        masks: {step: H x W bool mask} for the steps whose mask the slider shows (others show none); None: none.
        truth: The true mask, drawn as a contour; None: not drawn.
        best_step: The winning step, marked on the per-step plot; None: not marked.
        title: The title.
        prompt_kind: ``"click"``; for a box prompt (``"box"`` or ``"box+clicks"``) the path is the box's centre and
            the slider draws that step's box (coords[:4]) beside the user's box (dashed).

    Returns:
        The figure.

    Raises:
        SampotError: ``steps`` is empty.
    """
    if not steps:
        raise SampotError("the trajectory is empty.")
    masks = masks or {}
    k = [int(s["step"]) for s in steps]
    x = [float(s["x"]) for s in steps]
    y = [float(s["y"]) for s in steps]
    score = [float(s["score"]) for s in steps]
    dice = [None if s.get("dice") is None else float(s["dice"]) for s in steps]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], subplot_titles=("click and mask", "per step"))
    fig.add_trace(image_trace(image), row=1, col=1)
    if truth is not None:
        fig.add_trace(contour_trace(truth, "ground truth", TRUTH_COLOR, dash="dot"), row=1, col=1)
    fig.add_trace(
        go.Scatter(x=x, y=y, mode="lines+markers", name="path", line={"color": PATH_COLOR, "width": 1},
                   marker={"size": 4}, customdata=np.stack([k, score], axis=1),
                   hovertemplate="step %{customdata[0]}<br>(%{x:.1f}, %{y:.1f})<br>score %{customdata[1]:.3f}"
                   "<extra></extra>"),
        row=1, col=1,
    )  # fmt: skip
    mask_idx = len(fig.data)
    first = contour_xy(masks[k[0]]) if k[0] in masks else ([], [])
    fig.add_trace(go.Scatter(x=first[0], y=first[1], mode="lines", name="mask", line={"color": MASK_COLOR},
                             hoverinfo="skip"), row=1, col=1)  # fmt: skip
    is_box = prompt_kind.startswith("box")
    if is_box:
        boxes = [_box_xy(s["coords"][:4]) for s in steps]
        fig.add_trace(go.Scatter(x=boxes[0][0], y=boxes[0][1], mode="lines", name="user's box", hoverinfo="skip",
                                 line={"color": "yellow", "dash": "dash", "width": 1}), row=1, col=1)  # fmt: skip
    point_idx = len(fig.data)
    if is_box:
        fig.add_trace(go.Scatter(x=boxes[0][0], y=boxes[0][1], mode="lines", name="box", hoverinfo="skip",
                                 line={"color": "yellow", "width": 2}), row=1, col=1)  # fmt: skip
    else:
        fig.add_trace(
            go.Scatter(x=[x[0]], y=[y[0]], mode="markers", name="click", hoverinfo="skip",
                       marker={"size": 14, "symbol": "x", "color": "yellow", "line": {"width": 2, "color": "black"}}),
            row=1, col=1,
        )  # fmt: skip
    fig.add_trace(go.Scatter(x=k, y=score, mode="lines+markers", name="regressor score"), row=1, col=2)
    if any(d is not None for d in dice):
        fig.add_trace(go.Scatter(x=k, y=dice, mode="lines+markers", name="true Dice"), row=1, col=2)
    cursor_idx = len(fig.data)
    fig.add_trace(
        go.Scatter(x=[k[0], k[0]], y=[0, 1], mode="lines", name="step", line={"color": "gray", "dash": "dot"},
                   hoverinfo="skip", showlegend=False),
        row=1, col=2,
    )  # fmt: skip
    if best_step is not None:
        fig.add_vline(x=best_step, line={"color": "black", "width": 1}, row=1, col=2)
    slider_steps = []
    for i, step in enumerate(k):
        mx, my = contour_xy(masks[step]) if step in masks else ([], [])
        label = f"step {step}: score {score[i]:.3f}" + (f", Dice {dice[i]:.3f}" if dice[i] is not None else "")
        px, py = boxes[i] if is_box else ([x[i]], [y[i]])
        slider_steps.append({
            "label": str(step), "method": "update",
            "args": [{"x": [mx, px, [step, step]], "y": [my, py, [0, 1]]},
                     {"title.text": f"{title}: {label}"}, [mask_idx, point_idx, cursor_idx]],
        })  # fmt: skip
    first_label = f"step {k[0]}: score {score[0]:.3f}" + (f", Dice {dice[0]:.3f}" if dice[0] is not None else "")
    fig.update_layout(
        title=f"{title}: {first_label}", height=560,
        sliders=[{"active": 0, "steps": slider_steps, "currentvalue": {"prefix": "step "}, "pad": {"t": 30}}],
        legend={"orientation": "h", "y": -0.35},
    )  # fmt: skip
    image_axes(fig, image.shape[:2], row=1, col=1)
    fig.update_xaxes(title_text="step", row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    return fig


def _box_xy(box: Sequence[float]) -> tuple[list[float], list[float]]:
    """The outline of an (x0, y0, x1, y1) box as a closed line."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]
