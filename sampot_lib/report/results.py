"""The full-size results as data: one index row per (model, structure, prompt, jitter, score or rule, seed) read
from a run's ``summary.json``, and the check that a re-run's per-image rows equal the committed ones."""

from __future__ import annotations

import math
from typing import Any

from sampot_lib.defaults import RULE

#: The index's columns, in order.
INDEX_COLUMNS = (
    "run", "model", "structure", "prompt", "jitter", "scorer", "seed", "n_images", "mean_dice_initial",
    "mean_dice_final", "mean_dice_oracle", "share_of_oracle_gain", "improved", "unchanged", "worse", "worst_drop",
    "p5_change", "median_within_image_spearman", "median_top1_regret", "p90_top1_regret", "gamed", "commit",
    "threads", "seconds",
)  # fmt: skip
#: The columns of a per-image row that a re-run must reproduce (the rest, such as timings, may differ).
CHECKED_COLUMNS = ("image_id", "group", "scorer", "safeguards", "box_jitter", "x0", "y0", "x", "y", "best_step",
                   "score0", "score", "dice0", "dice", "gain")  # fmt: skip


def _scorer_of(group: str) -> str:
    """The score (or rule) an evolution group stands for: "on"/"off" and "jitter_*" are the regressor's."""
    if group in ("on", "off") or group.startswith("jitter_"):
        return "regressor" if group != "off" else "regressor (safeguards off)"
    return group


def index_rows(run: str, summary: dict[str, Any], *, commit: str | None) -> list[dict[str, Any]]:
    """The index rows of one seed's ``summary.json`` (as :func:`~sampot_lib.experiment.evolution.evolve_stage`
    wrote it): one per evolution group."""
    config = summary["config"]
    oracle = summary.get("oracle", {}).get("mean_dice_evolved")
    rows = []
    for group, s in summary.items():
        if not isinstance(s, dict) or "mean_gain" not in s:
            continue
        jitter = float(group.removeprefix("jitter_")) if group.startswith("jitter_") else config["box_jitter"]
        rows.append({
            "run": run, "model": config["model"], "structure": config["structure"], "prompt": config["prompt"],
            "jitter": jitter if config["prompt"] == "box" else "", "scorer": _scorer_of(group), "seed": config["seed"],
            "n_images": s["n"], "mean_dice_initial": s["mean_dice_initial"], "mean_dice_final": s["mean_dice_evolved"],
            "mean_dice_oracle": oracle if not group.startswith("jitter_") else None,
            "share_of_oracle_gain": s.get("share_of_oracle_gain"), "improved": s["improved"],
            "unchanged": s["unchanged"], "worse": s["worse"], "worst_drop": s.get("worst_drop"),
            "p5_change": s.get("p5_change"), "median_within_image_spearman": s.get("median_within_image_spearman"),
            "median_top1_regret": s.get("median_top1_regret"), "p90_top1_regret": s.get("p90_top1_regret"),
            "gamed": s.get("gamed"), "commit": commit, "threads": summary.get("torch_threads"),
            "seconds": summary.get("seconds"),
        })  # fmt: skip
    order = {"regressor": 0, RULE: 1}
    return sorted(rows, key=lambda r: (order.get(r["scorer"], 2), str(r["jitter"])))


def _same(a: Any, b: Any, tolerance: float) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return abs(x - y) <= tolerance * max(1.0, abs(y))


def first_difference(
    fresh: list[dict[str, Any]], committed: list[dict[str, Any]], *, tolerance: float = 1e-9
) -> str | None:
    """None when every fresh per-image row equals its committed row (same image and group) in
    :data:`CHECKED_COLUMNS`; else one line naming the first row and column that differ and both values. Numbers are
    compared with a relative ``tolerance`` (the CSV's decimal text of the same float reads back equal)."""
    index = {(str(r["image_id"]), str(r["group"])): r for r in committed}
    for row in fresh:
        key = (str(row["image_id"]), str(row["group"]))
        if key not in index:
            return f"image {key[0]}, group {key[1]}: no committed row to compare with"
        for column in CHECKED_COLUMNS:
            have, want = row.get(column, ""), index[key].get(column, "")
            if not _same(have, want, tolerance):
                return f"image {key[0]}, group {key[1]}, {column}: re-run {have!r}, committed {want!r}"
    return None
