"""Every figure a run reports, recomputed here from the run's per-image files alone (evolution.csv, trajectories.json,
regressor_eval.csv) with plain NumPy and SciPy, not with the code that wrote the summary."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.runner import run_experiment

#: The README's definitions: a change within 0.005 is "unchanged", a loss over 0.05 a drop, over 0.2 a catastrophe.
UNCHANGED, DROP, CATASTROPHE = 0.005, 0.05, 0.2


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def finished_run(phantoms, tmp_path_factory):
    import torch
    from conftest import build_tiny_sam

    from sampot_lib.models import registry

    registry.MODEL_BUILDERS["tiny"] = build_tiny_sam
    out = tmp_path_factory.mktemp("run")
    torch.save(build_tiny_sam().state_dict(), out / "tiny.pth")
    config = ExperimentConfig(data=str(phantoms), out=str(out / "run"), model="tiny", checkpoint=str(out / "tiny.pth"),
                              max_images=5, epochs=2, steps=4, regressor_size=32,
                              scorers=["regressor", "confidence", "oracle"])  # fmt: skip
    try:
        run_experiment(config, progress=False)
    finally:
        registry.MODEL_BUILDERS.pop("tiny", None)
    return out / "run"


def test_every_evolution_figure_is_what_the_per_image_files_give(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    rows = _rows(finished_run / "evolution.csv")
    trajectories = json.loads((finished_run / "trajectories.json").read_text())
    groups = {r["group"] for r in rows}
    assert groups == {"on", "off", "confidence", "oracle"}
    gains = {}
    for group in groups:
        mine = [r for r in rows if r["group"] == group]
        dice0 = np.array([float(r["dice0"]) for r in mine])
        dice = np.array([float(r["dice"]) for r in mine])
        gain = dice - dice0
        gains[group] = gain
        np.testing.assert_allclose([float(r["gain"]) for r in mine], gain, atol=1e-12)
        rhos, regrets = [], []
        for r in mine:  # the row's Dice are those of its trajectory's first and chosen steps
            steps = trajectories[f"{r['image_id']}/{group}"]["trajectory"]
            chosen = [s for s in steps if s["step"] == int(r["best_step"])]
            assert len(chosen) == 1 and chosen[0]["dice"] == pytest.approx(float(r["dice"]), abs=1e-9)
            assert steps[0]["step"] == 0 and steps[0]["dice"] == pytest.approx(float(r["dice0"]), abs=1e-9)
            score, true = [s["score"] for s in steps], [s["dice"] for s in steps]
            if len(set(score)) > 1 and len(set(true)) > 1:
                rhos.append(stats.spearmanr(score, true).statistic)
            regrets.append(max(s["dice"] for s in steps if s["allowed"]) - chosen[0]["dice"])
        predicted = np.array([float(r["score"]) - float(r["score0"]) for r in mine])
        want = {
            "n": len(mine),
            "improved": int(np.sum(gain > UNCHANGED)),
            "unchanged": int(np.sum(np.abs(gain) <= UNCHANGED)),
            "worse": int(np.sum(gain < -UNCHANGED)),
            "drops": int(np.sum(gain < -DROP)),
            "catastrophes": int(np.sum(gain < -CATASTROPHE)),
            "mean_gain": gain.mean(),
            "median_gain": np.median(gain),
            "mean_dice_initial": dice0.mean(),
            "mean_dice_evolved": dice.mean(),
            "worst_drop": gain.min(),
            "p5_change": np.percentile(gain, 5),
            "median_within_image_spearman": np.median(rhos) if rhos else None,
            "median_top1_regret": np.median(regrets),
            "p90_top1_regret": np.percentile(regrets, 90),
            "gamed": np.mean((predicted > 0) & (gain < -UNCHANGED)),
        }
        got = summary[group]
        assert got["improved"] + got["unchanged"] + got["worse"] == got["n"]
        for key, value in want.items():
            assert got[key] == (None if value is None else pytest.approx(value, abs=1e-9)), (group, key)
    oracle_gain = gains["oracle"].mean()
    for group in groups:
        share = gains[group].mean() / oracle_gain if oracle_gain > 0 else None
        assert summary[group]["share_of_oracle_gain"] == (None if share is None else pytest.approx(share)), group
    assert summary.get("share_of_oracle_gain") == summary["on"]["share_of_oracle_gain"]


def test_every_correlation_of_the_regressors_evaluation_is_what_its_rows_give(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())["regressor"]
    rows = _rows(finished_run / "regressor_eval.csv")

    def r(subset: list[dict[str, str]], column: str) -> float:
        return stats.pearsonr([float(x[column]) for x in subset], [float(x["dice"]) for x in subset]).statistic

    synthetic = [x for x in rows if x["kind"] == "synthetic"]
    model = [x for x in rows if x["kind"] != "synthetic"]
    centroid = [x for x in rows if x["kind"] == "model_centroid"]
    assert len(centroid) == 5 and summary["n_model"] == len(model) and summary["n_synthetic"] == len(synthetic)
    want = {
        "r_regressor_synthetic": r(synthetic, "regressor"),
        "r_regressor_all": r(rows, "regressor"),
        "r_regressor_model": r(model, "regressor"),
        "r_confidence_model": r(model, "confidence"),
        "r_regressor_initial": r(centroid, "regressor"),
        "r_confidence_initial": r(centroid, "confidence"),
        "r_regressor_centroid": r(centroid, "regressor"),
        "r_confidence_centroid": r(centroid, "confidence"),
    }
    w = summary["blend_weight"]
    assert 0 <= w <= 1
    blend = [{"blend": w * float(x["regressor"]) + (1 - w) * float(x["confidence"]), "dice": x["dice"]} for x in model]
    want["r_blend_model"] = r(blend, "blend")
    for key, value in want.items():
        assert summary[key] == pytest.approx(value, abs=1e-9), key
