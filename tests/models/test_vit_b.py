"""The real ViT-B SAM architecture (random weights: no checkpoint can be downloaded here)."""

import numpy as np
import pytest
import torch

from sampot_lib.models import SamModel, build_sam
from sampot_lib.models.registry import infer_model_type


@pytest.mark.slow
def test_vit_b_gradient_reaches_the_click():
    torch.manual_seed(0)
    model = SamModel(build_sam("vit_b"), name="vit_b")
    assert infer_model_type(model.sam.state_dict()) == "vit_b"
    image = (np.random.default_rng(0).random((300, 400)) * 255).astype(np.uint8)  # not square: padding is cropped
    emb = model.embed(image)
    assert emb.features.shape == (1, 256, 64, 64) and emb.input_size == (768, 1024)
    pts = torch.tensor([[[200.0, 150.0]]], requires_grad=True)
    pred = model.predict(emb, pts, torch.ones(1, 1, dtype=torch.long), output_size=(128, 128))
    assert pred.logits.shape == (1, 1, 128, 128)
    torch.sigmoid(5 * pred.logits).mean().backward()
    assert torch.isfinite(pts.grad).all() and pts.grad.abs().sum() > 0
    full = model.predict(emb, pts.detach(), torch.ones(1, 1, dtype=torch.long))
    assert full.logits.shape == (1, 1, 300, 400)
