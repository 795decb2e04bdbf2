"""A study: the same SAMPOT experiment on several structures of one data set, and its tables and figures.

The book's LiteMedSAM chapter and ``sampot study`` use it. Each structure is an ordinary run folder
(``out/<structure>/``, one ``seed_<k>/`` sub-folder per seed, written by
:func:`sampot_lib.experiment.runner.run_experiment`); the tables are read back from those folders' ``summary.json`` and
``evolution.csv`` only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from sampot_lib.data.folder import FolderDataset
from sampot_lib.defaults import EVOLVE_MIN_GAIN, SHARPNESS
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.records import read_csv, read_json
from sampot_lib.experiment.runner import run_experiment
from sampot_lib.experiment.setup import start_run
from sampot_lib.experiment.stages import build_model, user_prompt
from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.metrics import dice
from sampot_lib.method.prompts import Prompt, Safeguards, predict_mask
from sampot_lib.method.regressor import load_regressor
from sampot_lib.method.scoring import OracleScorer, RegressorScorer
from sampot_lib.report.figures import trajectory_figure
from sampot_lib.report.metric_figures import evolution_scatter, margin_curve_figure
from sampot_lib.report.tables import SCORER_LABELS

#: Keys of a summary that count images (shown as whole numbers for one seed).
COUNTS = {"n", "improved", "unchanged", "worse", "drops", "catastrophes"}


def _group(scorer: str) -> str:
    """The summary key of a scorer's safeguarded results ("on" is the regressor's, kept from the paper's layout)."""
    return "on" if scorer == "regressor" else scorer


