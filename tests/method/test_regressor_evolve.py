"""The regressor learns Dice; evolution raises its score; safeguards hold; bad input is refused."""

import os
import re
import warnings

import numpy as np
import pytest
import torch
from conftest import disk_image

from sampot_lib import SampotError
from sampot_lib.defaults import MAX_STEPS
from sampot_lib.errors import SampotWarning
from sampot_lib.method.evolve import Safeguards, check_point, evolve_prompt, trajectory_masks
from sampot_lib.method.heatmap import dice_heatmap, grid_points
from sampot_lib.method.metrics import dice
from sampot_lib.method.prompts import Prompt, predict, predict_mask
from sampot_lib.method.regressor import SegmentationRegressor, load_regressor, save_regressor, score_mask, to_input
from sampot_lib.method.regressor_training import RegressorData, fit_regressor, predict_dice
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.method.synth import candidate_masks

SIZE = 32


def _disk_set(n_images: int, seed: int) -> RegressorData:
    """Dark disks at random places with level-set candidates: Dice must be read off (image, mask) jointly."""
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n_images):
        c = rng.uniform(35, 60, 2)
        image, mask = disk_image(size=96, center=tuple(c), radius=rng.uniform(18, 28), seed=seed * 1000 + i)
        cands = candidate_masks(mask, 12, seed=rng)
        parts.append(
            RegressorData(
                images=np.stack([(to_input(image, SIZE)[0, 0] * 255).byte().numpy()] * len(cands)),
                masks=np.stack([(to_input(c.mask, SIZE)[0, 0] * 255).byte().numpy() for c in cands]),
                dice=np.array([c.dice for c in cands], dtype=np.float32),
                kind=np.array(["synthetic"] * len(cands)),
                image_id=np.array([f"d{i}"] * len(cands)),
            )
        )
    return RegressorData.concat(parts)


@pytest.fixture(scope="module")
def disk_sets():
    return _disk_set(24, seed=1), _disk_set(8, seed=2)


@pytest.fixture(scope="module")
def trained(disk_sets):
    train, val = disk_sets
    model, history = fit_regressor(train, val, epochs=25, batch_size=32, seed=0, progress=False)
    return model, history, val


def test_regressor_learns_dice(trained):
    model, history, val = trained
    mse = np.mean((predict_dice(model, val) - val.dice) ** 2)
    baseline = np.var(val.dice)  # predicting the mean
    assert mse < 0.5 * baseline, (mse, baseline)
    assert min(h["val_mse"] for h in history) == pytest.approx(mse, rel=1e-4)  # the best epoch was kept


def test_training_minimises_the_squared_error():
    """Two (image, mask) pairs, each shown ten times with clashing labels: nine 0.1 and one 0.9 for the first, the
    reverse for the second. The network gives a pair one score, and the squared error is least at the labels' mean
    (0.18, 0.82); an absolute error would pull the scores to the medians (0.1, 0.9). The validation labels are the
    medians, so the epoch kept is the last one either way."""
    pairs = _disk_set(2, seed=5)
    first, second = 0, int(np.flatnonzero(pairs.image_id == "d1")[0])
    take = np.array([first] * 10 + [second] * 10)
    labels = np.array([0.1] * 9 + [0.9] + [0.9] * 9 + [0.1], dtype=np.float32)
    train = RegressorData(images=pairs.images[take], masks=pairs.masks[take], dice=labels,
                          kind=np.array(["synthetic"] * 20), image_id=pairs.image_id[take])  # fmt: skip
    medians = RegressorData(images=pairs.images[[first, second]], masks=pairs.masks[[first, second]],
                            dice=np.array([0.1, 0.9], dtype=np.float32), kind=np.array(["synthetic"] * 2),
                            image_id=pairs.image_id[[first, second]])  # fmt: skip
    model, _ = fit_regressor(train, medians, epochs=150, batch_size=20, lr=3e-3, seed=0, progress=False, patience=0)
    assert predict_dice(model, medians) == pytest.approx([0.18, 0.82], abs=0.02)


def test_regressor_training_is_deterministic():
    train, val = _disk_set(4, seed=1), _disk_set(2, seed=2)
    a, _ = fit_regressor(train, val, epochs=2, seed=5, progress=False)
    b, _ = fit_regressor(train, val, epochs=2, seed=5, progress=False)
    np.testing.assert_array_equal(predict_dice(a, val), predict_dice(b, val))


