"""The optimisers behind evolution: CMA-ES and random search beside Adam, at a budget of model calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sampot_lib.data.phantom import make_phantom
from sampot_lib.errors import SampotError
from sampot_lib.method.evolve import Safeguards, evolve_prompt
from sampot_lib.method.metrics import dice
from sampot_lib.method.optimizers import OPTIMIZERS, AdamOptimizer, CmaesOptimizer, RandomSearch, make_optimizer
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.scoring import OracleScorer
from sampot_lib.method.synth import centroid_prompt, jittered_box
from sampot_lib.models import load_model

GRADIENT_FREE = ("cmaes", "random")


@pytest.fixture(scope="module")
def nano():
    return load_model("sam_nano")


@pytest.fixture(scope="module")
def phantoms() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three 256 px phantom chest X-rays with their left-lung masks."""
    out = []
    for seed in range(3):
        image, masks = make_phantom(seed=seed, size=256)
        out.append((image, masks["left_lung"]))
    return out


def _prompt(kind: str, mask: np.ndarray, seed: int) -> Prompt:
    return Prompt.click(*centroid_prompt(mask)) if kind == "click" else Prompt.from_box(jittered_box(mask, 0.2, seed))


@pytest.mark.parametrize("kind", ["click", "box"])
@pytest.mark.parametrize("optimizer", GRADIENT_FREE)
def test_gradient_free_search_raises_true_dice(nano, phantoms, optimizer, kind):
    """With the oracle as the score, SAM-Nano's masks on phantoms get closer to the truth (mean over images and
    seeds), for clicks and for boxes."""
    gains = []
    for i, (image, mask) in enumerate(phantoms):
        for seed in (0, 1):
            result = evolve_prompt(
                nano, OracleScorer(mask, size=64), image, _prompt(kind, mask, i), steps=20, lr=3.0,
                optimizer=optimizer, seed=seed,
            )  # fmt: skip
            gains.append(dice(result.best_mask, mask) - dice(result.initial_mask, mask))
    assert np.mean(gains) > 0.02, gains


def _quadratic_run(opt, target: torch.Tensor, calls: int) -> torch.Tensor:
    """Drive ``opt`` through ``calls`` ask/tell rounds on -|x - target|^2; returns every asked point (calls x D)."""
    asked = []
    for _ in range(calls):
        x = opt.ask()
        asked.append(x.detach().clone())
        opt.tell(x, -((x - target) ** 2).sum()[None])
    return torch.stack(asked)


def test_cmaes_adapts_where_random_search_cannot():
    """CMA-ES is told its populations and moves its mean and step size: after 200 calls on a quadratic 50 px away
    its best point is within a few pixels, far closer than random search's at the same budget and scale (the
    wrapper's candidates are pure cma's, one call later: the user's prompt comes first)."""
    start = torch.tensor([100.0, 100.0, 200.0, 200.0])
    target = start + torch.tensor([40.0, -30.0, 25.0, 15.0])
    best = {}
    for name, cls in (("cmaes", CmaesOptimizer), ("random", RandomSearch)):
        pts = _quadratic_run(cls(start, lambda c: c.clone(), lr=10.0, seed=0), target, 200)
        best[name] = float((pts - target).norm(dim=1).min())
    assert best["cmaes"] < 3.0, best
    assert best["cmaes"] < 0.3 * best["random"], best


def test_random_search_moves_each_coordinate_by_three_lr():
    """lr is one scale for every optimiser: random search's moves are Gaussian with 3 * lr pixels per coordinate, as
    CMA-ES's sigma0 (the user's prompt itself is the first call)."""
    start = torch.tensor([100.0, 100.0, 200.0, 200.0])
    opt = RandomSearch(start, lambda c: c.clone(), lr=10.0, seed=0)
    assert torch.equal(opt.ask(), start)
    moves = torch.stack([opt.ask() - start for _ in range(500)]).double()
    assert float(moves.mean()) == pytest.approx(0.0, abs=1.5)
    assert float(moves.std()) == pytest.approx(30.0, rel=0.06)


