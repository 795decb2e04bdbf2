"""An ONNX backend: a SAM-style model's prompt -> mask step exported with ``torch.onnx`` and run by ``onnxruntime``.

As segment-anything's own exporter does, the file holds the prompt encoder and the mask decoder, with the image
embedding (and the prompt encoder's dense positional encoding) as inputs; the image encoder stays in torch and runs
once per image. Prompts enter the file as segment-anything's exporter takes them: points in the model's frame with
labels 1 (foreground) / 0 (background), a box as two corner points labelled 2 and 3, and a click-only prompt padded
with one point labelled -1. The batch and the number of points are dynamic axes, so **one file answers clicks, boxes
and both**. The file returns every mask token's low-resolution logits and IoU prediction; which output a prompt
yields (``mask_output``) and the resize to the requested size are done in torch exactly as in
:meth:`SamLikeModel.predict`, so the ONNX model's masks are the PyTorch model's up to float rounding.

The result, :class:`OnnxPromptModel`, gives no gradients (``differentiable = False``): evolve its prompts with the
gradient-free optimisers (``cmaes``, ``random``). onnxruntime runs on the CPU; the masks come back as torch tensors
on the source model's device.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sampot_lib.errors import PlaceError, SampotError, describe_os_error
from sampot_lib.files import write_bytes
from sampot_lib.models.base import ImageEmbedding, MaskPrediction, check_prompt_tensors
from sampot_lib.models.cache import weights_fingerprint
from sampot_lib.models.sam import SamLikeModel, to_model_frame

FORMAT = "sampot-prompt-decoder/1"
INPUTS = ("image_embeddings", "image_pe", "point_coords", "point_labels")
OUTPUTS = ("low_res_masks", "iou_predictions")
OPSET = 17

if TYPE_CHECKING:  # for the annotation only: models import nothing above them at run time
    from sampot_lib.method.prompts import Prompt


class PromptToMask(nn.Module):
    """The traced graph: (embedding 1 x C x h x w, dense PE 1 x C x h x w, points B x N x 2 in the model's frame,
    labels B x N in {-1, 0, 1, 2, 3}) -> (low-res logits B x T x L x L, IoU predictions B x T) for all T mask
    tokens (token 0: the single output; 1..T-1: the multimask outputs).

    The prompt encoder's boolean-indexed point embedding is written as arithmetic (as in segment-anything's
    ``SamOnnxModel``) so that it traces with dynamic shapes; it equals ``PromptEncoder`` for these labels.
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, point_coords: torch.Tensor,
        point_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        pe = self.prompt_encoder
        h, w = pe.input_image_size
        coords = (point_coords + 0.5) / torch.tensor([w, h], dtype=point_coords.dtype)  # pixel centres, in [0, 1]
        sparse = pe.pe_layer._pe_encoding(coords)
        labels = point_labels.unsqueeze(-1)
        sparse = sparse * (labels != -1) + pe.not_a_point_embed.weight * (labels == -1)
        for i in range(pe.num_point_embeddings):  # 0 background, 1 foreground, 2 and 3 the box's corners
            sparse = sparse + pe.point_embeddings[i].weight * (labels == i)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(point_coords.shape[0], -1, *pe.image_embedding_size)
        return self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings, image_pe=image_pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )  # fmt: skip


