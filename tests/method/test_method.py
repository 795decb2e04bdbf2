"""Tests that would catch a wrong method, not only a crash.

- The gradient evolution follows is the true derivative of the score with respect to the prompt's coordinates
  (float64 central differences through SAM-Nano and the regressor, for a click and for a box).
- On a score known to be right (soft Dice with the truth), evolution raises the true Dice and beats random moves
  at the same number of model calls.
- ``mask_output="best"`` is the output with the highest predicted IoU; outputs 0, 1 and 2 are three distinct masks.
- x is the column and y the row, from the prompt through the model's frame to the mask.
- Scoring leaves the caller's regressor alone and scores in eval mode; the same mask gets the same score in
  evaluation (the centroid click) and at evolution's step 0; the regressor is trained on the masks it scores.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import disk_image, regressor_with_statistics
from segment_anything import SamPredictor
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import make_phantom, write_phantom_set
from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.heatmap import dice_heatmap
from sampot_lib.method.metrics import dice
from sampot_lib.method.prompts import Prompt, Safeguards, predict, predict_mask
from sampot_lib.method.regressor import to_input
from sampot_lib.method.scoring import OracleScorer, RegressorScorer
from sampot_lib.method.synth import band_prompts, box_from_mask, candidate_masks, centroid_prompt, initial_prompt
from sampot_lib.method.training_set import image_rng, regressor_samples
from sampot_lib.models import SamModel, load_model, to_model_frame


@pytest.fixture(scope="module")
def nano() -> SamModel:
    return load_model("sam_nano")  # the shipped weights: real masks, three distinct outputs, an IoU head


@pytest.fixture(scope="module")
def phantoms() -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    return [make_phantom(seed, size=256) for seed in range(4)]  # 256 px: SAM-Nano's own input size


# -- gradients --------------------------------------------------------------------------------------------------------


@pytest.fixture
def float64_point_encoding(monkeypatch):
    """segment-anything encodes points after ``coords.to(torch.float)``; keep the encoder's own precision instead,
    so that a float64 model is float64 from the click to the score."""

    def forward_with_coords(self, coords_input, image_size):
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(self.positional_encoding_gaussian_matrix.dtype))

    monkeypatch.setattr(PositionEmbeddingRandom, "forward_with_coords", forward_with_coords)


@pytest.mark.parametrize("kind", ["click", "box"])
def test_score_gradient_is_the_derivative_of_the_score(float64_point_encoding, phantoms, kind):
    model = load_model("sam_nano").double()
    image, masks = phantoms[0]
    prompt = initial_prompt(masks["left_lung"], kind, seed=0)
    scorer = RegressorScorer(regressor_with_statistics(64).double(), image, sharpness=5.0)
    emb = model.embed(image)

    def score(coords: torch.Tensor) -> torch.Tensor:
        pred = predict(model, emb, prompt, coords, output_size=(scorer.size, scorer.size))
        return scorer(pred.logits, pred.confidence)[0]

    coords = torch.tensor(prompt.coords(), dtype=torch.float64, requires_grad=True)
    value = score(coords)
    assert value.dtype == torch.float64
    (grad,) = torch.autograd.grad(value, coords)
    h = 1e-4  # pixels: small against the model's smallest feature, large against float64 rounding
    steps = h * torch.eye(len(coords), dtype=torch.float64)
    with torch.no_grad():
        central = torch.stack([(score(coords + e) - score(coords - e)) / (2 * h) for e in steps])
    assert grad.abs().min() > 1e-7, grad  # every coordinate moves the score
    assert ((grad - central).norm() / grad.norm()).item() < 1e-5, (grad, central)


# -- evolution on a known score ---------------------------------------------------------------------------------------


def _evolve_all(model, phantoms, kind: str, optimizer: str, lr: float) -> np.ndarray:
    """(initial true Dice, winning step's true Dice) per lung of every phantom, 10 model calls after the first."""
    out = []
    for seed, (image, masks) in enumerate(phantoms):
        for structure in ("left_lung", "right_lung"):
            truth = masks[structure]
            res = evolve_prompt(
                model, OracleScorer(truth, size=64), image, initial_prompt(truth, kind, seed=seed), steps=10, lr=lr,
                optimizer=optimizer, safeguards=Safeguards.off(), gt_mask=truth, seed=seed,
            )  # fmt: skip
            assert res.best.score == max(s.score for s in res.trajectory)
            out.append((res.initial.dice, res.best.dice))
    return np.array(out)


@pytest.mark.parametrize(
    "kind, lr, gain, margin",
    # Measured on phantom seeds 0-3 (and, for robustness, 4-19 in sets of four): click: Adam +0.05..0.10 true Dice,
    # random +0.02..0.07, Adam ahead by 0.022..0.036; box: Adam +0.15..0.19, ahead by 0.04..0.09.
    [("click", 10.0, 0.03, 0.01), ("box", 5.0, 0.1, 0.02)],
)
def test_evolution_on_soft_dice_raises_true_dice_and_beats_random_moves(nano, phantoms, kind, lr, gain, margin):
    adam = _evolve_all(nano, phantoms, kind, "adam", lr)
    rand = _evolve_all(nano, phantoms, kind, "random", lr)
    np.testing.assert_array_equal(adam[:, 0], rand[:, 0])  # the same starts
    assert adam[:, 1].mean() > adam[:, 0].mean() + gain, adam
    assert (adam[:, 1] > adam[:, 0]).sum() >= 6, adam  # of 8 lungs
    assert adam[:, 1].mean() > rand[:, 1].mean() + margin, (adam, rand)


# -- which output -----------------------------------------------------------------------------------------------------


def test_best_output_has_the_highest_predicted_iou_and_outputs_are_distinct(nano):
    image, _ = disk_image(size=256, center=(100, 140), radius=50)  # 256 px: no resize, logits compare exactly
    clicks = np.random.default_rng(0).uniform(5, 251, (12, 2))
    predictor = SamPredictor(nano.sam)  # segment-anything's own prompt encoder -> mask decoder path
    predictor.set_image(np.repeat(image[..., None], 3, -1))
    ref, ref_iou = [], []
    for x, y in clicks:
        masks, iou, _ = predictor.predict(
            point_coords=np.array([[x, y]]), point_labels=np.array([1]), multimask_output=True, return_logits=True
        )
        ref.append(masks)
        ref_iou.append(iou)
    ref, ref_iou = np.stack(ref), np.stack(ref_iou)  # N x 3 x H x W logits, N x 3 predicted IoU
    best = ref_iou.argmax(axis=1)
    assert set(best.tolist()) == {0, 1, 2}, best  # every output wins somewhere: a fixed pick cannot pass
    rows = np.arange(len(clicks))
    pts = torch.tensor(clicks, dtype=torch.float32)[:, None]
    labels = torch.ones(len(clicks), 1, dtype=torch.long)
    ours = {}
    for output in ("best", 0, 1, 2):
        model = SamModel(nano.sam, mask_output=output)
        pred = model.predict(model.embed(image), pts, labels)  # all clicks in one batch: the pick is per row
        pick = best if output == "best" else np.full(len(clicks), output)
        np.testing.assert_allclose(pred.logits[:, 0].numpy(), ref[rows, pick], atol=1e-4)
        np.testing.assert_allclose(pred.confidence.numpy(), ref_iou[rows, pick], atol=1e-5)
        ours[output] = pred.logits[:, 0].numpy() > 0
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert all(dice(ours[a][n], ours[b][n]) < 0.95 for n in rows), (a, b)
    single = SamModel(nano.sam, mask_output="single")
    masks, iou, _ = predictor.predict(
        point_coords=clicks[:1], point_labels=np.array([1]), multimask_output=False, return_logits=True
    )
    pred = single.predict(single.embed(image), pts[:1], labels[:1])
    np.testing.assert_allclose(pred.logits[0, 0].numpy(), masks[0], atol=1e-4)
    assert not np.array_equal(pred.logits[0, 0].numpy() > 0, ours[0][0])  # not output 0 again


# -- x and y ----------------------------------------------------------------------------------------------------------


def _disk_off_the_diagonal():
    """A dark disk at column 285, row 75 of a 384 x 288 (W x H) image: not square, not the model's size (its frame
    is 256 x 192, a scale of 2/3), and nothing at the transposed place (column 75, row 285)."""
    h, w, cx, cy, r = 288, 384, 285, 75, 42
    yy, xx = np.mgrid[:h, :w]
    disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    noise = np.random.default_rng(0).normal(0, 12, (h, w))
    return np.clip(np.where(disk, 60, 190) + noise, 0, 255).astype(np.uint8), disk, (cx, cy, r)


def test_model_frame_scales_x_by_the_width_and_y_by_the_height():
    frame = to_model_frame(torch.tensor([[285.0, 75.0], [383.0, 0.0]]), (288, 384), 256)
    torch.testing.assert_close(frame, torch.tensor([[190.0, 50.0], [383 * 2 / 3, 0.0]]))


@pytest.mark.parametrize("kind", ["click", "box"])
def test_x_is_the_column_and_y_the_row_from_prompt_to_mask(nano, kind):
    image, disk, (cx, cy, r) = _disk_off_the_diagonal()
    prompt = Prompt.click(cx, cy) if kind == "click" else Prompt.from_box(box_from_mask(disk))
    mask = predict_mask(nano, nano.embed(image), prompt)
    assert mask.shape == image.shape
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - cx) < r / 2 and abs(ys.mean() - cy) < r / 2, (xs.mean(), ys.mean())
    assert mask[cy, cx] and dice(mask, disk) > 0.4
    res = evolve_prompt(nano, OracleScorer(disk, size=64), image, prompt, steps=1, gt_mask=disk)
    assert (res.trajectory[0].x, res.trajectory[0].y) == pytest.approx(prompt.center)
    assert np.array_equal(res.initial_mask, mask) and res.initial.dice == pytest.approx(dice(mask, disk))


