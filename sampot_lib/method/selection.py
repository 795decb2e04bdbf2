"""Choosing the winner of an evolution without the truth, and a rule that never makes the user's prompt worse.

Evolution's winner is the best-scoring step the safeguards allow. A score that ranks masks well across images can
still rank one image's candidates poorly, so the winner can be worse than the user's own prompt, and a user has no
ground truth to notice. :class:`DoNoHarm` keeps the user's prompt unless the winner's *predicted gain* (its score
minus the user's prompt's score) clears a margin. The predicted gain is the evolution's own score, or a blend of the
regressor's score and the model's IoU head (``weight * regressor + (1 - weight) * confidence``): two scores that
disagree about a step are a sign that the step is out of the regressor's depth. The margin is chosen on the
validation split (:func:`choose_margin`), never on test.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

import numpy as np

from sampot_lib.defaults import HARM_TOLERANCE
from sampot_lib.errors import SampotError
from sampot_lib.method.trajectory import EvolutionResult, EvolutionStep

#: Margins :func:`choose_margin` tries (predicted Dice gain): 0 to 0.2 by 0.005, then 1 (never move).
MARGINS = tuple(round(m, 3) for m in np.arange(0.0, 0.2001, 0.005)) + (1.0,)


@dataclass(frozen=True)
class DoNoHarm:
    """Keep the user's prompt unless the winner's predicted gain exceeds a margin.

    Args:
        margin: The margin, a predicted Dice gain (a Dice difference) in [0, 1].
        weight: None predicts with the evolution's own score; a number in [0, 1] with the blend ``weight * score +
            (1 - weight) * confidence`` of each step (the score should then be the regressor's).

    Raises:
        SampotError: ``margin`` or ``weight`` is not a number in [0, 1].
    """

    margin: float
    weight: float | None = None

    def __post_init__(self) -> None:
        if not _unit_number(self.margin):
            raise SampotError(f"the do-no-harm margin must be a predicted Dice gain in [0, 1], got {self.margin!r}.")
        object.__setattr__(self, "margin", float(self.margin))  # numpy scalars work as the plain float they hold
        w = self.weight
        if w is not None:
            if not _unit_number(w):
                raise SampotError(f"the do-no-harm blend weight must be in [0, 1] or None, got {w!r}.")
            object.__setattr__(self, "weight", float(w))

    @property
    def name(self) -> str:
        """``do-no-harm``, or ``do-no-harm (blend)`` with a weight."""
        return "do-no-harm" if self.weight is None else "do-no-harm (blend)"

    def predicted(self, step: EvolutionStep) -> float:
        """A step's predicted Dice under this rule.

        Args:
            step: The step.

        Returns:
            Its score, or with a ``weight`` the blend of its score and confidence.
        """
        if self.weight is None:
            return step.score
        return self.weight * step.score + (1 - self.weight) * step.confidence

    def predicted_gain(self, result: EvolutionResult) -> float:
        """The winner's predicted Dice gain over the user's prompt.

        Args:
            result: The evolution.

        Returns:
            The winner's predicted Dice minus the user's prompt's.
        """
        return self.predicted(result.best) - self.predicted(result.initial)

    def keeps_user_prompt(self, result: EvolutionResult) -> bool:
        """Whether the rule keeps the user's prompt for an evolution.

        Args:
            result: The evolution.

        Returns:
            True when the winner is not step 0 and its predicted gain does not exceed the margin (a winner at step 0 is
            kept anyway, and False is returned).
        """
        return result.best_step != 0 and not self.predicted_gain(result) > self.margin

    def reason(self, result: EvolutionResult) -> str:
        """What the rule did with an evolution and why, for the user.

        Args:
            result: The evolution.

        Returns:
            One line.
        """
        gain = self.predicted_gain(result)
        if result.best_step == 0:
            return "no step scored above the user's prompt: the user's prompt is kept"
        if self.keeps_user_prompt(result):
            return (f"the evolved prompt's predicted gain {gain:+.3f} does not clear the margin {self.margin:g}: "
                    "the user's prompt is kept")  # fmt: skip
        return f"the evolved prompt's predicted gain {gain:+.3f} clears the margin {self.margin:g}: it is used"

    def apply(self, result: EvolutionResult) -> EvolutionResult:
        """An evolution with the rule's winner.

        Args:
            result: The evolution.

        Returns:
            The same evolution, its best step set back to the user's prompt (step 0, with the initial mask) when the
            rule keeps it; its settings record the rule and its decision under ``"rule"``.
        """
        kept = self.keeps_user_prompt(result)
        settings = result.settings | {
            "rule": {"name": self.name, "margin": self.margin, "weight": self.weight, "kept_user_prompt": kept,
                     "predicted_gain": self.predicted_gain(result), "reason": self.reason(result)},
        }  # fmt: skip
        if not kept:
            return replace(result, settings=settings)
        return replace(result, best_step=0, best_mask=result.initial_mask, settings=settings)


def _unit_number(value: object) -> bool:
    """Whether ``value`` is a real number (numpy's included, booleans not) in [0, 1]."""
    real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    return real and 0 <= value <= 1


def _gains(predicted: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``predicted`` and ``true`` as float arrays of one shape, at least one value each, every value finite."""
    predicted, true = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    if predicted.shape != true.shape or predicted.size == 0:
        raise SampotError(f"the do-no-harm rule needs as many predicted as true gains (at least one), got "
                          f"{predicted.size} and {true.size}.")  # fmt: skip
    if not (np.isfinite(predicted).all() and np.isfinite(true).all()):
        raise SampotError("the do-no-harm rule's predicted and true gains must be finite numbers (a NaN gain is an "
                          "evolution whose Dice could not be measured: leave it out).")  # fmt: skip
    return predicted, true


def rule_gains(predicted: np.ndarray, true: np.ndarray, margin: float) -> np.ndarray:
    """True Dice gains of images under a margin: ``true`` where the predicted gain clears it, else 0 (kept).

    Raises:
        SampotError: ``predicted`` and ``true`` differ in length, are empty or hold a value that is not finite.
    """
    predicted, true = _gains(predicted, true)
    return np.where(predicted > margin, true, 0.0)


def margin_curve(predicted: np.ndarray, true: np.ndarray, margins: tuple[float, ...] = MARGINS) -> list[dict]:
    """The trade-off of the rule on labelled evolutions, per margin.

    Args:
        predicted: The evolutions' predicted gains.
        true: Their true Dice gains, as many.
        margins: The margins tried.

    Returns:
        One dict per margin, with ``margin``, ``mean_gain`` (the mean true gain), ``worst`` (the worst change),
        ``harmed`` (the images that got worse by more than :data:`~sampot_lib.defaults.HARM_TOLERANCE`) and
        ``moved`` (the images moved at all).

    Raises:
        SampotError: ``predicted`` and ``true`` differ in length, are empty or hold a value that is not finite; a
            margin is not a number in [0, 1].
    """
    predicted, true = _gains(predicted, true)
    bad = [m for m in margins if not _unit_number(m)]
    if bad or not margins:
        raise SampotError(f"the margins to try must be predicted Dice gains in [0, 1] (at least one), got "
                          f"{list(margins)!r}.")  # fmt: skip
    rows = []
    for m in margins:
        g = rule_gains(predicted, true, m)
        rows.append({"margin": float(m), "mean_gain": float(g.mean()), "worst": float(g.min()),
                     "harmed": int((g < -HARM_TOLERANCE).sum()), "moved": int((predicted > m).sum())})  # fmt: skip
    return rows


def choose_margin(predicted: np.ndarray, true: np.ndarray, margins: tuple[float, ...] = MARGINS) -> dict:
    """The margin chosen on labelled (validation) evolutions.

    The largest mean true gain among the margins that harm no image by more than
    :data:`~sampot_lib.defaults.HARM_TOLERANCE` (the smallest such margin on a tie). A margin of 1 never moves the
    user's prompt, so one always qualifies.

    Args:
        predicted: The evolutions' predicted gains.
        true: Their true Dice gains, as many.
        margins: The margins tried.

    Returns:
        ``{"margin": the margin chosen, "curve": the rows of margin_curve}``.

    Raises:
        SampotError: ``predicted`` and ``true`` differ in length, are empty or hold a value that is not finite; a
            margin is not a number in [0, 1].
    """
    curve = margin_curve(predicted, true, margins)
    return {"margin": pick_margin(curve), "curve": curve}


def pick_margin(curve: list[dict]) -> float:
    """The margin :func:`choose_margin` picks from a trade-off curve: the largest mean true gain among the rows that
    harm no image (the smallest margin on a tie).

    Args:
        curve: Rows of :func:`margin_curve` (or of :func:`pool_curves`).

    Returns:
        The margin.

    Raises:
        SampotError: no row harms no image (a curve without the margin 1, which never moves a prompt).
    """
    safe = [row for row in curve if row["harmed"] == 0]
    if not safe:
        raise SampotError("every margin of the curve harms an image: give a curve with the margin 1 (never move).")
    return max(safe, key=lambda row: (round(row["mean_gain"], 12), -row["margin"]))["margin"]


def pool_curves(curves: list[list[dict]], sizes: list[int]) -> list[dict]:
    """Several trade-off curves taken as one: the curve of all their evolutions together.

    Each curve comes from the validation evolutions of one regressor of the same recipe (for example one per seed).
    Zero harm among n validation evolutions bounds the expected share of harmed new images near 1 / (n + 1) (the
    rule's loss is monotone in the margin: conformal risk control), so one seed's 57 images leave room for about one
    harmed image in 60; the pooled evolutions of several seeds make the choice steadier.

    Args:
        curves: Rows of :func:`margin_curve`, one list per run, every list over the same margins.
        sizes: The evolutions each curve was made from, as many as ``curves``.

    Returns:
        One row per margin: ``mean_gain`` weighted by size, ``worst`` the lowest, ``harmed`` and ``moved`` summed.

    Raises:
        SampotError: no curve, sizes that are not one positive whole number per curve, or curves over different
            margins.
    """
    whole = all(isinstance(n, numbers.Integral) and not isinstance(n, (bool, np.bool_)) and n > 0 for n in sizes)
    if not curves or len(curves) != len(sizes) or not whole:
        raise SampotError(f"pooling margin curves needs one positive whole number of evolutions per curve, got "
                          f"{len(curves)} curves and sizes {list(sizes)}.")  # fmt: skip
    margins = [[row["margin"] for row in curve] for curve in curves]
    if any(m != margins[0] for m in margins):
        raise SampotError("the margin curves to pool were made over different margins: make them with the same ones.")
    total = sum(sizes)
    pooled = []
    for rows in zip(*curves, strict=True):
        gain = sum(n * r["mean_gain"] for n, r in zip(sizes, rows, strict=True)) / total
        pooled.append({"margin": rows[0]["margin"], "mean_gain": gain, "worst": min(r["worst"] for r in rows),
                       "harmed": sum(r["harmed"] for r in rows), "moved": sum(r["moved"] for r in rows)})  # fmt: skip
    return pooled
