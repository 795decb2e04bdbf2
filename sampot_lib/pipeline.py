"""The whole SAMPOT experiment on a folder-format data set, in stages that hand results on through files.

split -> regressor training set (level-set masks + the model's own masks) -> regressor -> its evaluation against
the model's confidence -> evolution of the centroid click on the test split, with and without safeguards.
Each stage reads what it needs from ``out`` and writes its results there, so notebooks can run them one by one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.io import write_text
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.data.splits import PAPER_FRACTIONS, load_splits, make_splits, save_splits, split_info
from sampot_lib.errors import SampotError
from sampot_lib.evolve import Safeguards, evolve_prompt
from sampot_lib.metrics import dice, pearson_r
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.registry import load_model
from sampot_lib.regressor import (
    RegressorData,
    SegmentationRegressor,
    fit_regressor,
    load_regressor,
    predict_dice,
    save_regressor,
    to_input,
)
from sampot_lib.synth import band_prompts, candidate_masks, centroid_prompt, outside_prompts

# A drop of this much Dice is what the paper's figure 6 shows as a catastrophe (a mask outside the lung).
CATASTROPHE_DROP = 0.2
# Changes smaller than this are "unchanged": below one pixel row of a lung's boundary at 1024 px.
UNCHANGED_TOL = 1e-3


@dataclass
class ExperimentConfig:
    """Everything that decides the numbers of a run (written to ``out/config.json``)."""

    data: str
    out: str
    structure: str = "left_lung"
    model: str = "sam_nano"
    checkpoint: str | None = None
    mask_output: str | int | None = None
    device: str = "cpu"
    split_file: str | None = None
    seed: int = 0
    max_images: int | None = None  # per split, for quick runs; None uses all
    n_synthetic: int = 16
    n_outside: int = 3
    regressor_size: int = 128
    epochs: int = 200
    batch_size: int = 32
    regressor_lr: float = 1e-3
    steps: int = 30
    lr: float = 10.0
    sharpness: float = 5.0
    safeguards: dict[str, Any] = field(default_factory=lambda: asdict(Safeguards()))

    def __post_init__(self) -> None:
        # Notebooks get these from papermill parameters: a wrong type must fail here, by name, not deep inside torch.
        for f in fields(self):
            value = getattr(self, f.name)
            allowed = _ALLOWED[f.name]
            if isinstance(value, Path) and str in allowed:
                setattr(self, f.name, str(value))
            elif isinstance(value, int) and not isinstance(value, bool) and float in allowed and int not in allowed:
                setattr(self, f.name, float(value))
            elif not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise SampotError(f"parameter {f.name!r} must be {names}, got {value!r} ({type(value).__name__}).")
        if self.mask_output not in (None, "best", "single", 0, 1, 2):
            raise SampotError(
                f"parameter 'mask_output' must be best, single, 0, 1, 2 or None, got {self.mask_output!r}."
            )

    @property
    def out_dir(self) -> Path:
        return Path(self.out)


_NONE = type(None)
_ALLOWED: dict[str, tuple[type, ...]] = {
    "data": (str,), "out": (str,), "structure": (str,), "model": (str,), "checkpoint": (str, _NONE),
    "mask_output": (str, int, _NONE), "device": (str,), "split_file": (str, _NONE), "seed": (int,),
    "max_images": (int, _NONE), "n_synthetic": (int,), "n_outside": (int,), "regressor_size": (int,),
    "epochs": (int,), "batch_size": (int,), "regressor_lr": (float,), "steps": (int,), "lr": (float,),
    "sharpness": (float,), "safeguards": (dict,),
}  # fmt: skip


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows (dicts with the same keys) as CSV, atomically."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by this module, numbers parsed back to float."""

    def parse(v: str) -> Any:
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def open_dataset(config: ExperimentConfig) -> FolderDataset:
    dataset = FolderDataset(config.data)
    if config.structure not in dataset.structures:
        raise SampotError(
            f"structure {config.structure!r} is not in {config.data} (it has {', '.join(dataset.structures)})."
        )
    return dataset


