"""What the app's tests serve: a small phantom set and a regressor trained on it for a few epochs (seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.method.regressor import save_regressor, to_input
from sampot_lib.method.regressor_training import RegressorData, fit_regressor
from sampot_lib.method.synth import candidate_masks

STRUCTURE = "left_lung"
REGRESSOR_SIZE = 64  # input 64 x 64, four halvings leave 4 x 4


def phantom_set(root: Path, n: int = 3, size: int = 256) -> Path:
    """``n`` phantom chest X-rays of ``size`` px in the folder format (left and right lungs), seeded."""
    return write_phantom_set(root, n, 0, size=size)


def _u8(t) -> np.ndarray:
    """1 x 1 x S x S in 0..1 -> S x S uint8."""
    return (t[0, 0].clamp(0, 1) * 255).round().byte().numpy()


def tiny_regressor(data: Path, path: Path, *, model: str = "sam_nano", structure: str = STRUCTURE,
                   epochs: int = 15, prompt: str | None = None) -> Path:  # fmt: skip
    """A small regressor trained for ``epochs`` on level-set masks of ``data``'s ``structure``, saved at ``path``
    with the record the app checks (the model and structure it is for, and ``prompt``, the prompt kind, if given).
    Weak, but trained: its score follows the mask."""
    dataset = FolderDataset(data)
    rng = np.random.default_rng(0)
    images, masks, dice, ids = [], [], [], []
    for image_id in dataset.ids:
        small = _u8(to_input(dataset.image(image_id), REGRESSOR_SIZE))
        for cand in candidate_masks(dataset.mask(image_id, structure), 12, rng):
            images.append(small)
            masks.append(_u8(to_input(cand.mask, REGRESSOR_SIZE)))
            dice.append(cand.dice)
            ids.append(image_id)
    n = len(dice)
    train = RegressorData(np.stack(images), np.stack(masks), np.asarray(dice, np.float32),
                          np.array(["synthetic"] * n), np.asarray(ids))  # fmt: skip
    regressor, _ = fit_regressor(train, train, epochs=epochs, widths=(8, 16, 32, 64), progress=False)
    record = {"model": model, "structure": structure} | ({"prompt": prompt} if prompt else {})
    return save_regressor(regressor, path, record)
