"""One do-no-harm margin per recipe: the seeds' validation curves pooled, and what pooling buys measured by leaving one
seed out."""

from __future__ import annotations

import json

import pytest

from sampot_lib import SampotError
from sampot_lib.defaults import RULE
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.pooled_rule import (
    leave_one_seed_out,
    pooled_margin,
    pooled_rule,
    records_rule_gains,
    rule_outcome,
    seed_curves,
    seed_folders,
)
from sampot_lib.experiment.records import read_csv, read_json, write_csv
from sampot_lib.experiment.runner import run_experiment
from sampot_lib.method.selection import pick_margin, pool_curves

MARGINS = (0.0, 0.1, 1.0)


def _row(margin, gain, harmed):
    return {"margin": margin, "mean_gain": gain, "worst": -0.05 if harmed else 0.0, "harmed": harmed, "moved": 1}


def _seed(run, seed, curve, n=10, counted="chosen_on"):
    folder = run / f"seed_{seed}"
    folder.mkdir(parents=True)
    choice = {"margin": 0.0, "curve": curve}
    choice |= {"n": n} if counted == "n" else {"chosen_on": f"{n} validation images"}
    (folder / "summary.json").write_text(json.dumps({"rule_validation": choice}))
    return folder


# seed 0 harms nothing at margin 0; seed 1 harms one image below margin 0.1; seed 2 harms one below 1
SAFE = [_row(0.0, 0.05, 0), _row(0.1, 0.03, 0), _row(1.0, 0.0, 0)]
HARM_LOW = [_row(0.0, 0.06, 1), _row(0.1, 0.04, 0), _row(1.0, 0.0, 0)]
HARM_HIGH = [_row(0.0, 0.02, 1), _row(0.1, 0.01, 1), _row(1.0, 0.0, 0)]


def test_the_pooled_margin_is_safe_on_every_seed_together(tmp_path):
    folders = [_seed(tmp_path, 0, SAFE), _seed(tmp_path, 1, HARM_LOW, n=30, counted="n")]
    assert seed_curves(folders)[1] == [10, 30]
    choice = pooled_margin(folders)
    assert choice["margin"] == 0.1 and choice["sizes"] == [10, 30]
    assert choice["curve"][1]["mean_gain"] == pytest.approx((10 * 0.03 + 30 * 0.04) / 40)
    assert choice["chosen_on"] == "40 validation evolutions (seeds 0, 1)"


def test_seed_folders_are_those_with_the_rule_in_seed_order(tmp_path):
    for seed in (10, 2):
        _seed(tmp_path, seed, SAFE)
    (tmp_path / "seed_3").mkdir()  # unfinished: no summary
    (tmp_path / "seed_old").mkdir()  # not a seed
    _seed(tmp_path, 4, SAFE)
    (tmp_path / "seed_4" / "summary.json").write_text(json.dumps({"on": {}}))  # no rule
    assert [f.name for f in seed_folders(tmp_path)] == ["seed_2", "seed_10"]


def test_one_seed_is_not_pooled(tmp_path):
    with pytest.raises(SampotError, match="two or more seeds"):
        pooled_margin([_seed(tmp_path, 0, SAFE)])


def test_a_summary_that_does_not_count_its_validation_images_is_refused(tmp_path):
    folder = _seed(tmp_path, 0, SAFE)
    (folder / "summary.json").write_text(json.dumps({"rule_validation": {"margin": 0.0, "curve": SAFE}}))
    with pytest.raises(SampotError, match="does not say how many validation images"):
        seed_curves([folder])


def test_leaving_one_seed_out_reads_it_at_the_margins_chosen_without_it(tmp_path):
    folders = [_seed(tmp_path, k, curve) for k, curve in enumerate((SAFE, HARM_LOW, HARM_HIGH))]
    rows = {(r["held_out"], r["chosen_by"]): r for r in leave_one_seed_out(folders)}
    assert len(rows) == 9
    # seed 0 alone picks margin 0, which harms seed 1; seeds 0 and 2 pooled pick 1, which harms nothing
    assert (rows["1", "0"]["margin"], rows["1", "0"]["harmed"]) == (0.0, 1)
    assert (rows["1", "pooled"]["margin"], rows["1", "pooled"]["harmed"]) == (1.0, 0)
    # seeds 0 and 1 pooled pick 0.1: seed 2 is harmed there, and its gain is read at 0.1
    assert (rows["2", "pooled"]["margin"], rows["2", "pooled"]["harmed"]) == (0.1, 1)
    assert rows["2", "pooled"]["mean_gain"] == 0.01
    with pytest.raises(SampotError, match="three or more seeds"):
        leave_one_seed_out(folders[:2])


def _on(step, predicted, dice0, dice, regressor_gain=0.1):
    return {"image_id": f"i{step}{dice}", "group": "on", "best_step": step, "rule_predicted_gain": predicted,
            "score0": 0.5, "score": 0.5 + regressor_gain, "dice0": dice0, "dice": dice,
            "gain": dice - dice0}  # fmt: skip