def test_x_is_the_column_and_y_the_row_in_the_heatmap_and_the_regressors_input(nano):
    image, disk, (cx, cy, r) = _disk_off_the_diagonal()
    hm = dice_heatmap(nano, image, disk, step=16, progress=False)
    assert all(disk[int(y), int(x)] for x, y in hm.points)
    assert hm.dice.mean() > 0.5  # clicks inside the disk segment the disk
    small = to_input(disk, 32)[0, 0].numpy()  # 32 x 32: the disk stays top right
    ys, xs = np.nonzero(small > 0.5)
    assert abs(xs.mean() - cx * 32 / 384) < 1 and abs(ys.mean() - cy * 32 / 288) < 1


# -- scoring without side effects, one score for one mask -------------------------------------------------------------


def test_evolution_heatmap_and_scorer_leave_the_callers_regressor_alone(tiny_model):
    image, mask = disk_image()
    reg = regressor_with_statistics(32)  # in train mode
    reg.net[0].weight.requires_grad_(False)  # a mix of flags
    before = copy.deepcopy(reg.state_dict())
    flags = [p.requires_grad for p in reg.parameters()]
    res = evolve_prompt(tiny_model, reg, image, (40.0, 50.0), steps=3, safeguards=Safeguards.off())
    hm = dice_heatmap(tiny_model, image, mask, step=16, regressor=reg, progress=False)
    RegressorScorer(reg, image)(torch.zeros(1, 1, 32, 32))
    assert reg.training and [p.requires_grad for p in reg.parameters()] == flags
    for k, v in reg.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed"  # BatchNorm running statistics included
    # The scores are those of the network in eval mode.
    frozen = copy.deepcopy(reg).eval()
    assert evolve_prompt(tiny_model, frozen, image, (40.0, 50.0), steps=3, safeguards=Safeguards.off()).to_dict() == (
        res.to_dict()
    )
    np.testing.assert_array_equal(dice_heatmap(tiny_model, image, mask, 16, frozen, progress=False).score, hm.score)


