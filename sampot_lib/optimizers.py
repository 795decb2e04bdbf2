"""Optimisers that move a prompt's coordinates, all at a budget counted in model calls.

Each proposes coordinates (:meth:`PromptOptimizer.ask`), is told their score (:meth:`PromptOptimizer.tell`), and
keeps every proposal inside the safeguards through the ``project`` function it is given. The first proposal is
always the user's prompt, so step 0 is the same for every optimiser.

- ``adam``: the paper's: Adam on the gradient of the score (needs a differentiable model), ``lr`` in pixels.
- ``random``: the baseline: the user's prompt plus Gaussian noise of ``3 * lr`` pixels per coordinate, each call
  independent of the last.
"""

from __future__ import annotations

from collections.abc import Callable

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

    def tell(self, coords: torch.Tensor, score: torch.Tensor) -> None:
        """The score (a 1-element tensor, with its graph for gradient optimisers) of the last :meth:`ask`."""


class AdamOptimizer(PromptOptimizer):
    """Adam on the coordinates (paper 3.3: step size ``lr`` pixels, no weight decay), projected after each step."""

    name = "adam"
    needs_gradient = True

    def __init__(self, start: torch.Tensor, project: Project, *, lr: float, seed: int) -> None:
        super().__init__(start, project, lr=lr, seed=seed)
        self.p = self.start.clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.p], lr=self.lr, weight_decay=0.0)

    def ask(self) -> torch.Tensor:
        self.calls += 1
        return self.p

    def tell(self, coords: torch.Tensor, score: torch.Tensor) -> None:
        self.opt.zero_grad()
        (-score.sum()).backward()
        self.opt.step()
        with torch.no_grad():
            self.p.copy_(self.project(self.p))


class RandomSearch(PromptOptimizer):
    """Independent Gaussian moves of the user's prompt, ``3 * lr`` pixels per coordinate, projected."""

    name = "random"

    def __init__(self, start: torch.Tensor, project: Project, *, lr: float, seed: int) -> None:
        super().__init__(start, project, lr=lr, seed=seed)
        self.gen = torch.Generator().manual_seed(self.seed)

    def _propose(self) -> torch.Tensor:
        noise = torch.randn(self.start.shape, generator=self.gen, dtype=torch.float64).to(self.start)
        return self.project(self.start + 3 * self.lr * noise)


OPTIMIZERS: dict[str, type[PromptOptimizer]] = {"adam": AdamOptimizer, "random": RandomSearch}


def make_optimizer(name: str, start: torch.Tensor, project: Project, *, lr: float, seed: int = 0) -> PromptOptimizer:
    """The optimiser called ``name`` (see :data:`OPTIMIZERS`)."""
    if name not in OPTIMIZERS:
        raise SampotError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}.")
    if not (torch.isfinite(torch.tensor(lr)) and lr > 0):
        raise SampotError(f"optimizer step size lr must be a finite number of pixels > 0, got {lr!r}.")
    return OPTIMIZERS[name](start, project, lr=lr, seed=seed)