def _conv_dtypes(monkeypatch) -> list[tuple[bool, torch.dtype]]:
    """(training mode, output dtype) of every convolution the regressor runs from now on."""
    seen: list[tuple[bool, torch.dtype]] = []
    real = torch.nn.Conv2d.forward

    def spy(self, x):
        out = real(self, x)
        seen.append((self.training, out.dtype))
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", spy)
    return seen


@pytest.mark.parametrize(("precision", "dtype"), [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_training_precision_is_the_batches_forward_pass_and_validation_stays_float32(monkeypatch, precision, dtype):
    train, val = _disk_set(4, seed=1), _disk_set(2, seed=2)
    seen = _conv_dtypes(monkeypatch)
    model, _ = fit_regressor(train, val, epochs=2, seed=5, progress=False, precision=precision)
    assert {d for training, d in seen if training} == {dtype}
    assert {d for training, d in seen if not training} == {torch.float32}  # the loss that picks the epoch
    assert all(p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point())
    assert predict_dice(model, val).dtype == np.float32


def test_bfloat16_training_learns_dice_as_well_as_float32(trained, disk_sets):
    _, history, _ = trained
    train, val = disk_sets
    model, bf16_history = fit_regressor(train, val, epochs=25, batch_size=32, seed=0, progress=False,
                                        precision="bfloat16")  # fmt: skip
    mse = np.mean((predict_dice(model, val) - val.dice) ** 2)
    assert mse < 0.5 * np.var(val.dice)
    float32_best = min(h["val_mse"] for h in history)
    assert min(h["val_mse"] for h in bf16_history) == pytest.approx(mse, rel=1e-4)
    assert mse < 1.5 * float32_best, (mse, float32_best)
    assert [h["train_mse"] for h in bf16_history] != [h["train_mse"] for h in history]  # other arithmetic


def test_an_unknown_training_precision_is_refused_before_training():
    train, val = _disk_set(2, seed=1), _disk_set(1, seed=2)
    with pytest.raises(SampotError, match="unknown regressor training precision 'float16'; known: float32, bfloat16"):
        fit_regressor(train, val, epochs=1, progress=False, precision="float16")


def test_save_load_round_trip_and_size_check(tmp_path, trained):
    model, _, val = trained
    path = save_regressor(model, tmp_path / "reg.pt", meta={"note": "test"})
    loaded, meta = load_regressor(path)
    assert meta == {"note": "test"}
    np.testing.assert_allclose(predict_dice(loaded, val), predict_dice(model, val), rtol=1e-6)
    with pytest.raises(SampotError, match="trained for 32x32"):
        load_regressor(path, input_size=64)
    assert [p.name for p in tmp_path.iterdir()] == ["reg.pt"]  # no temporary file left behind


def test_bad_regressor_files_and_inputs(tmp_path):
    with pytest.raises(SampotError, match="does not exist"):
        load_regressor(tmp_path / "missing.pt")
    if hasattr(os, "mkfifo"):  # named as what it is, and never opened (reading it would wait for a writer)
        os.mkfifo(tmp_path / "pipe.pt")
        with pytest.raises(SampotError, match=r"pipe.pt is not a regular file \(a device, a pipe or a socket\)"):
            load_regressor(tmp_path / "pipe.pt")
    for not_a_path in (None, 3, " "):
        with pytest.raises(SampotError, match="the regressor must be given as a file path"):
            load_regressor(not_a_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SampotError, match="damaged .* or not a PyTorch file"):
        load_regressor(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(SampotError, match="not a sampot regressor"):
        load_regressor(tmp_path / "other.pt")
    broken = SegmentationRegressor(32)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))  # a file written by a training run that diverged
    save_regressor(broken, tmp_path / "nan.pt")
    with pytest.raises(SampotError, match="its weights hold NaN or infinite values"):
        load_regressor(tmp_path / "nan.pt")
    save_regressor(SegmentationRegressor(32), tmp_path / "meta.pt", meta="hello")
    with pytest.raises(SampotError, match="its record of what it learned from is a str, not a record"):
        load_regressor(tmp_path / "meta.pt")
    with pytest.raises(SampotError, match="expects 32x32"):
        SegmentationRegressor(32)(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64))
    with pytest.raises(SampotError, match="multiple of 16"):
        SegmentationRegressor(40)


