"""Dice, IoU, Pearson r, level-set candidates and prompts."""

import numpy as np
import pytest
from conftest import disk_image

from sampot_lib import SampotError
from sampot_lib.method.metrics import dice, iou, pearson_r
from sampot_lib.method.synth import (
    _smooth_field,
    band_prompts,
    candidate_masks,
    centroid_prompt,
    inside_click,
    level_set_mask,
    outside_prompts,
    signed_distance,
    user_prompt_for,
)


def test_dice_and_iou_on_known_masks():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[:, :5] = True  # 50 px
    b[:, 3:8] = True  # 50 px, 20 shared
    assert dice(a, b) == pytest.approx(2 * 20 / 100)
    assert iou(a, b) == pytest.approx(20 / 80)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    with pytest.raises(SampotError, match="shape"):
        dice(a, b[:5])


def test_pearson_r():
    x = np.arange(10.0)
    assert pearson_r(x, 2 * x + 1) == pytest.approx(1.0)
    assert pearson_r(x, -x) == pytest.approx(-1.0)
    assert np.isnan(pearson_r(x, np.ones(10)))
    with pytest.raises(SampotError, match="at least 3"):
        pearson_r([1, 2], [1, 2])


def test_signed_distance_level_zero_is_the_mask():
    _, mask = disk_image()
    sdm = signed_distance(mask)
    assert (level_set_mask(sdm, 0) == mask).all()
    assert sdm[mask].max() < 0 < sdm[~mask].min()


def test_dice_falls_monotonically_with_level_offset():
    _, mask = disk_image(size=128, center=(60, 64), radius=40)
    sdm = signed_distance(mask)
    for direction in (-1, 1):
        d = [dice(level_set_mask(sdm, direction * k), mask) for k in range(0, 30, 3)]
        assert d[0] == 1.0
        assert all(a > b for a, b in zip(d[:-1], d[1:], strict=True)), d


def test_candidates_are_seeded_and_span_dice():
    _, mask = disk_image(size=128, center=(60, 64), radius=40)
    a = candidate_masks(mask, 20, seed=3)
    b = candidate_masks(mask, 20, seed=3)
    assert [c.offset for c in a] == [c.offset for c in b]
    dices = np.array([c.dice for c in a])
    assert dices.min() < 0.6 and dices.max() > 0.9
    assert all(c.dice == pytest.approx(dice(c.mask, mask)) for c in a)
    assert any(c.offset < 0 for c in a) and any(c.offset > 0 for c in a)


def _whole_image_candidates(mask, n, seed, max_erode, max_dilate, roughness):
    """candidate_masks' definition, on the whole image: (offset, mask, Dice) of each level set kept."""
    rng = np.random.default_rng(seed)
    sdm = signed_distance(mask)
    inradius = float(-sdm.min())
    out = []
    for i in range(n):
        offset = (rng.uniform(0.02, max_erode) * -1 if i % 2 == 0 else rng.uniform(0.02, max_dilate)) * inradius
        field = sdm
        if roughness > 0 and rng.random() < 0.5:
            field = sdm + _smooth_field(rng, sdm.shape, scale=max(2.0, inradius / 2), amplitude=roughness * inradius)
        if (field < offset).any():
            out.append((offset, field < offset, dice(field < offset, mask)))
    return out


@pytest.mark.parametrize("max_dilate, roughness", [(1.0, 0.15), (1.0, 0.6), (2.5, 0.0), (0.3, 1.0)])
def test_candidates_are_the_level_sets_of_the_whole_images_distance_map(max_dilate, roughness):
    masks = {
        "a disk": disk_image(size=160, center=(80, 70), radius=30)[1],
        "a disk cut by the border": disk_image(size=160, center=(150, 20), radius=35)[1],
        "a thin bar": np.pad(np.ones((6, 90), bool), ((40, 114), (30, 40))),
    }
    for name, mask in masks.items():
        got = candidate_masks(mask, 24, seed=5, max_dilate=max_dilate, roughness=roughness)
        want = _whole_image_candidates(mask, 24, 5, 0.7, max_dilate, roughness)
        assert len(got) == len(want), name
        for cand, (offset, level_set, d) in zip(got, want, strict=True):
            assert cand.offset == offset and cand.dice == d, name
            assert cand.mask.shape == mask.shape and np.array_equal(cand.mask, level_set), name


