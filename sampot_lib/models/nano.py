"""SAM-Nano: a small model with segment-anything's exact architecture, trained by this project on non-medical images.

It is **not** SAM. It stands in for SAM where no pretrained checkpoint can be downloaded, so that every code path of
the SAM backend (``Sam``, ``PromptEncoder``, ``MaskDecoder`` with three multimask outputs and the IoU head) runs for
real. It was never shown a chest X-ray or a lung mask; see ``weights/sam_nano.md`` for its data, cost and quality,
and ``scripts/train_sam_nano.py`` for how the weights were made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from sampot_lib.errors import SampotError

SAM_NANO_FILENAME = "sam_nano.pt"
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / SAM_NANO_FILENAME
# sha256 of the committed weights file (written by scripts/train_sam_nano.py --export; checked by
# tests/models/test_nano.py).
SAM_NANO_SHA256 = "93f0b359004f1b558f8ed529853c40c47c34b33712cc57c34fb192c425c8352d"
# Registry record extras. "mask_output": the default output for sam_nano, "single" (SAM's single-output token):
# on JSRT's train+val left lungs (seed-0 split) it gives the best one-click Dice and the IoU head that best tracks
# Dice (sam_nano.md).
SAM_NANO_META: dict[str, object] = {
    "source": "trained by scripts/train_sam_nano.py on non-medical images; NOT SAM, a stand-in for it",
    "license": "MIT (weights trained by this project)",
    "mask_output": "single",
    # trained on single clicks, several clicks and noisy boxes (scripts/train_sam_nano.py); the click is its use here
    "prompt_kinds": ["click", "clicks", "box", "box+clicks"],
    "card": "sampot_lib/models/weights/sam_nano.md",
}


@dataclass(frozen=True)
class NanoConfig:
    """Sizes of SAM-Nano. SAM vit_b for comparison: 1024 px, embed 768, depth 12, prompt dim 256."""

    img_size: int = 256
    patch_size: int = 16
    encoder_embed_dim: int = 192
    encoder_depth: int = 6
    encoder_num_heads: int = 6
    # A 16 x 16 token grid is small enough for global attention in every block (SAM windows most blocks at 64 x 64).
    encoder_window_size: int = 0
    prompt_embed_dim: int = 128
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 512
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 128

    @property
    def image_embedding_size(self) -> int:
        """Side of the encoder's output grid (16 for 256 px / patch 16)."""
        return self.img_size // self.patch_size


NANO_CONFIG = NanoConfig()


def _build(config: NanoConfig) -> Sam:
    grid = config.image_embedding_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=4,
            out_chans=config.prompt_embed_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=config.encoder_window_size,
            global_attn_indexes=(),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        # SAM's ImageNet statistics on 0..255 pixels: the training script feeds images exactly as SamModel does.
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def build_sam_nano(checkpoint: str | Path | None = None, config: NanoConfig = NANO_CONFIG) -> Sam:
    """Build SAM-Nano (a segment_anything ``Sam``, 256 px input) in eval mode; load ``checkpoint`` if given.

    The checkpoint is a state dict, or a dict with a ``"model"`` state dict (fp16 or fp32; loaded as fp32).
    """
    sam = _build(config)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise SampotError(
                f"SAM-Nano checkpoint {path} does not exist. The committed weights live at {WEIGHTS_PATH}; "
                "make new ones with scripts/train_sam_nano.py."
            )
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = blob["model"] if isinstance(blob, dict) and "model" in blob else blob
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        hint = "Retrain with scripts/train_sam_nano.py or pass the right file."
        try:
            missing, unexpected = sam.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # tensors of the wrong shape
            raise SampotError(f"{path} is not a SAM-Nano checkpoint for {asdict(config)}: {exc}. {hint}") from exc
        if missing or unexpected:
            raise SampotError(
                f"{path} is not a SAM-Nano checkpoint for {asdict(config)}: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). {hint}"
            )
    return sam.eval()
