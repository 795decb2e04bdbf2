"""Prompt evolution (paper sections 2.1 and 3.3): Adam on the click's (x, y), maximising the regressor's score.

Only the click moves; the segmenter and the regressor stay frozen. The paper's failures evolved into masks outside
the lung; :class:`Safeguards` bound where the click may go and which evolved masks may win.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sampot_lib.errors import SampotError
from sampot_lib.metrics import dice
from sampot_lib.models.base import PromptableModel
from sampot_lib.regressor import SegmentationRegressor, to_input


@dataclass(frozen=True)
class Safeguards:
    """Limits on where evolution may take the click and which masks may win. ``None`` switches a limit off.

    keep_in_image: clamp the click to the image after every step.
    trust_radius: the click stays within this distance of the user's click, as a fraction of the image's longer side.
    min_overlap: an evolved mask must overlap the initial mask with at least this IoU to win.
    max_area_ratio: an evolved mask's area must lie within [initial / r, initial * r] to win.
    """

    keep_in_image: bool = True
    trust_radius: float | None = 0.15
    min_overlap: float | None = 0.3
    max_area_ratio: float | None = 2.0

    @classmethod
    def off(cls) -> Safeguards:
        """The paper's setting: no limit but the image border (a click outside the image has no meaning)."""
        return cls(keep_in_image=True, trust_radius=None, min_overlap=None, max_area_ratio=None)


@dataclass(frozen=True)
class EvolutionStep:
    """One point of the trajectory. area: mask area as a fraction of the image; overlap: IoU with the initial mask;
    allowed: whether the safeguards let this mask win; dice: true Dice when a ground truth was given."""

    step: int
    x: float
    y: float
    score: float
    confidence: float
    area: float
    overlap: float
    allowed: bool
    dice: float | None = None


