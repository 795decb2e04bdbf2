"""The do-no-harm rule with one margin per recipe, chosen on the validation evolutions of every seed of a run together.

A margin that harms none of one seed's validation evolutions (57 JSRT images) bounds the expected share of harmed new
images only by about 1 / 58 (see :func:`~sampot_lib.method.selection.pool_curves`), and it moves from seed to seed.
The seeds of a run share the split and the recipe (they differ in the regressor's training and the users' prompts);
their validation curves pooled give one margin for the recipe, and :func:`pooled_rule` applies it to each seed's test
evolutions from their rows (which record the rule's predicted gain of each winner). :func:`leave_one_seed_out`
measures what pooling buys on validation alone: the margin chosen without one seed, applied to that seed's curve.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from sampot_lib.errors import SampotError
from sampot_lib.experiment.records import read_csv, read_json
from sampot_lib.experiment.summary import selection_metrics, share_of_oracle_gain, summarise
from sampot_lib.method.selection import pick_margin, pool_curves


def seed_folders(run: Path) -> list[Path]:
    """A run's seed folders that finished with the do-no-harm rule chosen on validation.

    Args:
        run: The run's folder.

    Returns:
        Its ``seed_<k>`` folders whose ``summary.json`` holds a ``rule_validation`` curve, in order of seed.
    """
    found = []
    numbered = [p for p in run.glob("seed_*") if p.name.removeprefix("seed_").isdigit()]
    for folder in sorted(numbered, key=lambda p: int(p.name.removeprefix("seed_"))):
        summary = folder / "summary.json"
        if summary.is_file() and read_json(summary, "summary").get("rule_validation", {}).get("curve"):
            found.append(folder)
    return found


def pooled_margin(folders: list[Path]) -> dict[str, Any]:
    """The margin chosen on the validation evolutions of several seeds together.

    Args:
        folders: Seed folders, each with a ``summary.json`` that holds its ``rule_validation`` curve.

    Returns:
        ``{"margin", "curve": the pooled curve, "chosen_on": a line, "sizes": the validation images per seed}``.

    Raises:
        SampotError: fewer than two folders.
    """
    if len(folders) < 2:
        raise SampotError(f"pooling the rule's margin needs two or more seeds with the rule, got {len(folders)}.")
    curves, sizes = seed_curves(folders)
    curve = pool_curves(curves, sizes)
    seeds = ", ".join(f.name.removeprefix("seed_") for f in folders)
    return {"margin": pick_margin(curve), "curve": curve, "sizes": sizes,
            "chosen_on": f"{sum(sizes)} validation evolutions (seeds {seeds})"}  # fmt: skip


def seed_curves(folders: list[Path]) -> tuple[list[list[dict]], list[int]]:
    """The validation curves of seed folders and how many validation evolutions each was chosen on.

    Args:
        folders: Seed folders whose ``summary.json`` holds a ``rule_validation`` curve.

    Returns:
        (the curves, the sizes), one of each per folder.

    Raises:
        SampotError: a summary does not say how many (its ``rule_validation`` has neither ``n`` nor a ``chosen_on``
            that starts with the count).
    """
    curves, sizes = [], []
    for folder in folders:
        choice = read_json(folder / "summary.json", "summary")["rule_validation"]
        count = choice.get("n") or str(choice.get("chosen_on", "")).split(" ", 1)[0]
        if not str(count).isdigit():
            raise SampotError(f"{folder / 'summary.json'} does not say how many validation images chose its margin: "
                              "make the seed again with this sampot.")  # fmt: skip
        curves.append(choice["curve"])
        sizes.append(int(count))
    return curves, sizes


def leave_one_seed_out(folders: list[Path]) -> list[dict[str, Any]]:
    """What pooling buys, on validation alone: each seed's curve read at the margin chosen without it, by one other
    seed and by the others pooled.

    Args:
        folders: Three or more seed folders with the rule (:func:`seed_folders`).

    Returns:
        One row per (held-out seed, chosen by): ``held_out``, ``chosen_by`` (a seed, or ``"pooled"``), ``margin``, and
        the held-out seed's ``harmed`` and ``mean_gain`` at that margin.

    Raises:
        SampotError: fewer than three folders.
    """
    if len(folders) < 3:
        raise SampotError(f"leaving one seed out needs three or more seeds with the rule, got {len(folders)}.")
    curves, sizes = seed_curves(folders)
    names = [f.name.removeprefix("seed_") for f in folders]
    rows = []
    for k, held_out in enumerate(curves):
        at = {row["margin"]: row for row in held_out}
        others = [i for i in range(len(curves)) if i != k]
        choices = [(names[i], pick_margin(curves[i])) for i in others]
        choices.append(("pooled", pick_margin(pool_curves([curves[i] for i in others], [sizes[i] for i in others]))))
        for by, margin in choices:
            rows.append({"held_out": names[k], "chosen_by": by, "margin": margin, "harmed": at[margin]["harmed"],
                         "mean_gain": at[margin]["mean_gain"]})  # fmt: skip
    return rows


def records_rule_gains(path: Path) -> bool:
    """Whether an ``evolution.csv`` has the column ``rule_predicted_gain`` (seeds made with the rule by this sampot)."""
    with open(path, newline="") as f:
        return "rule_predicted_gain" in next(csv.reader(f), [])


def rule_outcome(rows: list[dict[str, Any]], margin: float, oracle_gain: float | None) -> dict[str, Any]:
    """A seed's test evolutions under the rule at another margin, from its ``evolution.csv`` rows.

    Args:
        rows: The rows of group ``on`` (the regressor's evolution the rule judges), with ``best_step``, ``score0``,
            ``score``, ``dice0``, ``dice``, ``gain`` and ``rule_predicted_gain``.
        margin: The margin.
        oracle_gain: The oracle's mean gain on the same images and user prompts (None: no share).

    Returns:
        The numbers of :func:`~sampot_lib.experiment.summary.summarise`, with ``margin``, ``moved`` (winners used),
        ``worst_drop``, ``p5_change``, ``gamed`` (winners used whose regressor's predicted gain is positive while the
        true gain is below -UNCHANGED_TOL) and ``share_of_oracle_gain``.

    Raises:
        SampotError: a row has no ``rule_predicted_gain`` (made without the rule, or by an older sampot).
    """
    if any(r.get("rule_predicted_gain") in (None, "") for r in rows):
        raise SampotError("the evolution rows record no rule_predicted_gain (made without the do-no-harm rule, or by "
                          "an older sampot): run the seeds again with the rule to apply another margin.")  # fmt: skip
    moved = [int(r["best_step"]) != 0 and float(r["rule_predicted_gain"]) > margin for r in rows]
    # a kept winner is the user's prompt: its Dice and no gain (so it is neither worse nor gamed)
    ruled = [r if m else r | {"dice": r["dice0"], "gain": 0.0, "best_step": 0}
             for r, m in zip(rows, moved, strict=True)]  # fmt: skip
    out = summarise(ruled)
    picked = selection_metrics(ruled, {})
    return out | {
        "margin": margin, "moved": int(sum(moved)),
        **{k: picked[k] for k in ("worst_drop", "p5_change", "gamed")},
        "share_of_oracle_gain": share_of_oracle_gain(out, {"mean_gain": oracle_gain} if oracle_gain else None),
    }  # fmt: skip


def pooled_rule(folders: list[Path]) -> dict[str, Any]:
    """The pooled margin of several seeds and what it does on each seed's test split.

    Args:
        folders: Two or more seed folders with the rule, each with ``summary.json`` and ``evolution.csv``.

    Returns:
        :func:`pooled_margin`'s record with ``"seeds": {seed: rule_outcome at the pooled margin}``.

    Raises:
        SampotError: fewer than two folders, or rows without ``rule_predicted_gain``.
    """
    choice = pooled_margin(folders)
    seeds = {}
    for folder in folders:
        summary = read_json(folder / "summary.json", "summary")
        rows = [r for r in read_csv(folder / "evolution.csv") if r["group"] == "on"]
        oracle = summary.get("oracle", {}).get("mean_gain")
        seeds[folder.name.removeprefix("seed_")] = rule_outcome(rows, choice["margin"], oracle)
    return choice | {"seeds": seeds}
