"""Gradient-free evolution scored a population at a time: one model call per population, the same
proposals, scores and winner as one prompt at a time, and the budget still counted in prompts."""

from __future__ import annotations

import pytest
import torch

from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.optimizers import make_optimizer
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.scoring import OracleScorer
from sampot_lib.models import load_model


def _counting(model, monkeypatch) -> list[int]:  # noqa: ANN001
    """Batch sizes of the model's scored calls (at the scorer's size)."""
    sizes: list[int] = []
    real = model.predict

    def counting(embedding, points, labels, boxes=None, output_size=None):  # noqa: ANN001, ANN202
        if output_size is not None:
            sizes.append((boxes if boxes is not None else points).shape[0])
        return real(embedding, points, labels, boxes, output_size=output_size)

    monkeypatch.setattr(model, "predict", counting)
    return sizes


@pytest.mark.parametrize("kind", ["click", "box"])
@pytest.mark.parametrize("optimizer", ["cmaes", "random"])
def test_a_batched_run_is_the_run_one_prompt_at_a_time(tiny_model, disk, optimizer, kind, monkeypatch):
    image, mask = disk
    prompt = Prompt.click(40.0, 50.0) if kind == "click" else Prompt.from_box((20.0, 28.0, 62.0, 74.0))
    population = 6 if kind == "click" else 8  # cma's default for 2 and 4 coordinates
    kwargs = dict(steps=20, lr=4.0, optimizer=optimizer, seed=4, patience=None)  # every call: the budget is tested
    # with the truth: each prompt's true Dice is read from its own row of the batch's full-size masks
    single = evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, prompt, batch=False, gt_mask=mask, **kwargs)
    sizes = _counting(tiny_model, monkeypatch)
    batched = evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, prompt, batch=True, gt_mask=mask, **kwargs)
    full, rest = divmod(20, population)
    assert sizes == [1] + [population] * full + ([rest] if rest else [])  # the budget: 21 prompts, no more
    assert len(batched.trajectory) == 21 and batched.best_step == single.best_step
    for a, b in zip(single.trajectory, batched.trajectory, strict=True):
        assert a.coords == pytest.approx(b.coords, abs=1e-4)
        assert a.score == pytest.approx(b.score, abs=1e-5) and a.allowed == b.allowed
        assert a.area == pytest.approx(b.area, abs=1e-3)
        assert a.dice == pytest.approx(b.dice, abs=1e-3)
    assert len({round(s.dice, 3) for s in batched.trajectory}) > 5  # the prompts' masks differ
    assert (batched.best_mask == single.best_mask).mean() > 0.999


def test_adam_never_batches_and_the_model_says_when_batches_pay(tiny_model, disk, monkeypatch):
    image, mask = disk
    sizes = _counting(tiny_model, monkeypatch)
    result = evolve_prompt(tiny_model, OracleScorer(mask, size=32), image, (40.0, 50.0), steps=5, batch=True,
                           patience=None)  # fmt: skip
    assert sizes == [1] * 6 and not result.settings["batched"]
    assert load_model("sam_nano").batch_prompts  # measured faster in batches on a CPU (defaults.BATCHED_MODELS)
    assert not tiny_model.batch_prompts  # not measured: one at a time


@pytest.mark.parametrize("optimizer", ["cmaes", "random"])
def test_ask_batch_hands_out_what_ask_would(optimizer):
    """The same proposals whether asked one by one or a batch at a time, never more than the limit."""
    start, keep = torch.tensor([30.0, 40.0, 60.0, 80.0]), (lambda c: c)
    one = make_optimizer(optimizer, start, keep, lr=5.0, seed=3)
    many = make_optimizer(optimizer, start, keep, lr=5.0, seed=3)
    asked_one, asked_many = [], []
    for limit in (5, 8, 3, 8, 1):
        batch = many.ask_batch(limit)
        assert 1 <= len(batch) <= limit
        for coords in batch:
            asked_many.append(coords)
            mine = one.ask()
            asked_one.append(mine)
            score = -((coords - 50.0) ** 2).sum().reshape(1)
            one.tell(mine, -((mine - 50.0) ** 2).sum().reshape(1))
            many.tell(coords, score)
    # the user's prompt alone; then cma's populations of 8, cut by the limits (8, 3 of the next, its other 5, 1),
    # or random search's batches of as many (8, 3, 8, 1)
    assert len(asked_many) == (1 + 8 + 3 + 5 + 1 if optimizer == "cmaes" else 1 + 8 + 3 + 8 + 1)
    torch.testing.assert_close(torch.stack(asked_many), torch.stack(asked_one))


def test_the_optimiser_comparison_reads_every_budget_off_a_batched_run(tiny_model, disk, monkeypatch):
    from sampot_lib.models import sam
    from sampot_lib.report.study import compare_optimizers

    image, mask = disk
    kwargs = dict(scorers={"oracle": OracleScorer(mask, size=32)}, optimizers=["cmaes", "random"], budgets=[3, 10, 21],
                  lr=4.0, seed=4)  # fmt: skip
    single = compare_optimizers(tiny_model, image, mask, Prompt.click(40.0, 50.0), **kwargs)
    monkeypatch.setattr(sam, "BATCHED_MODELS", ("tiny",))  # one decoder call scores a whole population
    batched = compare_optimizers(tiny_model, image, mask, Prompt.click(40.0, 50.0), **kwargs)
    assert [(r["optimizer"], r["budget"], r["best_step"]) for r in batched] == [
        (r["optimizer"], r["budget"], r["best_step"]) for r in single
    ]
    for opt in ("cmaes", "random"):
        seconds = [r["seconds"] for r in batched if r["optimizer"] == opt]
        assert seconds == sorted(seconds)  # a larger budget never takes less time
