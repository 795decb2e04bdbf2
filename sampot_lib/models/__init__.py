"""Promptable segmentation models: the protocol, the SAM backend, and the checkpoint registry."""

from sampot_lib.models.base import ImageEmbedding, MaskPrediction, PromptableModel
from sampot_lib.models.registry import CHECKPOINTS, Checkpoint, build_sam, fetch_checkpoint, load_model
from sampot_lib.models.sam import SamModel, from_model_frame, to_model_frame

__all__ = [
    "CHECKPOINTS",
    "Checkpoint",
    "ImageEmbedding",
    "MaskPrediction",
    "PromptableModel",
    "SamModel",
    "build_sam",
    "fetch_checkpoint",
    "from_model_frame",
    "load_model",
    "to_model_frame",
]
