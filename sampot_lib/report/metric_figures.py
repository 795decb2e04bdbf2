"""Plotly figures of numbers, no image: the regressor's training curves, its score against the true Dice, evolved
against initial Dice, and the do-no-harm rule's margin curve. Drawing only, no algorithm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from sampot_lib.errors import SampotError

#: The colour of each kind of mask in the regressor's data set.
_KIND_COLORS = {
    "synthetic": "#1f77b4",
    "model_band": "#ff7f0e",
    "model_outside": "#d62728",
    "model_centroid": "#9467bd",
}


def training_curves(history: Sequence[Mapping[str, float]]) -> go.Figure:
    """Regressor training: train and validation MSE per epoch (log scale), the kept epoch marked.

    Args:
        history: One row per epoch, with ``epoch``, ``train_mse`` and ``val_mse``.

    Returns:
        The figure.

    Raises:
        SampotError: ``history`` is empty.
    """
    if not history:
        raise SampotError("training history is empty.")
    epochs = [float(h["epoch"]) for h in history]
    train = [float(h["train_mse"]) for h in history]
    val = [float(h["val_mse"]) for h in history]
    best = int(np.argmin(val))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=epochs, y=train, mode="lines", name="train MSE"))
    fig.add_trace(go.Scatter(x=epochs, y=val, mode="lines", name="validation MSE"))
    fig.add_trace(
        go.Scatter(x=[epochs[best]], y=[val[best]], mode="markers", name=f"kept: epoch {epochs[best]:.0f}",
                   marker={"size": 10, "symbol": "star", "color": "black"})
    )  # fmt: skip
    fig.update_layout(
        title="Regressor training (MSE of predicted vs true Dice)", xaxis_title="epoch", yaxis_title="MSE",
        yaxis_type="log", height=400,
    )  # fmt: skip
    return fig


def score_scatter(
    dice: Sequence[float],
    score: Sequence[float],
    r: float | None,
    score_name: str = "regressor score",
    kinds: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """A score against the true Dice, one point per mask, with Pearson ``r`` in the title and the unit line.

    Args:
        dice: The masks' true Dice.
        score: Their scores, as many.
        r: Pearson r, or None (shown as undefined).
        score_name: What the score is, for the axis and the hover.
        kinds: Each mask's kind (a trace per kind); None: one kind.
        labels: Each mask's hover label; None: none.
        title: The title; None: the score's name, r and n.

    Returns:
        The figure.

    Raises:
        SampotError: ``dice`` and ``score`` differ in length.
    """
    dice, score = np.asarray(dice, dtype=float), np.asarray(score, dtype=float)
    if dice.shape != score.shape:
        raise SampotError(f"dice and score differ in length: {dice.shape} vs {score.shape}.")
    kinds_arr = np.asarray(kinds if kinds is not None else ["mask"] * len(dice))
    labels_arr = np.asarray(labels if labels is not None else [""] * len(dice))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="y = x", line={"color": "gray", "dash": "dot"},
                   hoverinfo="skip")
    )  # fmt: skip
    for kind in dict.fromkeys(kinds_arr.tolist()):
        sel = kinds_arr == kind
        fig.add_trace(
            go.Scatter(
                x=dice[sel], y=score[sel], mode="markers", name=str(kind), text=labels_arr[sel],
                marker={"size": 6, "opacity": 0.7, "color": _KIND_COLORS.get(str(kind))},
                hovertemplate="%{text}<br>true Dice %{x:.3f}<br>" + score_name + " %{y:.3f}<extra>%{fullData.name}"
                "</extra>",
            )
        )  # fmt: skip
    r_text = "undefined" if r is None or not np.isfinite(r) else f"{r:.2f}"
    fig.update_layout(
        title=title or f"{score_name} vs true Dice: Pearson r = {r_text} (n = {len(dice)})",
        xaxis={"title": "true Dice", "range": [-0.02, 1.02]}, yaxis={"title": score_name, "range": [-0.02, 1.02]},
        width=520, height=480,
    )  # fmt: skip
    return fig


def evolution_scatter(
    rows: Sequence[Mapping[str, Any]], title: str | None = None, by: str = "safeguards", initial: str = "centroid click"
) -> go.Figure:
    """Paper fig. 6: evolved vs initial Dice, one point per test image and setting.

    The unit line is drawn too (above it: improved).

    Args:
        rows: One row per image and setting, with ``image_id``, ``dice0``, ``dice`` and the column ``by``.
        title: The title; None: a default.
        by: The column with a trace per value: the safeguard setting, the scorer, the structure...
        initial: What the user's prompt was, named on the x axis.

    Returns:
        The figure.

    Raises:
        SampotError: ``rows`` is empty.
    """
    if not rows:
        raise SampotError("no evolution results to plot.")
    values = [float(r[k]) for r in rows for k in ("dice0", "dice")]
    pad = max(0.01, 0.05 * (max(values) - min(values)))
    lo, hi = max(0.0, min(values) - pad), min(1.0, max(values) + pad)  # both axes alike: the unit line stays diagonal
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="unchanged", line={"color": "gray", "dash": "dot"},
                   hoverinfo="skip")
    )  # fmt: skip
    styles = {"on": ("circle", "#1f77b4"), "off": ("x", "#d62728")}
    for setting in dict.fromkeys(str(r[by]) for r in rows):
        sel = [r for r in rows if str(r[by]) == setting]
        symbol, color = styles.get(setting, ("circle", None)) if by == "safeguards" else ("circle", None)
        fig.add_trace(
            go.Scatter(
                x=[float(r["dice0"]) for r in sel], y=[float(r["dice"]) for r in sel], mode="markers",
                name=f"{by} {setting}", text=[str(r["image_id"]) for r in sel],
                marker={"symbol": symbol, "color": color, "size": 8, "opacity": 0.8},
                hovertemplate="%{text}<br>initial Dice %{x:.3f}<br>evolved Dice %{y:.3f}<extra>%{fullData.name}"
                "</extra>",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title or "Evolved vs initial Dice per test image",
        xaxis={"title": f"initial Dice ({initial})", "range": [lo, hi]},
        yaxis={"title": "evolved Dice", "range": [lo, hi], "scaleanchor": "x"}, width=560, height=520,
    )  # fmt: skip
    return fig


def margin_curve_figure(curve: Sequence[Mapping[str, Any]], chosen: float, title: str | None = None) -> go.Figure:
    """The do-no-harm rule's trade-off on the validation split, the chosen margin marked.

    The mean true Dice gain against the number of images harmed (worse by more than the tolerance), one point per
    margin.

    Args:
        curve: The rows of :func:`~sampot_lib.method.selection.margin_curve`.
        chosen: The margin chosen.
        title: The title; None: a default.

    Returns:
        The figure.

    Raises:
        SampotError: ``curve`` is empty.
    """
    if not curve:
        raise SampotError("the margin curve is empty.")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[int(r["harmed"]) for r in curve], y=[float(r["mean_gain"]) for r in curve], mode="lines+markers",
            name="margins", text=[f"margin {float(r['margin']):g}, moved {int(r['moved'])}" for r in curve],
            hovertemplate="%{text}<br>harmed %{x}<br>mean gain %{y:.4f}<extra></extra>",
        )
    )  # fmt: skip
    pick = min(curve, key=lambda r: abs(float(r["margin"]) - chosen))
    fig.add_trace(
        go.Scatter(x=[int(pick["harmed"])], y=[float(pick["mean_gain"])], mode="markers", name=f"chosen: {chosen:g}",
                   marker={"size": 12, "symbol": "star", "color": "black"})
    )  # fmt: skip
    fig.update_layout(
        title=title or "Do-no-harm rule on validation: mean gain against harm", height=400,
        xaxis={"title": "validation images worse by more than the tolerance", "dtick": 1},
        yaxis={"title": "mean Dice gain"},
    )  # fmt: skip
    return fig
