"""The differentiable SAM wrapper: coordinates, agreement with SamPredictor, gradients to the click, bad input."""

import numpy as np
import pytest
import torch
from conftest import build_tiny_sam
from segment_anything import SamPredictor

from sampot_lib import SampotError
from sampot_lib.models import SamModel, from_model_frame, to_model_frame
from sampot_lib.models.sam import model_frame_size


@pytest.mark.parametrize("size", [(1024, 1024), (600, 800), (333, 517)])
def test_coordinate_transform_round_trips_and_matches_sam(size):
    from segment_anything.utils.transforms import ResizeLongestSide

    pts = torch.tensor([[0.0, 0.0], [size[1] - 1.0, size[0] - 1.0], [123.4, 56.7]])
    frame = to_model_frame(pts, size, 1024)
    torch.testing.assert_close(from_model_frame(frame, size, 1024), pts)
    expected = ResizeLongestSide(1024).apply_coords(pts.numpy().copy(), size)
    np.testing.assert_allclose(frame.numpy(), expected, rtol=1e-5)
    assert max(model_frame_size(size, 1024)) == 1024


@pytest.mark.parametrize("shape", [(64, 64), (96, 96), (80, 120)])
def test_wrapper_agrees_with_sam_predictor(shape):
    sam = build_tiny_sam()
    model = SamModel(sam)
    img = (np.random.default_rng(1).random(shape) * 255).astype(np.uint8)
    pred = model.predict(model.embed(img), torch.tensor([[[30.0, 40.0]]]), torch.ones(1, 1, dtype=torch.long))
    predictor = SamPredictor(sam)
    predictor.set_image(np.repeat(img[..., None], 3, -1))
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[30.0, 40.0]]), point_labels=np.array([1]), multimask_output=True, return_logits=True
    )
    k = int(scores.argmax())
    assert pred.logits.shape == (1, 1, *shape)
    assert pred.confidence.item() == pytest.approx(float(scores[k]), abs=1e-5)
    ours = pred.logits[0, 0].detach().numpy()
    if shape == (64, 64):  # the image is SAM's frame (as 1024 px X-rays are for vit_b): identical logits
        np.testing.assert_allclose(ours, masks[k], atol=1e-5)
    else:  # SAM resizes twice (to its frame, then to the image), we once: equal up to interpolation error
        assert np.abs(ours - masks[k]).mean() < 0.05 * np.abs(masks[k]).max()
        assert ((ours > 0) == (masks[k] > 0)).mean() > 0.95


def test_gradient_reaches_the_click(tiny_model, disk):
    image, _ = disk
    emb = tiny_model.embed(image)
    pts = torch.tensor([[[40.0, 50.0]]], requires_grad=True)
    pred = tiny_model.predict(emb, pts, torch.ones(1, 1, dtype=torch.long), output_size=(32, 32))
    torch.sigmoid(pred.logits).mean().backward()
    assert pts.grad is not None and torch.isfinite(pts.grad).all() and pts.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_model.parameters())  # SAM is frozen


def test_embedding_is_cached_and_has_no_grad(tiny_model, disk):
    image, _ = disk
    a = tiny_model.embed(image)
    assert tiny_model.embed(image.copy()) is a
    assert not a.features.requires_grad
    # the same bytes in another shape are another image: its own embedding, in its own frame
    h, w = image.shape[:2]
    other = tiny_model.embed(image.reshape(h // 2, w * 2, *image.shape[2:]))
    assert other.original_size == (h // 2, w * 2) != a.original_size
    assert other.input_size != a.input_size


@pytest.mark.parametrize("mask_output", ["best", "single", 0, 1, 2])
def test_mask_output_choices(tiny_model, disk, mask_output):
    tiny_model.mask_output = mask_output
    emb = tiny_model.embed(disk[0])
    pred = tiny_model.predict(emb, torch.tensor([[[40.0, 50.0]], [[10.0, 10.0]]]), torch.ones(2, 1, dtype=torch.long))
    assert pred.logits.shape == (2, 1, 96, 96) and pred.confidence.shape == (2,)


@pytest.mark.parametrize("with_click", [False, True])
def test_box_prompt_agrees_with_sam_predictor(with_click):
    sam = build_tiny_sam()
    model = SamModel(sam)
    img = (np.random.default_rng(2).random((64, 64)) * 255).astype(np.uint8)  # SAM's frame: identical logits
    box = np.array([10.0, 20, 50, 40])  # x0, y0, x1, y1: wider than tall, so a swapped x / y shows
    pts = torch.tensor([[[30.0, 25.0]]]) if with_click else None
    labels = torch.ones(1, 1, dtype=torch.long) if with_click else None
    pred = model.predict(model.embed(img), pts, labels, boxes=torch.tensor(box[None], dtype=torch.float32))
    predictor = SamPredictor(sam)
    predictor.set_image(np.repeat(img[..., None], 3, -1))
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[30.0, 25.0]]) if with_click else None,
        point_labels=np.array([1]) if with_click else None,
        box=box,
        multimask_output=True,
        return_logits=True,
    )
    k = int(scores.argmax())
    np.testing.assert_allclose(pred.logits[0, 0].detach().numpy(), masks[k], atol=1e-5)
    assert pred.confidence.item() == pytest.approx(float(scores[k]), abs=1e-5)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((64, 64), dtype=np.float32), "dtype float32"),
        (np.zeros((64, 64, 4), dtype=np.uint8), "shape"),
        (np.zeros((8, 64), dtype=np.uint8), "at least 16x16"),
        ([[0, 1], [2, 3]], "NumPy array"),
    ],
)
def test_bad_images_are_refused(tiny_model, image, message):
    with pytest.raises(SampotError, match=message):
        tiny_model.embed(image)


def test_bad_prompt_shapes_are_refused(tiny_model, disk):
    emb = tiny_model.embed(disk[0])
    with pytest.raises(SampotError, match="B x N x 2"):
        tiny_model.predict(emb, torch.zeros(1, 2), torch.ones(1, 1))
    with pytest.raises(SampotError, match="labels"):
        tiny_model.predict(emb, torch.zeros(1, 1, 2), torch.ones(1, 2))


def test_unknown_mask_output_is_refused():
    with pytest.raises(SampotError, match="mask_output"):
        SamModel(build_tiny_sam(), mask_output=3)
