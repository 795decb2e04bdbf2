"""Image embeddings kept on disk: each image is encoded once per (image, model, weights), whatever process asks.

An entry is a safetensors file named by a hash of the model's name, a fingerprint of its image encoder's weights
and the image's pixels, so a changed image or checkpoint is never served a stale embedding. An entry that cannot be
read (a cut-short write, a disk error) is deleted and recomputed. Entries are written to a temporary name and
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

from sampot_lib.errors import PlaceError, describe_os_error, writable_folder
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

    def load(self, key: str, device: torch.device) -> tuple[torch.Tensor, tuple[int, int]] | None:
        """(1 x C x h x w features, (H', W') input size) of a stored entry, or None (absent or unreadable)."""
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            data = load_file(str(path), device=str(device))
            features, size = data["features"], tuple(int(v) for v in data["input_size"].tolist())
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as exc:
            warnings.warn(f"embedding cache entry {path} is unreadable ({exc}); it is recomputed.", stacklevel=2)
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


def default_store() -> EmbeddingStore | None:
    """The store named by ``$SAMPOT_EMBEDDINGS``, or None (no disk cache)."""
    root = os.environ.get("SAMPOT_EMBEDDINGS")
    if not root:
        return None
    name = "SAMPOT_EMBEDDINGS"
    return EmbeddingStore(writable_folder(root, name), name=name)