def prompt_points(
    points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """segment-anything's exporter layout: (points B x N x 2, labels B x N) with a box as two corner points
    labelled 2, 3 after the clicks, or a padding point labelled -1 when there is no box (as ``PromptEncoder`` pads).
    All coordinates already in the model's frame."""
    parts, tags = [], []
    ref = points if points is not None else boxes
    assert ref is not None
    batch = ref.shape[0]
    if points is not None:
        assert labels is not None
        parts.append(points.float())
        tags.append(labels.float())
    if boxes is not None:
        parts.append(boxes.float().reshape(batch, 2, 2))
        tags.append(torch.tensor([[2.0, 3.0]], device=ref.device).expand(batch, -1))
    else:
        parts.append(torch.zeros(batch, 1, 2, device=ref.device))
        tags.append(torch.full((batch, 1), -1.0, device=ref.device))
    return torch.cat(parts, dim=1), torch.cat(tags, dim=1)


def require_package(package: str):
    """Import ``onnx`` or ``onnxruntime``, or say how to install them (they are the ``onnx`` extra)."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise SampotError(
            f"the ONNX backend needs the {package} package ({exc}); install it with `pip install 'sampot[onnx]'`."
        ) from exc


def _fingerprint(model: SamLikeModel) -> str:
    """Which prompt encoder and mask decoder an exported file belongs to."""
    return weights_fingerprint(model.prompt_encoder, model.mask_decoder)


def check_source(model: object) -> SamLikeModel:
    if not isinstance(model, SamLikeModel):
        raise SampotError(
            f"only SAM-style models (a prompt encoder and a mask decoder, e.g. sam_nano, vit_b, litemedsam) can be "
            f"exported to ONNX; got {type(model).__name__}."
        )
    return model


def export_onnx(model: SamLikeModel, path: str | Path, prompt: Prompt | None = None) -> Path:
    """Write ``model``'s prompt encoder + mask decoder to ``path`` as ONNX and return the path.

    ``prompt`` (a :class:`~sampot_lib.method.prompts.Prompt`, optional) only shapes the example traced; the file
    answers any prompt kind and any number of points (dynamic axes). Written to a temporary name and renamed, so
    ``path`` is either the whole file or absent. The file records the source model's name and a fingerprint of its
    weights, which :class:`OnnxPromptModel` checks.
    """
    model = check_source(model)
    onnx = require_package("onnx")  # the file is written through onnx to attach our metadata
    path = Path(path)
    if path.suffix != ".onnx":
        raise SampotError(f"an ONNX file's name ends in .onnx, got {path.name!r}.")
    if not path.parent.is_dir():
        raise SampotError(f"cannot write {path}: folder {path.parent} does not exist.")
    n_points, has_box = (1, False)
    if prompt is not None:
        n_points, has_box = len(prompt.points), prompt.box is not None
    net = PromptToMask(model.prompt_encoder, model.mask_decoder).cpu().eval()
    pe = model._dense_pe.detach().cpu()
    emb = torch.zeros(1, *pe.shape[1:])
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(1, n_points, 2, generator=gen) * model.target_length if n_points else None
    labels = torch.ones(1, n_points) if n_points else None
    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75]]) * model.target_length if has_box else None
    coords, tags = prompt_points(points, labels, boxes)
    buffer = io.BytesIO()
    dynamic = {"point_coords": {0: "batch", 1: "points"}, "point_labels": {0: "batch", 1: "points"},
               "low_res_masks": {0: "batch"}, "iou_predictions": {0: "batch"}}  # fmt: skip
    # The TorchScript exporter (dynamo=False), the one segment-anything's exporter was written for; the
    # torch.export-based default of torch >= 2.9 needs onnxscript, which is not a dependency.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter deprecation notes: nothing a user can act on
        try:
            torch.onnx.export(
                net, (emb, pe, coords, tags), buffer, dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                output_names=list(OUTPUTS), dynamic_axes=dynamic, do_constant_folding=True,
            )  # fmt: skip
        except Exception as exc:  # the exporter raises many types; none is the user's to fix but a version clash
            raise SampotError(
                f"could not export {model.name!r} to ONNX with torch {torch.__version__} ({type(exc).__name__}: {exc})."
            ) from exc
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {"format": FORMAT, "source_model": model.name, "weights_sha256": _fingerprint(model),
            "target_length": str(model.target_length)}  # fmt: skip
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return write_bytes(path, proto.SerializeToString())


class OnnxPromptModel:
    """A SAM-style model whose prompt -> mask step runs in onnxruntime, behind the
    :class:`~sampot_lib.models.base.PromptableModel` protocol. ``source``: the torch model the file was exported
    from (its image encoder embeds images; its ``mask_output`` picks the output); ``path``: a file written by
    :func:`export_onnx`; ``threads``: onnxruntime's threads (default: torch's)."""

    differentiable = False

    def __init__(self, source: SamLikeModel, path: str | Path, threads: int | None = None) -> None:
        self.source = check_source(source)
        ort = require_package("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise SampotError(f"ONNX file {self.path} does not exist; write one with export_onnx(model, path).")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a damaged or foreign file
            raise SampotError(f"{self.path} cannot be read as an ONNX model ({type(exc).__name__}: {exc}).") from exc
        self._check_file()
        self.name = f"{source.name}-onnx"
        self.prompt_kinds = tuple(source.prompt_kinds)
        self.mask_output = source.mask_output

    def _check_file(self) -> None:
        """The file's inputs, outputs and record must be those export_onnx writes for this source model."""
        redo = f"Export it from this model with sampot_lib.models.onnx.export_onnx(model, {str(self.path)!r})."
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != set(INPUTS) or outputs != list(OUTPUTS):
            raise SampotError(
                f"{self.path} does not match the ONNX backend: it has inputs {sorted(inputs)} and outputs {outputs}, "
                f"expected inputs {list(INPUTS)} and outputs {list(OUTPUTS)} (a prompt encoder + mask decoder). {redo}"
            )
        want = list(self.source._dense_pe.shape)
        for name in ("image_embeddings", "image_pe"):
            got = inputs[name].shape
            if len(got) != 4 or [int(v) if isinstance(v, int) else v for v in got[1:]] != want[1:]:
                raise SampotError(
                    f"{self.path} takes {name} of shape {got}, but model {self.source.name!r} gives "
                    f"{want}: the file was exported from another model. {redo}"
                )
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise SampotError(
                f"{self.path} was not written by sampot's export_onnx (format {meta.get('format')!r}). {redo}"
            )
        if meta.get("weights_sha256") != _fingerprint(self.source):
            raise SampotError(
                f"{self.path} was exported from other weights ({meta.get('source_model')!r}) than model "
                f"{self.source.name!r}'s prompt encoder and mask decoder. {redo}"
            )

    @property
    def device(self) -> torch.device:
        return self.source.device

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """The torch image encoder's embedding (cached per image by the source model)."""
        return self.source.embed(image)

    @torch.no_grad()
    def predict(
        self,
        embedding: ImageEmbedding,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        output_size: tuple[int, int] | None = None,
    ) -> MaskPrediction:
        """As :meth:`SamLikeModel.predict` (points B x N x 2 and labels B x N, and/or boxes B x 4, in original-image
        pixels), computed by onnxruntime: logits B x 1 x H x W at ``output_size`` and confidence B, no gradient."""
        check_prompt_tensors(points, labels, boxes)
        size, target = embedding.original_size, self.source.target_length
        cpu = torch.device("cpu")
        frame_points = frame_boxes = None
        if points is not None:
            frame_points = to_model_frame(points.detach().to(cpu, torch.float32), size, target)
        if boxes is not None:
            frame_boxes = to_model_frame(boxes.detach().to(cpu, torch.float32).reshape(-1, 2, 2), size, target)
        coords, tags = prompt_points(frame_points, labels.detach().cpu() if labels is not None else None, frame_boxes)
        feeds = {
            "image_embeddings": embedding.features.detach().cpu().float().numpy(),
            "image_pe": self.source._dense_pe.detach().cpu().numpy(),
            "point_coords": coords.numpy(),
            "point_labels": tags.numpy(),
        }
        masks, iou = (torch.from_numpy(a).to(self.device) for a in self.session.run(list(OUTPUTS), feeds))
        # the same choice as SamLikeModel.predict: token 0 is the single output, tokens 1.. the multimask ones
        if self.mask_output == "single":
            low_res, scores, pick = masks[:, :1], iou[:, :1], torch.zeros(iou.shape[0], dtype=torch.long)
        else:
            low_res, scores = masks[:, 1:], iou[:, 1:]
            fixed = torch.full((iou.shape[0],), int(self.mask_output) if self.mask_output != "best" else 0)
            pick = scores.argmax(dim=1) if self.mask_output == "best" else fixed
        rows = torch.arange(iou.shape[0], device=self.device)
        pick = pick.to(self.device)
        chosen = low_res[rows, pick][:, None]
        return MaskPrediction(
            logits=self.source._to_output(chosen, embedding, output_size), confidence=scores[rows, pick],
            resize=lambda size: self.source._to_output(chosen, embedding, size),
        )  # fmt: skip


def load_onnx_model(source: SamLikeModel, path: str | Path, threads: int | None = None) -> OnnxPromptModel:
    """An :class:`OnnxPromptModel` over the file at ``path``, checked against ``source``."""
    return OnnxPromptModel(source, path, threads=threads)


def onnx_backend(source: SamLikeModel, cache_dir: str | Path, threads: int | None = None) -> OnnxPromptModel:
    """``source`` behind the ONNX backend, exporting its prompt -> mask step once into
    ``cache_dir/onnx/<name>-<fingerprint>.onnx`` (reused while the weights are the same)."""
    source = check_source(source)
    folder = Path(cache_dir) / "onnx"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaceError(f"cannot create the ONNX cache folder: {describe_os_error(exc)}") from exc
    path = folder / f"{source.name}-{_fingerprint(source)[:16]}.onnx"
    if not path.is_file():
        export_onnx(source, path)
    return OnnxPromptModel(source, path, threads=threads)
