"""The do-no-harm rule and the selection metrics: what keeps the user's prompt, how the margin is chosen on
validation, and the numbers a run reports about how its score picked the winners (recomputed from its own files)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import spearmanr

from sampot_lib import SampotError
from sampot_lib.defaults import HARM_TOLERANCE, UNCHANGED_TOL
from sampot_lib.experiment import evolution, stages
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.runner import run_experiment
from sampot_lib.experiment.summary import selection_metrics
from sampot_lib.method.evolve import EvolutionResult, EvolutionStep
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.selection import DoNoHarm, choose_margin, margin_curve, pick_margin, pool_curves, rule_gains


def _result(scores, confidences=None, best=None) -> EvolutionResult:
    confidences = confidences or [0.5] * len(scores)
    pairs = enumerate(zip(scores, confidences, strict=True))
    steps = [EvolutionStep(step=k, x=10.0 + k, y=10.0, score=s, confidence=c, area=0.1, overlap=1.0, allowed=True,
                           coords=(10.0 + k, 10.0)) for k, (s, c) in pairs]  # fmt: skip
    best = int(np.argmax(scores)) if best is None else best
    first, last = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    return EvolutionResult(Prompt.click(10.0, 10.0), steps, best, first, last, {"steps": len(scores) - 1})


def test_the_rule_keeps_the_users_prompt_unless_the_predicted_gain_clears_the_margin():
    res = _result([0.5, 0.5625, 0.625])  # winner at step 2, predicted gain 0.125 (exact in binary)
    moved = DoNoHarm(0.1).apply(res)
    assert moved.best_step == 2 and moved.best_mask is res.best_mask and not moved.settings["rule"]["kept_user_prompt"]
    kept = DoNoHarm(0.125).apply(res)  # a gain equal to the margin does not clear it
    assert kept.best_step == 0 and kept.best_mask is res.initial_mask and kept.best.score == 0.5
    rule = kept.settings["rule"]
    assert rule["kept_user_prompt"] and "does not clear the margin 0.125" in rule["reason"]
    assert res.best_step == 2  # the evolution itself is left alone


def test_the_blend_predicts_with_both_scores():
    # the regressor sees +0.10, the IoU head -0.10: with weight 0.5 the blend predicts no gain
    res = _result([0.60, 0.70], confidences=[0.80, 0.70])
    assert DoNoHarm(0.0, weight=0.5).predicted_gain(res) == pytest.approx(0.0)
    assert DoNoHarm(0.0, weight=0.5).keeps_user_prompt(res)
    assert DoNoHarm(0.0, weight=1.0).predicted_gain(res) == pytest.approx(0.10)
    assert not DoNoHarm(0.0, weight=1.0).keeps_user_prompt(res)


@pytest.mark.parametrize("bad", [-0.01, 1.5, float("nan"), True, "0.1"])
def test_a_margin_outside_its_range_is_refused(bad):
    with pytest.raises(SampotError, match="margin must be a predicted Dice gain in"):
        DoNoHarm(bad)


@pytest.mark.parametrize("margin", [np.float32(0.25), np.float64(0.25), np.int64(0), 0.25])
def test_a_numpy_margin_works_as_the_number_it_holds(margin):
    rule = DoNoHarm(margin, weight=np.float32(1.0))  # the blend of weight 1 is the regressor's score alone
    assert rule.margin == float(margin) and type(rule.margin) is float and rule.weight == 1.0
    res = _result([0.5, 0.875])  # a predicted gain of 0.375 clears 0.25 and 0
    assert not rule.keeps_user_prompt(res)


@pytest.mark.parametrize(("predicted", "true"), [([0.3, 0.1], [np.nan, -0.5]), ([np.inf, 0.1], [0.1, -0.5]),
                                                 ([0.3, 0.1], [0.1])])  # fmt: skip
def test_gains_that_are_not_finite_or_do_not_pair_up_are_refused(predicted, true):
    # a NaN true gain must not count as an image the margin harms not at all
    for call in (lambda: choose_margin(predicted, true), lambda: rule_gains(predicted, true, 0.0)):
        with pytest.raises(SampotError, match="do-no-harm rule"):
            call()


@pytest.mark.parametrize("margins", [(-1.0, 1.0), (0.0, 1.5), (0.0, float("nan")), ()])
def test_margins_to_try_outside_the_rules_range_are_refused(margins):
    with pytest.raises(SampotError, match=r"margins to try must be predicted Dice gains in \[0, 1\]"):
        choose_margin([0.3, 0.1], [0.2, -0.5], margins=margins)


def test_the_margin_is_the_best_one_that_harms_no_image():
    predicted = np.array([0.01, 0.03, 0.06, 0.10, 0.12])
    true = np.array([-0.05, 0.02, -0.01, 0.08, 0.04])  # the image predicted +0.01 would lose 0.05: harm
    choice = choose_margin(predicted, true, margins=(0.0, 0.02, 0.05, 0.09, 1.0))
    curve = {row["margin"]: row for row in choice["curve"]}
    assert curve[0.0]["harmed"] == 1 and curve[0.0]["worst"] == pytest.approx(-0.05)
    # 0.02 moves images 2-5 (gains .02 -.01 .08 .04): mean 0.13 / 5; 0.05 moves 3-5: 0.11 / 5
    assert curve[0.02]["mean_gain"] == pytest.approx(0.13 / 5) and curve[0.02]["harmed"] == 0
    assert curve[0.05]["mean_gain"] == pytest.approx(0.11 / 5)
    assert choice["margin"] == 0.02
    assert curve[1.0]["moved"] == 0 and curve[1.0]["mean_gain"] == 0.0


def test_the_curve_keeps_an_image_whose_predicted_gain_equals_the_margin_as_the_rule_does():
    # the rule moves only a gain that clears the margin: the curve must count the same images moved
    predicted, true = np.array([0.125, 0.25]), np.array([-0.5, 0.25])
    row = margin_curve(predicted, true, margins=(0.125,))[0]
    assert row["moved"] == 1 and row["worst"] == 0.0 and row["mean_gain"] == pytest.approx(0.125)
    res = _result([0.5, 0.625])  # a predicted gain of 0.125, exact in binary
    assert DoNoHarm(0.125).keeps_user_prompt(res)


def test_on_a_tie_of_mean_gain_the_smaller_margin_is_picked():
    # margins 0.05 and 0.1 move the same image (predicted 0.2): the same gain, so the smaller margin
    choice = choose_margin(np.array([0.2, 0.01]), np.array([0.1, 0.0]), margins=(0.05, 0.1, 1.0))
    assert choice["margin"] == 0.05


def test_when_every_margin_harms_the_rule_never_moves():
    choice = choose_margin(np.array([0.2, 0.3]), np.array([-0.1, -0.2]), margins=(0.0, 0.1, 1.0))
    assert choice["margin"] == 1.0
    assert margin_curve(np.array([0.2]), np.array([-HARM_TOLERANCE / 2]), margins=(0.0,))[0]["harmed"] == 0


def test_pooled_curves_are_the_curve_of_every_evolution_together():
    margins = (0.0, 0.05, 0.1, 1.0)
    a_pred, a_true = np.array([0.02, 0.08, 0.2]), np.array([0.01, 0.05, 0.1])  # safe everywhere: margin 0 on its own
    b_pred, b_true = np.array([0.06, 0.3]), np.array([-0.04, 0.02])  # harms at margins below 0.06
    a, b = margin_curve(a_pred, a_true, margins), margin_curve(b_pred, b_true, margins)
    together = margin_curve(np.concatenate([a_pred, b_pred]), np.concatenate([a_true, b_true]), margins)
    pooled = pool_curves([a, b], [3, 2])
    for row, want in zip(pooled, together, strict=True):
        assert row["mean_gain"] == pytest.approx(want["mean_gain"])
        keys = ("margin", "worst", "harmed", "moved")
        assert [row[k] for k in keys] == [want[k] for k in keys]
    concatenated = choose_margin(np.concatenate([a_pred, b_pred]), np.concatenate([a_true, b_true]), margins)
    assert pick_margin(a) == 0.0 and pick_margin(pooled) == 0.1 == concatenated["margin"]


def test_pooling_weights_each_curve_by_its_evolutions():
    one = [{"margin": 0.0, "mean_gain": 0.1, "worst": 0.0, "harmed": 0, "moved": 1}]
    two = [{"margin": 0.0, "mean_gain": 0.4, "worst": -0.01, "harmed": 0, "moved": 3}]
    assert pool_curves([one, two], [1, 3])[0]["mean_gain"] == pytest.approx((0.1 + 3 * 0.4) / 4)


@pytest.mark.parametrize(
    ("curves", "sizes", "message"),
    [([], [], "one positive whole number"), ([[{"margin": 0.0}]], [0], "one positive whole number"),
     ([[{"margin": 0.0}]], [float("nan")], "one positive whole number"),
     ([[{"margin": 0.0}]], [2.5], "one positive whole number"),
     ([[{"margin": 0.0}], [{"margin": 0.1}]], [5, 5], "different margins")],
)  # fmt: skip
def test_curves_that_cannot_be_pooled_are_refused(curves, sizes, message):
    with pytest.raises(SampotError, match=message):
        pool_curves(curves, sizes)


def test_a_curve_where_every_margin_harms_has_no_margin_to_pick():
    with pytest.raises(SampotError, match="every margin of the curve harms"):
        pick_margin([{"margin": 0.0, "mean_gain": 0.1, "worst": -0.5, "harmed": 1, "moved": 1}])


def _traj(scores, dices, allowed=None):
    allowed = allowed or [True] * len(scores)
    return {"trajectory": [{"step": k, "score": s, "dice": d, "allowed": a}
                           for k, (s, d, a) in enumerate(zip(scores, dices, allowed, strict=True))]}  # fmt: skip


def test_selection_metrics_on_hand_checked_numbers():
    rows = [
        {"image_id": "a", "group": "on", "gain": 0.10, "score0": 0.5, "score": 0.7, "best_step": 2},
        {"image_id": "b", "group": "on", "gain": -0.04, "score0": 0.5, "score": 0.6, "best_step": 1},
        {"image_id": "c", "group": "on", "gain": 0.0, "score0": 0.5, "score": 0.5, "best_step": 0},
    ]
    trajectories = {
        "a/on": _traj([0.5, 0.6, 0.7], [0.80, 0.85, 0.90]),  # ranks agree: rho 1, regret 0
        "b/on": _traj([0.5, 0.6, 0.55], [0.80, 0.76, 0.90], allowed=[True, True, False]),  # rho -0.5
        "c/on": _traj([0.5, 0.4, 0.45], [0.70, 0.75, 0.72]),  # regret 0.05: step 1 was better and not chosen
    }
    m = selection_metrics(rows, trajectories)
    rho_b = spearmanr([0.5, 0.6, 0.55], [0.80, 0.76, 0.90]).statistic
    rho_c = spearmanr([0.5, 0.4, 0.45], [0.70, 0.75, 0.72]).statistic
    assert m["median_within_image_spearman"] == pytest.approx(np.median([1.0, rho_b, rho_c]))
    # b's best allowed step is step 0 (0.80; step 2 is not allowed), it chose step 1 (0.76)
    assert m["median_top1_regret"] == pytest.approx(np.median([0.0, 0.04, 0.05]))
    assert m["p90_top1_regret"] == pytest.approx(np.percentile([0.0, 0.04, 0.05], 90))
    assert m["gamed"] == pytest.approx(1 / 3)  # b: predicted +0.1, true -0.04
    # a winner that scored the same as the user's prompt predicted no gain: its loss is no gaming of the score
    tie = {"image_id": "d", "group": "on", "gain": -0.03, "score0": 0.5, "score": 0.5, "best_step": 1}
    assert selection_metrics([rows[0], tie], {})["gamed"] == 0.0
    assert m["worst_drop"] == pytest.approx(-0.04)
    # an image whose prompts all scored the same has no Spearman: it is left out, not counted as 0
    flat = {"image_id": "e", "group": "on", "gain": 0.0, "score0": 0.5, "score": 0.5, "best_step": 0}
    m_flat = selection_metrics(rows + [flat], trajectories | {"e/on": _traj([0.5, 0.5, 0.5], [0.70, 0.75, 0.72])})
    assert m_flat["n_spearman"] == m["n_spearman"] == 3
    assert m_flat["median_within_image_spearman"] == pytest.approx(m["median_within_image_spearman"])
    no_truth = {k: {"trajectory": [s | {"dice": None} for s in v["trajectory"]]} for k, v in trajectories.items()}
    assert selection_metrics(rows, no_truth)["median_top1_regret"] is None


def _read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_run_reports_the_rule_and_every_summary_figure_comes_from_its_files(
    phantoms, tiny_checkpoint, tmp_path, monkeypatch
):
    config = ExperimentConfig(
        data=str(phantoms), out=str(tmp_path / "run"), model="tiny", checkpoint=str(tiny_checkpoint), max_images=4,
        epochs=2, steps=3, n_synthetic=2, n_outside=1, regressor_size=32, split_fractions=[4, 4, 4],
        scorers=["oracle", "do-no-harm"],
    )  # fmt: skip
    assert config.scorers == ["regressor", "oracle", "do-no-harm"]  # the rule picks among the regressor's steps
    chosen_from = []
    real_choose = evolution.choose_margin
    monkeypatch.setattr(evolution, "choose_margin", lambda p, t: chosen_from.append((p, t)) or real_choose(p, t))
    evolved, validation_parts = [], []
    real_evolve = evolution._evolve_image

    def evolve_one(image_id, **kw):
        evolved.append((image_id, kw.get("rule") is None))
        part = real_evolve(image_id, **kw)
        if kw.get("rule") is None:
            validation_parts.append(part)
        return part

    monkeypatch.setattr(evolution, "_evolve_image", evolve_one)
    # a blend weight strictly inside (0, 1): the tiny model's IoU head is so poor that the weight chosen on its
    # validation masks is 1, and a rule that forgot the IoU head would then predict the same gains
    monkeypatch.setattr(stages, "blend_weight", lambda regressor, val: 0.6)
    summary = run_experiment(config, progress=False)
    out = tmp_path / "run"
    rows = _read_rows(out / "evolution.csv")
    trajectories = json.loads((out / "trajectories.json").read_text())
    splits = json.loads((out / "splits.json").read_text())["splits"]
    test_ids = splits["test"][:4]
    assert sorted({r["image_id"] for r in rows}) == sorted(test_ids)  # never a validation image
    assert summary["rule_validation"]["chosen_on"] == f"{len(splits['val'][:4])} validation images"
    # the margin was chosen from the validation images' evolutions only, before any test image was evolved with it
    val_ids = splits["val"][:4]
    assert [i for i, no_rule in evolved if no_rule] == val_ids
    assert [i for i, no_rule in evolved if not no_rule] == test_ids
    assert len(chosen_from) == 1 and len(chosen_from[0][1]) == len(val_ids)
    margin = summary["rule_validation"]["margin"]
    # each validation image's predicted gain, recomputed from its evolution: the blend of the winner's score and
    # confidence minus the user's prompt's, with the weight the test images' rule records
    weight = trajectories[f"{test_ids[0]}/do-no-harm"]["settings"]["rule"]["weight"]
    assert weight == 0.6
    blend = lambda s: weight * s["score"] + (1 - weight) * s["confidence"]  # noqa: E731
    predicted, true = [], []
    for part in validation_parts:
        steps = next(iter(part["trajectories"].values()))
        predicted.append(blend(steps["best"]) - blend(steps["initial"]))
        true.append(float(part["rows"][0]["gain"]))
    np.testing.assert_allclose(chosen_from[0][0], predicted, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(chosen_from[0][1], true, rtol=1e-6, atol=1e-9)
    on = {r["image_id"]: r for r in rows if r["group"] == "on"}
    for r in (r for r in rows if r["group"] == "do-no-harm"):
        record = trajectories[f"{r['image_id']}/do-no-harm"]["settings"]["rule"]
        assert record["margin"] == margin
        if record["kept_user_prompt"]:
            assert float(r["gain"]) == 0.0 and int(r["best_step"]) == 0
        else:
            assert r["dice"] == on[r["image_id"]]["dice"] and record["predicted_gain"] > margin
    for group in ("on", "oracle", "do-no-harm"):
        mine = [r for r in rows if r["group"] == group]
        gains = np.array([float(r["gain"]) for r in mine])
        s = summary[group]
        assert s["n"] == len(mine) == 4
        assert s["improved"] == int((gains > UNCHANGED_TOL).sum()) and s["worse"] == int((gains < -UNCHANGED_TOL).sum())
        assert s["mean_gain"] == pytest.approx(gains.mean())
        assert s["mean_dice_evolved"] == pytest.approx(np.mean([float(r["dice"]) for r in mine]))
        assert s["worst_drop"] == pytest.approx(gains.min())
        oracle = np.mean([float(r["gain"]) for r in rows if r["group"] == "oracle"])
        assert s["share_of_oracle_gain"] == (pytest.approx(gains.mean() / oracle) if oracle > 0 else None)
        regrets = []
        for r in mine:
            steps = trajectories[f"{r['image_id']}/{group}"]["trajectory"]
            assert all(st["dice"] is not None for st in steps)  # the truth of every visited prompt is recorded
            chosen = steps[int(r["best_step"])]["dice"]
            regrets.append(max(st["dice"] for st in steps if st["allowed"]) - chosen)
        assert s["median_top1_regret"] == pytest.approx(np.median(regrets))


def test_the_rule_needs_a_validation_split_or_a_margin(phantoms, tiny_checkpoint, tmp_path):
    common = dict(data=str(phantoms), model="tiny", checkpoint=str(tiny_checkpoint), max_images=4, epochs=2, steps=2,
                  n_synthetic=2, n_outside=1, regressor_size=32, split_fractions=[4, 4, 4])  # fmt: skip
    config = ExperimentConfig(out=str(tmp_path / "a"), **common)
    run_experiment(config, progress=False)  # a regressor to reuse
    from sampot_lib.experiment.evolution import evolve_stage

    # its training images land in this split's test part: a leak, allowed here on purpose (the margin is the point)
    no_val = replace(config, out=str(tmp_path / "b"), regressor=str(tmp_path / "a" / "regressor.pt"),
                     split_fractions=[4.0, 0.0, 8.0], scorers=["regressor", "do-no-harm"],
                     allow_foreign_regressor=True)  # fmt: skip
    with pytest.raises(SampotError, match="validation split, which is empty here: give --margin"):
        evolve_stage(no_val, progress=False)
    summary = evolve_stage(replace(no_val, margin=0.0), progress=False)
    assert summary["rule_validation"] == {"margin": 0.0, "chosen_on": "given (--margin)"}
    with pytest.raises(SampotError, match="'margin' must be a predicted Dice gain in"):
        replace(no_val, margin=2.0)


def test_the_blend_weight_and_the_regressors_best_epoch_are_chosen_on_validation_images_only(
    phantoms, tiny_checkpoint, tmp_path, monkeypatch
):
    from sampot_lib.experiment import stages
    from sampot_lib.method import regressor as regressor_module
    from sampot_lib.method import scoring

    config = ExperimentConfig(
        data=str(phantoms), out=str(tmp_path / "run"), model="tiny", checkpoint=str(tiny_checkpoint), max_images=4,
        epochs=3, steps=2, n_synthetic=2, n_outside=1, regressor_size=32, split_fractions=[4, 4, 4],
        scorers=["blend"],
    )  # fmt: skip
    weights, fits = [], []
    real_choose, real_fit = stages.choose_blend_weight, stages.fit_regressor

    def choose(scores, confidences, dice):
        weights.append((np.asarray(dice).copy(), real_choose(scores, confidences, dice)))
        return weights[-1][1]

    monkeypatch.setattr(stages, "choose_blend_weight", choose)
    used = []
    real_init = scoring.BlendScorer.__init__
    monkeypatch.setattr(scoring.BlendScorer, "__init__", lambda self, reg, w: used.append(w) or real_init(self, reg, w))
    monkeypatch.setattr(stages, "fit_regressor", lambda train, val, **kw: fits.append((train, val)) or real_fit(
        train, val, **kw))  # fmt: skip
    summary = run_experiment(config, progress=False)
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())["splits"]
    val_ids, train_ids = set(splits["val"][:4]), set(splits["train"][:4])
    ((train, val),) = fits
    assert set(train.image_id) == train_ids and set(val.image_id) == val_ids  # the best epoch: on val's loss
    ((dice, weight),) = weights
    own = val.kind != "synthetic"
    np.testing.assert_array_equal(dice, val.dice[own])  # the validation images' model masks, nothing else
    assert summary["regressor"]["blend_weight"] == weight
    meta = regressor_module.load_regressor(tmp_path / "run" / "regressor.pt")[1]
    assert meta["blend_weight"] == weight and set(meta["val_masks"]) == val_ids
    assert used and set(used) == {weight}  # what the blend scores the test images with is that weight