def test_the_rule_outcome_keeps_every_winner_whose_predicted_gain_does_not_clear_the_margin():
    rows = [_on(3, 0.20, 0.70, 0.90), _on(2, 0.08, 0.80, 0.70), _on(0, 0.30, 0.60, 0.60), _on(1, 0.05, 0.5, 0.52)]
    loose, strict = rule_outcome(rows, 0.0, oracle_gain=0.2), rule_outcome(rows, 0.1, oracle_gain=0.2)
    # margin 0 uses every winner but step 0's: gains 0.2, -0.1, 0, 0.02
    assert (loose["moved"], loose["improved"], loose["worse"], loose["harmed"]) == (3, 2, 1, 1)
    assert loose["mean_gain"] == pytest.approx(0.12 / 4) and loose["worst_drop"] == pytest.approx(-0.1)
    assert loose["gamed"] == pytest.approx(0.25) and loose["share_of_oracle_gain"] == pytest.approx(0.03 / 0.2)
    # margin 0.1 keeps the damaging winner (predicted 0.08) and the small one
    assert (strict["moved"], strict["improved"], strict["worse"], strict["unchanged"]) == (1, 1, 0, 3)
    assert strict["mean_dice_evolved"] == pytest.approx((0.90 + 0.80 + 0.60 + 0.5) / 4) and strict["margin"] == 0.1
    with pytest.raises(SampotError, match="record no rule_predicted_gain"):
        rule_outcome([_on(1, "", 0.5, 0.6)], 0.0, None)


def test_the_pooled_margin_is_applied_to_each_seeds_own_evolution_not_to_its_ruled_rows(tmp_path):
    # seed 0's own rule (margin 1) kept every winner; the pooled margin (0.1) moves the one predicted at 0.2
    on = [_on(3, 0.20, 0.70, 0.90), _on(2, 0.08, 0.80, 0.70), _on(0, 0.30, 0.60, 0.60)]
    ruled = [r | {"group": RULE, "dice": r["dice0"], "gain": 0.0, "best_step": 0} for r in on]
    folders = [_seed(tmp_path, 0, HARM_LOW), _seed(tmp_path, 1, SAFE)]
    for folder in folders:
        write_csv(folder / "evolution.csv", on + ruled)
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps(summary | {"oracle": {"mean_gain": 0.2}}))
    pooled = pooled_rule(folders)
    assert pooled["margin"] == 0.1
    for seed in ("0", "1"):
        assert pooled["seeds"][seed] == rule_outcome(read_csv(folders[0] / "evolution.csv")[:3], 0.1, 0.2)
        assert pooled["seeds"][seed]["moved"] == 1 and pooled["seeds"][seed]["improved"] == 1


def test_a_run_of_several_seeds_applies_one_margin_to_each(phantoms, tiny_checkpoint, tmp_path):
    config = ExperimentConfig(
        data=str(phantoms), out=str(tmp_path / "run"), model="tiny", checkpoint=str(tiny_checkpoint), max_images=4,
        epochs=2, steps=3, n_synthetic=2, n_outside=1, regressor_size=32, split_fractions=[4, 4, 4],
        scorers=["regressor", "oracle", "do-no-harm"], seeds=[0, 1],
    )  # fmt: skip
    summary = run_experiment(config, progress=False)
    pooled = summary["do-no-harm (pooled)"]
    seeds = [tmp_path / "run" / f"seed_{k}" for k in (0, 1)]
    per_seed = [read_json(s / "summary.json") for s in seeds]
    curves = [s["rule_validation"]["curve"] for s in per_seed]
    assert pooled["margin"] == pick_margin(pool_curves(curves, [4, 4])) and set(pooled["seeds"]) == {"0", "1"}
    for seed, own in zip(seeds, per_seed, strict=True):
        assert records_rule_gains(seed / "evolution.csv")
        rows = read_csv(seed / "evolution.csv")
        on = [r for r in rows if r["group"] == "on"]
        assert all(r["rule_predicted_gain"] == "" or r["rule_predicted_gain"] is None
                   for r in rows if r["group"] not in ("on", RULE))  # fmt: skip
        # the rows' predicted gains at the seed's own margin make the decisions the rule made in the run
        again = rule_outcome(on, own["rule_validation"]["margin"], own["oracle"]["mean_gain"])
        # at margin 0 every winner with a positive predicted gain is used: here all are, so the outcome is the
        # regressor's own evolution
        assert all(float(r["rule_predicted_gain"]) > 0 for r in on if int(r["best_step"]) != 0)
        every = rule_outcome(on, 0.0, own["oracle"]["mean_gain"])
        assert every["moved"] == sum(int(r["best_step"]) != 0 for r in on) > 0
        for key in ("improved", "unchanged", "worse", "mean_gain", "mean_dice_evolved", "worst_drop"):
            assert again[key] == pytest.approx(own[RULE][key]), key
            assert every[key] == pytest.approx(own["on"][key]), key


def test_rows_made_before_the_rule_recorded_its_predictions_are_told_apart(tmp_path):
    (tmp_path / "old.csv").write_text("image_id,group,gain\nA,on,0.1\n")
    (tmp_path / "new.csv").write_text("image_id,group,gain,rule_predicted_gain\nA,on,0.1,0.2\n")
    assert not records_rule_gains(tmp_path / "old.csv") and records_rule_gains(tmp_path / "new.csv")