def test_centroid_score_is_evolutions_step_zero_score(nano, phantoms):
    reg = regressor_with_statistics(64).eval()
    for image, masks in phantoms[:2]:
        truth = masks["right_lung"]
        click = centroid_prompt(truth)
        scorer = RegressorScorer(reg, image, sharpness=5.0)
        with torch.no_grad():
            pred = predict(nano, nano.embed(image), Prompt.click(*click), output_size=(scorer.size, scorer.size))
            centroid_score = float(scorer(pred.logits, pred.confidence)[0])
        res = evolve_prompt(nano, reg, image, click, steps=2, sharpness=5.0)
        assert res.trajectory[0].score == pytest.approx(centroid_score, abs=1e-6)
        assert res.trajectory[0].confidence == pytest.approx(float(pred.confidence[0]), abs=1e-6)
        other = RegressorScorer(reg, image, sharpness=2.0)(pred.logits, pred.confidence)
        assert abs(float(other[0]) - centroid_score) > 1e-4  # the check above can tell sharpness apart


def test_the_regressor_trains_on_the_masks_evolution_shows_it(nano, tmp_path):
    dataset = FolderDataset(write_phantom_set(tmp_path / "set", 1, seed=5, size=256))
    image_id = dataset.ids[0]
    image, truth = dataset.image(image_id), dataset.mask(image_id, "left_lung")
    data = regressor_samples(nano, dataset, [image_id], "left_lung", size=64, sharpness=5.0, n_synthetic=2,
                             n_outside=1, progress=False)  # fmt: skip
    band = data.kind == "model_band"
    assert band.sum() == 3
    emb = nano.embed(image)
    for stored, true_dice, conf, click in zip(
        data.masks[band], data.dice[band], data.confidence[band], band_prompts(truth), strict=True
    ):
        with torch.no_grad():
            logits = predict(nano, emb, Prompt.click(*click), output_size=(64, 64)).logits
            full = predict(nano, emb, Prompt.click(*click))  # the Dice is of the full-size mask
        shown = torch.sigmoid(5.0 * logits)[0, 0].numpy()  # what RegressorScorer feeds the regressor
        np.testing.assert_allclose(stored / 255.0, shown, atol=0.5 / 255 + 1e-6)
        assert true_dice == pytest.approx(dice(full.logits[0, 0].numpy() > 0, truth), abs=1e-6)
        assert conf == pytest.approx(float(full.confidence[0]), abs=1e-6)
    np.testing.assert_allclose(data.images[0] / 255.0, to_input(image, 64)[0, 0].numpy(), atol=0.5 / 255 + 1e-6)
    # the level-set masks: the image's own generator draws them first; each is stored with its own Dice
    synthetic = data.kind == "synthetic"
    cands = candidate_masks(truth, 2, seed=image_rng(0, image_id))
    assert synthetic.sum() == len(cands) == 2
    assert data.dice[synthetic] == pytest.approx([dice(c.mask, truth) for c in cands], abs=1e-6)
    for stored, cand in zip(data.masks[synthetic], cands, strict=True):
        np.testing.assert_allclose(stored / 255.0, to_input(cand.mask, 64)[0, 0].numpy(), atol=0.5 / 255 + 1e-6)