def test_evolution_raises_the_score_and_records_the_trajectory(tiny_model, trained):
    regressor = trained[0]
    image, mask = disk_image()
    result = evolve_prompt(
        tiny_model, regressor, image, (40.0, 50.0), steps=15, safeguards=Safeguards.off(), gt_mask=mask, patience=None
    )
    scores = [s.score for s in result.trajectory]
    assert len(result.trajectory) == 16 and result.trajectory[0].x == 40.0
    assert result.best.score == max(scores) and result.best.score > scores[0]
    masks = trajectory_masks(tiny_model, image, result)  # each step's mask, recomputed from its prompt
    assert [s.dice for s in result.trajectory] == pytest.approx([dice(masks[s.step], mask) for s in result.trajectory])
    assert np.array_equal(result.initial_mask, masks[0]) and np.array_equal(result.best_mask, masks[result.best_step])
    assert len({(s.x, s.y) for s in result.trajectory}) > 1  # the click moved
    assert result.to_dict()["best"]["step"] == result.best_step


def test_safeguards_bound_the_click(tiny_model, trained):
    image, _ = disk_image()
    guards = Safeguards(trust_radius=0.05, min_overlap=None, max_area_ratio=None)
    result = evolve_prompt(tiny_model, trained[0], image, (40.0, 50.0), steps=10, lr=20.0, safeguards=guards)
    for s in result.trajectory:
        assert np.hypot(s.x - 40.0, s.y - 50.0) <= 0.05 * 96 + 1e-3
        assert 0 <= s.x <= 95 and 0 <= s.y <= 95
    strict = Safeguards(min_overlap=1.0)  # only a mask identical to the user's may win
    result = evolve_prompt(tiny_model, trained[0], image, (40.0, 50.0), steps=8, lr=20.0, safeguards=strict)
    assert any(not s.allowed for s in result.trajectory), "the lr-20 steps should change the mask"
    assert all(s.overlap == 1.0 for s in result.trajectory if s.allowed)
    assert np.array_equal(result.best_mask, result.initial_mask)


def test_evolution_is_deterministic(tiny_model, trained):
    image, _ = disk_image()
    a = evolve_prompt(tiny_model, trained[0], image, (40.0, 50.0), steps=5)
    b = evolve_prompt(tiny_model, trained[0], image, (40.0, 50.0), steps=5)
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("point", [(-1.0, 10.0), (10.0, 96.0)])
def test_click_outside_the_image_is_refused(tiny_model, trained, point):
    image, _ = disk_image()
    with pytest.raises(SampotError, match="outside the 96x96 image"):
        evolve_prompt(tiny_model, trained[0], image, point, steps=1)


def test_click_outside_the_mask_is_refused():
    _, mask = disk_image()
    with pytest.raises(SampotError, match="outside the structure"):
        check_point((2.0, 2.0), mask.shape, mask)


