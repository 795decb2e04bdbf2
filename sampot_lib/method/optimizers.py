"""Optimisers that move a prompt's coordinates, all at a budget counted in model calls.

Each proposes coordinates (:meth:`PromptOptimizer.ask`), is told their score (:meth:`PromptOptimizer.tell`), and
keeps every proposal inside the safeguards through the ``project`` function it is given. The first proposal is
always the user's prompt, so step 0 is the same for every optimiser.

- ``adam``: the paper's: Adam on the gradient of the score (needs a differentiable model), ``lr`` in pixels.
- ``random``: the baseline: the user's prompt plus Gaussian noise of ``3 * lr`` pixels per coordinate, each call
  independent of the last.
- ``cmaes``: CMA-ES (Hansen's ``cma`` package) started at the user's prompt with step size ``sigma0 = 3 * lr``
  pixels (the same scale as random search, so ``lr`` means one thing for all three); candidates are asked one at a
  time from cma's population (default size ``4 + floor(3 ln D)``: 6 for a click, 8 for a box) and cma is told a
  population once all of it is scored. The budget (model calls) is the only stopping rule.

The gradient-free optimisers can also hand out several proposals at once (:meth:`PromptOptimizer.ask_batch`: the
rest of cma's population; for random search as many as cma's population would hold), for models that score a batch
of prompts faster than one by one. The proposals, and so the run, are the same as when asked one at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import cma
import numpy as np
import torch

from sampot_lib.errors import SampotError

Project = Callable[[torch.Tensor], torch.Tensor]


class PromptOptimizer:
    """Base class. start: D coordinates of the user's prompt; project: coordinates -> allowed coordinates."""

    name = "base"
    needs_gradient = False

    def __init__(self, start: torch.Tensor, project: Project, *, lr: float, seed: int) -> None:
        self.start = start.detach().clone()
        self.project = project
        self.lr = float(lr)
        self.seed = int(seed)
        self.calls = 0

    def ask(self) -> torch.Tensor:
        """The D coordinates to score next (the user's prompt on the first call)."""
        self.calls += 1
        return self.start.clone() if self.calls == 1 else self._propose()

    def _propose(self) -> torch.Tensor:
        raise NotImplementedError

    def ask_batch(self, limit: int) -> list[torch.Tensor]:
        """Up to ``limit`` proposals (>= 1) that can be scored together before any is told: what :meth:`ask`
        would return one call after another. This class: one (the user's prompt comes alone in every optimiser)."""
        return [self.ask()]

    def tell(self, coords: torch.Tensor, score: torch.Tensor) -> None:
        """The score (a 1-element tensor, with its graph for gradient optimisers) of the last :meth:`ask`."""


class AdamOptimizer(PromptOptimizer):
    """Adam on the coordinates (paper 3.3: step size ``lr`` pixels, no weight decay), projected after each step.

    Args:
        start: The D coordinates of the user's prompt.
        project: Coordinates -> allowed coordinates (the safeguards).
        lr: The step size in pixels.
        seed: The seed of its random numbers.

    Attributes:
        name: ``"adam"``.
        needs_gradient: True: it needs a differentiable model.
        p: The coordinates Adam moves.
        opt: The torch Adam optimiser.
    """

    name = "adam"
    needs_gradient = True

    def __init__(self, start: torch.Tensor, project: Project, *, lr: float, seed: int) -> None:
        super().__init__(start, project, lr=lr, seed=seed)
        self.p = self.start.clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.p], lr=self.lr, weight_decay=0.0)

    def ask(self) -> torch.Tensor:
        """The D coordinates to score next: Adam's current coordinates, with their graph (the user's prompt first).

        Returns:
            The coordinates, a leaf tensor that requires grad.
        """
        self.calls += 1
        return self.p

    def tell(self, coords: torch.Tensor, score: torch.Tensor) -> None:
        """Take one Adam step up the score's gradient, then project the coordinates into the safeguards.

        Args:
            coords: The coordinates scored (the tensor :meth:`ask` returned).
            score: Their score, a 1-element tensor with its graph.
        """
        self.opt.zero_grad()
        (-score.sum()).backward()
        self.opt.step()
        with torch.no_grad():
            self.p.copy_(self.project(self.p))


