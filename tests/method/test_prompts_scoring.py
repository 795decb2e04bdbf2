"""Prompts, their safeguards, simulated boxes, scorers and the numbers results are judged by.

Properties (hypothesis) where a rule must hold for every input; hand-checked numbers where a formula must be exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import disk_image, regressor_with_statistics
from hypothesis import given, settings
from hypothesis import strategies as st

from sampot_lib import SampotError
from sampot_lib.experiment.summary import share_of_oracle_gain, summarise
from sampot_lib.method.metrics import dice, iou, pearson_r
from sampot_lib.method.prompts import Prompt, Safeguards, prompt_of, prompt_tensors
from sampot_lib.method.regressor import to_input
from sampot_lib.method.scoring import (
    BlendScorer,
    ConfidenceScorer,
    OracleScorer,
    RegressorScorer,
    choose_blend_weight,
    soft_mask,
)
from sampot_lib.method.synth import box_from_mask, jittered_box

EPS = 1e-6
PROPERTY = settings(max_examples=150, deadline=None)  # deadline off: the 2 shared cores make timings noisy


# -- Prompt ----------------------------------------------------------------------------------------------------------


def test_coords_lay_out_box_first_then_points_and_round_trip():
    p = Prompt.from_box((1, 2, 30, 40), points=((5, 6), (7, 8)), labels=(1, 0))
    np.testing.assert_array_equal(p.coords(), [1, 2, 30, 40, 5, 6, 7, 8])
    moved = p.with_coords(np.arange(8.0) + 0.5)
    assert moved.box == (0.5, 1.5, 2.5, 3.5) and moved.points == ((4.5, 5.5), (6.5, 7.5))
    assert moved.labels == (1, 0) and moved.kind == "box+clicks"
    assert p.with_coords(torch.tensor(p.coords())) == p
    for prompt in (Prompt.click(3, 4), Prompt.from_box((1, 2, 3, 4)), Prompt(((1, 2), (3, 4)), (1, 0)), p):
        assert prompt.with_coords(prompt.coords()) == prompt
        assert Prompt.from_dict(prompt.to_dict()) == prompt
    with pytest.raises(SampotError, match="has 8 coordinates, got 2"):
        p.with_coords([1.0, 2.0])


def test_prompt_tensors_keep_x_then_y():
    p = Prompt.from_box((1, 2, 30, 40), points=((5, 6),))
    points, labels, boxes = prompt_tensors(p, torch.tensor([[1.0, 2, 30, 40, 5, 6], [11, 12, 13, 14, 15, 16]]))
    assert points.tolist() == [[[5, 6]], [[15, 16]]]  # (x, y) per point, x first
    assert boxes.tolist() == [[1, 2, 30, 40], [11, 12, 13, 14]]
    assert labels.tolist() == [[1], [1]]
    points, labels, boxes = prompt_tensors(Prompt.click(7, 9), torch.tensor([7.0, 9.0]))
    assert points.tolist() == [[[7, 9]]] and boxes is None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Prompt.from_box((10, 10, 10, 20)), "out of order"),  # x1 == x0
        (lambda: Prompt.from_box((20, 10, 10, 20)), "out of order"),  # x1 < x0
        (lambda: Prompt.from_box((10, 20, 30, 5)), "out of order"),  # y1 < y0
        (lambda: Prompt.from_box((10, math.nan, 30, 20)), "not a finite number"),
        (lambda: Prompt.click(math.inf, 3), "not a finite number"),
        (lambda: Prompt(points=((math.nan, 2),), labels=(1,)), "not a finite number"),
        (lambda: Prompt.click(5, 5).with_coords([5.0, math.nan]), "not a finite number"),
        (lambda: Prompt.from_dict({"box": [30, 10, 10, 20]}), "out of order"),
        (lambda: Prompt.click("a", 1), r"clicks are \(x, y\) pairs of numbers .*could not convert"),
        (lambda: Prompt(points=((1, 2, 3),), labels=(1,)), r"clicks are \(x, y\) pairs of numbers"),
        (lambda: Prompt(box="abcd"), "box four numbers"),
        (lambda: Prompt(box=5), "a box has four numbers"),
        (lambda: Prompt(points=((1, 2),), labels=(0.5,)), r"labels must be 1 \(foreground\) or 0"),  # not int(0.5)
    ],
)
def test_a_prompt_that_is_no_prompt_is_refused_when_made(make, message):
    with pytest.raises(SampotError, match=message):
        make()


@pytest.mark.parametrize(
    "prompt, message",
    [
        (Prompt.from_box((-1, 10, 30, 20)), "reaches outside the 64x48 image"),
        (Prompt.from_box((10, 10, 64, 20)), "reaches outside"),  # x1 = W
        (Prompt.from_box((10, 10, 30, 48)), "reaches outside"),  # y1 = H
        (Prompt.click(10, 48), "outside the 64x48 image"),  # y is the row: 48 rows, 0..47
        (Prompt.click(-0.5, 3), "outside the 64x48 image"),
    ],
)
def test_check_refuses_prompts_outside_the_image(prompt, message):
    with pytest.raises(SampotError, match=message):
        prompt.check((48, 64))


def test_check_accepts_prompts_on_the_border_and_checks_clicks_against_the_mask():
    Prompt.from_box((0, 0, 63, 47), points=((63, 47),)).check((48, 64))  # H = 48 rows, W = 64 columns
    mask = np.zeros((48, 64), bool)
    mask[5:10, 40:50] = True  # rows 5..9, columns 40..49
    Prompt.click(45, 7).check((48, 64), mask)
    with pytest.raises(SampotError, match="outside the structure"):
        Prompt.click(7, 45).check((64, 64), np.pad(mask, ((0, 16), (0, 0))))


# -- Safeguards.project -----------------------------------------------------------------------------------------------


@st.composite
def image_and_points(draw, n_points: int = 1):
    h, w = draw(st.integers(32, 400)), draw(st.integers(32, 400))
    start = [(draw(st.floats(0, w - 1)), draw(st.floats(0, h - 1))) for _ in range(n_points)]
    big = 2.0 * max(h, w)
    proposal = [(draw(st.floats(-big, big)), draw(st.floats(-big, big))) for _ in range(n_points)]
    return (h, w), start, proposal


@PROPERTY
@given(image_and_points(n_points=2), st.floats(0.01, 0.6))
def test_projection_keeps_every_click_in_its_radius_and_in_the_image(case, radius):
    (h, w), start, proposal = case
    prompt = Prompt(tuple(start), (1, 0))
    guards = Safeguards(trust_radius=radius)
    s = torch.tensor(prompt.coords())
    c = guards.project(torch.tensor(proposal, dtype=torch.float64).reshape(-1), s, prompt, (h, w))
    r = radius * max(h, w)
    for (x, y), (x0, y0), (px, py) in zip(c.reshape(-1, 2).tolist(), start, proposal, strict=True):
        assert math.hypot(x - x0, y - y0) <= r + 1e-6
        assert 0 <= x <= w - 1 and 0 <= y <= h - 1
        # A proposal the limits allow is left where it is.
        if math.hypot(px - x0, py - y0) <= r and 0 <= px <= w - 1 and 0 <= py <= h - 1:
            assert (x, y) == pytest.approx((px, py), abs=1e-9)


@st.composite
def image_and_boxes(draw):
    h, w = draw(st.integers(32, 400)), draw(st.integers(32, 400))
    m = max(Safeguards().min_box_size * max(h, w), 1.0)  # the user's box is at least the minimum size
    x0 = draw(st.floats(0, w - 1 - m))
    y0 = draw(st.floats(0, h - 1 - m))
    start = (x0, y0, draw(st.floats(x0 + m, w - 1)), draw(st.floats(y0 + m, h - 1)))
    big = 2.0 * max(h, w)
    proposal = tuple(draw(st.floats(-big, big)) for _ in range(4))
    return (h, w), start, proposal


@PROPERTY
@given(image_and_boxes(), st.floats(0.01, 0.6))
def test_projection_keeps_a_box_ordered_sized_inside_and_each_edge_in_its_radius(case, radius):
    (h, w), start, proposal = case
    prompt = Prompt.from_box(start)
    guards = Safeguards(trust_radius=radius)
    c = guards.project(torch.tensor(proposal, dtype=torch.float64), torch.tensor(prompt.coords()), prompt, (h, w))
    x0, y0, x1, y1 = c.tolist()
    r, m = radius * max(h, w), max(guards.min_box_size * max(h, w), 1.0)
    assert all(abs(e - s) <= r + 1e-6 for e, s in zip(c.tolist(), start, strict=True)), (c.tolist(), start, r)
    assert x1 - x0 >= m - 1e-6 and y1 - y0 >= m - 1e-6
    assert 0 <= x0 and 0 <= y0 and x1 <= w - 1 + 1e-9 and y1 <= h - 1 + 1e-9
    Prompt.from_box((x0, y0, x1, y1)).check((h, w))
    px0, py0, px1, py1 = proposal
    allowed = (
        all(abs(e - s) <= r for e, s in zip(proposal, start, strict=True))
        and px1 - px0 >= m and py1 - py0 >= m and 0 <= px0 and 0 <= py0 and px1 <= w - 1 and py1 <= h - 1
    )  # fmt: skip
    if allowed:
        assert c.tolist() == pytest.approx(list(proposal), abs=1e-9)


def test_the_trust_radius_is_a_share_of_the_images_longer_side():
    guards = Safeguards(trust_radius=0.1, min_overlap=None, max_area_ratio=None)
    click = Prompt.click(150, 50)
    far = guards.project(torch.tensor([250.0, 50.0]), torch.tensor(click.coords()), click, (100, 300))
    assert far.tolist() == pytest.approx([180.0, 50.0])  # 0.1 x 300 px along the way to the proposal
    box = Prompt.from_box((100, 20, 200, 80))
    moved = guards.project(torch.tensor([100.0, 20, 260, 80]), torch.tensor(box.coords()), box, (100, 300))
    assert moved.tolist() == pytest.approx([100.0, 20, 230, 80])  # an edge moves at most 0.1 x 300 px


def test_projection_orders_an_inside_out_box_around_its_middle():
    prompt = Prompt.from_box((40, 40, 60, 60))
    guards = Safeguards(trust_radius=None, min_box_size=0.1)  # 10 px on a 100 px image
    c = guards.project(torch.tensor([55.0, 50, 45, 50]), torch.tensor(prompt.coords()), prompt, (100, 100))
    assert c.tolist() == pytest.approx([45, 45, 55, 55])  # the minimum size (10 px) around its middle, both ways


def test_safeguards_off_leaves_only_the_image_border():
    prompt = Prompt.click(10, 10)
    guards = Safeguards.off()
    s = torch.tensor(prompt.coords())
    assert guards.project(torch.tensor([90.0, 5.0]), s, prompt, (50, 100)).tolist() == [90.0, 5.0]
    assert guards.project(torch.tensor([120.0, -5.0]), s, prompt, (50, 100)).tolist() == [99.0, 0.0]


# -- Safeguards.mask_allowed ------------------------------------------------------------------------------------------


def _strip(cols: slice) -> np.ndarray:
    m = np.zeros((10, 20), bool)
    m[:, cols] = True
    return m


def test_mask_allowed_overlap_and_area_limits_at_their_edges():
    mask0 = _strip(slice(0, 10))  # 100 px
    guards = Safeguards(min_overlap=0.5, max_area_ratio=2.0)
    assert guards.mask_allowed(mask0, mask0) == (1.0, True)
    # IoU 50/150 = 1/3 < 0.5: refused on overlap although the area ratio (1) is fine.
    assert guards.mask_allowed(_strip(slice(5, 15)), mask0) == (pytest.approx(1 / 3), False)
    # IoU exactly 0.5 (100 / 200) and area exactly x2: both limits are inclusive.
    assert guards.mask_allowed(_strip(slice(0, 20)), mask0) == (0.5, True)
    # IoU 0.5 but area 50 px = initial / 2: allowed; 40 px < initial / 2: refused on area.
    assert guards.mask_allowed(_strip(slice(0, 5)), mask0) == (0.5, True)
    loose = Safeguards(min_overlap=0.3, max_area_ratio=2.0)
    assert loose.mask_allowed(_strip(slice(0, 4)), mask0) == (0.4, False)
    assert Safeguards.off().mask_allowed(_strip(slice(15, 20)), mask0) == (0.0, True)


# -- simulated boxes --------------------------------------------------------------------------------------------------


def test_box_from_mask_is_x_then_y():
    mask = np.zeros((60, 80), bool)
    mask[10:20, 30:50] = True  # rows 10..19, columns 30..49
    assert box_from_mask(mask) == (30.0, 10.0, 49.0, 19.0)
    assert jittered_box(mask, 0.0, seed=3) == (30.0, 10.0, 49.0, 19.0)


@st.composite
def rectangles(draw):
    h, w = draw(st.integers(24, 200)), draw(st.integers(24, 200))
    bh, bw = draw(st.integers(8, h)), draw(st.integers(8, w))
    y0, x0 = draw(st.integers(0, h - bh)), draw(st.integers(0, w - bw))
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + bh, x0 : x0 + bw] = True
    return mask


@PROPERTY
@given(rectangles(), st.floats(0.0, 0.3), st.integers(0, 2**32 - 1))
def test_jittered_box_moves_each_edge_by_at_most_the_jitter(mask, jitter, seed):
    h, w = mask.shape
    tight = box_from_mask(mask)
    box = jittered_box(mask, jitter, seed)
    assert box == jittered_box(mask, jitter, seed)  # seeded
    sizes = (tight[2] - tight[0], tight[3] - tight[1])
    for k in range(4):
        assert abs(box[k] - tight[k]) <= jitter * sizes[k % 2] + 1e-9
    Prompt.from_box(box).check((h, w))  # ordered and inside the image
    if jitter == 0:
        assert box == tight


def test_jitter_is_applied_and_seeded():
    _, mask = disk_image(size=128, center=(60, 64), radius=40)
    tight = np.array(box_from_mask(mask))
    moves = np.array([np.abs(np.array(jittered_box(mask, 0.2, seed)) - tight) for seed in range(20)])
    assert (moves.max(axis=1) > 0).all()  # every seeded box differs from the tight one
    # Uniform moves in [-0.2, 0.2] of an 80 px box: the largest of 80 draws comes near 16 px.
    assert 12 < moves.max() <= 16
    assert jittered_box(mask, 0.2, 1) != jittered_box(mask, 0.2, 2)
    with pytest.raises(SampotError, match="fraction in"):
        jittered_box(mask, 1.5, 0)


# -- scorers ----------------------------------------------------------------------------------------------------------


def test_regressor_scorer_is_the_regressor_on_the_sharpened_mask():
    image, _ = disk_image()
    reg = regressor_with_statistics().eval()
    logits = torch.randn(3, 1, 32, 32) * 2
    img = to_input(image, 32).expand(3, -1, -1, -1)
    for sharpness in (1.0, 5.0, 20.0):
        expected = reg(img, torch.sigmoid(sharpness * logits))
        torch.testing.assert_close(RegressorScorer(reg, image, sharpness)(logits, torch.zeros(3)), expected)
    a, b = (RegressorScorer(reg, image, s)(logits, torch.zeros(3)) for s in (1.0, 20.0))
    assert (a - b).abs().max() > 1e-3  # sharpness changes the score
    with pytest.raises(SampotError, match="sharpness"):
        RegressorScorer(reg, image, 0.0)
    with pytest.raises(SampotError, match=r"sharpness must be a number, got '5' \(str\)"):
        RegressorScorer(reg, image, "5")
    with pytest.raises(SampotError, match="the image holds NaN or infinite values"):
        RegressorScorer(reg, np.where(image > 0, np.nan, 0.0).astype(np.float32))  # every score would be NaN


def test_regressor_scorer_leaves_the_callers_network_alone_and_scores_in_eval_mode():
    image, _ = disk_image()
    reg = regressor_with_statistics()  # left in train mode, as a caller fresh from training might
    reg.net[0].weight.requires_grad_(False)  # a mix of flags, to see that none is changed
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    flags = [p.requires_grad for p in reg.parameters()]
    logits = torch.randn(1, 1, 32, 32, requires_grad=True)
    score = RegressorScorer(reg, image)(logits, torch.zeros(1))
    score.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # differentiable with respect to the mask
    assert all(p.grad is None for p in reg.parameters())
    assert reg.training and [p.requires_grad for p in reg.parameters()] == flags
    for k, v in reg.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"
    # Train mode at batch 1 would normalise by the batch's own statistics; the scorer uses the running ones.
    eval_score = RegressorScorer(regressor_with_statistics().eval(), image)(logits, torch.zeros(1))
    torch.testing.assert_close(score, eval_score)
    with torch.no_grad():
        train_mode = reg(to_input(image, 32), soft_mask(logits, 5.0))
    assert (train_mode - eval_score).abs().item() > 1e-4  # so the check above can tell the modes apart


def test_oracle_scorer_is_soft_dice_with_the_truth():
    truth = np.zeros((32, 32), bool)
    truth[8:24, 8:24] = True  # 256 px
    oracle = OracleScorer(truth, size=32, sharpness=5.0)
    exact = torch.where(torch.as_tensor(truth), 20.0, -20.0)[None, None]
    half = exact.clone()
    half[..., 16:, :] = -20.0  # 128 of the 256 true pixels: Dice 2 * 128 / (128 + 256) = 2/3
    constant = torch.full((1, 1, 32, 32), 0.2)  # sigmoid(5 * 0.2) everywhere
    p = 1 / (1 + math.exp(-1.0))
    expected = 2 * p * 256 / (p * 1024 + 256)
    scores = oracle(torch.cat([exact, half, constant]))
    assert scores.tolist() == pytest.approx([1.0, 2 / 3, expected], abs=1e-5)
    assert OracleScorer(truth, size=32, sharpness=1.0)(constant).item() != pytest.approx(expected, abs=1e-3)
    # The truth is not transposed: a mask of its transpose scores lower.
    wide = np.zeros((32, 32), bool)
    wide[4:12, 2:30] = True
    logits = torch.where(torch.as_tensor(wide), 20.0, -20.0)[None, None]
    assert OracleScorer(wide, size=32)(logits).item() == pytest.approx(1.0, abs=1e-5)
    assert OracleScorer(wide.T, size=32)(logits).item() < 0.3


def test_confidence_and_blend_scorers():
    image, _ = disk_image()
    reg = RegressorScorer(regressor_with_statistics().eval(), image)
    logits, conf = torch.randn(2, 1, 32, 32), torch.tensor([0.2, 0.9])
    assert ConfidenceScorer()(logits, conf).tolist() == pytest.approx([0.2, 0.9])
    r = reg(logits, conf)
    torch.testing.assert_close(BlendScorer(reg, 1.0)(logits, conf), r)
    torch.testing.assert_close(BlendScorer(reg, 0.0)(logits, conf), conf)
    torch.testing.assert_close(BlendScorer(reg, 0.25)(logits, conf), 0.25 * r + 0.75 * conf)
    with pytest.raises(SampotError, match="blend weight"):
        BlendScorer(reg, 1.5)


def test_blend_weight_follows_the_score_that_tracks_dice():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.3, 1.0, 40)
    noise = rng.uniform(0.3, 1.0, 40)
    assert choose_blend_weight(truth, noise, truth) == 1.0
    assert choose_blend_weight(noise, truth, truth) == 0.0
    # Dice that is exactly a blend of the two scores: its weight is found on the documented grid of 0.05 steps
    for w in (0.35, 0.5, 0.85):
        assert choose_blend_weight(truth, noise, w * truth + (1 - w) * noise) == pytest.approx(w, abs=1e-12)


# -- metrics and the summary ------------------------------------------------------------------------------------------


def test_dice_iou_and_pearson_on_hand_checked_cases():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0:2, 0:2] = True  # two 2 x 2 squares sharing one column: 2 pixels
    b[0:2, 1:3] = True
    assert dice(a, b) == 0.5  # 2 * 2 / (4 + 4)
    assert iou(a, b) == pytest.approx(1 / 3)  # 2 / 6
    assert dice(a, np.zeros_like(a)) == 0.0 and iou(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    # x = 1..4, y = 2, 1, 4, 3: sum of cross deviations 3, sums of squared deviations 5 and 5, r = 3 / 5.
    assert pearson_r([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    assert pearson_r([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_summarise_counts_and_averages_constructed_gains():
    gains = [0.1, 0.0005, -0.05, -0.3, 0.002, -0.001, 0.2, -0.01]
    rows = [{"dice0": 0.5, "dice": 0.5 + g, "gain": g} for g in gains]
    s = summarise(rows)
    # improved: > 0.005 (0.1, 0.2); unchanged: |gain| <= 0.005 (0.0005, 0.002, -0.001); worse: < -0.005 (-0.01,
    # -0.05, -0.3); harmed: worse than the rule's tolerance 0.02 (-0.05, -0.3); drops: more than 0.05 (-0.3; -0.05
    # itself is not); catastrophes: a drop of more than 0.2 (-0.3).
    assert (s["n"], s["improved"], s["unchanged"], s["worse"], s["catastrophes"]) == (8, 2, 3, 3, 1)
    assert (s["harmed"], s["drops"]) == (2, 1)
    assert s["mean_gain"] == pytest.approx(-0.0585 / 8)
    assert s["median_gain"] == pytest.approx(-0.00025)  # sorted: -0.3, -0.05, -0.01, -0.001, 0.0005, 0.002, ...
    assert s["mean_dice_initial"] == pytest.approx(0.5)
    assert s["mean_dice_evolved"] == pytest.approx(0.5 - 0.0585 / 8)
    with pytest.raises(SampotError, match="empty"):
        summarise([])


def test_the_share_of_the_oracles_gain_is_the_ratio_of_mean_gains_even_above_one():
    assert share_of_oracle_gain({"mean_gain": 0.03}, {"mean_gain": 0.04}) == pytest.approx(0.75)
    # a score's path can visit a prompt better than the oracle's path found: the share then exceeds 1
    assert share_of_oracle_gain({"mean_gain": 0.05}, {"mean_gain": 0.04}) == pytest.approx(1.25)
    assert share_of_oracle_gain({"mean_gain": -0.02}, {"mean_gain": 0.04}) == pytest.approx(-0.5)
    assert share_of_oracle_gain({"mean_gain": 0.03}, {"mean_gain": 0.0}) is None
    # an oracle that lost Dice gives no yardstick: a ratio to it would flip the sign of every score's share
    assert share_of_oracle_gain({"mean_gain": -0.01}, {"mean_gain": -0.02}) is None
    assert share_of_oracle_gain({"mean_gain": 0.03}, None) is None


def test_prompts_from_a_rows_coordinates():
    assert prompt_of((1.0, 2.0)).kind == "click" and prompt_of((1.0, 2.0, 30.0, 40.0)).box == (1.0, 2.0, 30.0, 40.0)
    with pytest.raises(SampotError, match="2 \\(click\\) or 4 \\(box\\) coordinates, got 3"):
        prompt_of((1.0, 2.0, 3.0))
