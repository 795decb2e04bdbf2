"""Prompt evolution (paper sections 2.1 and 3.3): move a prompt to maximise a score of its mask.

Only the prompt's coordinates move; the segmenter and the scorer stay frozen. The paper moves one click by Adam on
the regressor's gradient; here the prompt may also be a box or several clicks, the optimiser Adam, CMA-ES or random
search (:mod:`sampot_lib.method.optimizers`) at the same budget of model calls, and the score any of
:mod:`sampot_lib.method.scoring`. The paper's failures evolved into masks outside the lung; :class:`Safeguards`
bound where the prompt may go and which evolved masks may win.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sampot_lib.defaults import LR, SHARPNESS, STEPS
from sampot_lib.errors import SampotError
from sampot_lib.method.metrics import dice
from sampot_lib.method.optimizers import make_optimizer
from sampot_lib.method.prompts import Prompt, Safeguards, as_prompt, predict, predict_mask
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.scoring import RegressorScorer, Scorer
from sampot_lib.models.base import ImageEmbedding, PromptableModel

__all__ = ["EvolutionResult", "EvolutionStep", "Safeguards", "check_point", "evolve_prompt", "trajectory_masks"]


@dataclass(frozen=True)
class EvolutionStep:
    """One point of the trajectory. coords: the prompt's coordinates (laid out as :meth:`Prompt.coords`); x, y: its
    centre (the click, or the box's centre); area: mask area as a fraction of the image; overlap: IoU with the
    initial mask; allowed: whether the safeguards let this mask win; dice: true Dice when a ground truth was given."""

    step: int
    x: float
    y: float
    score: float
    confidence: float
    area: float
    overlap: float
    allowed: bool
    dice: float | None = None
    coords: tuple[float, ...] = ()


@dataclass
class EvolutionResult:
    """The whole run: the user's prompt, every step, the winning step, and the initial and winning masks (H x W
    bool)."""

    prompt: Prompt
    trajectory: list[EvolutionStep]
    best_step: int
    initial_mask: np.ndarray
    best_mask: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def initial(self) -> EvolutionStep:
        return self.trajectory[0]

    @property
    def best(self) -> EvolutionStep:
        return self.trajectory[self.best_step]

    def prompt_at(self, step: int) -> Prompt:
        """The prompt of trajectory step ``step``."""
        return self.prompt.with_coords(self.trajectory[step].coords)

    @property
    def best_prompt(self) -> Prompt:
        return self.prompt_at(self.best_step)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (masks left out)."""
        return {
            "settings": self.settings,
            "prompt": self.prompt.to_dict(),
            "best_prompt": self.best_prompt.to_dict(),
            "best_step": self.best_step,
            "initial": asdict(self.initial),
            "best": asdict(self.best),
            "trajectory": [asdict(s) for s in self.trajectory],
        }


def check_point(point: tuple[float, float], shape: tuple[int, int], mask: np.ndarray | None = None) -> None:
    """Raise SampotError unless (x, y) lies inside an image of ``shape`` (H, W), and inside ``mask`` if given."""
    as_prompt(point).check(shape, mask)