@dataclass
class Study:
    """The finished runs of a study: {structure: run folder} with the shared base config."""

    config: ExperimentConfig
    folders: dict[str, Path]
    dataset: FolderDataset
    skipped: list[str]

    @property
    def seeds(self) -> list[int]:
        return self.config.run_seeds

    def summary(self, structure: str) -> dict[str, Any]:
        return read_json(self.folders[structure] / "summary.json", "study summary")

    def per_seed(self, structure: str) -> list[dict[str, Any]]:
        """Each seed's summary of ``structure`` (as :func:`sampot_lib.experiment.evolution.evolve_stage` wrote it)."""
        return [read_json(self.folders[structure] / f"seed_{k}" / "summary.json", "summary") for k in self.seeds]

    def rows(self, structure: str, seed: int | None = None) -> list[dict[str, Any]]:
        """``evolution.csv`` of one seed (default: the first)."""
        k = self.seeds[0] if seed is None else seed
        return read_csv(self.folders[structure] / f"seed_{k}" / "evolution.csv")

    def describe(self) -> str:
        c = self.config
        lines = [
            f"model: {c.model}; data: {Path(c.data).name} ({len(self.dataset.ids)} images); prompt: {c.prompt} "
            f"(user's box jitter J = {c.box_jitter:g})",
            f"structures: {', '.join(self.folders)}"
            + (f" (not in the data set: {', '.join(self.skipped)})" if self.skipped else ""),  # fmt: skip
            f"seeds: {self.seeds}; evolution: {c.optimizer}, {c.steps} model calls, lr {c.lr:g} px; regressor "
            f"{c.epochs} epochs; max images per split: {c.max_images or 'all'}",
        ]
        return "\n".join(lines)

    def _stat(self, structure: str, group: str, key: str) -> tuple[float, float | None]:
        vals = [float(s[group][key]) for s in self.per_seed(structure) if group in s and s[group].get(key) is not None]
        if not vals:
            return float("nan"), None
        return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)

    def _fmt(self, structure: str, group: str, key: str, digits: int = 3) -> str:
        m, sd = self._stat(structure, group, key)
        if not np.isfinite(m):
            return "n/a"
        if key == "n" or (key in COUNTS and sd is None):
            return f"{m:.0f}"
        return f"{m:.{digits}f}" + (f" ({sd:.{digits}f})" if sd is not None else "")

    def _cells(self, structure: str, group: str, keys: list[tuple[str, int]]) -> str:
        return " | ".join(self._fmt(structure, group, key, digits) for key, digits in keys)

    def results_table(self) -> str:
        """Markdown: per structure and scorer, mean Dice before -> after, counts, share of the oracle's gain."""
        head = (
            "| structure | score | n | Dice, user's box | Dice, evolved | mean gain | improved | worse "
            "| drops > 0.05 | catastrophes | share of oracle gain |"
        )
        keys = [("n", 0), ("mean_dice_initial", 3), ("mean_dice_evolved", 3), ("mean_gain", 3), ("improved", 1),
                ("worse", 1), ("drops", 1), ("catastrophes", 1)]  # fmt: skip
        lines = [head, "|---" * (head.count("|") - 1) + "|"]
        for structure in self.folders:
            oracle_gain, _ = self._stat(structure, "oracle", "mean_gain")
            for scorer in self.config.scorers:
                group = _group(scorer)
                if group not in self.per_seed(structure)[0]:
                    continue
                gain, _ = self._stat(structure, group, "mean_gain")
                share = f"{gain / oracle_gain:.2f}" if np.isfinite(oracle_gain) and oracle_gain > 0 else "n/a"
                share = "1 (by definition)" if scorer == "oracle" else share
                label = SCORER_LABELS.get(scorer, scorer)
                lines.append(f"| {structure} | {label} | {self._cells(structure, group, keys)} | {share} |")
        return "\n".join(lines)

    def correlation_table(self) -> str:
        """Markdown: Pearson r with the true Dice of the regressor, the blend and the model's IoU head."""
        keys = [
            ("r_regressor_model", "regressor, model's masks"),
            ("r_confidence_model", "IoU head, model's masks"),
            ("r_blend_model", "blend, model's masks"),
            ("r_regressor_initial", "regressor, user's boxes"),
            ("r_confidence_initial", "IoU head, user's boxes"),
            ("r_regressor_synthetic", "regressor, synthetic masks"),
            ("blend_weight", "blend weight (chosen on val)"),
        ]
        head = "| structure | " + " | ".join(label for _, label in keys) + " |"
        lines = [head, "|---" * (len(keys) + 1) + "|"]
        for structure in self.folders:
            cells = [self._fmt(structure, "regressor", key, 2) for key, _ in keys]
            lines.append(f"| {structure} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def selection_table(self) -> str:
        """Markdown: how each score picked its winners (the worst and 5th-percentile change of Dice, Spearman between
        score and true Dice along one image's path, top-1 regret, the share of images gamed)."""
        keys = [("worst_drop", 3), ("p5_change", 3), ("median_within_image_spearman", 2), ("median_top1_regret", 3),
                ("p90_top1_regret", 3), ("gamed", 2)]  # fmt: skip
        head = ("| structure | score | worst change | 5th percentile | within-image Spearman (median) | top-1 regret "
                "(median) | top-1 regret (90th pct.) | gamed |")  # fmt: skip
        lines = [head, "|---" * (head.count("|") - 1) + "|"]
        for structure in self.folders:
            for scorer in self.config.scorers:
                group = _group(scorer)
                if group in self.per_seed(structure)[0]:
                    label = SCORER_LABELS.get(scorer, scorer)
                    lines.append(f"| {structure} | {label} | {self._cells(structure, group, keys)} |")
        return "\n".join(lines)

    def margin_figures(self) -> list[go.Figure]:
        """The do-no-harm rule's trade-off on the validation split, one figure per structure (first seed)."""
        figures = []
        for structure in self.folders:
            choice = self.per_seed(structure)[0].get("rule_validation")
            if choice and "curve" in choice:
                figures.append(margin_curve_figure(choice["curve"], choice["margin"],
                                                   f"{structure}: the do-no-harm rule on validation"))  # fmt: skip
        return figures

    def jitter_table(self) -> str:
        """Markdown: the regressor-driven results for each jitter of the user's box (the extra jitters are run on
        the first structure only; the others show the main jitter)."""
        jitters = sorted({self.config.box_jitter, *self.config.extra_jitters})
        head = "| structure | J | Dice, user's box | Dice, evolved | improved | worse | catastrophes |"
        lines = [head, "|---" * 7 + "|"]
        for structure in self.folders:
            for j in jitters:
                group = "on" if j == self.config.box_jitter else f"jitter_{j:g}"
                if group not in self.per_seed(structure)[0]:
                    continue
                keys = [("mean_dice_initial", 3), ("mean_dice_evolved", 3), ("improved", 1), ("worse", 1),
                        ("catastrophes", 1)]  # fmt: skip
                lines.append(f"| {structure} | {j:g} | {self._cells(structure, group, keys)} |")
        return "\n".join(lines)

    def optimizer_rows(
        self, n_images: int = 4, budgets: tuple[int, ...] = (10, 30, 100), optimizers: tuple[str, ...] = ("adam",
        "cmaes", "random"),
    ) -> list[dict[str, Any]]:  # fmt: skip
        """:func:`optimizer_rows` for every structure of the study (seed 0's regressor, the first ``n_images`` test
        images of each); show them with :func:`optimizer_markdown` and :func:`optimizer_verdict`."""
        rows = []
        for structure, folder in self.folders.items():
            config = replace(self.config, structure=structure, seed=self.seeds[0])
            rows += optimizer_rows(config, folder / f"seed_{self.seeds[0]}", self.dataset, n_images, budgets,
                                   optimizers)  # fmt: skip
        return rows

    def scatter(self) -> go.Figure:
        """Evolved vs initial Dice per test image, one trace per structure (regressor score, safeguards on)."""

        rows = []
        for structure in self.folders:
            rows += [r | {"structure": structure} for r in self.rows(structure)
                     if r.get("scorer", "regressor") == "regressor" and r["safeguards"] == "on"
                     and float(r.get("box_jitter", self.config.box_jitter)) == self.config.box_jitter]  # fmt: skip
        return evolution_scatter(
            rows, title=f"{self.config.model}: evolved vs initial Dice (regressor, seed {self.seeds[0]})",
            by="structure", initial="user's box",
        )  # fmt: skip

    def path_figure(self) -> go.Figure:
        """The box's path for the test image with the largest regressor-driven gain of the first structure: its
        evolution is run again (it is deterministic) with the truth, so every step shows its true Dice."""

        structure = next(iter(self.folders))
        seed_dir = self.folders[structure] / f"seed_{self.seeds[0]}"
        rows = [r for r in self.rows(structure) if r["group"] == "on"]
        if not rows:
            raise SampotError(f"{seed_dir / 'evolution.csv'} has no regressor-driven results.")
        best = max(rows, key=lambda r: float(r["gain"]))
        record = read_json(seed_dir / "trajectories.json", "trajectories")[f"{best['image_id']}/on"]
        image_id = str(best["image_id"])
        image, truth = self.dataset.image(image_id), self.dataset.mask(image_id, structure)
        config = read_json(seed_dir / "config.json", "config")
        model = build_model(replace(self.config, structure=structure))
        regressor, _ = load_regressor(seed_dir / "regressor.pt", device=self.config.device)
        res = evolve_prompt(
            model, regressor, image, Prompt.from_dict(record["prompt"]), steps=config["steps"], lr=config["lr"],
            optimizer=config["optimizer"], sharpness=config["sharpness"], safeguards=Safeguards(**config["safeguards"]),
            gt_mask=truth, seed=config["seed"], patience=config.get("patience"),
            min_gain=config.get("min_gain", EVOLVE_MIN_GAIN),
        )  # fmt: skip
        emb = model.embed(image)
        steps = [s.__dict__ for s in res.trajectory]
        shown = sorted({0, res.best_step, *range(0, len(steps), 5)})
        masks = {k: predict_mask(model, emb, res.prompt_at(k)) for k in shown}
        return trajectory_figure(
            image, steps, masks, truth, best_step=res.best_step, prompt_kind=res.prompt.kind,
            title=f"{image_id}, {structure}",
        )  # fmt: skip


def optimizer_rows(
    config: ExperimentConfig,
    run_dir: Path,
    dataset: FolderDataset,
    n_images: int = 4,
    budgets: tuple[int, ...] = (10, 30, 100),
    optimizers: tuple[str, ...] = ("adam", "cmaes", "random"),
) -> list[dict[str, Any]]:
    """Adam vs CMA-ES vs random search at equal model calls on one finished run folder: :func:`compare_optimizers`
    rows (plus ``structure`` and ``image_id``) for the first ``n_images`` test images of ``run_dir/evolution.csv``,
    from the run's own user prompts, with its regressor and with the oracle as the score. Seconds include one real
    encoder pass per image (the embedding store is bypassed for it, on purpose)."""

    if n_images < 1 or not budgets or min(budgets) < 1:
        raise SampotError(f"an optimiser comparison needs n_images >= 1 and budgets >= 1, got {n_images}, {budgets}.")
    model = build_model(config)
    regressor, _ = load_regressor(Path(run_dir) / "regressor.pt", device=config.device)
    ids = sorted({str(r["image_id"]) for r in read_csv(Path(run_dir) / "evolution.csv")})[:n_images]
    rows = []
    for image_id in ids:
        image, truth = dataset.image(image_id), dataset.mask(image_id, config.structure)
        model._cache.clear()  # time one real encoder pass (the disk store, if any, is set aside for it)
        store, model.store = getattr(model, "store", None), None
        t = time.perf_counter()
        model.embed(image)
        embed_s = time.perf_counter() - t
        model.store = store
        reg = RegressorScorer(regressor, image, config.sharpness, device=config.device)
        scorers = {"regressor": reg, "oracle": OracleScorer(truth, reg.size, config.sharpness, config.device)}
        found = compare_optimizers(
            model, image, truth, user_prompt(config, image_id, truth), scorers, list(optimizers), list(budgets),
            lr=config.lr, sharpness=config.sharpness, seed=config.seed, embed_seconds=embed_s,
        )  # fmt: skip
        rows += [r | {"structure": config.structure, "image_id": image_id} for r in found]
    return rows


class TimedScorer:
    """A scorer that records when each prompt it scores is done: one stamp per prompt, also when evolution scores a
    population of prompts in one call (all of them then end at that call's end)."""

    def __init__(self, scorer: Any) -> None:
        self.scorer, self.name, self.size = scorer, scorer.name, scorer.size
        self.stamps: list[float] = []

    def __call__(self, logits: Any, confidence: Any) -> Any:
        out = self.scorer(logits, confidence)
        self.stamps += [time.perf_counter()] * int(logits.shape[0])
        return out


def best_within(trajectory: list[Any], budget: int) -> int:
    """evolve_prompt's winner among the first ``budget`` calls: the highest-scoring step the safeguards allow."""
    return max((s for s in trajectory[:budget] if s.allowed), key=lambda s: s.score).step


def compare_optimizers(
    model: Any,
    image: np.ndarray,
    truth: np.ndarray,
    prompt: Any,
    scorers: dict[str, Any],
    optimizers: list[str],
    budgets: list[int],
    *,
    lr: float,
    sharpness: float = SHARPNESS,
    seed: int = 0,
    safeguards: Any = None,
    embed_seconds: float = 0.0,
) -> list[dict[str, Any]]:
    """Rows (score, optimizer, budget, Dice start / end, best step, seconds) of one image: each optimiser evolves
    ``prompt`` once per scorer for the largest budget of model calls, and the winner at every smaller budget is read
    off that run (no optimiser looks at the budget, so a run of B calls is the first B calls of a longer one).
    Seconds at budget B: ``embed_seconds`` + the wall time until the B-th score."""

    emb = model.embed(image)
    calls, budgets = max(budgets), sorted(set(budgets))
    rows = []
    for score, scorer in scorers.items():
        for opt in optimizers:
            timed = TimedScorer(scorer)
            t0 = time.perf_counter()
            result = evolve_prompt(
                model, timed, image, prompt, steps=calls - 1, lr=lr, optimizer=opt, sharpness=sharpness,
                safeguards=safeguards if safeguards is not None else Safeguards(), seed=seed,
                patience=None,  # every budget up to ``calls`` is read off one full run
            )  # fmt: skip
            d0 = dice(result.initial_mask, truth)
            for b in budgets:
                best = best_within(result.trajectory, b)
                end = d0 if best == 0 else dice(predict_mask(model, emb, result.prompt_at(best)), truth)
                rows.append({
                    "score": score, "optimizer": opt, "budget": b, "dice_start": round(d0, 5),
                    "dice_end": round(end, 5), "best_step": best,
                    "seconds": round(embed_seconds + timed.stamps[b - 1] - t0, 3),
                })  # fmt: skip
    return rows


def run_study(
    *,
    data: str | Path | None,
    out: str | Path,
    structures: list[str],
    progress: bool = True,
    resume: bool = True,
    phantom_n: int = 60,
    phantom_size: int = 512,
    **params: Any,
) -> Study:
    """Run (or, with ``resume``, reuse) the experiment for each of ``structures`` the data set has, with the same
    settings (``params``: :class:`~sampot_lib.experiment.config.ExperimentConfig` fields; ``seeds`` defaults to
    ``[seed]``).

    ``extra_jitters`` are evolved for the first structure only: they ask how the method copes with a sloppier or
    tighter first box, which one structure answers, and each costs a whole evolution of the test split."""
    if not structures:
        raise SampotError("a study needs at least one structure.")
    first = start_run(data=data, out=Path(out) / structures[0], structure=structures[0], phantom_n=phantom_n,
                      phantom_size=phantom_size, **params)  # fmt: skip
    dataset = first.dataset
    present = [s for s in structures if s in dataset.structures]
    skipped = [s for s in structures if s not in dataset.structures]
    if not present:
        raise SampotError(f"none of {structures} is in {first.config.data} (it has {', '.join(dataset.structures)}).")
    base = replace(first.config, seeds=first.config.run_seeds)
    folders = {}
    for structure in present:
        config = replace(base, structure=structure, out=str(Path(base.out).parent / structure),
                         extra_jitters=base.extra_jitters if structure == present[0] else [])  # fmt: skip
        config.out_dir.mkdir(parents=True, exist_ok=True)
        run_experiment(config, progress=progress, resume=resume)
        folders[structure] = config.out_dir
    return Study(base, folders, dataset, skipped)
