"""Image embeddings kept on disk: each image is encoded once per (image, model, weights), whatever process asks.

An entry is a safetensors file named by a hash of the model's name, a fingerprint of its image encoder's weights
and the image's pixels, so a changed image or checkpoint is never served a stale embedding. An entry that cannot be
read (a cut-short write, a disk error), or holds features of another shape or input size than the model
expects, is deleted and recomputed with a warning naming it. Entries are written to a temporary name and
renamed, so readers in other processes never see half a file.

Switched on by ``$SAMPOT_EMBEDDINGS`` (a folder) or ``load_model(..., embeddings=FOLDER)``. A SAM or LiteMedSAM
embedding is 256 x 64 x 64 float32 (4 MiB) per image: 10,000 images need about 40 GiB.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from sampot_lib.errors import PlaceError, SampotWarning, describe_os_error, writable_folder
from sampot_lib.files import sha256_of, write_bytes

FORMAT = "sampot-embedding/1"


def weights_fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 over the names, shapes and bytes of the modules' parameters and buffers (their state dicts): which
    weights an embedding or an exported model belongs to."""

    def chunks() -> Iterator[bytes]:
        for name, tensor in (item for module in modules for item in module.state_dict().items()):
            t = tensor.detach().cpu().reshape(-1).contiguous()  # 1-D: a 0-dim tensor cannot change its dtype view
            yield f"{name}:{tuple(t.shape)}:{t.dtype}".encode()
            yield t.view(torch.uint8).numpy().tobytes() if t.numel() else b""

    return sha256_of(chunks())


class EmbeddingStore:
    """A folder of embeddings. ``root``: created on first use; must be writable. ``name``: how messages name the
    setting that chose it (the environment variable, or ``embeddings=``)."""

    def __init__(self, root: str | Path, name: str = "embedding cache") -> None:
        self.root = Path(root)
        self.name = name
        if self.root.exists() and not self.root.is_dir():
            raise PlaceError(f"{name} {self.root} is a file, not a folder; give a folder, or unset it.")
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model_id: str, rgb: np.ndarray) -> str:
        """The entry name of ``rgb`` (H x W x 3 uint8) encoded by the model ``model_id`` (name + weights)."""
        digest = hashlib.sha256(f"{model_id}|{rgb.shape}|{rgb.dtype}|".encode())
        digest.update(np.ascontiguousarray(rgb).tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(
        self,
        key: str,
        device: torch.device,
        shape: tuple[int, ...] | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """(1 x C x h x w features, (H', W') input size) of a stored entry, or None: absent, or unusable (cut short,
        damaged, floats that are not finite, or another ``shape`` or ``input_size`` than the caller expects), in
        which case a warning names the file, which is deleted so that the caller recomputes and stores it again."""
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            data = load_file(str(path), device=str(device))
            features, size = data["features"], tuple(int(v) for v in data["input_size"].tolist())
            why = _unusable(features, size, shape, input_size)
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as exc:
            why = f"is unreadable ({exc})"
        if why:
            warnings.warn(f"embedding cache entry {path} {why}; it is recomputed.", SampotWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return features, (size[0], size[1])

    def save(self, key: str, features: torch.Tensor, input_size: tuple[int, int]) -> None:
        """Store an entry atomically (a temporary file renamed into place)."""
        tensors = {"features": features.detach().cpu().contiguous(), "input_size": torch.tensor(input_size)}
        try:
            write_bytes(self._path(key), save(tensors, metadata={"format": FORMAT}))
        except OSError as exc:
            raise PlaceError(
                f"{self.name} {self.root}: cannot store an embedding ({describe_os_error(exc)[:-1]}); point it at "
                "another folder, or unset it to encode without a cache."
            ) from exc


def _unusable(
    features: torch.Tensor,
    size: tuple[int, ...],
    shape: tuple[int, ...] | None,
    input_size: tuple[int, int] | None,
) -> str | None:
    """Why a stored entry cannot be served (its features' shape or values, its input size), or None."""
    if shape is not None and tuple(features.shape) != tuple(shape):
        return f"holds features of shape {tuple(features.shape)} where {tuple(shape)} is expected"
    if len(size) != 2 or (input_size is not None and size != tuple(input_size)):
        return f"records input size {size} where {input_size} is expected"
    if not features.is_floating_point() or not bool(torch.isfinite(features).all()):
        return "holds features that are not finite floats"
    return None


def default_store() -> EmbeddingStore | None:
    """The store named by ``$SAMPOT_EMBEDDINGS``, or None (no disk cache)."""
    root = os.environ.get("SAMPOT_EMBEDDINGS")
    if not root:
        return None
    name = "SAMPOT_EMBEDDINGS"
    return EmbeddingStore(writable_folder(root, name), name=name)