def test_the_regressors_input_is_the_mean_of_each_block_of_pixels():
    """Area averaging, as the training set's masks were made: a pixel of the S x S input is the mean of the k x k
    block it covers (k = 3 here, where a bilinear resize reads only the pixels near each block's centre)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    mask = rng.random((96, 96)) < 0.3
    for x, scale in ((image, 255.0), (mask, 1.0)):
        blocks = x.astype(np.float64).reshape(32, 3, 32, 3).mean(axis=(1, 3)) / scale
        np.testing.assert_allclose(to_input(x.astype(np.float32) if x.dtype == bool else x, 32)[0, 0].numpy(),
                                   blocks, atol=1e-6)  # fmt: skip
    rgb = np.stack([image, image // 2, image // 4], axis=-1)  # H x W x 3: the channels' mean
    want = rgb.astype(np.float64).mean(-1).reshape(32, 3, 32, 3).mean(axis=(1, 3)) / 255
    np.testing.assert_allclose(to_input(rgb, 32)[0, 0].numpy(), want, atol=1e-6)


def test_the_grid_is_centred_on_the_mask_every_step_apart():
    mask = np.zeros((70, 90), bool)
    mask[12:62, 10:50] = True  # rows 12..61 (50), columns 10..49 (40)
    pts = grid_points(mask, 16)
    xs, ys = np.unique(pts[:, 0]), np.unique(pts[:, 1])
    assert np.all(np.diff(xs) == 16) and np.all(np.diff(ys) == 16) and len(pts) == len(xs) * len(ys)
    # what the grid leaves of the mask's span is split evenly: 3 px left and 4 right of 13, 29, 45; 0 and 1 of the rows
    assert xs.tolist() == [13, 29, 45] and ys.tolist() == [12, 28, 44, 60]
    for first, last, lo, hi in ((xs[0], xs[-1], 10, 49), (ys[0], ys[-1], 12, 61)):
        assert abs((first - lo) - (hi - last)) <= 1


def test_heatmap_covers_the_mask(tiny_model, trained):
    image, mask = disk_image()
    pts = grid_points(mask, 8)
    assert len(pts) > 10 and all(mask[int(y), int(x)] for x, y in pts)
    hm = dice_heatmap(tiny_model, image, mask, step=8, regressor=trained[0], progress=False)
    assert len(hm.dice) == len(pts)
    emb, scorer = tiny_model.embed(image), RegressorScorer(trained[0], image)
    for (x, y), d, score in zip(hm.points, hm.dice, hm.score, strict=True):
        click = Prompt.click(float(x), float(y))
        assert d == dice(predict_mask(tiny_model, emb, click), mask)
        small = predict(tiny_model, emb, click, output_size=(scorer.size, scorer.size))
        assert score == pytest.approx(float(scorer(small.logits, small.confidence)), abs=1e-6)  # evolution's score
    assert hm.spread == hm.dice.max() - hm.dice.min() > 0
    painted = hm.as_image(mask.shape, 8)
    assert all(painted[int(y), int(x)] == d for (x, y), d in zip(hm.points, hm.dice, strict=True))
    with pytest.raises(SampotError, match="mask is 96x50"):
        dice_heatmap(tiny_model, image, mask[:50], step=8)


def test_nan_click_is_refused_by_name(tiny_model, trained):
    image, _ = disk_image()
    with pytest.raises(SampotError, match="not a finite number"):
        evolve_prompt(tiny_model, trained[0], image, (float("nan"), 3.0), steps=1)


def test_true_dice_of_every_step_comes_from_that_steps_decoder_call(tiny_model, trained):
    """With the truth given, each step's Dice is that of the step's own mask at full size (the same as predicting
    the step's prompt again), and no decoder call is added for it."""
    image, truth = disk_image(size=64, center=(30, 34), radius=14, seed=3)
    calls = []
    predict_once = tiny_model.predict

    def counting_predict(*args, **kwargs):
        calls.append(1)
        return predict_once(*args, **kwargs)

    tiny_model.predict = counting_predict
    start = Prompt(points=((26.0, 30.0),), labels=(1,))
    regressor = trained[0]
    with_truth = evolve_prompt(tiny_model, regressor, image, start, steps=6, lr=3.0, gt_mask=truth, seed=0)
    n_with = len(calls)
    calls.clear()
    plain = evolve_prompt(tiny_model, regressor, image, start, steps=6, lr=3.0, seed=0)
    assert len(calls) == n_with
    assert [s.coords for s in plain.trajectory] == [s.coords for s in with_truth.trajectory]
    tiny_model.predict = predict_once
    emb = tiny_model.embed(image)
    for step in with_truth.trajectory:
        again = dice(predict_mask(tiny_model, emb, with_truth.prompt_at(step.step)), truth)
        assert step.dice == pytest.approx(again, abs=1e-9), step.step


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"image": [[1, 2], [3, 4]]}, "image must be a NumPy array"),
        ({"image": np.zeros((96, 96, 5), np.uint8)}, "image has shape (96, 96, 5)"),
        ({"model": None}, "model must be a promptable model"),
        ({"scorer": "regressor"}, "scorer must be None"),
        ({"safeguards": {"trust_radius": -1}}, "safeguards must be a Safeguards"),
        ({"do_no_harm": "yes"}, "do_no_harm must be True, False or a DoNoHarm"),
        ({"lr": "1"}, "lr must be a number"),
        ({"sharpness": 1e9}, "sharpness must be in (0, 1000]"),
        ({"seed": -1}, "seed must be a whole number in [0, 4294967295]"),
        ({"steps": MAX_STEPS + 1}, f"steps must be a whole number in [0, {MAX_STEPS}]"),
        ({"gt_mask": np.arange(96 * 96).reshape(96, 96)}, "gt_mask: mask is not binary"),
        ({"gt_mask": np.zeros((96, 96), bool)}, "gt_mask: mask is empty"),
        ({"gt_mask": np.ones((50, 96), bool)}, "gt_mask: mask is 96x50 (W x H) but the image is 96x96"),
        ({"image": np.full((96, 96), 7, np.uint8)}, "image: every pixel has the value 7: there is nothing to segment"),
    ],
)
def test_evolve_prompt_names_an_argument_of_the_wrong_kind(tiny_model, trained, bad, message):
    """A notebook's wrong argument fails in one line naming it, not as an AttributeError inside torch, and a truth
    that is no mask never yields a true Dice."""
    image, _ = disk_image()
    args = {"model": tiny_model, "scorer": trained[0], "image": image, "steps": 1} | bad
    with pytest.raises(SampotError, match=re.escape(message)):
        evolve_prompt(args.pop("model"), args.pop("scorer"), args.pop("image"), (40.0, 50.0), **args)


