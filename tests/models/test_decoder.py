"""The cheaper mask decoder (sampot_lib/models/decoder.py) computes segment-anything's MaskDecoder exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from sampot_lib.data.phantom import make_phantom
from sampot_lib.models import load_model
from sampot_lib.models.decoder import decode, image_side
from sampot_lib.models.sam import SamLikeModel


@pytest.fixture(scope="module")
def phantoms() -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    return [make_phantom(seed, size=256) for seed in range(2)]


def _sam_vit_decoder() -> tuple[PromptEncoder, MaskDecoder]:
    """SAM ViT-B/L/H's prompt encoder and mask decoder (the same for all three), random weights."""
    torch.manual_seed(0)
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    for p in decoder.parameters():  # SAM's trained biases and norms are not zero and one: make them random too
        p.data.normal_(0, 0.05 if p.ndim > 1 else 0.5)
    return prompt_encoder.eval(), decoder.eval()


def _parts(name: str) -> tuple[PromptEncoder, MaskDecoder]:
    if name == "vit_b":
        return _sam_vit_decoder()
    model = load_model(name)
    return model.prompt_encoder, model.mask_decoder


def _prompts(prompt_encoder: PromptEncoder, batch: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    size = prompt_encoder.input_image_size[0]
    if kind == "box":
        corners = torch.sort(torch.rand(batch, 2, 2, generator=g) * size, dim=1).values
        sparse, _ = prompt_encoder(points=None, boxes=corners.reshape(batch, 4), masks=None)
    else:
        points = torch.rand(batch, 2, 2, generator=g) * size
        labels = torch.tensor([[1, 0]] * batch)
        sparse, _ = prompt_encoder(points=(points, labels), boxes=None, masks=None)
    return sparse.detach()


@pytest.mark.parametrize("name", ["sam_nano", "litemedsam", "vit_b"])
@pytest.mark.parametrize(("batch", "kind"), [(1, "clicks"), (3, "box")])
def test_decode_equals_segment_anythings_decoder_and_its_gradient(name, batch, kind):
    prompt_encoder, decoder = _parts(name)
    torch.manual_seed(1)
    features = torch.randn(1, prompt_encoder.embed_dim, *prompt_encoder.image_embedding_size)
    dense_pe = prompt_encoder.get_dense_pe()
    sparse = _prompts(prompt_encoder, batch, kind)
    dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *features.shape[-2:])

    ref_in = sparse.clone().requires_grad_(True)
    ref_masks, ref_iou = decoder.predict_masks(features, dense_pe, ref_in, dense)
    fast_in = sparse.clone().requires_grad_(True)
    side = image_side(decoder, prompt_encoder.no_mask_embed.weight[0], features, dense_pe)
    masks, iou = decode(decoder, side, fast_in)

    assert masks.shape == ref_masks.shape and iou.shape == ref_iou.shape
    scale = ref_masks.abs().max()
    assert (masks - ref_masks).abs().max() <= 1e-5 * scale, "masks differ beyond float rounding"
    assert torch.allclose(iou, ref_iou, atol=1e-5)
    # every mask differs from the others: a swapped pixel order or token would not pass by symmetry
    assert (ref_masks[:, 0] - ref_masks[:, 1]).abs().max() > 1e-2 * scale

    weights = torch.randn(ref_masks.shape, generator=torch.Generator().manual_seed(2))
    (ref_grad,) = torch.autograd.grad((ref_masks * weights).sum() + ref_iou.sum(), ref_in, retain_graph=True)
    (grad,) = torch.autograd.grad((masks * weights).sum() + iou.sum(), fast_in)
    assert ref_grad.norm() > 0
    assert ((grad - ref_grad).norm() / ref_grad.norm()).item() < 1e-4

    # with ``pick`` only the picked token's masks are read: the same masks, IoUs and gradient as picking afterwards
    picked_in = sparse.clone().requires_grad_(True)
    masks, iou = decode(decoder, side, picked_in, pick=lambda iou: iou.argmin(dim=1))
    rows, token = torch.arange(batch), ref_iou.argmin(dim=1)
    assert masks.shape == (batch, 1, *ref_masks.shape[-2:])
    assert (masks[:, 0] - ref_masks[rows, token]).abs().max() <= 1e-5 * scale
    assert torch.allclose(iou, ref_iou, atol=1e-5)
    (ref_grad,) = torch.autograd.grad((ref_masks[rows, token] * weights[:, 0]).sum(), ref_in)
    (grad,) = torch.autograd.grad((masks[:, 0] * weights[:, 0]).sum(), picked_in)
    assert ((grad - ref_grad).norm() / ref_grad.norm()).item() < 1e-4


def _reference_predict(model: SamLikeModel, emb, points, labels, output_size):
    """What SamLikeModel.predict computed before the cheaper decoder: segment-anything's MaskDecoder.forward."""
    from sampot_lib.models.sam import to_model_frame

    coords = to_model_frame(points.to(model._dense_pe.dtype), emb.original_size, model.target_length)
    sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    low_res, iou = model.mask_decoder(emb.features, model._dense_pe, sparse, dense, model.mask_output != "single")
    if model.mask_output in ("best", "single"):
        pick = iou.argmax(1) if model.mask_output == "best" else torch.zeros(len(iou), dtype=torch.long)
    else:
        pick = torch.full((len(iou),), int(model.mask_output))
    rows = torch.arange(len(iou))
    return model._to_output(low_res[rows, pick][:, None], emb, output_size), iou[rows, pick]


@pytest.mark.parametrize("mask_output", ["best", "single", 1])
def test_model_predictions_are_segment_anythings_for_each_image_in_turn(phantoms, mask_output):
    """The image side is cached per embedding: predictions for image A, then B, then A again are each the
    reference's for that image (a stale image side would give B's prediction A's image)."""
    model = load_model("sam_nano", mask_output=mask_output)
    points = torch.tensor([[[60.0, 80.0]], [[190.0, 120.0]]])
    labels = torch.ones(2, 1, dtype=torch.long)
    for image, _ in (phantoms[0], phantoms[1], phantoms[0]):
        emb = model.embed(image)
        with torch.no_grad():
            pred = model.predict(emb, points, labels, output_size=(64, 64))
            ref_logits, ref_conf = _reference_predict(model, emb, points, labels, (64, 64))
        assert torch.allclose(pred.logits, ref_logits, atol=1e-4)
        assert torch.allclose(pred.confidence, ref_conf, atol=1e-5)
    # and the two images give different masks, so the comparison above can tell them apart
    a = model.predict(model.embed(phantoms[0][0]), points, labels, output_size=(64, 64)).logits
    b = model.predict(model.embed(phantoms[1][0]), points, labels, output_size=(64, 64)).logits
    assert (a - b).abs().max() > 0.1
