"""One evolution's record: every step of the trajectory and the result (the user's prompt, the winner, the masks).

:func:`~sampot_lib.method.evolve.evolve_prompt` makes them; the do-no-harm rule
(:mod:`sampot_lib.method.selection`), the experiment and the reports read them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from sampot_lib.method.prompts import Prompt


@dataclass(frozen=True)
class EvolutionStep:
    """One point of an evolution's trajectory.

    Attributes:
        step: The step's number: 0 is the user's prompt, then one per model call.
        x: The x of the prompt's centre (the click, or the box's centre).
        y: The y of the prompt's centre.
        score: The scorer's score of the step's mask.
        confidence: The model's confidence in the step's mask.
        area: The mask's area as a fraction of the image.
        overlap: The mask's IoU with the initial mask.
        allowed: Whether the safeguards let this mask win.
        dice: The true Dice when a ground truth was given, else None.
        coords: The prompt's coordinates (laid out as :meth:`Prompt.coords`).
    """

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
    """The whole run: the user's prompt, every step, the winning step, and the initial and winning masks.

    Attributes:
        prompt: The user's prompt.
        trajectory: Every step, the user's prompt first.
        best_step: The winning step.
        initial_mask: The user's prompt's mask, H x W bool.
        best_mask: The winner's mask, H x W bool.
        settings: The settings the run used.
        stopped: Why the run ended: ``"budget"`` (every model call spent) or ``"patience"`` (early stopping; the last
            step is :attr:`stop_step`).
        seconds_embed: Wall time of the image embedding (a cached embedding takes next to none).
        seconds_evolve: Wall time of everything after it (the steps and the two result masks).
    """

    prompt: Prompt
    trajectory: list[EvolutionStep]
    best_step: int
    initial_mask: np.ndarray
    best_mask: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    stopped: Literal["budget", "patience"] = "budget"
    seconds_embed: float = 0.0
    seconds_evolve: float = 0.0

    @property
    def initial(self) -> EvolutionStep:
        """The user's prompt's step, step 0."""
        return self.trajectory[0]

    @property
    def best(self) -> EvolutionStep:
        """The winning step."""
        return self.trajectory[self.best_step]

    def prompt_at(self, step: int) -> Prompt:
        """The prompt of a trajectory step.

        Args:
            step: The trajectory step.

        Returns:
            The user's prompt moved to that step's coordinates.
        """
        return self.prompt.with_coords(self.trajectory[step].coords)

    @property
    def best_prompt(self) -> Prompt:
        """The winning step's prompt."""
        return self.prompt_at(self.best_step)

    @property
    def stop_step(self) -> int:
        """The last step run: ``steps`` when the budget was spent, earlier when patience stopped the run."""
        return self.trajectory[-1].step

    def to_dict(self, seconds: bool = False) -> dict[str, Any]:
        """The run as a JSON-ready record (masks left out).

        Args:
            seconds: Include the wall times (``seconds_embed``, ``seconds_evolve``); off by default, so that the
                same run gives the same record byte for byte (an experiment's trajectories.json is compared so,
                between serial and parallel runs).

        Returns:
            The settings, the prompt and the best prompt, ``best_step``, ``stopped``, ``stop_step``, the initial and
            best steps and the whole trajectory.
        """
        record = {
            "settings": self.settings,
            "prompt": self.prompt.to_dict(),
            "best_prompt": self.best_prompt.to_dict(),
            "best_step": self.best_step,
            "stopped": self.stopped,
            "stop_step": self.stop_step,
            "initial": asdict(self.initial),
            "best": asdict(self.best),
            "trajectory": [asdict(s) for s in self.trajectory],
        }
        if seconds:
            record |= {"seconds_embed": round(self.seconds_embed, 4), "seconds_evolve": round(self.seconds_evolve, 4)}
        return record
