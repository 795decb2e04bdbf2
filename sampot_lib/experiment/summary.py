"""The numbers a run reports: per-image evolution rows summed up (improved / unchanged / worse, drops, gains) and their
mean and spread over seeds."""

from __future__ import annotations

from typing import Any

import numpy as np

from sampot_lib.errors import SampotError
from sampot_lib.method.metrics import pearson_or_none

# A drop of this much Dice is what the paper's figure 6 shows as a catastrophe (a mask outside the lung).
CATASTROPHE_DROP = 0.2


# A loss of more than this much Dice counts as a drop ("drops" in a summary).
DROP = 0.05


# Changes smaller than this are "unchanged": below one pixel row of a lung's boundary at 1024 px.
UNCHANGED_TOL = 1e-3


#: The numbers a summary reports per safeguard setting; summarise_seeds gives their mean and spread over seeds.
HEADLINE = ("n", "improved", "unchanged", "worse", "drops", "catastrophes", "mean_gain", "median_gain",
            "mean_dice_initial", "mean_dice_evolved")  # fmt: skip


REGRESSOR_HEADLINE = ("r_regressor_synthetic", "r_regressor_all", "r_regressor_model", "r_confidence_model",
                      "r_blend_model", "r_regressor_initial", "r_confidence_initial", "r_regressor_centroid",
                      "r_confidence_centroid", "blend_weight")  # fmt: skip


def column_r(rows: list[dict[str, Any]], column: str) -> float | None:
    """Pearson r of ``column`` with the true Dice; None when it is undefined (under 3 rows, or a constant)."""
    return pearson_or_none([row[column] for row in rows], [row["dice"] for row in rows])


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of improved / unchanged / worse images, mean and median gain, and catastrophes (drop > 0.2)."""
    gains = np.array([float(r["gain"]) for r in rows])
    if len(gains) == 0:
        raise SampotError("no evolution results to summarise: the test split is empty.")
    return {
        "n": len(gains),
        "improved": int((gains > UNCHANGED_TOL).sum()),
        "unchanged": int((np.abs(gains) <= UNCHANGED_TOL).sum()),
        "worse": int((gains < -UNCHANGED_TOL).sum()),
        "drops": int((gains < -DROP).sum()),
        "catastrophes": int((gains < -CATASTROPHE_DROP).sum()),
        "mean_gain": float(gains.mean()),
        "median_gain": float(np.median(gains)),
        "mean_dice_initial": float(np.mean([float(r["dice0"]) for r in rows])),
        "mean_dice_evolved": float(np.mean([float(r["dice"]) for r in rows])),
    }


def summarise_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1) over seeds of every headline number of per-seed summaries
    ({seed: summary as :func:`evolve_stage` returns it}).

    Returns {"seeds", "mean": {"on": {...}, "off": {...}, "regressor": {...}}, "sd": (the same layout), "n": (how
    many seeds had the number: an undefined r is left out), "per_seed"}. sd is None with fewer than two values.
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
