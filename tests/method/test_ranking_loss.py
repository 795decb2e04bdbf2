"""The within-image loss of regressor training: what it measures, how batches are grouped for it, what it changes."""

import numpy as np
import pytest
import torch
from test_regressor_evolve import _disk_set

import sampot_lib.method.regressor_training as regressor_module
from sampot_lib import SampotError
from sampot_lib.experiment.config import STAGE_SETTINGS, ExperimentConfig
from sampot_lib.method.regressor_training import (
    fit_regressor,
    image_grouped_order,
    pair_mse,
    predict_dice,
    within_image_loss,
)


def _brute_force(scores: np.ndarray, dice: np.ndarray, codes: np.ndarray) -> float:
    terms = [((scores[i] - scores[j]) - (dice[i] - dice[j])) ** 2
             for i in range(len(scores)) for j in range(i + 1, len(scores)) if codes[i] == codes[j]]  # fmt: skip
    return float(np.mean(terms))


def test_within_image_loss_is_the_mean_error_of_score_differences_over_pairs_of_one_image():
    rng = np.random.default_rng(0)
    scores, dice = rng.uniform(size=9), rng.uniform(size=9)
    codes = np.array([0, 0, 1, 1, 1, 2, 0, 3, 1])
    got = within_image_loss(torch.tensor(scores), torch.tensor(dice), torch.tensor(codes))
    assert float(got) == pytest.approx(_brute_force(scores, dice, codes))
    assert pair_mse(scores - dice, codes) == pytest.approx(_brute_force(scores, dice, codes))


def test_within_image_loss_ignores_an_offset_per_image_that_the_mse_punishes():
    dice = np.array([0.9, 0.8, 0.95, 0.3, 0.4])
    codes = np.array([0, 0, 0, 1, 1])
    shifted = dice + np.array([0.2, 0.2, 0.2, -0.1, -0.1])  # right differences, wrong levels
    assert float(within_image_loss(torch.tensor(shifted), torch.tensor(dice), torch.tensor(codes))) == pytest.approx(0)
    swapped = dice[[1, 0, 2, 3, 4]]  # right levels on average, wrong order within image 0
    assert float(within_image_loss(torch.tensor(swapped), torch.tensor(dice), torch.tensor(codes))) > 0.005


def test_within_image_loss_without_pairs_is_zero_and_keeps_the_graph():
    scores = torch.tensor([0.5, 0.7], requires_grad=True)
    loss = within_image_loss(scores, torch.tensor([0.4, 0.9]), torch.tensor([0, 1]))
    loss.backward()
    assert float(loss.detach()) == 0 and scores.grad is not None


def test_grouped_order_is_a_permutation_in_runs_of_one_image():
    ids = np.array([f"i{k % 5}" for k in range(37)])  # 8 or 7 samples per image
    order = image_grouped_order(ids, 4, torch.Generator().manual_seed(3)).numpy()
    assert sorted(order.tolist()) == list(range(37))
    for image in set(ids):
        where = np.flatnonzero(ids[order] == image)
        blocks = 1 + int((np.diff(where) > 1).sum())
        assert blocks <= 2, (image, where)  # two runs of at most 4, wherever they landed
    np.testing.assert_array_equal(order, image_grouped_order(ids, 4, torch.Generator().manual_seed(3)).numpy())
    assert not np.array_equal(order, image_grouped_order(ids, 4, torch.Generator().manual_seed(4)).numpy())


def test_batches_hold_pairs_of_one_image():
    ids = np.repeat([f"i{k}" for k in range(20)], 16)
    order = image_grouped_order(ids, 8, torch.Generator().manual_seed(0)).numpy()
    _, counts = np.unique(ids[order[:32]], return_counts=True)
    assert (counts * (counts - 1) // 2).sum() >= 4 * 28  # four runs of 8 masks of one image
    _, shuffled = np.unique(ids[np.random.default_rng(0).permutation(len(ids))[:32]], return_counts=True)
    assert (shuffled * (shuffled - 1) // 2).sum() < 4 * 28  # what a plain shuffle would give


def test_training_adds_the_within_image_loss_over_masks_of_one_image(monkeypatch):
    train, val = _disk_set(6, seed=1), _disk_set(3, seed=2)
    calls = []

    def spy(scores, dice, codes):  # noqa: ANN001, ANN202
        calls.append((dice.detach().numpy().copy(), codes.numpy().copy()))
        return within_image_loss(scores, dice, codes)

    monkeypatch.setattr(regressor_module, "within_image_loss", spy)
    fit_regressor(train, val, epochs=2, batch_size=16, seed=0, progress=False, patience=0)
    assert calls == []  # rank_weight 0: the MSE alone
    fit_regressor(train, val, epochs=2, batch_size=16, seed=0, progress=False, patience=0, rank_weight=1.0)
    assert len(calls) == 2 * int(np.ceil(len(train) / 16))
    dice_of = {i: set(train.dice[train.image_id == i].tolist()) for i in set(train.image_id)}
    for dice, codes in calls:
        for code in set(codes.tolist()):
            values = set(dice[codes == code].tolist())
            assert any(values <= own for own in dice_of.values()), "a pair mixes masks of two images"
        assert len(set(codes.tolist())) < len(codes)  # the batch has pairs to compare


def test_the_epoch_kept_is_the_one_with_the_lowest_combined_validation_loss():
    train, val = _disk_set(6, seed=1), _disk_set(3, seed=2)
    model, history = fit_regressor(train, val, epochs=6, batch_size=16, seed=0, progress=False, patience=0,
                                   rank_weight=2.0)  # fmt: skip
    combined = [h["val_mse"] + 2.0 * h["val_pair_mse"] for h in history]
    err = predict_dice(model, val) - val.dice
    codes = np.unique(val.image_id, return_inverse=True)[1]
    assert float(np.mean(err**2)) + 2.0 * pair_mse(err, codes) == pytest.approx(min(combined), rel=1e-4)


@pytest.mark.parametrize("weight", [-0.5, float("nan"), float("inf"), True])
def test_a_bad_rank_weight_is_refused_by_name(weight):
    train = _disk_set(2, seed=1)
    with pytest.raises(SampotError, match="rank-weight"):
        fit_regressor(train, train, epochs=1, progress=False, rank_weight=weight)
    if not isinstance(weight, bool):
        with pytest.raises(SampotError, match="rank_weight"):
            ExperimentConfig(data="d", out="o", rank_weight=weight)


def test_the_rank_weight_is_a_setting_of_the_training_stage():
    assert "rank_weight" in STAGE_SETTINGS["train"]
    assert "rank_weight" not in STAGE_SETTINGS["evolve"]