class RandomSearch(PromptOptimizer):
    """Independent Gaussian moves of the user's prompt, ``3 * lr`` pixels per coordinate, projected.

    Args:
        start: The D coordinates of the user's prompt.
        project: Coordinates -> allowed coordinates (the safeguards).
        lr: The step size in pixels.
        seed: The seed of its random numbers.

    Attributes:
        name: ``"random"``.
        batch_size: Moves handed out at a time by :meth:`ask_batch`: cma's default population for D coordinates,
            ``4 + floor(3 ln D)``.
    """

    name = "random"

    def __init__(self, start: torch.Tensor, project: Project, *, lr: float, seed: int) -> None:
        super().__init__(start, project, lr=lr, seed=seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.batch_size = 4 + int(3 * np.log(self.start.numel()))  # cma's default population for D coordinates

    def _propose(self) -> torch.Tensor:
        noise = torch.randn(self.start.shape, generator=self.gen, dtype=torch.float64).to(self.start)
        return self.project(self.start + 3 * self.lr * noise)

    def ask_batch(self, limit: int) -> list[torch.Tensor]:
        """Proposals that can be scored together: the user's prompt alone first, then ``batch_size`` independent moves.

        Args:
            limit: The most proposals wanted (at least one is returned).

        Returns:
            The proposals, each D coordinates (fewer than ``batch_size`` at the budget).
        """
        if self.calls == 0:
            return [self.ask()]
        return [self.ask() for _ in range(max(1, min(limit, self.batch_size)))]


class CmaesOptimizer(PromptOptimizer):
    """CMA-ES from the ``cma`` package: mean at the user's prompt, ``sigma0 = 3 * lr`` pixels, seeded.

    cma proposes a population of candidates; each is projected into the safeguards before it is scored, and cma is
    told the projected candidates (it accepts points other than those it asked for, clipping only implausibly long
    steps), so it learns where the allowed region is. The user's prompt (call 1) is not one of cma's candidates and
    is not told to it. cma's own termination tests are ignored: the budget of model calls stops the search.

    Args:
        start: The D coordinates of the user's prompt.
        project: Coordinates -> allowed coordinates (the safeguards).
        lr: The step size in pixels.
        seed: The seed of its random numbers.

    Raises:
        SampotError: ``seed`` is negative.

    Attributes:
        name: ``"cmaes"``.
        es: cma's ``CMAEvolutionStrategy``.
    """

    name = "cmaes"

    def __init__(self, start: torch.Tensor, project: Project, *, lr: float, seed: int) -> None:
        super().__init__(start, project, lr=lr, seed=seed)
        if self.seed < 0:
            raise SampotError(f"the cmaes optimizer needs a seed >= 0, got {self.seed}.")
        x0 = self.start.detach().cpu().double().numpy()
        # cma seeds and draws from NumPy's global generator; keep its stream apart from everyone else's (and theirs
        # from it) so that a run is reproducible whatever else draws numbers. Seed 0 means "from the clock" to cma.
        self._rng_state = np.random.get_state()
        with self._own_rng():
            self.es = cma.CMAEvolutionStrategy(x0, 3 * self.lr, {"seed": self.seed + 1, "verbose": -9})
        self._pending: list[np.ndarray] = []  # asked from cma, not yet handed out
        self._xs: list[np.ndarray] = []  # this population's projected candidates, scored
        self._fs: list[float] = []  # their scores, negated: cma minimises

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        outside = np.random.get_state()
        np.random.set_state(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = np.random.get_state()
            np.random.set_state(outside)

    def _propose(self) -> torch.Tensor:
        if not self._pending:
            with self._own_rng():
                self._pending = list(self.es.ask())
        x = torch.as_tensor(self._pending.pop(0), dtype=self.start.dtype, device=self.start.device)
        return self.project(x)

    def ask_batch(self, limit: int) -> list[torch.Tensor]:
        """Proposals that can be scored together: the user's prompt alone first, then the rest of cma's population.

        Args:
            limit: The most proposals wanted (at least one is returned).

        Returns:
            The proposals, each D coordinates (fewer at the budget).
        """
        if self.calls == 0:
            return [self.ask()]
        if not self._pending:
            with self._own_rng():
                self._pending = list(self.es.ask())
        return [self.ask() for _ in range(max(1, min(limit, len(self._pending))))]

    def tell(self, coords: torch.Tensor, score: torch.Tensor) -> None:
        """Record the score of a candidate; once the whole population is scored, tell it to cma.

        The user's prompt (call 1) is not told.

        Args:
            coords: The projected coordinates scored.
            score: Their score, a 1-element tensor.
        """
        if self.calls == 1:  # the user's prompt: not a candidate of cma's
            return
        self._xs.append(coords.detach().cpu().double().numpy())
        self._fs.append(-float(score.detach().sum()))
        if len(self._fs) == self.es.popsize:
            with self._own_rng():
                self.es.tell(self._xs, self._fs)
            self._xs, self._fs = [], []


OPTIMIZERS: dict[str, type[PromptOptimizer]] = {"adam": AdamOptimizer, "cmaes": CmaesOptimizer, "random": RandomSearch}


def make_optimizer(
    name: str, start: torch.Tensor, project: Project, *, lr: float, seed: int = 0, budget: int | None = None
) -> PromptOptimizer:
    """The optimiser of a name.

    Args:
        name: ``"adam"``, ``"cmaes"`` or ``"random"`` (see :data:`OPTIMIZERS`).
        start: The D coordinates of the user's prompt.
        project: Coordinates -> allowed coordinates (the safeguards).
        lr: The step size, a finite number of pixels > 0.
        seed: The seed of its random numbers.
        budget: The number of model calls it will be asked for (the user's prompt is the first), checked here so that
            a budget of none fails up front; None: not checked.

    Returns:
        A new optimiser, started at ``start``.

    Raises:
        SampotError: An unknown name, a budget that is not a whole number >= 1, or an ``lr`` that is not a finite
            number > 0.
    """
    if name not in OPTIMIZERS:
        raise SampotError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}.")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise SampotError(
            f"an optimizer's budget is a whole number of model calls >= 1 (the user's prompt is the first), got "
            f"{budget!r}."
        )
    if not (torch.isfinite(torch.tensor(lr)) and lr > 0):
        raise SampotError(f"optimizer step size lr must be a finite number of pixels > 0, got {lr!r}.")
    return OPTIMIZERS[name](start, project, lr=lr, seed=seed)