def test_prompts_inside_and_outside():
    _, mask = disk_image(size=128, center=(60, 64), radius=40)
    x, y = centroid_prompt(mask)
    assert mask[int(y), int(x)]
    bands = band_prompts(mask)
    assert len(bands) == 3 and all(mask[int(y), int(x)] for x, y in bands)
    assert bands[0][1] < bands[1][1] < bands[2][1]
    outside = outside_prompts(mask, 3, seed=0, offset=5)
    assert len(outside) == 3 and not any(mask[int(y), int(x)] for x, y in outside)


def test_the_users_click_is_the_masks_centre_of_mass():
    """The paper's initial prompt: the mean of the mask's pixel coordinates. A right triangle's lies at a third of its
    legs (its median column and row lie nearer the right angle, about 3 px off here)."""
    rows, cols = np.mgrid[0:120, 0:150]
    mask = (cols >= 20) & (rows >= 10) & ((cols - 20) / 90 + (rows - 10) / 90 <= 1)
    x, y = centroid_prompt(mask)
    ys, xs = np.nonzero(mask)
    assert (x, y) == pytest.approx((xs.mean(), ys.mean()), abs=1e-9)
    assert x == pytest.approx(20 + 90 / 3, abs=0.5) and y == pytest.approx(10 + 90 / 3, abs=0.5)


def test_the_bands_split_the_structures_rows_in_thirds():
    rect = np.zeros((60, 50), bool)
    rect[10:40, 20:30] = True  # rows 10..39: bands of rows 10..19, 20..29 and 30..39
    assert band_prompts(rect) == [pytest.approx((24.5, y)) for y in (14.5, 24.5, 34.5)]


def test_inside_clicks_cover_the_inner_part_of_a_disk_uniformly_and_never_its_rim():
    _, mask = disk_image(size=128, center=(60, 64), radius=40)
    clicks = np.array([inside_click(mask, seed) for seed in range(400)])
    r = np.hypot(clicks[:, 0] - 60, clicks[:, 1] - 64)
    assert r.max() <= 30.5  # depth 0.25 of the 40 px radius: no click within 10 px of the rim
    # uniform over the inner disk of radius 30: a quarter of the clicks within radius 15, each side of the centre half
    assert 0.18 < np.mean(r <= 15) < 0.32 and 0.42 < np.mean(clicks[:, 0] < 60) < 0.58
    assert inside_click(mask, 7) == inside_click(mask, 7) and len({tuple(c) for c in clicks}) > 300
    assert np.hypot(*(np.array(inside_click(mask, 0, depth=0.0)) - (60, 64))) <= 40
    with pytest.raises(SampotError, match="depth"):
        inside_click(mask, 0, depth=1.0)


def test_a_user_who_clicks_anywhere_inside_is_seeded_by_the_image_and_a_box_user_is_unchanged():
    _, mask = disk_image(size=128, center=(60, 64), radius=40)
    centre = user_prompt_for(0, "click", 0.1, "a", mask)
    draws = ((0, "a"), (0, "b"), (1, "a"))
    inside = [user_prompt_for(s, "click", 0.1, i, mask, anywhere_inside=True) for s, i in draws]
    assert centre.points[0] == centroid_prompt(mask)
    assert len({p.points[0] for p in inside}) == 3  # seed and image both change the click
    assert user_prompt_for(0, "click", 0.1, "a", mask, True) == inside[0]
    box = user_prompt_for(4, "box", 0.1, "a", mask)
    assert user_prompt_for(4, "box", 0.1, "a", mask, anywhere_inside=True) == box


def test_centroid_of_a_crescent_is_moved_inside():
    yy, xx = np.mgrid[:100, :100]
    crescent = ((xx - 50) ** 2 + (yy - 50) ** 2 < 40**2) & ~((xx - 65) ** 2 + (yy - 50) ** 2 < 35**2)
    x, y = centroid_prompt(crescent)
    assert crescent[int(y), int(x)]


def test_empty_and_non_binary_masks_are_refused():
    with pytest.raises(SampotError, match="empty"):
        signed_distance(np.zeros((10, 10), bool))
    with pytest.raises(SampotError, match="not binary"):
        centroid_prompt(np.arange(100).reshape(10, 10))