def prepare_splits(config: ExperimentConfig, dataset: FolderDataset) -> dict[str, list[str]]:
    """The split every stage uses: ``split_file`` if given, else ``out/splits.json`` if an earlier stage wrote it,
    else the paper's 41/28/53 subject split, seeded, written to ``out/splits.json``.

    With ``max_images``, each split keeps its first ``max_images`` ids.
    """
    made = config.out_dir / "splits.json"
    if not config.split_file and made.is_file():
        info = split_info(made)  # made by an earlier stage of this run, or by a run with other settings?
        if info.get("seed") != config.seed or info.get("source") != str(config.data):
            made.unlink()
    if config.split_file or made.is_file():
        splits = load_splits(config.split_file or made, dataset)
    else:
        splits = make_splits(dataset, PAPER_FRACTIONS, seed=config.seed)
        subjects = {i: dataset.subject_of(i) for i in dataset.ids}
        save_splits(
            made, splits, seed=config.seed, fractions=PAPER_FRACTIONS, subjects=subjects, source=str(config.data)
        )
    if config.max_images is not None:
        splits = {k: v[: config.max_images] for k, v in splits.items()}
    return splits


@dataclass
class Run:
    """What a notebook chapter works on: the checked config, the data set, the split, and labels that name the
    model and the data beside every number."""

    config: ExperimentConfig
    dataset: FolderDataset
    splits: dict[str, list[str]]

    @property
    def data_label(self) -> str:
        return f"{Path(self.config.data).name} ({len(self.dataset.ids)} images, {self.config.structure})"

    @property
    def model_label(self) -> str:
        ckpt = self.config.checkpoint
        return self.config.model + ("" if ckpt is None else f" ({Path(ckpt).name})")

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v)} images" for k, v in self.splits.items())
        return f"model: {self.model_label}\ndata: {self.config.data}: {self.data_label}\nsplit: {sizes}"


def start_run(
    *,
    data: str | Path | None,
    out: str | Path,
    phantom_n: int = 60,
    phantom_size: int = 512,
    root: str | Path | None = None,
    **params: Any,
) -> Run:
    """Turn a notebook's parameters into a :class:`Run`.

    Relative paths (``data``, ``out``, ``checkpoint``, ``split_file``) are taken from the repository root (``root``,
    default: the nearest folder above the working directory with a pyproject.toml), wherever the kernel started.
    ``data=None`` uses the phantom set at ``_build/data/phantom``, written (``phantom_n`` images of
    ``phantom_size`` px, seeded) if missing. Every parameter's type is checked by :class:`ExperimentConfig`.
    ``$SAMPOT_THREADS`` sets torch's thread count (the book's build runs on few cores).
    """
    if os.environ.get("SAMPOT_THREADS"):
        torch.set_num_threads(int(os.environ["SAMPOT_THREADS"]))
    here = Path.cwd()
    base = Path(root) if root else next((p for p in [here, *here.parents] if (p / "pyproject.toml").is_file()), here)

    def at_base(path: str | Path | None) -> str | None:
        return None if path is None else str(path if Path(path).is_absolute() else base / path)

    if data is None:
        data = base / "_build" / "data" / "phantom"
        if not (data / "manifest.csv").is_file():
            print(f"writing {phantom_n} phantoms of {phantom_size} px to {data}")
            write_phantom_set(data, phantom_n, params.get("seed", 0), size=phantom_size, progress=True)
    for key in ("checkpoint", "split_file"):
        if key in params:
            params[key] = at_base(params[key])
    config = ExperimentConfig(data=at_base(data), out=at_base(out), **params)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(config)
    return Run(config, dataset, prepare_splits(config, dataset))


def build_model(config: ExperimentConfig) -> PromptableModel:
    return load_model(config.model, config.checkpoint, config.device, mask_output=config.mask_output)


@torch.no_grad()
def model_mask(
    model: PromptableModel, image: np.ndarray, point: tuple[float, float], sizes: Iterable[tuple[int, int]]
) -> list[tuple[np.ndarray, float]]:
    """The model's logits for one click at each of ``sizes`` as (H x W logits, confidence)."""
    emb = model.embed(image)
    pt = torch.tensor([[point]], dtype=torch.float32, device=model.device)
    label = torch.ones(1, 1, dtype=torch.long, device=model.device)
    out = []
    for size in sizes:
        pred = model.predict(emb, pt, label, output_size=size)
        out.append((pred.logits[0, 0].cpu().numpy(), float(pred.confidence)))
    return out