def test_a_flipped_view_of_an_image_is_evolved_and_scored_as_its_copy(tiny_model, trained):
    image, mask = disk_image()
    view, copy = image[:, ::-1], np.ascontiguousarray(image[:, ::-1])
    a = evolve_prompt(tiny_model, trained[0], view, (50.0, 50.0), steps=2, seed=0)
    b = evolve_prompt(tiny_model, trained[0], copy, (50.0, 50.0), steps=2, seed=0)
    assert [s.score for s in a.trajectory] == [s.score for s in b.trajectory]
    assert score_mask(trained[0], view, mask[:, ::-1]) == score_mask(trained[0], copy, mask[:, ::-1].copy())


def test_heatmap_and_regressor_scorer_name_an_argument_of_the_wrong_kind(tiny_model, trained):
    image, mask = disk_image()
    with pytest.raises(SampotError, match="image must be a NumPy array, got list"):
        dice_heatmap(tiny_model, image.tolist(), mask, progress=False)
    with pytest.raises(SampotError, match="regressor must be a SegmentationRegressor .* got str"):
        dice_heatmap(tiny_model, image, mask, regressor="sam_nano_click_left_lung", progress=False)
    with pytest.raises(SampotError, match="RegressorScorer needs a SegmentationRegressor .* got NoneType"):
        RegressorScorer(None, image, 5.0)


def test_a_regressor_made_for_another_model_or_prompt_is_warned_of_and_an_empty_mask_too(tiny_model, trained, tmp_path):
    image, mask = disk_image()
    path = save_regressor(trained[0], tmp_path / "r.pt", {"model": "litemedsam", "prompt": "box", "sharpness": 5.0})
    foreign, _ = load_regressor(path)
    with pytest.warns(SampotWarning) as seen:
        evolve_prompt(tiny_model, foreign, image, (50.0, 50.0), steps=1)
    said = " ".join(str(w.message) for w in seen)
    assert "model 'litemedsam' but is used with model 'tiny'" in said and "prompt 'box' but is used with prompt" in said
    own = save_regressor(trained[0], tmp_path / "own.pt", {"model": "tiny", "prompt": "click", "sharpness": 5.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampotWarning)
        evolve_prompt(tiny_model, load_regressor(own)[0], image, (50.0, 50.0), steps=1)  # made for this: no word
        score_mask(trained[0], image, mask)
    with pytest.warns(SampotWarning, match="the mask is empty: its true Dice is 0"):
        score_mask(trained[0], image, np.zeros_like(mask))


def test_score_mask_refuses_a_mask_of_another_size_and_heatmap_a_fractional_step(tiny_model, trained):
    image, mask = disk_image()
    with pytest.raises(SampotError, match=re.escape("mask is 48x48 (W x H) but the image is 96x96")):
        score_mask(trained[0], image, mask[:48, :48])  # resized alone, it was scored as if it fitted
    with pytest.raises(SampotError, match="grid step must be a whole number"):
        grid_points(mask, 2.5)
    one = grid_points(mask, max(mask.shape))
    assert len(one) == 1 and grid_points(mask, 10**20).tolist() == one.tolist()  # no integer overflow
