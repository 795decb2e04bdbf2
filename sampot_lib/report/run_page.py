"""An offline HTML summary of a run: evolved against initial Dice for each score, and a table of the gains.

:func:`run_summary_html` reads the rows of a run's ``evolution.csv`` (one per test image and score; several seeds'
rows together) and writes one self-contained page (plotly's script inlined, no network).
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import plotly.graph_objects as go

from sampot_lib.defaults import UNCHANGED_TOL


def group_table(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group (score and safeguards) of evolution rows: n, improved, unchanged, worse (a change beyond
    :data:`~sampot_lib.defaults.UNCHANGED_TOL`), mean Dice before and after, mean and worst gain."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        groups.setdefault(str(row["group"]), []).append((float(row["dice0"]), float(row["dice"])))
    table = []
    for group, pairs in groups.items():
        gains = [d - d0 for d0, d in pairs]
        n = len(pairs)
        table.append({"group": group, "n": n, "improved": sum(g > UNCHANGED_TOL for g in gains),
                      "unchanged": sum(abs(g) <= UNCHANGED_TOL for g in gains),
                      "worse": sum(g < -UNCHANGED_TOL for g in gains),
                      "mean_dice_initial": sum(d0 for d0, _ in pairs) / n,
                      "mean_dice_evolved": sum(d for _, d in pairs) / n, "mean_gain": sum(gains) / n,
                      "worst_gain": min(gains)})  # fmt: skip
    return table


def run_summary_figure(rows: list[dict[str, Any]], title: str = "") -> go.Figure:
    """Evolved against initial Dice, one trace per group, with the diagonal (no change)."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="no change", line=dict(color="grey", dash="dot")))
    for group in dict.fromkeys(str(r["group"]) for r in rows):
        mine = [r for r in rows if str(r["group"]) == group]
        fig.add_trace(go.Scatter(
            x=[float(r["dice0"]) for r in mine], y=[float(r["dice"]) for r in mine], mode="markers", name=group,
            text=[str(r["image_id"]) for r in mine], marker=dict(size=6, opacity=0.7),
        ))  # fmt: skip
    fig.update_layout(title=title, xaxis_title="Dice of the user's prompt", yaxis_title="Dice after evolution",
                      width=720, height=640, template="plotly_white")  # fmt: skip
    fig.update_yaxes(scaleanchor="x")
    return fig


def run_summary_html(rows: list[dict[str, Any]], structure: str, title: str = "") -> str:
    """A self-contained page: :func:`run_summary_figure` and :func:`group_table` for one structure."""
    table = group_table(rows)
    head = ("<tr><th>structure</th><th>score</th><th>n</th><th>improved</th><th>unchanged</th><th>worse</th>"
            "<th>mean Dice before</th><th>after</th><th>mean gain</th><th>worst</th></tr>")  # fmt: skip
    body = "".join(
        f"<tr><td>{html.escape(structure)}</td><td>{html.escape(t['group'])}</td><td>{t['n']}</td>"
        f"<td>{t['improved']}</td><td>{t['unchanged']}</td><td>{t['worse']}</td><td>{t['mean_dice_initial']:.3f}</td>"
        f"<td>{t['mean_dice_evolved']:.3f}</td><td>{t['mean_gain']:+.4f}</td><td>{t['worst_gain']:+.3f}</td></tr>"
        for t in table
    )
    figure = run_summary_figure(rows, title).to_html(include_plotlyjs=True, full_html=False)
    return (f"<!doctype html>\n<html>\n<head>\n<meta charset=\"utf-8\" />\n<title>{html.escape(title or 'sampot run')}"
            "</title>\n<style>table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #ccc;"
            f"padding:3px 8px;text-align:right}}</style>\n</head>\n<body>\n<table>{head}{body}</table>\n{figure}\n"
            "</body>\n</html>\n")  # fmt: skip