def regressor_samples(
    model: PromptableModel,
    dataset: FolderDataset,
    ids: list[str],
    config: ExperimentConfig,
    progress: bool = True,
) -> RegressorData:
    """The regressor's training set for ``ids`` (paper 3.2): per image ``n_synthetic`` level-set masks, and the
    model's masks for the centroids of three horizontal bands and ``n_outside`` clicks 5 px outside the structure.

    Every mask is stored at the regressor's input size; its Dice is computed at full resolution.
    """
    size = config.regressor_size
    rng = np.random.default_rng(config.seed)
    parts = []
    for image_id in tqdm(ids, desc="regressor set", unit="image", disable=not progress):
        image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
        small_img = _u8(to_input(image, size))
        masks, dices, kinds = [], [], []
        for cand in candidate_masks(truth, config.n_synthetic, seed=rng):
            masks.append(_u8(to_input(cand.mask, size)))
            dices.append(cand.dice)
            kinds.append("synthetic")
        clicks = band_prompts(truth) + outside_prompts(truth, config.n_outside, seed=rng)
        for k, point in enumerate(clicks):
            (full, _), (small, _) = model_mask(model, image, point, [image.shape[:2], (size, size)])
            masks.append(_u8(torch.sigmoid(config.sharpness * torch.as_tensor(small))))
            dices.append(dice(full > 0, truth))
            kinds.append("model_band" if k < 3 else "model_outside")
        n = len(masks)
        parts.append(
            RegressorData(
                images=np.repeat(small_img[None], n, axis=0), masks=np.stack(masks),
                dice=np.array(dices, dtype=np.float32), kind=np.array(kinds), image_id=np.array([image_id] * n),
            )
        )  # fmt: skip
    return RegressorData.concat(parts)


def _u8(t: torch.Tensor) -> np.ndarray:
    return (t.squeeze().clamp(0, 1) * 255).round().byte().numpy()


def train_regressor_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
) -> tuple[SegmentationRegressor, list[dict[str, float]]]:
    """Build the train and val sets, fit the regressor, write ``regressor.pt`` and ``regressor_history.csv``."""
    out = config.out_dir
    dataset = dataset or open_dataset(config)  # before anything is written: a bad data set leaves no output
    write_text(out / "config.json", json.dumps(asdict(config), indent=1) + "\n")
    splits = prepare_splits(config, dataset)
    model = model or build_model(config)
    train = regressor_samples(model, dataset, splits["train"], config, progress)
    val = regressor_samples(model, dataset, splits["val"], config, progress)
    regressor, history = fit_regressor(
        train, val, epochs=config.epochs, batch_size=config.batch_size, lr=config.regressor_lr, seed=config.seed,
        device=config.device, progress=progress,
    )  # fmt: skip
    meta = {"model": config.model, "data": str(config.data), "structure": config.structure,
            "n_train": len(train), "n_val": len(val), "best_val_mse": min(h["val_mse"] for h in history)}  # fmt: skip
    save_regressor(regressor, out / "regressor.pt", meta)
    write_csv(out / "regressor_history.csv", history)
    return regressor, history