def test_adam_takes_the_papers_adam_steps_up_the_score_and_projects_after_each():
    """Paper 3.3: Adam (betas 0.9 and 0.999, eps 1e-8, no weight decay) at a step of lr pixels on the score's gradient,
    written out here step by step; the projection is applied to the coordinates after each step."""
    start, target = np.array([10.0, 20.0, 30.0, 40.0]), np.array([13.0, 15.0, 31.0, 70.0])
    cap = 60.0  # the projection: a box edge may not pass x = 60
    opt = AdamOptimizer(torch.tensor(start), lambda c: c.clamp(max=cap), lr=2.0, seed=0)
    p, m, v = start.copy(), np.zeros(4), np.zeros(4)
    for t in range(1, 13):
        coords = opt.ask()
        assert np.allclose(coords.detach().numpy(), p, rtol=0, atol=1e-9)
        opt.tell(coords, -(((coords - torch.tensor(target)) ** 2) * torch.tensor([1.0, 0.2, 5.0, 1.0])).sum())
        g = 2 * (p - target) * np.array([1.0, 0.2, 5.0, 1.0])  # the gradient of minus the score
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g**2
        p = np.minimum(p - 2.0 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8), cap)
    assert np.allclose(opt.p.detach().numpy(), p, rtol=0, atol=1e-9) and p[3] == cap


def test_cmaes_learns_from_projected_candidates():
    """When the optimum lies outside the allowed region, CMA-ES (told the projected candidates) converges onto the
    nearest allowed point, and every candidate it hands out is allowed."""
    start = torch.tensor([100.0, 100.0])
    limit = start + 10.0
    target = start + torch.tensor([40.0, 5.0])  # x beyond the limit, y inside
    pts = _quadratic_run(CmaesOptimizer(start, lambda c: torch.minimum(c, limit), lr=10.0, seed=3), target, 150)
    assert bool((pts <= limit + 1e-6).all())
    corner = torch.tensor([110.0, 105.0])
    assert float((pts[-10:] - corner).norm(dim=1).max()) < 1.0


