"""scripts/ship_regressor.py on a small finished run: the file, the record, the card and the numbers it measures."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from sampot_lib.cli.main import main
from sampot_lib.data.folder import FolderDataset
from sampot_lib.errors import SampotError
from sampot_lib.files import sha256_file
from sampot_lib.method.evolve import evolve_prompt, measure_prompt
from sampot_lib.method.metrics import dice
from sampot_lib.method.regressor import load_regressor
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.method.shipped import find_shipped, shipped_regressors
from sampot_lib.method.synth import centroid_prompt, user_prompt_for
from sampot_lib.models import load_model

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("ship_regressor", ROOT / "scripts" / "ship_regressor.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shipped_toy(phantoms, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run"
    assert main(["run", str(phantoms), "--out", str(run), "--epochs", "2", "--steps", "2"]) == 0
    assert "plotly" in (run / "summary.html").read_text()  # sampot run's summary page
    into = tmp_path_factory.mktemp("shipped")
    script = _script()
    record = script.ship(run, "toy_left_lung", None, 0.9, progress=False, into=into)
    return script, run, into, record


def test_the_script_writes_a_checked_file_a_record_and_a_card(shipped_toy):
    script, run, into, record = shipped_toy
    assert (
        sha256_file(into / record.filename) == record.sha256 and (into / record.filename).stat().st_size == record.size
    )
    registry = into / "registry.json"
    assert shipped_regressors(registry)["toy_left_lung"] == record
    assert find_shipped("sam_nano", "click", "left_lung", registry) == record
    _, meta = load_regressor(into / record.filename)
    assert meta["shipped"] == {"name": "toy_left_lung", "half_width": record.half_width, "level": 0.9,
                               "margin": record.margin}  # fmt: skip
    splits = json.loads((run / "splits.json").read_text())["splits"]
    assert record.training_data["train_ids"] == sorted(splits["train"])
    assert record.training_data["val_ids"] == sorted(splits["val"])
    card = (into / record.card).read_text()
    t = record.numbers["test"]
    for number in (f"{t['r']:.3f}", f"{t['mae']:.3f}", f"{t['coverage']:.1%}", f"{record.half_width:.3f}"):
        assert number in card
    assert "research" in card and "13 of" in card and "behind the heart" in card and "sampot calibrate" in card
    assert record.numbers["evolution_default"]["n"] == len(splits["test"]) and "do-no-harm rule at margin" in card


def test_the_half_width_comes_from_validation_and_the_coverage_from_test(shipped_toy, phantoms):
    script, run, _, record = shipped_toy
    regressor, meta = load_regressor(run / "regressor.pt")
    cfg = script.run_settings(run) | {"structure": "left_lung"}
    splits = json.loads((run / "splits.json").read_text())["splits"]

    dataset, model = FolderDataset(phantoms), load_model("sam_nano")
    val = script.model_masks(model, regressor, dataset, splits["val"], cfg, progress=False)
    mixed = val["draw"] <= 0  # the model prompts and each image's first user, as the training set mixes them
    res = np.abs(val["predicted"] - val["dice"])[mixed]
    k = math.ceil((len(res) + 1) * 0.9)
    assert record.half_width == pytest.approx(np.sort(res)[k - 1])
    assert record.numbers["conformal"]["n"] == len(res) == len(splits["val"]) * (1 + 3 + 3)  # bands, outside, user
    test = script.model_masks(model, regressor, dataset, splits["test"], cfg, progress=False)
    covered = (np.abs(test["predicted"] - test["dice"]) <= record.half_width)[test["draw"] <= 0]
    assert record.numbers["test"]["coverage"] == pytest.approx(covered.mean())
    n_users = len(splits["test"]) * script.USERS_PER_IMAGE
    assert record.numbers["test_user"]["n"] == record.numbers["test_user_binary"]["n"] == n_users
    assert 0 <= record.margin <= 1 and "validation images" in record.meta["margin_chosen_on"]


def test_a_run_without_a_regressor_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SampotError, match="no regressor.pt"):
        _script().ship(tmp_path, "x", None, 0.9, into=tmp_path / "out")


def test_the_rule_on_test_counts_what_it_kept_and_what_it_moved():
    script = _script()
    predicted, gains = np.array([0.3, 0.01, 0.2, 0.0]), np.array([0.05, -0.1, -0.02, 0.0])
    out = script.rule_on_test(predicted, gains, margin=0.1)
    assert out["moved"] == 2 and out["mean_gain"] == pytest.approx((0.05 - 0.02) / 4) and out["worst"] == -0.02
    assert out["improved"] == 1 and out["worse"] == 1 and out["worse_without_rule"] == 2
    assert out["mean_gain_without_rule"] == pytest.approx(-0.07 / 4)


def test_card_only_rewrites_the_card_from_the_record(shipped_toy):
    script, run, into, record = shipped_toy
    (into / record.card).write_text("old")
    again = script.rewrite_card("toy_left_lung", into)
    assert again.sha256 == record.sha256 and again.numbers["test"] == record.numbers["test"]
    assert f"{record.half_width:.3f}" in (into / record.card).read_text()


def test_the_interval_is_also_measured_on_the_winning_masks_of_evolution(shipped_toy, phantoms):
    script, run, into, record = shipped_toy
    regressor, _ = load_regressor(run / "regressor.pt")
    cfg = {"n_outside": 3, "box_jitter": 0.1} | script.run_settings(run) | {"structure": "left_lung"}
    splits = json.loads((run / "splits.json").read_text())["splits"]

    evolved = script.evolve_split(load_model("sam_nano"), regressor, FolderDataset(phantoms), splits["test"], cfg,
                                  record.blend_weight, "test")  # fmt: skip
    e, half = record.numbers["test_evolved"], record.half_width_of("evolved")
    users = script.USERS_PER_IMAGE
    assert e["n"] == users * len(splits["test"]) and users > 1
    assert e["coverage"] == pytest.approx(np.mean(np.abs(evolved["score"] - evolved["dice"]) <= half))
    assert e["mae"] == pytest.approx(np.mean(np.abs(evolved["score"] - evolved["dice"])))
    # the winner's score and true Dice, as an evolution with `sampot evolve`'s defaults gives them, for each image's
    # users in turn: the run's own (the centroid click) first, then clicks anywhere inside
    dataset, model = FolderDataset(phantoms), load_model("sam_nano")
    assert list(evolved["draw"]) == list(range(users)) * len(splits["test"])
    for i, (image_id, j) in enumerate(itertools.product(splits["test"], range(users))):
        truth = dataset.mask(image_id, "left_lung")
        seed = cfg["seed"] + script.USER_SEED_STEP * j
        res = evolve_prompt(
            model,
            regressor,
            dataset.image(image_id),
            user_prompt_for(seed, "click", 0.1, image_id, truth, anywhere_inside=j > 0),
            sharpness=cfg["sharpness"],
        )
        assert evolved["score"][i] == pytest.approx(res.best.score)
        assert res.best.score >= res.trajectory[0].score
        assert evolved["dice"][i] == pytest.approx(dice(res.best_mask, truth))
    # the rule's test outcome is that of each image's own user, as the run evolved it
    first = script.first_users(evolved)
    assert record.numbers["evolution_default"]["n"] == len(splits["test"])
    assert record.numbers["evolution_default"]["mean_gain_without_rule"] == pytest.approx(first["gain"].mean())
    assert "the winning masks" in (into / record.card).read_text()


def test_the_winners_half_width_comes_from_evolutions_of_the_validation_images(shipped_toy, phantoms, tmp_path):
    script, run, into, record = shipped_toy
    splits = json.loads((run / "splits.json").read_text())["splits"]
    n_evolved = len(splits["val"]) * script.USERS_PER_IMAGE
    assert math.ceil((n_evolved + 1) * 0.9) <= n_evolved  # each image's users make enough winners at 90%
    regressor, _ = load_regressor(run / "regressor.pt")
    cfg = {"n_outside": 3, "box_jitter": 0.1} | script.run_settings(run) | {"structure": "left_lung"}

    val = script.evolve_split(load_model("sam_nano"), regressor, FolderDataset(phantoms), splits["val"], cfg,
                              record.blend_weight, "validation")  # fmt: skip
    res = np.sort(np.abs(val["score"] - val["dice"]))
    conformal = record.numbers["conformal"]
    assert conformal["half_width_evolved"] == pytest.approx(res[math.ceil((n_evolved + 1) * 0.9) - 1])
    assert conformal["n_evolved"] == n_evolved and record.half_width_of("evolved") == conformal["half_width_evolved"]
    assert conformal["evolved_users_per_image"] == script.USERS_PER_IMAGE
    card = (into / record.card).read_text()
    assert f"± {conformal['half_width_evolved']:.3f}, split-conformal on the winners of the {n_evolved} " in card
    # too few winners for the level: the soft masks' half-width stands in
    assert math.ceil((n_evolved + 1) * 0.95) > n_evolved
    at_95 = script.ship(run, "toy_left_lung", None, 0.95, progress=False, into=tmp_path)
    assert "half_width_evolved" not in at_95.numbers["conformal"]
    assert at_95.half_width_of("evolved") == at_95.half_width


def test_box_users_are_several_per_image_the_first_the_runs_own(shipped_toy, phantoms):
    script, run, _, _ = shipped_toy
    regressor, _ = load_regressor(run / "regressor.pt")
    cfg = {"n_outside": 3, "box_jitter": 0.1, "seed": 3, "sharpness": 5.0, "prompt": "box", "structure": "left_lung"}

    dataset, model = FolderDataset(phantoms), load_model("sam_nano")
    ids = dataset.ids[:2]
    out = script.model_masks(model, regressor, dataset, ids, cfg, progress=False)
    users = out["users"]
    assert (
        users.sum() == 2 * script.USERS_PER_IMAGE and out["user"].sum() == 2 and (out["draw"][out["user"]] == 0).all()
    )
    assert np.isnan(out["binary"][~users]).all() and not np.isnan(out["binary"][users]).any()
    for image_id in ids:
        image, truth = dataset.image(image_id), dataset.mask(image_id, "left_lung")
        scorer, emb = RegressorScorer(regressor, image, 5.0), model.embed(image)
        rows = np.flatnonzero(users & (out["image_id"] == image_id))
        assert list(out["draw"][rows]) == list(range(script.USERS_PER_IMAGE))
        for j, row in enumerate(rows):  # user j is drawn with the run's seed + j steps
            prompt = user_prompt_for(3 + script.USER_SEED_STEP * j, "box", 0.1, image_id, truth)
            want = measure_prompt(model, emb, prompt, scorer, truth)
            assert out["predicted"][row] == pytest.approx(want["score"]) and out["dice"][row] == pytest.approx(
                want["dice"]
            )
        assert len({round(float(d), 9) for d in out["dice"][rows]}) > 1  # different boxes, different masks


def test_click_users_are_the_centroid_then_clicks_anywhere_inside(shipped_toy, phantoms):
    script, run, _, _ = shipped_toy
    regressor, _ = load_regressor(run / "regressor.pt")
    cfg = {"n_outside": 3, "box_jitter": 0.1, "seed": 3, "sharpness": 5.0, "prompt": "click", "structure": "left_lung"}

    dataset, model = FolderDataset(phantoms), load_model("sam_nano")
    image_id = dataset.ids[0]
    out = script.model_masks(model, regressor, dataset, [image_id], cfg, progress=False)
    image, truth = dataset.image(image_id), dataset.mask(image_id, "left_lung")
    scorer, emb = RegressorScorer(regressor, image, 5.0), model.embed(image)
    rows = np.flatnonzero(out["users"])
    assert list(out["draw"][rows]) == list(range(script.USERS_PER_IMAGE))
    for j, row in enumerate(rows):
        seed = 3 + script.USER_SEED_STEP * j
        prompt = user_prompt_for(seed, "click", 0.1, image_id, truth, anywhere_inside=j > 0)
        assert (prompt.points[0] == centroid_prompt(truth)) == (j == 0)
        assert out["dice"][row] == pytest.approx(measure_prompt(model, emb, prompt, scorer, truth)["dice"])


def test_the_users_half_widths_come_from_every_user_and_the_mix_from_the_first():
    script = _script()
    # 20 model prompts (residual 0.3), then 20 images x 2 users: the first with residual 0.1, the second 0.02
    draw = np.array([-1] * 20 + [0, 1] * 20)
    predicted = np.where(draw == -1, 0.6, np.where(draw == 0, 0.4, 0.32))
    binary = np.where(draw == -1, np.nan, np.where(draw == 0, 0.35, 0.33))
    val = {"predicted": predicted, "dice": np.full(60, 0.3), "binary": binary, "draw": draw, "users": draw >= 0}
    half, apart = script.half_widths(val, 0.5)
    # the mix: 20 residuals of 0.3 and 20 of 0.1 (second users left out); the 21st smallest is 0.3
    assert half == pytest.approx(0.3)
    # the users: 20 of 0.1 and 20 of 0.02, the 21st smallest is 0.1; binary: 0.05 and 0.03
    assert apart["half_width_user"] == pytest.approx(0.1) and apart["half_width_binary"] == pytest.approx(0.05)
    assert (apart["n_user"], apart["n_binary"], apart["users_per_image"]) == (40, 40, 2)
    assert script.half_widths({k: v[:22] for k, v in val.items()}, 0.9)[1] == {}  # 2 users: too few for 90%


def test_the_margin_is_chosen_on_every_seeds_validation_curve_pooled(shipped_toy, tmp_path):

    script, run, _, _ = shipped_toy
    seeds = tmp_path / "run"
    shutil.copytree(run, seeds / "seed_0")
    curves = {0: [{"margin": 0.0, "mean_gain": 0.05, "worst": 0.0, "harmed": 0, "moved": 3},
                  {"margin": 0.1, "mean_gain": 0.02, "worst": 0.0, "harmed": 0, "moved": 1},
                  {"margin": 1.0, "mean_gain": 0.0, "worst": 0.0, "harmed": 0, "moved": 0}],
              1: [{"margin": 0.0, "mean_gain": 0.06, "worst": -0.1, "harmed": 1, "moved": 3},
                  {"margin": 0.1, "mean_gain": 0.03, "worst": 0.0, "harmed": 0, "moved": 1},
                  {"margin": 1.0, "mean_gain": 0.0, "worst": 0.0, "harmed": 0, "moved": 0}]}  # fmt: skip
    for k, curve in curves.items():  # seed 0 alone would choose 0; pooled with seed 1, 0 harms an image
        folder = seeds / f"seed_{k}"
        folder.mkdir(exist_ok=True)
        summary = json.loads((run / "summary.json").read_text()) if k == 0 else {}
        summary["rule_validation"] = {"margin": 0.0, "curve": curve, "n": 4}
        (folder / "summary.json").write_text(json.dumps(summary))
    record = script.ship(seeds / "seed_0", "toy_left_lung", None, 0.9, progress=False, into=tmp_path / "into")
    assert (
        record.margin == 0.1
        and record.meta["margin_chosen_on"] == "the run's 8 validation evolutions (seeds 0, 1), pooled"
    )
    assert record.numbers["evolution_default"]["margin"] == 0.1
