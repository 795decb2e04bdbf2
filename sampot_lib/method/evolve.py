"""Prompt evolution (paper sections 2.1 and 3.3): move a prompt to maximise a score of its mask.

Only the prompt's coordinates move; the segmenter and the scorer stay frozen. The paper moves one click by Adam on
the regressor's gradient; here the prompt may also be a box or several clicks, the optimiser Adam, CMA-ES or random
search (:mod:`sampot_lib.method.optimizers`) at the same budget of model calls, and the score any of
:mod:`sampot_lib.method.scoring`. The paper's failures evolved into masks outside the lung; :class:`Safeguards`
bound where the prompt may go and which evolved masks may win. With a ``patience``, a run stops early once its best
score stops rising.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from sampot_lib.data.io import check_mask
from sampot_lib.defaults import (
    EVOLVE_MIN_GAIN,
    EVOLVE_PATIENCE,
    LR,
    MAX_LR,
    MAX_SHARPNESS,
    MAX_STEPS,
    SHARPNESS,
    STEPS,
    STRUCTURE,
)
from sampot_lib.errors import SampotError, SampotWarning, number, whole
from sampot_lib.errors import seed as check_seed
from sampot_lib.method.metrics import dice
from sampot_lib.method.optimizers import make_optimizer
from sampot_lib.method.prompts import Prompt, Safeguards, as_prompt, predict, predict_mask
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.method.scoring import RegressorScorer, Scorer
from sampot_lib.method.selection import DoNoHarm
from sampot_lib.method.shipped import find_shipped, load_shipped_regressor
from sampot_lib.method.trajectory import EvolutionResult, EvolutionStep
from sampot_lib.models.base import ImageEmbedding, MaskPrediction, PromptableModel
from sampot_lib.models.sam import check_image

__all__ = [
    "EvolutionResult", "EvolutionStep", "Patience", "Safeguards", "check_point", "evolve_prompt", "stop_step",
    "trajectory_masks",
]  # fmt: skip


@dataclass
class Patience:
    """Evolution's early-stopping rule, fed one model call at a time: ``reference`` is the best allowed score at its
    last rise by more than ``min_gain`` (step 0's score to begin with), ``stale`` the calls since; the rule is spent
    once ``stale`` reaches ``patience`` (never for None or 0)."""

    patience: int | None
    min_gain: float
    reference: float = -np.inf
    stale: int = 0

    def spent(self, score: float, allowed: bool) -> bool:
        """Take the next call's score (and whether the safeguards let its mask win); True once patience is spent."""
        if allowed and score > self.reference + self.min_gain:
            self.reference, self.stale = score, 0
        else:
            self.stale += 1
        return bool(self.patience) and self.stale >= self.patience


def stop_step(trajectory: Sequence[EvolutionStep | Mapping[str, Any]], patience: int | None, min_gain: float) -> int:
    """The last step a run with ``patience`` and ``min_gain`` would have taken, replayed from the trajectory of a run
    with the same settings that spent its budget (``EvolutionStep`` objects or their records from ``to_dict()``):
    a stopped run is the first steps of the full one, so one full run per image tells what every patience gives."""
    rule, last = Patience(patience, min_gain), len(trajectory) - 1
    for index, step in enumerate(trajectory):
        score, allowed = (step["score"], step["allowed"]) if isinstance(step, Mapping) else (step.score, step.allowed)
        if rule.spent(float(score), bool(allowed) or index == 0) and index < last:
            return index
    return last


def check_point(point: tuple[float, float], shape: tuple[int, int], mask: np.ndarray | None = None) -> None:
    """Raise SampotError unless (x, y) lies inside an image of ``shape`` (H, W), and inside ``mask`` if given."""
    as_prompt(point).check(shape, mask)


def evolve_prompt(
    model: PromptableModel,
    scorer: Scorer | SegmentationRegressor | None,
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
    patience: int | None = EVOLVE_PATIENCE,
    min_gain: float = EVOLVE_MIN_GAIN,
    batch: bool | None = None,
    on_step: Callable[[EvolutionStep, int], None] | None = None,
    structure: str = STRUCTURE,
    do_no_harm: DoNoHarm | bool = True,
) -> EvolutionResult:
    """Move a prompt to maximise a scorer's score of its mask.

    Only the prompt's coordinates move; the model and the scorer stay frozen. Step 0 is the user's prompt; then
    ``steps`` model calls follow. The winner is the highest-scoring step the safeguards allow (step 0 always
    qualifies).

    Early stopping: with ``patience`` P (1 to ``steps``), the run stops after the call at which the best allowed
    score has gone P calls in a row without rising more than ``min_gain`` above its value at its last such rise
    (step 0's score to begin with; a call whose mask the safeguards refuse counts as no rise). The run then ends at
    that step (``result.stopped == "patience"``), which the full budget would have reached too: a stopped run is
    the first steps of the full one.

    Args:
        model: The promptable model (from :func:`~sampot_lib.models.registry.load_model`).
        scorer: What scores each mask: a :mod:`sampot_lib.method.scoring` scorer; a regressor (scored as
            ``RegressorScorer(regressor, image, sharpness)``); or None: the regressor shipped for the model, the
            prompt's kind and ``structure`` (:func:`~sampot_lib.method.shipped.find_shipped`; its name is in the
            result's settings).
        image: The image, an H x W (or H x W x 3) uint8 NumPy array.
        prompt: The user's prompt: a :class:`Prompt`, or an (x, y) click, in pixels of the image; it must lie
            inside the image.
        steps: Model calls after the user's prompt (a whole number from 0 to :data:`~sampot_lib.defaults.MAX_STEPS`).
        lr: Step size in pixels of the original image (Adam's step size; random search's and CMA-ES's scale).
        optimizer: How the prompt moves: ``"adam"`` (needs a model that gives gradients), ``"cmaes"`` or
            ``"random"`` (:mod:`sampot_lib.method.optimizers`), at the same budget of model calls.
        sharpness: Slope of the sigmoid a regressor sees on the logits (``sigmoid(sharpness * logits)``).
        safeguards: Where the prompt may go and which evolved masks may win; None: ``Safeguards()``, the defaults.
        gt_mask: The true mask (H x W, binary, not empty), or None. With it every step also records its true Dice
            (at the image's size).
        seed: Seed of the optimiser.
        progress: Show a progress bar.
        patience: Early stopping, as above. ``None``, 0 or a patience of ``steps`` or more: no early stopping.
        min_gain: The least rise of the best allowed score that counts as progress for ``patience``.
        batch: Score the gradient-free optimisers' proposals a population at a time, in one model call (the same
            proposals and scores as one by one, up to float rounding; the budget still counts prompts). None: where
            the model says that is faster (``model.batch_prompts``). Adam moves one prompt and never batches.
        on_step: Called as ``on_step(step, steps)`` with each :class:`EvolutionStep` as soon as it is scored (the
            widget and the app show progress); None: no call.
        structure: The structure segmented: with ``scorer`` None it picks the shipped regressor (and is recorded in
            the result's settings).
        do_no_harm: True applies the shipped regressor's do-no-harm rule (its margin and blend weight) when the
            shipped default is used, and nothing otherwise; False never applies a rule; a
            :class:`~sampot_lib.method.selection.DoNoHarm` is applied to any scorer.

    Returns:
        The run, with the user's prompt, every step scored (its score, confidence, mask area, overlap with the first
        mask, whether the safeguards allow it, and its true Dice or None), the winning step, the initial and winning
        masks (H x W bool, at the image's size), the settings, why it stopped (``"budget"`` or ``"patience"``) and
        its wall times. A do-no-harm rule sets the winner back to the user's prompt when it keeps it, and the
        settings record its decision.

    Raises:
        SampotError: An argument of the wrong kind or out of range (named in the message), a prompt outside the
            image, a ``gt_mask`` that is empty, not binary or not of the image's size, ``"adam"`` with a model
            that gives no gradients, or, with ``scorer`` None, no shipped regressor for the model, prompt kind and
            structure, or one made for other settings.
    """
    _check_call(model, scorer, image, safeguards, do_no_harm)
    guards = safeguards if safeguards is not None else Safeguards()
    prompt = as_prompt(prompt)
    h, w = image.shape[:2]
    prompt.check((h, w))
    if gt_mask is not None:  # a non-binary or empty truth gives a true Dice that means nothing
        gt_mask = check_mask(gt_mask, name="gt_mask", expected_shape=(h, w))
    steps = whole(steps, "steps", low=0, high=MAX_STEPS)
    lr = number(lr, "lr", low=0, high=MAX_LR, low_open=True)
    sharpness = number(sharpness, "sharpness", low=0, high=MAX_SHARPNESS, low_open=True)
    seed = check_seed(seed, "seed")
    patience = _check_patience(patience, steps)
    min_gain = number(min_gain, "min_gain", low=0.0, high=1.0, high_open=True)  # a score lies in [0, 1]
    device = model.device
    harm_rule = do_no_harm if isinstance(do_no_harm, DoNoHarm) else None
    shipped_name = None
    if scorer is None:
        record = find_shipped(model.name, prompt.kind, structure)
        scorer, meta, _ = load_shipped_regressor(record, device=str(device))
        check_regressor(meta, {"model": model.name, "mask_output": getattr(model, "mask_output", None),
                               "sharpness": sharpness}, can_allow=False)  # fmt: skip
        shipped_name = record.name
        if do_no_harm is True:
            harm_rule = DoNoHarm(record.margin, record.blend_weight)
    if isinstance(scorer, SegmentationRegressor):
        _warn_if_foreign(scorer, model, prompt, sharpness)
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
    started = time.perf_counter()
    emb = model.embed(image)  # after the checks: a wrong optimizer fails before the image encoder runs
    if torch.device(device).type == "cuda":  # a GPU returns before it finishes: time the encoder, not its launch
        torch.cuda.synchronize(device)
    embedded = time.perf_counter()
    size = (scorer.size, scorer.size)

    batched = not opt.needs_gradient and (batch if batch is not None else getattr(model, "batch_prompts", False))

    trajectory: list[EvolutionStep] = []
    mask0 = None
    stopped: Literal["budget", "patience"] = "budget"
    rule = Patience(patience, min_gain)
    bar = tqdm(total=steps + 1, desc="evolve", unit="step", disable=not progress, leave=False)
    while len(trajectory) <= steps and stopped == "budget":
        asked = opt.ask_batch(steps + 1 - len(trajectory)) if batched else [opt.ask()]
        with torch.set_grad_enabled(opt.needs_gradient):
            pred = predict(model, emb, prompt, asked[0] if len(asked) == 1 else torch.stack(asked), output_size=size)
            scores = scorer(pred.logits, pred.confidence)
        # the truth is compared at the image's size, from the same decoder output where the model can resize it
        full = _full_size(pred) if gt_mask is not None else None
        for i, coords in enumerate(asked):
            step, score = len(trajectory), scores[i : i + 1]
            hard = (pred.logits[i, 0] > 0).detach().cpu().numpy()
            mask0 = hard if mask0 is None else mask0
            overlap, allowed = guards.mask_allowed(hard, mask0)
            current = prompt.with_coords(coords)
            true_dice = None
            if gt_mask is not None:
                mask = (full[i, 0] > 0).cpu().numpy() if full is not None else predict_mask(model, emb, current)
                true_dice = dice(mask, gt_mask)
            x, y = current.center
            trajectory.append(
                EvolutionStep(
                    step=step, x=x, y=y, score=float(score.detach()[0]),
                    confidence=float(pred.confidence.detach()[i]), area=float(hard.mean()), overlap=overlap,
                    allowed=allowed or step == 0, dice=true_dice, coords=tuple(float(v) for v in current.coords()),
                )
            )  # fmt: skip
            bar.update(1)
            if on_step is not None:
                on_step(trajectory[-1], steps)
            spent = rule.spent(trajectory[-1].score, trajectory[-1].allowed)
            if step < steps:
                if spent:
                    stopped = "patience"  # the rest of a batch, scored already, is dropped: as if never asked
                    break
                opt.tell(coords, score)
    bar.close()

    best = max((s for s in trajectory if s.allowed), key=lambda s: s.score).step
    settings = {
        "steps": steps, "lr": lr, "optimizer": optimizer, "scorer": scorer.name, "sharpness": sharpness,
        "safeguards": asdict(guards), "model": model.name, "prompt_kind": prompt.kind, "seed": seed,
        "patience": patience, "min_gain": min_gain, "batched": batched,
    }  # fmt: skip
    if shipped_name is not None:
        settings |= {"regressor": shipped_name, "structure": structure}
    best_prompt = prompt.with_coords(trajectory[best].coords)
    masks = predict_mask(model, emb, prompt), predict_mask(model, emb, best_prompt)
    result = EvolutionResult(
        prompt, trajectory, best, *masks, settings, stopped=stopped, seconds_embed=embedded - started,
        seconds_evolve=time.perf_counter() - embedded,
    )  # fmt: skip
    return harm_rule.apply(result) if harm_rule is not None else result


def _full_size(pred: MaskPrediction) -> torch.Tensor | None:
    """The prediction's logits at the image's size (B x 1 x H x W, no gradient), or None if the model cannot resize
    its own output (then each mask is predicted again)."""
    if pred.resize is None:
        return None
    with torch.no_grad():
        return pred.resize(None)


def _check_call(model: Any, scorer: Any, image: Any, safeguards: Any, do_no_harm: Any) -> None:
    """One-line SampotErrors, naming the parameter, for arguments of the wrong kind (a notebook passes what it has):
    without them each fails deep inside torch, as an AttributeError or a shape error that names no parameter."""
    if not callable(getattr(model, "embed", None)):
        raise SampotError(f"model must be a promptable model (from load_model), got {type(model).__name__}.")
    check_image(image)  # a NumPy uint8 array, H x W or H x W x 3, of at least the models' smallest side
    if image.min() == image.max():  # as read_image refuses a file of one value: a model still draws a mask on it
        raise SampotError(f"image: every pixel has the value {image.flat[0]}: there is nothing to segment.")
    is_scorer = hasattr(scorer, "size") and callable(scorer)  # the Scorer protocol
    if not (scorer is None or isinstance(scorer, SegmentationRegressor) or is_scorer):
        raise SampotError(
            f"scorer must be None (the shipped regressor), a SegmentationRegressor or a scorer of "
            f"sampot_lib.method.scoring, got {type(scorer).__name__}."
        )
    if safeguards is not None and not isinstance(safeguards, Safeguards):
        raise SampotError(f"safeguards must be a Safeguards or None, got {type(safeguards).__name__}.")
    if not isinstance(do_no_harm, (bool, DoNoHarm)):
        raise SampotError(f"do_no_harm must be True, False or a DoNoHarm, got {do_no_harm!r}.")


def _warn_if_foreign(regressor: SegmentationRegressor, model: Any, prompt: Prompt, sharpness: float) -> None:
    """A SampotWarning for each setting a loaded regressor's record says it was not made for (another model, prompt
    kind, mask output or sharpness): its scores then mean little, and the command line refuses it."""
    record = getattr(regressor, "provenance", None)
    if not record:  # made in this session, or a file without a record: nothing to compare
        return
    expected = {"model": getattr(model, "name", None), "mask_output": getattr(model, "mask_output", None),
                "prompt": prompt.kind, "sharpness": sharpness}  # fmt: skip
    for note in check_regressor(record, expected, allow_foreign=True):
        if note.startswith("foreign regressor"):
            warnings.warn(f"{note}; its scores may mean little here (`sampot regressors` lists the shipped ones, "
                          "with what each was made for).", SampotWarning, stacklevel=3)  # fmt: skip


def _check_patience(patience: int | None, steps: int) -> int | None:
    """``patience`` as evolve_prompt takes it (None: no early stopping), or a one-line SampotError. A patience of
    ``steps`` or more never stops a run early (the default's meaning for short runs); the command line refuses one
    the user typed (``sampot_lib.cli.checks``)."""
    if patience is None:
        return None
    return whole(patience, "patience", low=0)


@torch.no_grad()
def measure_prompt(
    model: PromptableModel, emb: ImageEmbedding, prompt: Prompt, scorer: Scorer, truth: np.ndarray | None = None
) -> dict[str, Any]:
    """One prompt as evolution's step 0 sees it.

    Args:
        model: The promptable model.
        emb: The image's embedding.
        prompt: The prompt.
        scorer: The scorer.
        truth: The true mask, H x W bool; None: no Dice.

    Returns:
        A dict of the prompt's ``mask`` (H x W bool at the image's size), ``score`` (the scorer's score of the mask
        at its input size), ``confidence`` (the model's) and ``dice`` (the true Dice, or None without ``truth``).
    """
    small = predict(model, emb, prompt, output_size=(scorer.size, scorer.size))
    mask = predict_mask(model, emb, prompt)
    return {"mask": mask, "score": float(scorer(small.logits, small.confidence)), "confidence": float(small.confidence),
            "dice": dice(mask, truth) if truth is not None else None}  # fmt: skip


def truth_gain(result: EvolutionResult, truth: np.ndarray) -> dict[str, float]:
    """An evolution judged against the truth.

    Args:
        result: The evolution.
        truth: The true mask, H x W bool.

    Returns:
        ``{"dice0": the user's prompt's Dice, "dice": the winner's, "gain": their difference}``.
    """
    d0, d1 = dice(result.initial_mask, truth), dice(result.best_mask, truth)
    return {"dice0": d0, "dice": d1, "gain": d1 - d0}


@torch.no_grad()
def trajectory_masks(model: PromptableModel, image: np.ndarray, result: EvolutionResult) -> dict[int, np.ndarray]:
    """{step: H x W bool mask} of every step of an evolution, at the image's size (for a step slider)."""
    emb = model.embed(image)
    return {s.step: predict_mask(model, emb, result.prompt_at(s.step)) for s in result.trajectory}