@pytest.mark.parametrize("optimizer", GRADIENT_FREE)
def test_same_seed_same_trajectory(tiny_model, disk, optimizer):
    image, mask = disk
    box = Prompt.from_box((20.0, 28.0, 62.0, 74.0))

    def coords(seed: int) -> list[tuple[float, ...]]:
        r = evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, box, steps=12, lr=4.0, optimizer=optimizer,
                          seed=seed)  # fmt: skip
        return [s.coords for s in r.trajectory]

    a = coords(0)
    np.random.seed(123)  # CMA-ES draws from NumPy's global generator: it must keep its own stream
    rng_before = np.random.get_state()[1].copy()
    b = coords(0)
    assert np.array_equal(np.random.get_state()[1], rng_before), "the optimizer changed NumPy's global generator"
    assert a == b
    assert coords(1) != a


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_budget_is_model_calls(tiny_model, disk, optimizer, monkeypatch):
    """steps + 1 scored model calls (the user's prompt first), whatever the optimiser; besides them only the two
    full-size result masks (initial and winning) are asked for."""
    image, mask = disk
    scorer = OracleScorer(mask, size=32)
    sizes = []
    real = tiny_model.predict

    def counting(embedding, points, labels, boxes=None, output_size=None):
        sizes.append(output_size)
        return real(embedding, points, labels, boxes, output_size=output_size)

    monkeypatch.setattr(tiny_model, "predict", counting)
    steps = 13
    result = evolve_prompt(tiny_model, scorer, image, (40.0, 50.0), steps=steps, lr=4.0, optimizer=optimizer,
                           patience=None)  # fmt: skip
    assert len(result.trajectory) == steps + 1
    assert sizes.count((32, 32)) == steps + 1
    assert len(sizes) == steps + 3 and sizes.count(None) == 2


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_shorter_budget_is_a_prefix(tiny_model, disk, optimizer):
    """A run of B calls is the first B calls of a longer run with the same seed (no optimiser looks at the budget):
    what lets scripts/compare_optimizers.py read every budget off one run."""
    image, mask = disk
    box = Prompt.from_box((20.0, 28.0, 62.0, 74.0))
    kwargs = dict(lr=4.0, optimizer=optimizer, seed=2)
    short = evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, box, steps=9, **kwargs)
    long = evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, box, steps=25, **kwargs)
    for a, b in zip(short.trajectory, long.trajectory[:10], strict=True):
        assert a.coords == pytest.approx(b.coords, abs=1e-4)
        assert a.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("kind", ["click", "box"])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_every_proposal_stays_inside_the_safeguards(tiny_model, disk, optimizer, kind, monkeypatch):
    """Every prompt the model is asked about (not only the winner) is inside the image and the trust radius, and a
    box stays ordered and at least min_box_size wide; the limits are hit, so the check is not idle."""
    image, mask = disk
    h, w = mask.shape
    # a box 18 px wide whose edges may each move 4.8 px: always at least min_box_size (4.8 px) wide, so no limit
    # has to give way to another
    guards = Safeguards(trust_radius=0.05, min_box_size=0.05)
    radius, min_size = 0.05 * max(h, w), 0.05 * max(h, w)
    prompt = Prompt.click(88.0, 50.0) if kind == "click" else Prompt.from_box((2.0, 40.0, 20.0, 90.0))
    seen = []
    real = tiny_model.predict

    def recording(embedding, points, labels, boxes=None, output_size=None):
        seen.append(torch.cat([t.detach().reshape(-1) for t in (boxes, points) if t is not None]))
        return real(embedding, points, labels, boxes, output_size=output_size)

    monkeypatch.setattr(tiny_model, "predict", recording)
    evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, prompt, steps=25, lr=30.0, optimizer=optimizer,
                  safeguards=guards)  # fmt: skip
    start = torch.tensor(prompt.coords(), dtype=torch.float32)
    at_limit = 0
    for c in seen:
        assert bool((c >= -1e-4).all())
        assert bool((c[0::2] <= w - 1 + 1e-4).all()) and bool((c[1::2] <= h - 1 + 1e-4).all())
        if kind == "click":
            dist = float((c - start).norm())
            assert dist <= radius + 1e-3
        else:
            dist = float((c - start).abs().max())
            assert dist <= radius + 1e-3
            assert float(c[2] - c[0]) >= min_size - 1e-3 and float(c[3] - c[1]) >= min_size - 1e-3
        at_limit += dist >= radius - 1e-3 or float(c.min()) <= 1e-4 or float(c[0::2].max()) >= w - 1 - 1e-4
    assert at_limit > 0, "no proposal reached a limit: the test proves nothing"


def test_bad_optimizer_and_budget_are_refused(tiny_model, disk, monkeypatch):
    image, mask = disk
    start, keep = torch.tensor([40.0, 50.0]), (lambda c: c)
    with pytest.raises(SampotError, match="unknown optimizer 'lbfgs'.*cmaes"):
        make_optimizer("lbfgs", start, keep, lr=5.0)
    for budget in (0, -3, 2.5):
        with pytest.raises(SampotError, match="budget"):
            make_optimizer("cmaes", start, keep, lr=5.0, budget=budget)
    with pytest.raises(SampotError, match="lr"):
        make_optimizer("random", start, keep, lr=0.0)
    with pytest.raises(SampotError, match="seed >= 0"):
        make_optimizer("cmaes", start, keep, lr=5.0, seed=-1)
    # a wrong name fails before the image encoder runs
    monkeypatch.setattr(tiny_model, "embed", lambda image: pytest.fail("embedded before checking the optimizer"))
    with pytest.raises(SampotError, match="unknown optimizer"):
        evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, (40.0, 50.0), steps=3, optimizer="cma")
