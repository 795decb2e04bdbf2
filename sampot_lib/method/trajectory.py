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
    bool).

    stopped: why the run ended: ``"budget"`` (every model call spent) or ``"patience"`` (early stopping; the last
    step is :attr:`stop_step`). seconds_embed: wall time of the image embedding (a cached embedding takes next to
    none); seconds_evolve: wall time of everything after it (the steps and the two result masks).
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

    @property
    def stop_step(self) -> int:
        """The last step run: ``steps`` when the budget was spent, earlier when patience stopped the run."""
        return self.trajectory[-1].step

    def to_dict(self, seconds: bool = False) -> dict[str, Any]:
        """JSON-ready record (masks left out). ``seconds``: include the wall times (``seconds_embed``,
        ``seconds_evolve``); off by default, so that the same run gives the same record byte for byte (an
        experiment's trajectories.json is compared so, between serial and parallel runs)."""
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
