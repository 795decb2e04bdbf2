"""Shared fixtures: the smallest real segment-anything model that proves a point, and small images with masks."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from sampot_lib.models import SamModel

torch.set_num_threads(1)  # tests run beside other work on 2 cores; one thread stays stable


def build_tiny_sam(img_size: int = 64, dim: int = 32, seed: int = 0) -> Sam:
    """segment-anything's real modules at toy size (64 px input, 16 x 16 low-res masks), random weights."""
    torch.manual_seed(seed)
    grid = img_size // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=img_size,
            patch_size=16,
            embed_dim=dim,
            depth=1,
            num_heads=2,
            mlp_ratio=2,
            out_chans=dim,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            qkv_bias=True,
            use_rel_pos=True,
            window_size=0,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
            transformer_dim=dim,
            iou_head_depth=2,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


@pytest.fixture
def tiny_model() -> SamModel:
    return SamModel(build_tiny_sam(), name="tiny")


def disk_image(size: int = 96, center: tuple[float, float] = (40, 50), radius: float = 25, seed: int = 0):
    """A dark disk on a bright noisy background: (H x W uint8 image, H x W bool mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2
    image = np.where(mask, 60, 190) + rng.normal(0, 12, (size, size))
    return np.clip(image, 0, 255).astype(np.uint8), mask


@pytest.fixture
def disk() -> tuple[np.ndarray, np.ndarray]:
    return disk_image()
