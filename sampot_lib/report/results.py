"""The full-size results as data: one index row per (model, structure, prompt, jitter, score or rule, seed) read
from a run's ``summary.json``, and the check that a re-run's per-image rows equal the committed ones."""

from __future__ import annotations

import math
from typing import Any

from sampot_lib.defaults import RULE, RULE_POOLED, SAFEGUARDS_OFF
from sampot_lib.errors import SampotError

#: The index's columns, in order.
INDEX_COLUMNS = (
    "run", "model", "structure", "prompt", "jitter", "scorer", "seed", "n_images", "mean_dice_initial",
    "mean_dice_final", "mean_dice_oracle", "share_of_oracle_gain", "improved", "unchanged", "worse", "harmed",
    "worst_drop",
    "p5_change", "median_within_image_spearman", "median_top1_regret", "p90_top1_regret", "gamed", "commit",
    "threads", "device", "seconds",
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
    """The index rows of one seed's ``summary.json``, one per evolution group.

    Args:
        run: The run's name.
        summary: The summary as :func:`~sampot_lib.experiment.evolution.evolve_stage` wrote it.
        commit: The commit the run was made at, or None.

    Returns:
        One row per evolution group (the regressor's first, then the do-no-harm rule's, then the others), with the
        run's settings, the mean Dice before and after and the oracle's, the counts and the run's commit, threads,
        device (``cpu`` or the GPU's name) and seconds.
    """
    config = summary["config"]
    oracle = summary.get("oracle", {}).get("mean_dice_evolved")
    rows = []
    guards_off = config.get("safeguards") == SAFEGUARDS_OFF  # then group "off" is group "on" run again
    for group, s in summary.items():
        if not isinstance(s, dict) or "mean_gain" not in s or (group == "off" and guards_off):
            continue
        jitter = float(group.removeprefix("jitter_")) if group.startswith("jitter_") else config["box_jitter"]
        rows.append({
            "run": run, "model": config["model"], "structure": config["structure"], "prompt": config["prompt"],
            "jitter": jitter if config["prompt"] == "box" else "", "scorer": _scorer_of(group), "seed": config["seed"],
            "n_images": s["n"], "mean_dice_initial": s["mean_dice_initial"], "mean_dice_final": s["mean_dice_evolved"],
            "mean_dice_oracle": oracle if not group.startswith("jitter_") else None,
            "share_of_oracle_gain": s.get("share_of_oracle_gain") if not group.startswith("jitter_") else None,
            "improved": s["improved"],
            "unchanged": s["unchanged"], "worse": s["worse"], "harmed": s.get("harmed"),
            "worst_drop": s.get("worst_drop"),
            "p5_change": s.get("p5_change"), "median_within_image_spearman": s.get("median_within_image_spearman"),
            "median_top1_regret": s.get("median_top1_regret"), "p90_top1_regret": s.get("p90_top1_regret"),
            "gamed": s.get("gamed"), "commit": commit, "threads": summary.get("torch_threads"),
            "device": summary.get("gpu") or "cpu", "seconds": summary.get("seconds"),
        })  # fmt: skip
    order = {"regressor": 0, RULE: 1}
    return sorted(rows, key=lambda r: (order.get(r["scorer"], 2), str(r["jitter"])))


def pooled_index_rows(run: str, pooled: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The index rows of a run's pooled do-no-harm rule, one per seed.

    Args:
        run: The run's name.
        pooled: :func:`~sampot_lib.experiment.pooled_rule.pooled_rule`'s record (its ``"seeds"``: {seed: outcome}).
        summaries: {seed: that seed's ``summary.json``}.

    Returns:
        One row per seed under the scorer ``"do-no-harm (pooled)"``: the seed's settings, commit, threads and device,
        the outcome's numbers, and the regressor's within-image Spearman (the rule picks among the same steps); no
        top-1 regret (the rows hold no true Dice per step) and no seconds (nothing ran).
    """
    rows = []
    for seed, outcome in pooled["seeds"].items():
        summary = summaries[seed]
        config = summary["config"]
        rows.append({
            "run": run, "model": config["model"], "structure": config["structure"], "prompt": config["prompt"],
            "jitter": config["box_jitter"] if config["prompt"] == "box" else "", "scorer": RULE_POOLED,
            "seed": config["seed"], "n_images": outcome["n"], "mean_dice_initial": outcome["mean_dice_initial"],
            "mean_dice_final": outcome["mean_dice_evolved"],
            "mean_dice_oracle": summary.get("oracle", {}).get("mean_dice_evolved"),
            "share_of_oracle_gain": outcome["share_of_oracle_gain"], "improved": outcome["improved"],
            "unchanged": outcome["unchanged"], "worse": outcome["worse"], "harmed": outcome["harmed"],
            "worst_drop": outcome["worst_drop"], "p5_change": outcome["p5_change"],
            "median_within_image_spearman": summary.get("on", {}).get("median_within_image_spearman"),
            "median_top1_regret": None, "p90_top1_regret": None, "gamed": outcome["gamed"],
            "commit": summary.get("commit"), "threads": summary.get("torch_threads"),
            "device": summary.get("gpu") or "cpu", "seconds": None,
        })  # fmt: skip
    return rows


def _same(a: Any, b: Any, tolerance: float) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return abs(x - y) <= tolerance * max(1.0, abs(y))


#: Absolute tolerances of a re-run on another kind of CPU, where float rounding differs in the last bits and 30
#: Adam steps carry it on: on 8 JSRT test images (SAM-Nano, 1 thread, AMD EPYC against the CPU the results were made
#: on) prompts moved by up to 0.13 px, Dice by up to 4e-4 and scores by up to 1e-4, and one image's winner was
#: another step of a near-tie. A fault in the method moves these by far more. The winning step is then not compared.
CROSS_CPU_TOLERANCE = {"x0": 1.0, "y0": 1.0, "x": 1.0, "y": 1.0, "score0": 1e-3, "score": 1e-3, "dice0": 1e-3,
                       "dice": 1e-3, "gain": 1e-3}  # fmt: skip


def first_difference(
    fresh: list[dict[str, Any]],
    committed: list[dict[str, Any]],
    *,
    tolerance: float = 1e-9,
    absolute: dict[str, float] | None = None,
) -> str | None:
    """The first difference between fresh per-image rows and their committed rows (same image and group).

    Rows are compared in :data:`CHECKED_COLUMNS`.

    Args:
        fresh: The re-run's rows.
        committed: The committed rows.
        tolerance: The relative tolerance numbers are compared with (the CSV's decimal text of the same float reads
            back equal).
        absolute: {column: tolerance} (e.g. :data:`CROSS_CPU_TOLERANCE`): only those columns and the text columns are
            compared, each within its absolute tolerance; None: every column, with ``tolerance``.

    Returns:
        None when every fresh row equals its committed row; else one line naming the first row and column that differ
        and both values.
    """
    index = {(str(r["image_id"]), str(r["group"])): r for r in committed}
    for row in fresh:
        key = (str(row["image_id"]), str(row["group"]))
        if key not in index:
            return f"image {key[0]}, group {key[1]}: no committed row to compare with"
        for column in CHECKED_COLUMNS:
            have, want = row.get(column, ""), index[key].get(column, "")
            if absolute is None:
                same = _same(have, want, tolerance)
            elif column in absolute:
                same = _number(have) is not None and _number(want) is not None
                same = same and abs(float(have) - float(want)) <= absolute[column]
            else:
                same = _number(want) is not None or str(have) == str(want)  # numbers not listed are not compared
            if not same:
                return f"image {key[0]}, group {key[1]}, {column}: re-run {have!r}, committed {want!r}"
    return None


# -- reading the committed results back: the book's full-size chapter -----------------------------------------------

#: Index columns averaged over seeds (mean and sd), with their digits.
SPREAD_COLUMNS = (("mean_dice_initial", 3), ("mean_dice_final", 3), ("share_of_oracle_gain", 2), ("improved", 1),
                  ("unchanged", 1), ("worse", 1), ("median_within_image_spearman", 2), ("median_top1_regret", 3),
                  ("gamed", 2))  # fmt: skip


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def seed_groups(index: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The index's rows grouped by (run, jitter, scorer), one row per seed in each, in the index's order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in index:
        groups.setdefault((str(row["run"]), str(row["jitter"]), str(row["scorer"])), []).append(row)
    return groups


def mean_sd(rows: list[dict[str, Any]], column: str) -> tuple[float | None, float | None]:
    """Mean and sample sd over seeds of one column (sd None for one seed; blanks are left out)."""
    values = [v for v in (_number(r.get(column)) for r in rows) if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _cell(rows: list[dict[str, Any]], column: str, digits: int) -> str:
    mean, sd = mean_sd(rows, column)
    if mean is None:
        return "n/a"
    counts = column in ("improved", "unchanged", "worse")
    if counts and (sd is None or sd == 0):
        return str(round(mean))  # the same count at every seed: a whole number
    text = f"{mean:.{digits}f}"
    return text if sd is None else f"{text} ± {sd:.{digits}f}"


def spread_markdown(index: list[dict[str, Any]], runs: list[str] | None = None) -> str:
    """The spread over seeds as a Markdown table.

    Args:
        index: The index rows (:func:`index_rows` of every seed).
        runs: The runs shown; None: all.

    Returns:
        A Markdown table, one line per (run, jitter, score or rule) with the number of seeds, the mean ± sd over seeds
        of :data:`SPREAD_COLUMNS` and the worst drop of any seed.
    """
    head = ("| run | J | score | seeds | Dice, user's prompt | Dice, final | share of oracle gain | improved | "
            "unchanged | worse | worst drop (any seed) | within-image Spearman | top-1 regret | gamed |")  # fmt: skip
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for (run, jitter, scorer), rows in seed_groups(index).items():
        if runs is not None and run not in runs:
            continue
        cells = [_cell(rows, column, digits) for column, digits in SPREAD_COLUMNS]
        drops = [v for v in (_number(r.get("worst_drop")) for r in rows) if v is not None]
        worst = f"{min(drops):.3f}" if drops else "n/a"
        cells.insert(6, worst)
        lines.append(f"| {run} | {jitter or '-'} | {scorer} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main_jitter(groups: dict[tuple[str, str, str], list[dict[str, Any]]], run: str) -> str | None:
    """The jitter of a run's main evolution: the one its regressor shares with the most other scores (the extra
    jitters are evolved by the regressor alone); None when the run has no regressor row."""
    jitters = [key[1] for key in groups if key[0] == run and key[2] == "regressor"]
    if not jitters:
        return None
    return max(jitters, key=lambda j: sum(1 for key in groups if key[0] == run and key[1] == j))


def buys_markdown(index: list[dict[str, Any]], tolerance: float) -> str:
    """What SAMPOT buys on each run at its main jitter (mean over seeds), as a Markdown table.

    Args:
        index: The index rows (:func:`index_rows` of every seed).
        tolerance: The rule's bound: images made worse by more than it count (the rows' ``harmed`` counts, which the
            runs made with this tolerance).

    Returns:
        A Markdown table with, per run, the user's Dice, the regressor's and the do-no-harm rule's, the IoU head's
        and the oracle's, and images made worse by more than ``tolerance``, with a one-word verdict: "helps" when the
        rule gains on average and harms no image beyond the tolerance at any seed, "mixed" when it gains but harms
        some, "no gain" otherwise.
    """
    head = (
        "| run | seeds | user's prompt | SAMPOT (regressor) | do-no-harm rule | IoU head | oracle | share of "
        f"oracle gain (regressor / rule) | images worse by > {tolerance:g} (regressor / rule, worst seed) | verdict |"
    )
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    groups = seed_groups(index)
    for run in dict.fromkeys(key[0] for key in groups):
        jitter = main_jitter(groups, run)
        if jitter is None:
            continue
        of = {scorer: groups.get((run, jitter, scorer), []) for scorer in ("regressor", RULE, "confidence", "oracle")}
        initial, _ = mean_sd(of["regressor"], "mean_dice_initial")
        rule_gains = [(_number(r["mean_dice_final"]) or 0) - (_number(r["mean_dice_initial"]) or 0) for r in of[RULE]]
        rule_harm = _worst_count(of[RULE])
        if not rule_gains:
            verdict = "no rule run"
        elif sum(rule_gains) / len(rule_gains) <= 0:
            verdict = "no gain"
        else:
            verdict = "helps" if rule_harm == 0 else "mixed"
        finals = {k: _mean_text(v, "mean_dice_final", 3) for k, v in of.items()}
        shares = {k: _mean_text(v, "share_of_oracle_gain", 2) for k, v in of.items()}
        lines.append(
            f"| {run} | {len(of['regressor'])} | {initial:.3f} | {finals['regressor']} | {finals[RULE]} | "
            f"{finals['confidence']} | {finals['oracle']} | {shares['regressor']} / {shares[RULE]} | "
            f"{_text(_worst_count(of['regressor']))} / {_text(rule_harm)} | {verdict} |"
        )
    return "\n".join(lines)


def _mean_text(rows: list[dict[str, Any]], column: str, digits: int) -> str:
    mean, _ = mean_sd(rows, column)
    return "n/a" if mean is None else f"{mean:.{digits}f}"


def _worst_count(rows: list[dict[str, Any]]) -> int | None:
    """The most images any seed made worse by more than the harm tolerance (None when no row says)."""
    counts = [c for c in (harmed_count(r) for r in rows) if c is not None]
    return max(counts) if counts else None


def _text(value: Any) -> str:
    return "n/a" if value is None else str(value)


def harmed_count(row: dict[str, Any]) -> int | None:
    """Images of one index row worse by more than the run's harm tolerance (its ``harmed`` column); None when the
    row has none."""
    harmed = _number(row.get("harmed"))
    return None if harmed is None else int(harmed)


#: The markers between which a README holds the table of what SAMPOT buys.
TABLE_MARKERS = ("<!-- results table: begin -->", "<!-- results table: end -->")


def with_results_table(text: str, table: str) -> str:
    """``text`` (a README) with ``table`` between :data:`TABLE_MARKERS`, replacing what was there."""
    begin, end = TABLE_MARKERS
    if begin not in text or end not in text:
        raise SampotError(f"the README has no {begin} ... {end} markers for the results table.")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}"


def results_table_of(text: str) -> str:
    """The table between :data:`TABLE_MARKERS` of a README (empty when none is there yet)."""
    begin, end = TABLE_MARKERS
    if begin not in text or end not in text:
        raise SampotError(f"the README has no {begin} ... {end} markers for the results table.")
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


def margins_markdown(summaries: dict[tuple[str, int], dict[str, Any]]) -> str:
    """The do-no-harm margin each seed chose on validation and what it did on the test split, as a Markdown table.

    Args:
        summaries: {(run, seed): the seed's summary}; seeds without the rule are left out.

    Returns:
        A Markdown table, one row per (run, seed) in order: the margin, the test images whose Dice the rule changed
        (beyond the unchanged tolerance), improved, worse, and the worst change; "" when no seed has the rule.
    """
    lines = ["| run | seed | margin chosen on validation | test prompts changed | improved | worse | worst change |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (run, seed), summary in sorted(summaries.items()):
        rule, choice = summary.get(RULE), summary.get("rule_validation")
        if not rule or not choice:
            continue
        lines.append(f"| {run} | {seed} | {choice['margin']:g} | {rule['n'] - rule['unchanged']} | {rule['improved']} "
                     f"| {rule['worse']} | {rule['worst_drop']:+.3f} |")  # fmt: skip
    return "\n".join(lines) if len(lines) > 2 else ""


def pooling_markdown(per_run: dict[str, dict[str, Any]]) -> str:
    """What one margin per recipe buys on validation, as a Markdown table.

    Args:
        per_run: {run: {"margins": {seed: the margin its own validation chose}, "pooled": the pooled margin,
            "held_out": the rows of :func:`~sampot_lib.experiment.pooled_rule.leave_one_seed_out`}}.

    Returns:
        One row per run: each seed's margin, the pooled one, and on each held-out seed's validation curve, the images
        harmed and the mean gain (means over the held-out readings) at the margin of one other seed and at the
        others' pooled margin; "" when ``per_run`` is empty.
    """
    if not per_run:
        return ""
    lines = ["| run | margin per seed | pooled margin | harmed per held-out seed (one seed's margin / pooled) | "
             "mean gain on the held-out seed (one seed's margin / pooled) |", "|---|---|---|---|---|"]  # fmt: skip
    for run, part in per_run.items():
        one = [r for r in part["held_out"] if r["chosen_by"] != "pooled"]
        pooled = [r for r in part["held_out"] if r["chosen_by"] == "pooled"]
        harmed = [sum(r["harmed"] for r in rows) / len(rows) for rows in (one, pooled)]
        gains = [sum(r["mean_gain"] for r in rows) / len(rows) for rows in (one, pooled)]
        margins = ", ".join(f"{m:g}" for _, m in sorted(part["margins"].items()))
        lines.append(f"| {run} | {margins} | {part['pooled']:g} | {harmed[0]:.2f} / {harmed[1]:.2f} | "
                     f"{gains[0]:+.4f} / {gains[1]:+.4f} |")  # fmt: skip
    return "\n".join(lines)
