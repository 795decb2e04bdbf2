"""A SAM-style model's image encoder exported to ONNX and run by onnxruntime: exported once per weights, checked
against torch's features, and used in torch's place only where it is faster and agrees.

The encoder is the other half of a SAMPOT run's time: one pass per image. Its ONNX file takes exactly what the torch
encoder takes (1 x 3 x S x S, already resized, normalised and padded by the model's own ``_encode``) and returns its
features, so the two are interchangeable: the features agree within ``ONNX_ENCODER_TOLERANCE`` (checked on a test
input when the file is written), and the embedding cache on disk serves either's entries to both.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import importlib.util
import io
import os
import warnings
from pathlib import Path

import torch

from sampot_lib.defaults import ENCODER_BACKENDS, ONNX_ENCODER_TOLERANCE
from sampot_lib.errors import PlaceError, SampotError, SampotWarning, describe_os_error
from sampot_lib.files import write_bytes
from sampot_lib.models.cache import weights_fingerprint
from sampot_lib.models.onnx import OPSET, check_source, require_package
from sampot_lib.models.sam import SamLikeModel

ENCODER_FORMAT = "sampot-image-encoder/1"
ENCODER_INPUT, ENCODER_OUTPUT = "image", "features"


#: Models whose image encoder onnxruntime runs faster than torch on a CPU (median of 7 passes, same process; 2-core
#: machine under load: LiteMedSAM's TinyViT 0.47 x torch's time at 1 and 2 threads): ``encoder="auto"``
#: uses onnxruntime for these.
FASTER_IN_ORT = ("litemedsam",)


def _encoder_fingerprint(model: SamLikeModel) -> str:
    """Which image encoder weights an exported encoder belongs to (the embedding cache's fingerprint too)."""
    return weights_fingerprint(model._encoder())


def _encoder_example(model: SamLikeModel) -> torch.Tensor:
    """A fixed test input of the encoder's shape (1 x 3 x S x S, values in [0, 1])."""
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, model.target_length, model.target_length, generator=gen)