def evolve_prompt(
    model: PromptableModel,
    scorer: Scorer | SegmentationRegressor,
    image: np.ndarray,
    prompt: Prompt | tuple[float, float],
    *,
    steps: int = STEPS,
    lr: float = LR,
    optimizer: str = "adam",
    sharpness: float = SHARPNESS,
    safeguards: Safeguards | None = None,
    gt_mask: np.ndarray | None = None,
    seed: int = 0,
    progress: bool = False,
) -> EvolutionResult:
    """Move ``prompt`` to maximise ``scorer``'s score of its mask, with ``steps`` model calls after the first.

    image: H x W uint8; prompt: a :class:`Prompt` or an (x, y) click; scorer: a :mod:`sampot_lib.method.scoring` scorer,
    or a regressor (scored as ``RegressorScorer(regressor, image, sharpness)``). ``lr`` is in pixels of the
    original image (Adam's step size; random search's and CMA-ES's scale). Step 0 is the user's prompt; the winner
    is the highest-scoring step the safeguards allow (step 0 always qualifies). With ``gt_mask`` every step also
    records its true Dice (at the image's size).
    """
    guards = safeguards if safeguards is not None else Safeguards()
    prompt = as_prompt(prompt)
    h, w = image.shape[:2]
    prompt.check((h, w))
    if gt_mask is not None and gt_mask.shape != (h, w):
        raise SampotError(f"ground-truth mask is {gt_mask.shape[::-1]} (W x H) but the image is {w}x{h}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise SampotError(f"steps must be a whole number >= 0, got {steps!r}.")
    device = model.device
    if isinstance(scorer, SegmentationRegressor):
        scorer = RegressorScorer(scorer, image, sharpness, device=device)
    start = torch.tensor(prompt.coords(), dtype=torch.float32, device=device)
    opt = make_optimizer(
        optimizer, start, lambda c: guards.project(c, start, prompt, (h, w)), lr=lr, seed=seed, budget=steps + 1
    )
    if opt.needs_gradient and not getattr(model, "differentiable", True):
        raise SampotError(
            f"optimizer {optimizer!r} needs gradients, but model {model.name!r} gives none; use --optimizer cmaes or "
            "random."
        )
    emb = model.embed(image)  # after the checks: a wrong optimizer fails before the image encoder runs
    size = (scorer.size, scorer.size)

    trajectory: list[EvolutionStep] = []
    mask0 = None
    for step in tqdm(range(steps + 1), desc="evolve", unit="step", disable=not progress, leave=False):
        coords = opt.ask()
        with torch.set_grad_enabled(opt.needs_gradient):
            pred = predict(model, emb, prompt, coords, output_size=size)
            score = scorer(pred.logits, pred.confidence)
        hard = (pred.logits[0, 0] > 0).detach().cpu().numpy()
        mask0 = hard if mask0 is None else mask0
        overlap, allowed = guards.mask_allowed(hard, mask0)
        current = prompt.with_coords(coords)
        true_dice = dice(predict_mask(model, emb, current), gt_mask) if gt_mask is not None else None
        x, y = current.center
        trajectory.append(
            EvolutionStep(
                step=step, x=x, y=y, score=float(score.detach()[0]), confidence=float(pred.confidence.detach()[0]),
                area=float(hard.mean()), overlap=overlap, allowed=allowed or step == 0, dice=true_dice,
                coords=tuple(float(v) for v in current.coords()),
            )
        )  # fmt: skip
        if step < steps:
            opt.tell(coords, score)

    best = max((s for s in trajectory if s.allowed), key=lambda s: s.score).step
    settings = {
        "steps": steps, "lr": lr, "optimizer": optimizer, "scorer": scorer.name, "sharpness": sharpness,
        "safeguards": asdict(guards), "model": model.name, "prompt_kind": prompt.kind, "seed": seed,
    }  # fmt: skip
    best_prompt = prompt.with_coords(trajectory[best].coords)
    return EvolutionResult(
        prompt, trajectory, best, predict_mask(model, emb, prompt), predict_mask(model, emb, best_prompt), settings
    )


@torch.no_grad()
def measure_prompt(
    model: PromptableModel, emb: ImageEmbedding, prompt: Prompt, scorer: Scorer, truth: np.ndarray | None = None
) -> dict[str, Any]:
    """One prompt as evolution's step 0 sees it: {"mask": H x W bool at the image's size, "score": the scorer's score
    of the mask at its input size, "confidence": the model's, "dice": the true Dice, or None without ``truth``}."""
    small = predict(model, emb, prompt, output_size=(scorer.size, scorer.size))
    mask = predict_mask(model, emb, prompt)
    return {"mask": mask, "score": float(scorer(small.logits, small.confidence)), "confidence": float(small.confidence),
            "dice": dice(mask, truth) if truth is not None else None}  # fmt: skip


def truth_gain(result: EvolutionResult, truth: np.ndarray) -> dict[str, float]:
    """An evolution judged against the truth: the user's prompt's Dice (``dice0``), the winner's and the gain."""
    d0, d1 = dice(result.initial_mask, truth), dice(result.best_mask, truth)
    return {"dice0": d0, "dice": d1, "gain": d1 - d0}


@torch.no_grad()
def trajectory_masks(model: PromptableModel, image: np.ndarray, result: EvolutionResult) -> dict[int, np.ndarray]:
    """{step: H x W bool mask} of every step of an evolution, at the image's size (for a step slider)."""
    emb = model.embed(image)
    return {s.step: predict_mask(model, emb, result.prompt_at(s.step)) for s in result.trajectory}
