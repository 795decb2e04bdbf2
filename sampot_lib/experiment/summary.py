"""The numbers a run reports: per-image evolution rows summed up (improved / unchanged / worse, drops, gains) and their
mean and spread over seeds."""

from __future__ import annotations

from typing import Any

import numpy as np

from sampot_lib.defaults import CATASTROPHE_DROP, DROP, HARM_TOLERANCE, UNCHANGED_TOL
from sampot_lib.errors import SampotError
from sampot_lib.method.metrics import pearson_or_none, spearman_or_none

#: The numbers a summary reports per safeguard setting; summarise_seeds gives their mean and spread over seeds.
HEADLINE = ("n", "improved", "unchanged", "worse", "harmed", "drops", "catastrophes", "mean_gain", "median_gain",
            "worst_drop", "p5_change", "mean_dice_initial", "mean_dice_evolved", "share_of_oracle_gain",
            "median_within_image_spearman", "median_top1_regret", "p90_top1_regret", "gamed")  # fmt: skip


REGRESSOR_HEADLINE = ("r_regressor_synthetic", "r_regressor_all", "r_regressor_model", "r_confidence_model",
                      "r_blend_model", "r_regressor_initial", "r_confidence_initial", "r_regressor_centroid",
                      "r_confidence_centroid", "blend_weight")  # fmt: skip


def column_r(rows: list[dict[str, Any]], column: str) -> float | None:
    """Pearson r of ``column`` with the true Dice; None when it is undefined (under 3 rows, or a constant)."""
    return pearson_or_none([row[column] for row in rows], [row["dice"] for row in rows])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers of one group of evolutions.

    Args:
        rows: One row per image, with ``gain``, ``dice0`` (the user's prompt's Dice) and ``dice`` (the winner's).

    Returns:
        Counts (``n``; ``improved`` / ``unchanged`` / ``worse`` images; ``harmed``, worse by more than the do-no-harm
        rule's tolerance; ``drops`` and ``catastrophes``), ``mean_gain`` and ``median_gain``, and
        ``mean_dice_initial`` and ``mean_dice_evolved``.

    Raises:
        SampotError: ``rows`` is empty (the test split is empty).
    """
    gains = np.array([float(r["gain"]) for r in rows])
    if len(gains) == 0:
        raise SampotError("no evolution results to summarise: the test split is empty.")
    return {
        "n": len(gains),
        "improved": int((gains > UNCHANGED_TOL).sum()),
        "unchanged": int((np.abs(gains) <= UNCHANGED_TOL).sum()),
        "worse": int((gains < -UNCHANGED_TOL).sum()),
        "harmed": int((gains < -HARM_TOLERANCE).sum()),
        "drops": int((gains < -DROP).sum()),
        "catastrophes": int((gains < -CATASTROPHE_DROP).sum()),
        "mean_gain": float(gains.mean()),
        "median_gain": float(np.median(gains)),
        "mean_dice_initial": float(np.mean([float(r["dice0"]) for r in rows])),
        "mean_dice_evolved": float(np.mean([float(r["dice"]) for r in rows])),
    }


def summarise_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1) over seeds of every headline number of per-seed summaries.

    Args:
        per_seed: {seed: summary as :func:`evolve_stage` returns it}.

    Returns:
        ``{"seeds", "sd_ddof", "mean": {"on": {...}, "off": {...}, "regressor": {...}}, "sd"`` (the same layout),
        ``"n"`` (how many seeds had the number: an undefined r is left out), ``"per_seed"}``. sd is None with fewer
        than two values.

    Raises:
        SampotError: ``per_seed`` is empty.
    """
    if not per_seed:
        raise SampotError("no per-seed results to summarise.")
    # every evolution group any seed has ("on", "off", "confidence", "oracle", "jitter_0.05", ...) and the evaluation
    groups = {g: HEADLINE for s in per_seed.values() for g, v in s.items() if isinstance(v, dict) and "mean_gain" in v}
    groups["regressor"] = REGRESSOR_HEADLINE
    mean: dict[str, dict[str, float | None]] = {}
    sd: dict[str, dict[str, float | None]] = {}
    count: dict[str, dict[str, int]] = {}
    for group, keys in groups.items():
        mean[group], sd[group], count[group] = {}, {}, {}
        for key in keys:
            vals = np.array([float(s[group][key]) for s in per_seed.values()
                             if group in s and s[group].get(key) is not None], dtype=np.float64)  # fmt: skip
            count[group][key] = len(vals)
            mean[group][key] = float(vals.mean()) if len(vals) else None
            sd[group][key] = float(vals.std(ddof=1)) if len(vals) > 1 else None
    return {"seeds": [int(k) for k in per_seed], "sd_ddof": 1, "mean": mean, "sd": sd, "n": count,
            "per_seed": {str(k): v for k, v in per_seed.items()}}  # fmt: skip


def selection_metrics(rows: list[dict[str, Any]], trajectories: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """How well a score picked the winner of each image's evolution, from one group's rows (``image_id``, ``gain``,
    ``score0``, ``score``) and its trajectories ({"<id>/<group>": record whose steps carry the true ``dice``}):

    - ``worst_drop`` and ``p5_change``: the lowest and the 5th percentile of the change of Dice;
    - ``median_within_image_spearman``: per image, Spearman between the score and the true Dice over every prompt
      evolution visited, the median over images (images where it is undefined are left out; ``n_spearman`` counts
      the rest);
    - ``median_top1_regret`` and ``p90_top1_regret``: the true Dice of the best prompt the safeguards let win minus
      that of the chosen one;
    - ``gamed``: the share of images whose winner's predicted gain (score minus the user's prompt's score) is positive
      while its true gain is below -:data:`~sampot_lib.defaults.UNCHANGED_TOL`.
    Per-step numbers are None when the trajectories carry no true Dice.
    """
    if not rows:
        raise SampotError("no evolution results to measure: the test split is empty.")
    gains = np.array([float(r["gain"]) for r in rows])
    group = rows[0]["group"]
    rhos, regrets = [], []
    for r in rows:
        steps = trajectories.get(f"{r['image_id']}/{group}", {}).get("trajectory", [])
        if not steps or any(s.get("dice") is None for s in steps):
            continue
        rho = spearman_or_none([s["score"] for s in steps], [s["dice"] for s in steps])
        if rho is not None:
            rhos.append(rho)
        chosen = next(s["dice"] for s in steps if s["step"] == int(r["best_step"]))
        regrets.append(max(s["dice"] for s in steps if s["allowed"]) - chosen)
    predicted = np.array([float(r["score"]) - float(r["score0"]) for r in rows])
    return {
        "worst_drop": float(gains.min()),
        "p5_change": float(np.percentile(gains, 5)),
        "median_within_image_spearman": float(np.median(rhos)) if rhos else None,
        "n_spearman": len(rhos),
        "median_top1_regret": float(np.median(regrets)) if regrets else None,
        "p90_top1_regret": float(np.percentile(regrets, 90)) if regrets else None,
        "gamed": float(np.mean((predicted > 0) & (gains < -UNCHANGED_TOL))),
    }


def share_of_oracle_gain(group: dict[str, Any], oracle: dict[str, Any] | None) -> float | None:
    """A group's mean gain over the oracle's (same images and user prompts); None without a positive oracle gain."""
    if oracle is None or not oracle["mean_gain"] > 0:
        return None
    return group["mean_gain"] / oracle["mean_gain"]
