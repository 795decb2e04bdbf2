"""SAM-Nano: architecture, committed weights, training data and the training step."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam

from sampot_lib.errors import SampotError
from sampot_lib.models.nano import SAM_NANO_SHA256, WEIGHTS_PATH, NanoConfig, build_sam_nano

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))  # SAM-Nano's training-data generator lives beside its training script
import nano_data  # noqa: E402

TINY = NanoConfig(img_size=64, encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2, prompt_embed_dim=32,
                  decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)  # fmt: skip


def _train_module():
    spec = importlib.util.spec_from_file_location("train_sam_nano", ROOT / "scripts" / "train_sam_nano.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_builder_gives_a_small_real_sam():
    sam = build_sam_nano()
    assert isinstance(sam, Sam)
    assert isinstance(sam.image_encoder, ImageEncoderViT)
    assert isinstance(sam.prompt_encoder, PromptEncoder)
    assert isinstance(sam.mask_decoder, MaskDecoder)
    assert sam.image_encoder.img_size == 256
    assert len(sam.image_encoder.blocks) == 6
    assert sam.mask_decoder.num_mask_tokens == 4  # three multimask outputs + the single-output token
    n_params = sum(p.numel() for p in sam.parameters())
    assert 3_000_000 < n_params < 5_000_000
    with torch.no_grad():
        features = sam.image_encoder(torch.zeros(1, 3, 256, 256))
    assert features.shape == (1, 128, 16, 16)


def test_committed_weights_match_their_sha256_and_load():
    assert WEIGHTS_PATH.is_file(), f"{WEIGHTS_PATH} is missing: export it with scripts/train_sam_nano.py --export"
    data = WEIGHTS_PATH.read_bytes()
    assert len(data) <= 25 * 2**20
    assert hashlib.sha256(data).hexdigest() == SAM_NANO_SHA256
    sam = build_sam_nano(WEIGHTS_PATH)
    assert all(p.dtype == torch.float32 for p in sam.parameters())
    state = torch.load(WEIGHTS_PATH, map_location="cpu", weights_only=True)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(sam.state_dict()[key], state[key].float())


def test_registry_loads_sam_nano_offline_and_the_mask_follows_the_click():
    from sampot_lib.models.registry import load_model

    model = load_model("sam_nano")
    yy, xx = np.mgrid[0:128, 0:128]
    image = np.where(((yy - 40) ** 2 + (xx - 40) ** 2 < 400) | ((yy - 90) ** 2 + (xx - 90) ** 2 < 300), 220, 40)
    emb = model.embed(image.astype(np.uint8))
    points = torch.tensor([[[40.0, 40.0]], [[90.0, 90.0]]])
    with torch.no_grad():
        pred = model.predict(emb, points, torch.ones(2, 1, dtype=torch.long))
    masks = pred.logits[:, 0] > 0
    assert pred.logits.shape == (2, 1, 128, 128)
    assert masks[0, 40, 40] and masks[1, 90, 90]
    assert not torch.equal(masks[0], masks[1])


def test_wrong_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"image_encoder.pos_embed": torch.zeros(1, 2, 2, 8)}, path)
    with pytest.raises(SampotError, match="not a SAM-Nano checkpoint"):
        build_sam_nano(path)
    with pytest.raises(SampotError, match="does not exist"):
        build_sam_nano(tmp_path / "missing.pt")


def test_training_data_is_seeded_nested_and_non_medical():
    a = nano_data.procedural_scene(np.random.default_rng(3), size=96)
    b = nano_data.procedural_scene(np.random.default_rng(3), size=96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.levels, b.levels)
    assert a.image.shape == (96, 96, 3) and a.image.dtype == np.uint8
    for fine, coarse in ((a.levels[0], a.levels[1]), (a.levels[1], a.levels[2])):
        pairs = np.unique(np.stack([fine.ravel(), coarse.ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1]  # every fine region lies in one coarse region
    medical = {"cell", "cells3d", "brain", "kidney", "retina", "microaneurysms", "immunohistochemistry",
               "shepp_logan_phantom", "human_mitosis", "skin"}  # fmt: skip
    assert not medical & set(nano_data.SKIMAGE_IMAGES)


def test_batched_decoder_equals_segment_anything_decoder():
    train = _train_module()
    sam = build_sam_nano(config=TINY)
    features = torch.randn(2, TINY.prompt_embed_dim, 4, 4)
    prompts = train.Prompts(
        image=torch.tensor([1, 1]), target=torch.zeros(2, 64, 64),
        sup_points=torch.zeros(2, 1, 2), sup_labels=torch.ones(2, 1, dtype=torch.long),
        points=torch.tensor([[[10.0, 20.0]], [[40.0, 5.0]]]), labels=torch.ones(2, 1, dtype=torch.long),
    )  # fmt: skip
    with torch.no_grad():
        masks, iou = train._decode(sam, features, prompts)
        sparse, dense = sam.prompt_encoder(points=(prompts.points, prompts.labels), boxes=None, masks=None)
        ref_masks, ref_iou = sam.mask_decoder.predict_masks(
            features[1:2], sam.prompt_encoder.get_dense_pe(), sparse, dense
        )
    assert torch.allclose(masks, ref_masks, atol=1e-5) and torch.allclose(iou, ref_iou, atol=1e-5)


def test_a_few_training_steps_reduce_the_loss():
    train = _train_module()
    torch.manual_seed(0)
    sam = build_sam_nano(config=TINY).train()
    scenes = [nano_data.procedural_scene(np.random.default_rng(i), size=TINY.img_size) for i in range(2)]
    opt = torch.optim.Adam(sam.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        # the same prompts every step: the loss on one fixed batch must fall when the model fits it
        loss, logs = train.training_loss(sam, scenes, np.random.default_rng(0), per_image=3, iou_weight=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        assert np.isfinite(logs["mask"]) and np.isfinite(logs["iou_mse"])
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_export_writes_fp16_weights_that_load_back(tmp_path):
    train = _train_module()
    sam = build_sam_nano()
    torch.save({"model": sam.state_dict(), "optimizer": {}, "step": 0}, tmp_path / "ckpt.pt")
    digest = train.export_weights(tmp_path / "ckpt.pt", tmp_path / "w.pt")
    assert digest == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()
    loaded = build_sam_nano(tmp_path / "w.pt")
    w, w16 = sam.state_dict(), loaded.state_dict()
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.allclose(w[key], w16[key], atol=1e-3)
    assert not list(tmp_path.glob("*.tmp"))
