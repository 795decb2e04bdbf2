"""A study: the same SAMPOT experiment on several structures of one data set, and its tables and figures.

The book's LiteMedSAM chapter and ``sampot study`` use it. Each structure is an ordinary run folder
(``out/<structure>/``, one ``seed_<k>/`` sub-folder per seed, written by :func:`sampot_lib.pipeline.run_experiment`);
the tables are read back from those folders' ``summary.json`` and ``evolution.csv`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from sampot_lib.config import ExperimentConfig
from sampot_lib.data.folder import FolderDataset
from sampot_lib.errors import SampotError
from sampot_lib.pipeline import run_experiment
from sampot_lib.runs import read_csv, read_json, start_run

SCORER_LABELS = {
    "regressor": "regressor (SAMPOT)",
    "blend": "regressor + IoU head blend",
    "confidence": "model's IoU head",
    "oracle": "oracle (ceiling)",
}


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
        """Each seed's summary of ``structure`` (as :func:`sampot_lib.pipeline.evolve_stage` wrote it)."""
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
        if key == "n":
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

    def jitter_table(self) -> str:
        """Markdown: the regressor-driven results for each jitter of the user's box."""
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

    def scatter(self) -> go.Figure:
        """Evolved vs initial Dice per test image, one trace per structure (regressor score, safeguards on)."""
        from sampot_lib.viz import evolution_scatter

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
        from sampot_lib.evolve import evolve_prompt
        from sampot_lib.pipeline import build_model
        from sampot_lib.prompts import Prompt, Safeguards, predict_mask
        from sampot_lib.regressor import load_regressor
        from sampot_lib.viz import trajectory_figure

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
            gt_mask=truth, seed=config["seed"],
        )  # fmt: skip
        emb = model.embed(image)
        steps = [s.__dict__ for s in res.trajectory]
        shown = sorted({0, res.best_step, *range(0, len(steps), 5)})
        masks = {k: predict_mask(model, emb, res.prompt_at(k)) for k in shown}
        return trajectory_figure(
            image, steps, masks, truth, best_step=res.best_step, prompt_kind=res.prompt.kind,
            title=f"{image_id}, {structure}",
        )  # fmt: skip


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
    settings (``params``: :class:`~sampot_lib.config.ExperimentConfig` fields; ``seeds`` defaults to ``[seed]``)."""
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
        config = replace(base, structure=structure, out=str(Path(base.out).parent / structure))
        config.out_dir.mkdir(parents=True, exist_ok=True)
        run_experiment(config, progress=progress, resume=resume)
        folders[structure] = config.out_dir
    return Study(base, folders, dataset, skipped)
