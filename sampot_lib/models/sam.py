"""A differentiable prompt path through segment-anything's ``Sam``.

``SamPredictor`` runs under ``no_grad`` and maps coordinates with a NumPy transform, so gradients cannot reach the
click. ``SamModel`` calls ``prompt_encoder`` and ``mask_decoder`` directly (the decoder through
:mod:`sampot_lib.models.decoder`, which does its prompt-free work once per image) and maps original-image
coordinates into SAM's frame with plain tensor arithmetic, so ``d(mask logits) / d(click x, y)`` exists.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from sampot_lib.defaults import BATCHED_MODELS, MIN_IMAGE_SIDE, PROMPT_KINDS
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.models.base import ImageEmbedding, MaskPrediction, check_prompt_tensors
from sampot_lib.models.cache import EmbeddingStore, weights_fingerprint
from sampot_lib.models.decoder import ImageSide, decode, image_side

MaskOutput = Literal["best", "single", 0, 1, 2]
MASK_OUTPUTS: tuple[MaskOutput, ...] = ("best", "single", 0, 1, 2)


def model_frame_size(original_size: tuple[int, int], target_length: int) -> tuple[int, int]:
    """(H', W') of an (H, W) image resized so its longest side is ``target_length`` (SAM's ResizeLongestSide)."""
    h, w = original_size
    scale = target_length / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def to_model_frame(coords: torch.Tensor, original_size: tuple[int, int], target_length: int) -> torch.Tensor:
    """Map ``... x 2`` (x, y) pixel coordinates of the original image into the model's frame. Differentiable."""
    h, w = original_size
    new_h, new_w = model_frame_size(original_size, target_length)
    scale = coords.new_tensor([new_w / w, new_h / h])
    return coords * scale


def from_model_frame(coords: torch.Tensor, original_size: tuple[int, int], target_length: int) -> torch.Tensor:
    """Inverse of :func:`to_model_frame`."""
    h, w = original_size
    new_h, new_w = model_frame_size(original_size, target_length)
    return coords / coords.new_tensor([new_w / w, new_h / h])


def check_image(image: np.ndarray) -> np.ndarray:
    """Return an H x W x 3 uint8 view of a grayscale (H x W) or RGB (H x W x 3) uint8 image, or raise."""
    if not isinstance(image, np.ndarray):
        raise SampotError(f"image must be a NumPy array, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise SampotError(
            f"image has dtype {image.dtype}; expected uint8. Window it first with sampot_lib.data.to_uint8."
        )
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise SampotError(f"image has shape {image.shape}; expected H x W (grayscale) or H x W x 3 (RGB).")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise SampotError(
            f"image is {image.shape[1]}x{image.shape[0]} pixels; it must be at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}."
        )
    return image


class SamLikeModel(nn.Module):
    """A frozen SAM-style model (segment-anything's ``PromptEncoder`` and ``MaskDecoder`` over an image encoder)
    behind the :class:`~sampot_lib.models.base.PromptableModel` protocol.

    Subclasses say how an image becomes the encoder's input (:meth:`_encode`); prompts, outputs and resizing are
    shared. ``mask_output`` picks which output a prompt yields: ``"best"`` (of the three multimask outputs, the one
    with the highest predicted IoU: what SAM recommends for a single ambiguous click), ``0``/``1``/``2`` (a fixed
    multimask output, roughly sub-part / part / whole), or ``"single"`` (the single-output token, meant for several
    prompts or a box).
    """

    differentiable = True

    def __init__(
        self,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        target_length: int,
        name: str,
        mask_output: MaskOutput = "best",
        prompt_kinds: tuple[str, ...] = PROMPT_KINDS,
        cache_size: int = 2,
    ):
        super().__init__()
        if mask_output not in MASK_OUTPUTS:
            raise SampotError(f"mask_output must be one of {MASK_OUTPUTS}, got {mask_output!r}.")
        self.prompt_encoder = prompt_encoder.eval().requires_grad_(False)
        self.mask_decoder = mask_decoder.eval().requires_grad_(False)
        self.name = name
        self.mask_output: MaskOutput = mask_output
        self.prompt_kinds = tuple(prompt_kinds)
        self.target_length = target_length
        self._resize = ResizeLongestSide(target_length)
        self._cache: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._cache_size = cache_size
        self._fast_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None
        with torch.no_grad():  # a constant of the frozen prompt encoder: compute once, not per step
            self.register_buffer("_dense_pe", prompt_encoder.get_dense_pe(), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._dense_pe.device

    def train(self, mode: bool = True) -> SamLikeModel:  # noqa: ARG002 - the model stays in eval mode
        return super().train(False)

    def _encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """H x W x 3 uint8 -> (1 x C x h x w features, (H', W') size of the resized image before padding)."""
        raise NotImplementedError

    def use_store(self, store: EmbeddingStore | None) -> SamLikeModel:
        """Keep embeddings on disk in ``store`` (see :mod:`sampot_lib.models.cache`), or only in memory (None)."""
        self.store = store
        return self

    @property
    def model_id(self) -> str:
        """The model's name and a fingerprint of its image encoder's weights (computed once)."""
        if getattr(self, "_model_id", None) is None:
            self._model_id = f"{self.name}:{weights_fingerprint(self._encoder())}"
        return self._model_id

    def _encoder(self) -> nn.Module:
        raise NotImplementedError

    def use_fast_encoder(self, encoder: Callable[[torch.Tensor], torch.Tensor] | None) -> SamLikeModel:
        """Run the image encoder's pass through ``encoder`` (onnxruntime: :func:`sampot_lib.models.onnx.use_encoder`)
        instead of torch, or through torch again (None). ``encoder`` takes and returns what the torch encoder does,
        within float rounding: the embedding cache on disk keeps the torch encoder's fingerprint and serves both."""
        self._fast_encoder = encoder
        self._cache.clear()
        return self

    @property
    def batch_prompts(self) -> bool:
        """Whether evolution should score a population of prompts in one call (faster for this model on a CPU;
        :data:`sampot_lib.defaults.BATCHED_MODELS`)."""
        return self.name in BATCHED_MODELS

    @property
    def encoder_backend(self) -> str:
        """Where the image encoder runs: ``"onnx"`` or ``"torch"``."""
        return "torch" if self._fast_encoder is None else "onnx"

    def _run_encoder(self, x: torch.Tensor) -> torch.Tensor:
        """The image encoder's pass on its input ``x`` (1 x 3 x S x S), through the fast encoder if one is set."""
        if self._fast_encoder is not None:
            try:
                return self._fast_encoder(x)
            except Exception as exc:  # onnxruntime raises its own types; torch can always do the pass
                warnings.warn(
                    f"the {self.encoder_backend} image encoder failed ({type(exc).__name__}: {exc}); model "
                    f"{self.name!r} encodes in torch from now on.", SampotWarning, stacklevel=3,
                )  # fmt: skip
                self._fast_encoder = None
        return self._encoder()(x)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """Encode an H x W or H x W x 3 uint8 image once: repeated calls with the same pixels hit a small memory
        cache, and, with an embedding store, every process and later run reads the stored embedding."""
        rgb = check_image(image)
        key = hashlib.sha1(rgb.tobytes()).hexdigest() + str(rgb.shape) + str(self.device)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        store = getattr(self, "store", None)
        stored = None
        if store is not None:
            shape = (1, *self._dense_pe.shape[1:])  # the image embedding: 1 x C x h x w, as the dense PE
            size = self._resize.get_preprocess_shape(rgb.shape[0], rgb.shape[1], self.target_length)  # as _encode
            stored = store.load(store.key(self.model_id, rgb), self.device, shape, size)
        if stored is not None:
            features, input_size = stored
        else:
            features, input_size = self._encode(rgb)
            if store is not None:
                store.save(store.key(self.model_id, rgb), features, input_size)
        emb = ImageEmbedding(features=features, original_size=rgb.shape[:2], input_size=input_size)
        self._cache[key] = emb
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return emb

    def predict(
        self,
        embedding: ImageEmbedding,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> MaskPrediction:
        """points: B x N x 2 (x, y) original-image pixels or None; labels: B x N or None; boxes: B x 4 or None.

        Returns logits B x 1 x H x W at ``output_size`` (default: the original size) and confidence B (the IoU
        head's prediction for the chosen output). Differentiable with respect to ``points`` and ``boxes``.
        """
        check_prompt_tensors(points, labels, boxes)
        size, target = embedding.original_size, self.target_length
        point_arg, box = None, None
        if points is not None:
            # in the model's own precision (float64 after .double(), for gradient checks), float32 as loaded
            coords = to_model_frame(points.to(self.device, self._dense_pe.dtype), size, target)
            point_arg = (coords, labels.to(self.device))
        if boxes is not None:
            box = to_model_frame(boxes.to(self.device, self._dense_pe.dtype).reshape(-1, 2, 2), size, target)
            box = box.reshape(-1, 4)
        sparse, _ = self.prompt_encoder(points=point_arg, boxes=box, masks=None)
        logits, iou = decode(self.mask_decoder, self._image_side(embedding), sparse, pick=self._pick)
        confidence = iou[torch.arange(iou.shape[0], device=iou.device), self._pick(iou)]
        low_res = logits.detach()
        return MaskPrediction(
            logits=self._to_output(logits, embedding, output_size), confidence=confidence,
            resize=lambda size: self._to_output(low_res, embedding, size),
        )  # fmt: skip

    def _pick(self, iou: torch.Tensor) -> torch.Tensor:
        """The mask token ``mask_output`` asks for, given the IoU predictions of all K mask tokens (B x K): token 0
        for "single"; of the multimask tokens 1..K-1 (as ``MaskDecoder.forward`` slices them), the highest-scoring
        one for "best" or the given one for 0, 1 or 2. -> B indices into the K tokens."""
        if self.mask_output == "single":
            return torch.zeros(iou.shape[0], dtype=torch.long, device=iou.device)
        if self.mask_output == "best":
            return iou[:, 1:].argmax(dim=1) + 1
        return torch.full((iou.shape[0],), int(self.mask_output) + 1, dtype=torch.long, device=iou.device)

    def _image_side(self, embedding: ImageEmbedding) -> ImageSide:
        """The decoder's prompt-free work for this embedding, done once and kept for the next prompts (the
        evolution step's hot path); recomputed for another embedding, or after ``.to()``/``.double()``."""
        features = embedding.features
        cached = getattr(self, "_side", None)
        if cached is not None and cached[0] is features:
            return cached[1]
        side = image_side(self.mask_decoder, self.prompt_encoder.no_mask_embed.weight[0], features, self._dense_pe)
        self._side = (features, side)
        return side

    def _apply(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202 - nn.Module's hook for .to(), .double(), ...
        self._side = None  # the cached image side is in the old dtype / on the old device
        return super()._apply(fn, *args, **kwargs)

    def _to_output(
        self, low_res: torch.Tensor, embedding: ImageEmbedding, output_size: tuple[int, int] | None
    ) -> torch.Tensor:
        """Resize B x 1 x L x L logits of the model's padded square frame to ``output_size`` of the unpadded image.

        One bilinear resize; the padding is cropped by resizing the whole frame to a slightly larger grid and
        keeping its top-left part. At the encoder's input size this equals SAM's postprocess_masks (upsample, crop
        the padding, resize); at other sizes it differs from it by interpolation only.
        """
        out_h, out_w = output_size or embedding.original_size
        in_h, in_w = embedding.input_size
        full_h = math.ceil(out_h * self.target_length / in_h - 1e-6)
        full_w = math.ceil(out_w * self.target_length / in_w - 1e-6)
        logits = F.interpolate(low_res, (full_h, full_w), mode="bilinear", align_corners=False)
        return logits[..., :out_h, :out_w]


class SamModel(SamLikeModel):
    """segment-anything's ``Sam`` (or SAM-Nano) behind the protocol; the weights are frozen."""

    def __init__(
        self,
        sam: Sam,
        name: str = "sam",
        mask_output: MaskOutput = "best",
        cache_size: int = 2,
        prompt_kinds: tuple[str, ...] = PROMPT_KINDS,
    ):
        super().__init__(
            sam.prompt_encoder, sam.mask_decoder, sam.image_encoder.img_size, name, mask_output, prompt_kinds,
            cache_size,
        )  # fmt: skip
        self.sam = sam.eval().requires_grad_(False)

    def _encode(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        resized = self._resize.apply_image(rgb)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        return self._run_encoder(self.sam.preprocess(x)), resized.shape[:2]

    def _encoder(self) -> nn.Module:
        return self.sam.image_encoder