class OnnxImageEncoder:
    """A file written by :func:`export_encoder` run by onnxruntime: ``encoder(x)`` maps the torch encoder's input
    (1 x 3 x S x S) to its features, on the CPU. One session per thread count, made at first use with torch's
    thread count then, so that ``torch.set_num_threads`` (or ``$SAMPOT_THREADS``) governs both alike."""

    def __init__(self, path: str | Path, fingerprint: str) -> None:
        self.ort = require_package("onnxruntime")
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._sessions: dict[int, object] = {}
        meta = self._session().get_modelmeta().custom_metadata_map  # type: ignore[attr-defined]
        if meta.get("format") != ENCODER_FORMAT or meta.get("weights_sha256") != fingerprint:
            raise SampotError(
                f"{self.path} is not an image encoder exported from these weights (format {meta.get('format')!r}); "
                "delete it and it is exported again."
            )

    def _session(self) -> object:
        threads = torch.get_num_threads()
        if threads not in self._sessions:
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            try:
                self._sessions[threads] = self.ort.InferenceSession(
                    str(self.path), options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own types for a damaged or foreign file
                raise SampotError(
                    f"{self.path} cannot be read as an ONNX model ({type(exc).__name__}: {exc})."
                ) from exc
        return self._sessions[threads]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        feeds = {ENCODER_INPUT: x.detach().cpu().float().contiguous().numpy()}
        (features,) = self._session().run([ENCODER_OUTPUT], feeds)  # type: ignore[attr-defined]
        return torch.from_numpy(features).to(x.device)


def export_encoder(model: SamLikeModel, path: str | Path) -> Path:
    """Write ``model``'s image encoder to ``path`` as ONNX (fixed input 1 x 3 x S x S), with its format and a
    fingerprint of its weights in the file's metadata; atomically, so ``path`` is the whole file or absent."""
    model = check_source(model)
    onnx = require_package("onnx")  # the file is written through onnx to attach our metadata
    encoder = model._encoder()
    example = _encoder_example(model)
    buffer = io.BytesIO()
    # The TorchScript exporter, as for the decoder (export_onnx): the torch.export-based one needs onnxscript.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter notes: nothing a user can act on
        try:
            torch.onnx.export(
                encoder.cpu(), (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[ENCODER_INPUT],
                output_names=[ENCODER_OUTPUT], do_constant_folding=True,
            )  # fmt: skip
        except Exception as exc:  # the exporter raises many types; none is the user's to fix but a version clash
            raise SampotError(
                f"could not export {model.name!r}'s image encoder to ONNX with torch {torch.__version__} "
                f"({type(exc).__name__}: {exc})."
            ) from exc
        finally:
            encoder.to(model.device)
    proto = onnx.load_from_string(buffer.getvalue())
    meta = {"format": ENCODER_FORMAT, "source_model": model.name, "weights_sha256": _encoder_fingerprint(model)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return write_bytes(path, proto.SerializeToString())


def _versions() -> str:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "none"

    return f"torch {torch.__version__}, onnx {version('onnx')}, onnxruntime {version('onnxruntime')}"


def onnx_encoder(
    model: SamLikeModel, cache_dir: str | Path, tolerance: float = ONNX_ENCODER_TOLERANCE
) -> OnnxImageEncoder:
    """``model``'s image encoder in onnxruntime, exported once into ``cache_dir/onnx/<name>-encoder-<fp>.onnx``
    (reused while the weights are the same). A new export is checked against torch on a test input: features more
    than ``tolerance`` apart refuse it. A refusal or a failed export is remembered beside the file
    (``.refused``, with the torch / onnx / onnxruntime versions) so that it is not tried again with the same
    versions. Raises SampotError for any failure (see :func:`use_encoder` for the fallback to torch)."""
    model = check_source(model)
    if model.device.type != "cpu":
        raise SampotError(f"the ONNX image encoder runs on the CPU; model {model.name!r} is on {model.device}.")
    fingerprint = _encoder_fingerprint(model)
    folder = Path(cache_dir) / "onnx"
    path = folder / f"{model.name}-encoder-{fingerprint[:16]}.onnx"
    refused = path.with_name(path.name + ".refused")
    if path.is_file():
        return OnnxImageEncoder(path, fingerprint)
    versions = _versions()
    if refused.is_file():
        reason, _, seen = refused.read_text(encoding="utf-8").partition("\n")
        if seen.strip() == versions:
            raise SampotError(f"{reason} (remembered in {refused}; delete it to try again)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PlaceError(f"cannot create the ONNX cache folder: {describe_os_error(exc)}") from exc
    staged = path.with_name(f".{path.name}.{os.getpid()}.new")  # this process's: another may export at once
    try:
        export_encoder(model, staged)
        encoder = OnnxImageEncoder(staged, fingerprint)
        example = _encoder_example(model).to(model.device)
        with torch.no_grad():
            gap = float((encoder(example) - model._encoder()(example)).abs().max())
        if not gap <= tolerance:  # NaN too
            raise SampotError(
                f"{model.name!r}'s image encoder in onnxruntime differs from torch's by {gap:.3g} (more than "
                f"{tolerance:g})"
            )
        staged.replace(path)
    except SampotError as exc:
        staged.unlink(missing_ok=True)
        try:
            write_bytes(refused, f"{exc}\n{versions}\n".encode())
        except OSError:  # a read-only cache: the refusal is not remembered, and the next load tries again
            pass
        raise
    return OnnxImageEncoder(path, fingerprint)


def use_encoder(model: SamLikeModel, encoder: str, cache_dir: str | Path) -> SamLikeModel:
    """Set where ``model``'s image encoder runs: ``"torch"``, ``"onnx"`` (onnxruntime; SampotError if it cannot),
    or ``"auto"``: onnxruntime for the models of :data:`FASTER_IN_ORT` on the CPU when the ``onnx`` extra is
    installed, else torch. ``"auto"`` falls back to torch with a one-line warning when the export fails or differs
    from torch. Returns ``model``."""
    if encoder not in ENCODER_BACKENDS:
        raise SampotError(f"unknown encoder backend {encoder!r}; use one of {', '.join(ENCODER_BACKENDS)}.")
    model.use_fast_encoder(None)
    if encoder == "torch":
        return model
    if encoder == "auto":
        installed = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
        if model.name not in FASTER_IN_ORT or model.device.type != "cpu" or not installed:
            return model
        try:
            return model.use_fast_encoder(onnx_encoder(model, cache_dir))
        except SampotError as exc:
            warnings.warn(f"{exc}; the image encoder runs in torch.", SampotWarning, stacklevel=2)
            return model
    return model.use_fast_encoder(onnx_encoder(model, cache_dir))