@dataclass
class EvolutionResult:
    """The whole run: every step, the winning step, and the initial and winning masks (H x W bool)."""

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (masks left out)."""
        return {
            "settings": self.settings,
            "best_step": self.best_step,
            "initial": asdict(self.initial),
            "best": asdict(self.best),
            "trajectory": [asdict(s) for s in self.trajectory],
        }


def check_point(point: tuple[float, float], shape: tuple[int, int], mask: np.ndarray | None = None) -> None:
    """Raise SampotError unless (x, y) lies inside an image of ``shape`` (H, W), and inside ``mask`` if given."""
    x, y = point
    h, w = shape
    if not (math.isfinite(x) and math.isfinite(y)) or not (0 <= x <= w - 1 and 0 <= y <= h - 1):
        raise SampotError(
            f"click ({x}, {y}) lies outside the {w}x{h} image; x must be in [0, {w - 1}] and y in [0, {h - 1}]."
        )
    if mask is not None and not mask[int(round(y)), int(round(x))]:
        raise SampotError(f"click ({x}, {y}) lies outside the structure's mask; click inside the structure.")


def evolve_prompt(
    model: PromptableModel,
    regressor: SegmentationRegressor,
    image: np.ndarray,
    point: tuple[float, float],
    *,
    steps: int = 30,
    lr: float = 10.0,
    sharpness: float = 5.0,
    safeguards: Safeguards | None = None,
    gt_mask: np.ndarray | None = None,
    progress: bool = False,
) -> EvolutionResult:
    """Move a single positive click by Adam (``lr`` in pixels, no weight decay) to maximise the regressor's score.

    image: H x W uint8; point: the user's (x, y) click. The regressor sees ``sigmoid(sharpness * logits)``, a
    near-binary mask. Step 0 is the user's click; the winner is the highest-scoring step the safeguards allow
    (step 0 always qualifies). With ``gt_mask`` every step also records its true Dice.
    """
    guards = safeguards if safeguards is not None else Safeguards()
    h, w = image.shape[:2]
    check_point(point, (h, w))
    if gt_mask is not None and gt_mask.shape != (h, w):
        raise SampotError(f"ground-truth mask is {gt_mask.shape[::-1]} (W x H) but the image is {w}x{h}.")
    if steps < 0:
        raise SampotError(f"steps must be >= 0, got {steps}.")
    device = model.device
    regressor = regressor.to(device).eval().requires_grad_(False)
    size = regressor.input_size
    emb = model.embed(image)
    img_in = to_input(image, size).to(device)
    label = torch.ones(1, 1, dtype=torch.long, device=device)
    start = torch.tensor(point, dtype=torch.float32, device=device)
    p = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr, weight_decay=0.0)
    lo, hi = torch.zeros(2, device=device), torch.tensor([w - 1.0, h - 1.0], device=device)
    radius = guards.trust_radius * max(h, w) if guards.trust_radius is not None else None

    trajectory: list[EvolutionStep] = []
    mask0 = None
    for step in tqdm(range(steps + 1), desc="evolve", unit="step", disable=not progress, leave=False):
        pred = model.predict(emb, p[None, None], label, output_size=(size, size))
        soft = torch.sigmoid(sharpness * pred.logits)
        score = regressor(img_in, soft)
        hard = (pred.logits[0, 0] > 0).detach().cpu().numpy()
        if mask0 is None:
            mask0 = hard
        overlap, allowed = _check_guards(hard, mask0, guards)
        true_dice = None
        if gt_mask is not None:
            true_dice = dice(_full_mask(model, emb, p.detach()), gt_mask)
        x, y = p.detach().cpu().tolist()
        trajectory.append(
            EvolutionStep(
                step=step, x=x, y=y, score=score.item(), confidence=pred.confidence.item(),
                area=float(hard.mean()), overlap=overlap, allowed=allowed or step == 0, dice=true_dice,
            )
        )  # fmt: skip
        if step == steps:
            break
        opt.zero_grad()
        (-score.sum()).backward()
        opt.step()
        with torch.no_grad():  # project the click back into the allowed region
            if radius is not None:
                d = p - start
                n = d.norm()
                if n > radius:
                    p.copy_(start + d * (radius / n))
            if guards.keep_in_image:
                p.copy_(torch.maximum(torch.minimum(p, hi), lo))

    best = max((s for s in trajectory if s.allowed), key=lambda s: s.score).step
    initial_mask = _full_mask(model, emb, start)
    best_pt = torch.tensor([trajectory[best].x, trajectory[best].y], device=device)
    settings = {"steps": steps, "lr": lr, "sharpness": sharpness, "safeguards": asdict(guards), "model": model.name}
    return EvolutionResult(trajectory, best, initial_mask, _full_mask(model, emb, best_pt), settings)


def _check_guards(mask: np.ndarray, mask0: np.ndarray, guards: Safeguards) -> tuple[float, bool]:
    """IoU of ``mask`` with the initial mask, and whether the overlap and area limits let it win."""
    union = np.logical_or(mask, mask0).sum()
    overlap = float(np.logical_and(mask, mask0).sum() / union) if union else 1.0
    ok = True
    if guards.min_overlap is not None and overlap < guards.min_overlap:
        ok = False
    if guards.max_area_ratio is not None:
        a0, a = max(mask0.sum(), 1), mask.sum()
        ok = ok and a0 / guards.max_area_ratio <= a <= a0 * guards.max_area_ratio
    return overlap, bool(ok)


@torch.no_grad()
def _full_mask(model: PromptableModel, emb: Any, point: torch.Tensor) -> np.ndarray:
    """The H x W bool mask of one click at the original image size."""
    label = torch.ones(1, 1, dtype=torch.long, device=point.device)
    return (model.predict(emb, point.reshape(1, 1, 2), label).logits[0, 0] > 0).cpu().numpy()


@torch.no_grad()
def trajectory_masks(model: PromptableModel, image: np.ndarray, result: EvolutionResult) -> dict[int, np.ndarray]:
    """{step: H x W bool mask} of every step of an evolution, at the image's size (for a step slider)."""
    emb = model.embed(image)
    points = [torch.tensor([s.x, s.y], dtype=torch.float32, device=model.device) for s in result.trajectory]
    return {s.step: _full_mask(model, emb, p) for s, p in zip(result.trajectory, points, strict=True)}
