"""The book's demonstration of calibration: a regressor trained on one data set, applied to another's test images as it
is and after calibration on a few of its labelled images, as numbers and as a table."""

from __future__ import annotations

from typing import Any

import numpy as np

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import LR, N_OUTSIDE, N_SYNTHETIC, SHARPNESS, STEPS, TUNE_EPOCHS, TUNE_LR
from sampot_lib.errors import SampotError
from sampot_lib.experiment.calibration import choose_labelled, format_or_na
from sampot_lib.experiment.regressor_transfer import measure_transfer, transfer_samples
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.regressor_training import fine_tune
from sampot_lib.models.base import PromptableModel


def compare_on_test(
    model: PromptableModel,
    regressor: SegmentationRegressor,
    dataset: FolderDataset,
    splits: dict[str, list[str]],
    structure: str,
    *,
    n_labelled: int = 10,
    seed: int = 0,
    epochs: int = TUNE_EPOCHS,
    tune_lr: float = TUNE_LR,
    prompt: str = "click",
    sharpness: float = SHARPNESS,
    n_synthetic: int = N_SYNTHETIC,
    n_outside: int = N_OUTSIDE,
    steps: int = STEPS,
    lr: float = LR,
    max_test: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """A regressor trained on another data set, on ``dataset``'s test images (``splits["test"]``, the first
    ``max_test``): as it is ("foreign") and after calibration ("calibrated") on ``n_labelled`` labelled images drawn
    from the train and validation parts (as ``sampot calibrate`` does: fine-tuned on 70%, its best epoch chosen on a
    second draw of masks). Returns {"foreign": report, "calibrated": report, "labelled": {...}}, each report as
    :func:`measure_transfer` gives it on the test images."""
    pool = sorted(splits.get("train", []) + splits.get("val", []))
    test = list(splits.get("test", []))[:max_test]
    if len(test) < 3:
        raise SampotError(f"the comparison needs at least 3 test images (a correlation), got {len(test)}.")
    fine_ids, check_ids = choose_labelled(pool, n_labelled, seed, subject_of={i: dataset.subject_of(i) for i in pool})
    common = dict(size=regressor.input_size, prompt=prompt, sharpness=sharpness, n_synthetic=n_synthetic,
                  n_outside=n_outside)  # fmt: skip
    train = transfer_samples(model, dataset, fine_ids, structure, seed=seed, **common)
    val = transfer_samples(model, dataset, fine_ids, structure, seed=np.random.default_rng([seed, 1]), **common)
    tuned, history = fine_tune(regressor, train, val, epochs=epochs, lr=tune_lr, seed=seed, device=device)
    samples = transfer_samples(model, dataset, test, structure, seed=seed, **common)
    measure = dict(prompt=prompt, sharpness=sharpness, seed=seed, steps=steps, lr=lr, device=device,
                   samples=samples)  # fmt: skip
    return {
        "foreign": measure_transfer(model, regressor, dataset, test, structure, **measure),
        "calibrated": measure_transfer(model, tuned, dataset, test, structure, **measure),
        "labelled": {"fine_tune_ids": fine_ids, "unused_check_ids": check_ids, "n_test": len(test),
                     "best_epoch": int(min(history, key=lambda h: h["val_mse"])["epoch"])},
    }  # fmt: skip


def markdown_table(comparison: dict[str, Any]) -> str:
    """The comparison of :func:`compare_on_test` as a markdown table: r (all masks, the model's masks), mean
    absolute error, and evolution's mean Dice gain and improved / worse counts on the test images."""
    lab = comparison["labelled"]
    n = len(lab["fine_tune_ids"]) + len(lab["unused_check_ids"])
    lines = [
        "| regressor | r (all masks) | r (model's masks) | mean abs. error | evolution: mean gain | improved / worse |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "foreign": "trained on the other data set",
        "calibrated": f"calibrated on {n} labelled images (fine-tuned on {len(lab['fine_tune_ids'])})",
    }
    for key, label in names.items():
        rep = comparison[key]
        e = rep["evolution"]
        evo = (f"{e['mean_gain']:+.4f}", f"{e['improved']} / {e['worse']} of {e['n']}") if e else ("n/a", "n/a")
        r_all, r_model = format_or_na(rep["r_all"], ".3f"), format_or_na(rep["r_model"], ".3f")
        lines.append(f"| {label} | {r_all} | {r_model} | {rep['mae']:.3f} | {evo[0]} | {evo[1]} |")
    return "\n".join(lines)
