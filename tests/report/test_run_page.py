"""The offline summary page of a run."""

from __future__ import annotations

import re

import pytest

from sampot_lib.report.run_page import group_table, run_summary_figure, run_summary_html

ROWS = [
    {"image_id": "a", "group": "on", "dice0": 0.5, "dice": 0.6},
    {"image_id": "b", "group": "on", "dice0": 0.7, "dice": 0.65},
    {"image_id": "c", "group": "on", "dice0": 0.8, "dice": 0.802},
    {"image_id": "a", "group": "oracle", "dice0": 0.5, "dice": 0.9},
]


def test_the_table_counts_each_group():
    on, oracle = group_table(ROWS)
    assert (on["group"], on["n"], on["improved"], on["unchanged"], on["worse"]) == ("on", 3, 1, 1, 1)
    assert on["mean_gain"] == pytest.approx((0.1 - 0.05 + 0.002) / 3) and on["worst_gain"] == pytest.approx(-0.05)
    assert oracle["mean_dice_evolved"] == 0.9


def test_the_page_is_offline_with_one_trace_per_group():
    fig = run_summary_figure(ROWS)
    assert [t.name for t in fig.data] == ["no change", "on", "oracle"]
    assert list(fig.data[1].y) == [0.6, 0.65, 0.802]
    page = run_summary_html(ROWS, "left_lung", "run x")
    assert "<title>run x</title>" in page and "<td>left_lung</td><td>on</td><td>3</td>" in page
    assert not re.search(r"<script[^>]+src=", page)
