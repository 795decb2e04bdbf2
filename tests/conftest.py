"""Shared fixtures: the smallest real segment-anything model that proves a point, and small images with masks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam

from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.models import SamModel
from sampot_lib.models.nano import NanoConfig, build_sam_nano

# Tests live in folders mirroring sampot_lib/; the shared fixture modules (data_fixtures, app_fixtures, parallel_tasks)
# sit here, so every test module imports them by name.
sys.path.insert(0, str(Path(__file__).parent))

torch.set_num_threads(1)  # tests run beside other work on 2 cores; one thread stays stable
# The suite's numbers are compared at one thread in process and in workers: a caller's $SAMPOT_THREADS would set
# another count inside in-process commands. Tests of the setting set it themselves.
os.environ.pop("SAMPOT_THREADS", None)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Each test starts at one torch thread: an in-process command reads $SAMPOT_THREADS and sets torch's count for
    the whole process, and a test after it that compares numbers with a worker's (one thread) would differ in the
    last bits of a float sum."""
    torch.set_num_threads(1)
    yield


def build_tiny_sam(img_size: int = 64, dim: int = 32, seed: int = 0) -> Sam:
    """SAM-Nano's builder (segment-anything's real modules) at toy size: 16 x 16 low-res masks, random weights."""
    torch.manual_seed(seed)
    config = NanoConfig(
        img_size=img_size, encoder_embed_dim=dim, encoder_depth=1, encoder_num_heads=2, prompt_embed_dim=dim,
        mask_in_chans=4, decoder_depth=1, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32,
    )  # fmt: skip
    return build_sam_nano(config=config).eval()


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


def regressor_with_statistics(size: int = 32, seed: int = 0) -> SegmentationRegressor:
    """A random regressor (narrow, fast) whose BatchNorm running statistics are not the defaults, as after
    training; left in train mode, as a caller fresh from training might leave it."""
    torch.manual_seed(seed)
    reg = SegmentationRegressor(size, (4, 8, 8, 8))
    with torch.no_grad():
        for _ in range(3):
            reg(torch.rand(4, 1, size, size), torch.rand(4, 1, size, size))  # train mode: updates the statistics
    return reg


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """12 phantom chest X-rays of 128 px (left and right lung masks), once per test module."""
    from sampot_lib.data.phantom import write_phantom_set

    return write_phantom_set(tmp_path_factory.mktemp("data") / "phantom", 12, seed=0, size=128)


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    """A checkpoint file of the toy SAM, registered as model type "tiny"."""
    from sampot_lib.models import registry

    monkeypatch.setitem(registry.MODEL_BUILDERS, "tiny", build_tiny_sam)
    path = tmp_path / "tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


def run_command(argv: list, capsys) -> tuple[int, str, str]:
    """``sampot ARGV`` in this process: (exit status, stdout, stderr); argparse's own errors exit from parse_args."""
    from sampot_lib.cli.main import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err