def evaluate_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score held-out test masks with the regressor: ``regressor_eval.csv`` (one row per mask) and Pearson r on
    unseen synthetic masks, and, for the centroid click, of the regressor and of the model's confidence."""
    out = config.out_dir
    dataset = dataset or open_dataset(config)
    splits = prepare_splits(config, dataset)
    model = model or build_model(config)
    regressor, _ = load_regressor(out / "regressor.pt", device=config.device)
    test = regressor_samples(model, dataset, splits["test"], config, progress)
    scores = predict_dice(regressor, test, device=config.device)
    rows = [
        {"image_id": i, "kind": k, "dice": float(d), "regressor": float(s), "confidence": ""}
        for i, k, d, s in zip(test.image_id, test.kind, test.dice, scores, strict=True)
    ]
    size = config.regressor_size
    for image_id in tqdm(splits["test"], desc="centroid clicks", unit="image", disable=not progress):
        image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
        (full, conf), (small, _) = model_mask(model, image, centroid_prompt(truth), [image.shape[:2], (size, size)])
        soft = torch.sigmoid(config.sharpness * torch.as_tensor(small))[None, None]
        with torch.no_grad():
            score = float(regressor(to_input(image, size).to(config.device), soft.to(config.device)))
        rows.append({"image_id": image_id, "kind": "model_centroid", "dice": dice(full > 0, truth),
                     "regressor": score, "confidence": conf})  # fmt: skip
    write_csv(out / "regressor_eval.csv", rows)
    synth = [r for r in rows if r["kind"] == "synthetic"]
    cent = [r for r in rows if r["kind"] == "model_centroid"]
    summary = {
        "n_synthetic": len(synth),
        "n_centroid": len(cent),
        "r_regressor_synthetic": _r(synth, "regressor"),
        "r_regressor_all": _r(rows, "regressor"),
        "r_regressor_centroid": _r(cent, "regressor"),
        "r_confidence_centroid": _r(cent, "confidence"),
    }
    write_text(out / "regressor_eval.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _r(rows: list[dict[str, Any]], column: str) -> float | None:
    """Pearson r of ``column`` with the true Dice; None when it is undefined (under 3 rows, or a constant)."""
    if len(rows) < 3:
        return None
    r = pearson_r([row[column] for row in rows], [row["dice"] for row in rows])
    return None if np.isnan(r) else r


def evolve_stage(
    config: ExperimentConfig,
    model: PromptableModel | None = None,
    dataset: FolderDataset | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evolve the centroid click of every test image with the safeguards on and off: ``evolution.csv`` (one row per
    image and setting), ``trajectories.json``, and ``summary.json`` (counts improved / unchanged / worse)."""
    out = config.out_dir
    dataset = dataset or open_dataset(config)
    splits = prepare_splits(config, dataset)
    model = model or build_model(config)
    regressor, _ = load_regressor(out / "regressor.pt", device=config.device)
    settings = {"on": Safeguards(**config.safeguards), "off": Safeguards.off()}
    rows, trajectories = [], {}
    for image_id in tqdm(splits["test"], desc="evolution", unit="image", disable=not progress):
        image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
        start = centroid_prompt(truth)
        for name, guards in settings.items():
            res = evolve_prompt(
                model, regressor, image, start, steps=config.steps, lr=config.lr, sharpness=config.sharpness,
                safeguards=guards, gt_mask=truth,
            )  # fmt: skip
            d0, d1 = res.initial.dice, dice(res.best_mask, truth)
            rows.append({
                "image_id": image_id, "safeguards": name, "x0": start[0], "y0": start[1], "x": res.best.x,
                "y": res.best.y, "best_step": res.best_step, "score0": res.initial.score, "score": res.best.score,
                "dice0": d0, "dice": d1, "gain": d1 - d0,
            })  # fmt: skip
            trajectories[f"{image_id}/{name}"] = res.to_dict()
    write_csv(out / "evolution.csv", rows)
    write_text(out / "trajectories.json", json.dumps(trajectories) + "\n")
    summary = {name: summarise([r for r in rows if r["safeguards"] == name]) for name in settings}
    summary["config"] = asdict(config)
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of improved / unchanged / worse images, mean and median gain, and catastrophes (drop > 0.2)."""
    gains = np.array([float(r["gain"]) for r in rows])
    if len(gains) == 0:
        raise SampotError("no evolution results to summarise: the test split is empty.")
    return {
        "n": len(gains),
        "improved": int((gains > UNCHANGED_TOL).sum()),
        "unchanged": int((np.abs(gains) <= UNCHANGED_TOL).sum()),
        "worse": int((gains < -UNCHANGED_TOL).sum()),
        "catastrophes": int((gains < -CATASTROPHE_DROP).sum()),
        "mean_gain": float(gains.mean()),
        "median_gain": float(np.median(gains)),
        "mean_dice_initial": float(np.mean([float(r["dice0"]) for r in rows])),
        "mean_dice_evolved": float(np.mean([float(r["dice"]) for r in rows])),
    }


def run_experiment(config: ExperimentConfig, progress: bool = True) -> dict[str, Any]:
    """All stages with one model load and one validation of the data set: train the regressor, evaluate it,
    evolve the test split."""
    dataset = open_dataset(config)  # validated once: every file of the set is read
    model = build_model(config)
    train_regressor_stage(config, model, dataset, progress)
    evaluation = evaluate_stage(config, model, dataset, progress)
    summary = evolve_stage(config, model, dataset, progress)
    summary["regressor"] = evaluation
    write_text(config.out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary
