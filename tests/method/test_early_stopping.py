"""Early stopping: evolution stops once its best score stops rising, the regressor's training once its
validation loss does; the evolution record says why it stopped and how long the embedding and the steps took."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import torch
from conftest import disk_image

from sampot_lib.errors import SampotError
from sampot_lib.method import regressor_training as regressor_module
from sampot_lib.method.evolve import Patience, Safeguards, evolve_prompt, stop_step
from sampot_lib.method.optimizers import OPTIMIZERS
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.regressor import to_input
from sampot_lib.method.regressor_training import RegressorData, fit_regressor

# Scores by model call. With min_gain 1e-3 the best score rises at calls 0, 1 and 3 (call 2 rises by 0.0005, call 5
# by 0.0005 over call 3's 0.61), so a patience of 3 stops at call 6; with min_gain 0 call 5 is a rise too: call 8;
# with min_gain 0.05 only call 1 rises (0.61 is not 0.65): call 4.
SCRIPT = [0.5, 0.6, 0.6005, 0.61, 0.61, 0.6105, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]


class ScriptedScorer:
    """Returns the next numbers of ``script``, one per prompt scored (differentiable, with a zero gradient, so that
    Adam can run on it), and counts the prompts."""

    name = "scripted"
    size = 32

    def __init__(self, script: list[float]) -> None:
        self.script, self.calls = list(script), 0

    def __call__(self, logits: torch.Tensor, confidence: torch.Tensor) -> torch.Tensor:
        values = torch.tensor(self.script[self.calls : self.calls + logits.shape[0]])
        self.calls += logits.shape[0]
        return logits.flatten(1).mean(1) * 0 + values


def _box() -> Prompt:
    return Prompt.from_box((20.0, 28.0, 62.0, 74.0))


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize(("min_gain", "stop"), [(1e-3, 6), (0.0, 8), (0.05, 4)])
def test_patience_stops_at_the_exact_call(tiny_model, disk, optimizer, min_gain, stop):
    image, _ = disk
    scorer = ScriptedScorer(SCRIPT)
    result = evolve_prompt(tiny_model, scorer, image, _box(), steps=19, lr=4.0, optimizer=optimizer, patience=3,
                           min_gain=min_gain, safeguards=Safeguards.off())  # fmt: skip
    assert result.stopped == "patience"
    assert result.stop_step == stop and len(result.trajectory) == stop + 1
    assert scorer.calls == stop + 1  # no model call is scored after the stop
    assert [s.score for s in result.trajectory] == pytest.approx(SCRIPT[: stop + 1])
    assert result.best_step == int(np.argmax(SCRIPT[: stop + 1]))
    record = result.to_dict()
    assert record["stopped"] == "patience" and record["stop_step"] == stop
    assert record["settings"]["patience"] == 3 and record["settings"]["min_gain"] == min_gain


@pytest.mark.parametrize("optimizer", ["cmaes", "random"])
def test_patience_stops_a_batched_run_at_the_same_call(tiny_model, disk, optimizer):
    """Scored a population at a time, the run stops at the same call, and the prompts of the population scored
    after it are dropped: the record is that of the run scored one prompt at a time."""
    image, _ = disk
    kwargs = dict(steps=19, lr=4.0, optimizer=optimizer, patience=3, safeguards=Safeguards.off())
    single = evolve_prompt(tiny_model, ScriptedScorer(SCRIPT), image, _box(), batch=False, **kwargs)
    scorer = ScriptedScorer(SCRIPT)
    batched = evolve_prompt(tiny_model, scorer, image, _box(), batch=True, **kwargs)
    assert batched.settings["batched"] and not single.settings["batched"]
    assert batched.stopped == single.stopped == "patience" and batched.stop_step == single.stop_step == 6
    assert scorer.calls == 1 + 8  # the user's box, then one population of 8 (cma's size for 4 coordinates)
    for a, b in zip(single.trajectory, batched.trajectory, strict=True):
        assert a.coords == pytest.approx(b.coords, abs=1e-4) and a.score == b.score


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_a_stopped_run_is_the_start_of_the_full_run(tiny_model, disk, optimizer):
    """Stopping changes nothing before the stop: the same seed gives the same first steps."""
    image, _ = disk
    kwargs = dict(steps=19, lr=4.0, optimizer=optimizer, seed=3, safeguards=Safeguards.off())
    full = evolve_prompt(tiny_model, ScriptedScorer(SCRIPT), image, _box(), patience=None, **kwargs)
    short = evolve_prompt(tiny_model, ScriptedScorer(SCRIPT), image, _box(), patience=3, **kwargs)
    assert full.stopped == "budget" and full.stop_step == 19 and len(full.trajectory) == 20
    assert short.stop_step == 6
    for a, b in zip(short.trajectory, full.trajectory[:7], strict=True):
        assert a.coords == pytest.approx(b.coords, abs=1e-5)


def test_no_patience_spends_the_budget_and_patience_at_the_budget_ends_there(tiny_model, disk):
    image, _ = disk
    flat = [0.5] * 10
    for patience in (None, 0, 9, 12):  # off, off, reached only at the last call, never: the budget ends the run
        scorer = ScriptedScorer(flat)
        result = evolve_prompt(tiny_model, scorer, image, _box(), steps=9, optimizer="random", patience=patience)
        assert result.stopped == "budget" and result.stop_step == 9 and scorer.calls == 10
    result = evolve_prompt(tiny_model, ScriptedScorer(flat), image, _box(), steps=9, optimizer="random", patience=8)
    assert result.stopped == "patience" and result.stop_step == 8
    result = evolve_prompt(tiny_model, ScriptedScorer(flat), image, _box(), steps=9, optimizer="random", patience=1)
    assert result.stopped == "patience" and result.stop_step == 1 and result.best_step == 0


def test_a_full_run_tells_where_every_patience_would_stop(tiny_model, disk):
    """stop_step replays the rule on a full run's trajectory (objects or JSON records) and agrees with the runs."""
    image, _ = disk
    kwargs = dict(steps=19, optimizer="cmaes", seed=1, safeguards=Safeguards.off())
    full = evolve_prompt(tiny_model, ScriptedScorer(SCRIPT), image, _box(), patience=None, **kwargs)
    records = full.to_dict()["trajectory"]
    for patience in (None, 0, 1, 2, 3, 4, 10, 19):
        for min_gain in (0.0, 1e-3, 0.05):
            run = evolve_prompt(tiny_model, ScriptedScorer(SCRIPT), image, _box(), patience=patience,
                                min_gain=min_gain, **kwargs)  # fmt: skip
            assert stop_step(full.trajectory, patience, min_gain) == run.stop_step, (patience, min_gain)
            assert stop_step(records, patience, min_gain) == run.stop_step
    assert stop_step(full.trajectory, 3, 1e-3) == 6 and stop_step(full.trajectory, None, 1e-3) == 19


def test_a_score_that_only_equals_the_best_is_no_rise():
    rule = Patience(2, min_gain=0.0)
    assert not rule.spent(0.5, True)  # the first score sets the reference
    assert not rule.spent(0.5, True) and rule.stale == 1  # a plateau is no progress
    assert rule.spent(0.5, True)
    rule = Patience(2, min_gain=0.125)
    rule.spent(0.5, True)
    assert not rule.spent(0.625, True) and rule.stale == 1  # a rise of exactly min_gain is not more than it
    assert not rule.spent(0.75, True) and rule.stale == 0 and rule.reference == 0.75


class ScriptedGuards(Safeguards):
    """Safeguards whose verdict on each mask is scripted: (overlap 1, allowed flag) per call."""

    def mask_allowed(self, mask, mask0):  # noqa: ANN001, ANN201 - the override of a tested method
        return 1.0, ALLOWED.pop(0)


ALLOWED: list[bool] = []


def test_a_refused_mask_is_no_rise(tiny_model, disk):
    """A higher score the safeguards refuse cannot win, so it does not count as a rise: with calls 1 and 2 refused,
    patience 2 stops at call 2 although both scored higher than call 0."""
    image, _ = disk
    ALLOWED[:] = [True, False, False, True, True]
    result = evolve_prompt(tiny_model, ScriptedScorer([0.5, 0.9, 0.9, 0.9, 0.9]), image, _box(), steps=4,
                           optimizer="random", patience=2, safeguards=ScriptedGuards())  # fmt: skip
    assert result.stopped == "patience" and result.stop_step == 2 and result.best_step == 0
    ALLOWED[:] = [True, False, True, True, True, True]
    result = evolve_prompt(tiny_model, ScriptedScorer([0.5, 0.9, 0.9, 0.9, 0.9, 0.9]), image, _box(), steps=5,
                           optimizer="random", patience=2, safeguards=ScriptedGuards())  # fmt: skip
    assert result.stopped == "patience" and result.stop_step == 4 and result.best_step == 2


@pytest.mark.parametrize(
    ("patience", "min_gain", "message"),
    [(-1, 1e-3, "patience must be a whole number >= 0, got -1"), (2.5, 1e-3, "patience must be a whole number"),
     (True, 1e-3, "patience must be a whole number"),
     (2, -0.1, "min_gain must be"), (2, float("nan"), "min_gain must be a finite number"),
     (2, 1.0, r"min_gain must be in \[0, 1\), got 1.0")],
)  # fmt: skip
def test_bad_patience_and_min_gain_fail_before_any_work(tiny_model, disk, monkeypatch, patience, min_gain, message):
    image, _ = disk
    monkeypatch.setattr(tiny_model, "embed", lambda image: pytest.fail("embedded before checking patience"))
    with pytest.raises(SampotError, match=message) as info:
        evolve_prompt(tiny_model, ScriptedScorer(SCRIPT), image, _box(), steps=5, patience=patience,
                      min_gain=min_gain)  # fmt: skip
    assert "\n" not in str(info.value)


def test_the_record_carries_the_seconds_of_the_embedding_and_of_the_steps(tiny_model, disk, monkeypatch):
    image, _ = disk
    real_embed, real_predict = tiny_model.embed, tiny_model.predict

    def slow_embed(image):  # noqa: ANN001, ANN202
        time.sleep(0.2)
        return real_embed(image)

    def slow_predict(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        time.sleep(0.05)
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "embed", slow_embed)
    monkeypatch.setattr(tiny_model, "predict", slow_predict)
    result = evolve_prompt(tiny_model, ScriptedScorer(SCRIPT), image, _box(), steps=4, optimizer="random")
    # 0.2 s in the embedding; 5 scored calls and 2 result masks of 0.05 s after it
    assert 0.2 <= result.seconds_embed < 0.2 + 0.3
    assert result.seconds_evolve >= 7 * 0.05
    record = json.loads(json.dumps(result.to_dict(seconds=True), allow_nan=False))
    assert record["seconds_embed"] == pytest.approx(result.seconds_embed, abs=1e-4)
    assert record["seconds_evolve"] == pytest.approx(result.seconds_evolve, abs=1e-4)
    assert record["stopped"] == "budget" and record["stop_step"] == 4
    bare = result.to_dict()  # the default: a record that is the same from run to run
    assert "seconds_embed" not in bare and "seconds_evolve" not in bare and bare["stopped"] == "budget"


# -- the regressor's training ------------------------------------------------------------------------------------

SIZE = 32
# Validation MSE by epoch: new lows at epochs 1, 2, 4; then 3 epochs without one (5, 6, 7): patience 3 stops at 7.
VAL_MSE = [0.5, 0.4, 0.41, 0.39, 0.395, 0.396, 0.397, 0.3, 0.2, 0.1]


def _data(n_images: int, seed: int) -> RegressorData:
    rng = np.random.default_rng(seed)
    images, masks, dices = [], [], []
    for i in range(n_images):
        image, mask = disk_image(size=64, center=tuple(rng.uniform(25, 40, 2)), radius=15, seed=seed * 100 + i)
        for shift in (0, 4, 8):
            moved = np.roll(mask, shift, axis=1)
            images.append((to_input(image, SIZE)[0, 0] * 255).byte().numpy())
            masks.append((to_input(moved, SIZE)[0, 0] * 255).byte().numpy())
            dices.append(2 * (mask & moved).sum() / (mask.sum() + moved.sum()))
    n = len(dices)
    ids = np.array([f"i{i // 3}" for i in range(n)])
    return RegressorData(images=np.stack(images), masks=np.stack(masks), dice=np.array(dices, dtype=np.float32),
                         kind=np.array(["synthetic"] * n), image_id=ids)  # fmt: skip


@pytest.fixture
def scripted_validation(monkeypatch):
    """Makes the validation MSE of epoch k equal VAL_MSE[k - 1] and keeps a copy of the weights at each epoch."""
    states: list[dict[str, torch.Tensor]] = []
    real = regressor_module._scores

    def scores(model, img, msk, batch_size=64):  # noqa: ANN001, ANN202
        out = real(model, img, msk, batch_size)
        if len(img) == len(VAL):  # the validation set (the training set is larger)
            states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            return VAL.dice + np.float32(np.sqrt(VAL_MSE[len(states) - 1]))
        return out

    monkeypatch.setattr(regressor_module, "_scores", scores)
    return states


VAL = _data(2, seed=2)
TRAIN = _data(6, seed=1)


@pytest.mark.parametrize(("patience", "epochs_run", "best_epoch"), [(3, 7, 4), (1, 3, 2), (4, 10, 10), (0, 10, 10),
                                                                     (None, 10, 10)])  # fmt: skip
def test_regressor_training_stops_after_patience_epochs_and_keeps_the_best(
    scripted_validation, patience, epochs_run, best_epoch
):
    model, history = fit_regressor(TRAIN, VAL, epochs=10, batch_size=8, seed=0, progress=False, patience=patience)
    assert [h["epoch"] for h in history] == list(range(1, epochs_run + 1))
    assert [h["val_mse"] for h in history] == pytest.approx(VAL_MSE[:epochs_run], rel=1e-4)
    best = scripted_validation[best_epoch - 1]
    state = model.state_dict()
    assert all(torch.equal(state[k], best[k]) for k in best)


def test_a_validation_loss_that_only_equals_the_best_is_no_new_best(monkeypatch):
    """Epochs 3 to 5 repeat epoch 2's validation loss exactly: patience 3 stops after epoch 5 and epoch 2's weights,
    the first to reach that loss, are the ones returned."""
    flat = [0.5, 0.4, 0.4, 0.4, 0.4, 0.3, 0.2]
    states: list[dict[str, torch.Tensor]] = []
    real = regressor_module._scores

    def scores(model, img, msk, batch_size=64):  # noqa: ANN001, ANN202
        if len(img) != len(VAL):
            return real(model, img, msk, batch_size)
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return VAL.dice + np.float32(np.sqrt(flat[len(states) - 1]))

    monkeypatch.setattr(regressor_module, "_scores", scores)
    model, history = fit_regressor(TRAIN, VAL, epochs=7, batch_size=8, seed=0, progress=False, patience=3)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    state = model.state_dict()
    assert all(torch.equal(state[k], states[1][k]) for k in state)
    assert not all(torch.equal(state[k], states[4][k]) for k in state)  # the weights did move after epoch 2


def test_regressor_training_logs_why_it_stopped(scripted_validation):
    lines: list[str] = []
    fit_regressor(TRAIN, VAL, epochs=10, batch_size=8, seed=0, progress=False, patience=3, log=lines.append)
    assert lines[-1].startswith("stopped after epoch 7") and len(lines) == 8


@pytest.mark.parametrize(("decay_patience", "first_decayed"), [(1, 7), (2, 8), (3, None)])
def test_the_plateau_schedule_halves_the_rate_after_that_many_epochs_without_a_lower_validation_loss(
    scripted_validation, decay_patience, first_decayed
):
    # VAL_MSE's epochs 5, 6 and 7 are above epoch 4's low: a decay patience p lowers the rate after p + 1 of them
    schedule = {"lr_schedule": "plateau", "lr_decay_patience": decay_patience, "lr_decay_factor": 0.5}
    _, history = fit_regressor(TRAIN, VAL, epochs=10, batch_size=8, lr=1e-3, seed=0, progress=False, patience=0,
                               **schedule)  # fmt: skip
    decayed = first_decayed or 11
    assert [h["lr"] for h in history] == pytest.approx([1e-3] * (decayed - 1) + [5e-4] * (11 - decayed))


def test_the_constant_schedule_keeps_the_rate(scripted_validation):
    _, history = fit_regressor(TRAIN, VAL, epochs=10, batch_size=8, lr=1e-3, seed=0, progress=False, patience=0)
    assert [h["lr"] for h in history] == [1e-3] * 10


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr_schedule": "cosine"}, "unknown learning-rate schedule 'cosine'; known: constant, plateau"),
        ({"lr_schedule": "plateau", "lr_decay_factor": 1.0}, "lr_decay_factor"),
        ({"lr_schedule": "plateau", "lr_decay_patience": -1}, "lr_decay_patience must be a whole number"),
    ],
)
def test_bad_schedule_settings_are_refused_before_training(settings, message):
    with pytest.raises(SampotError, match=message):
        fit_regressor(TRAIN, VAL, epochs=2, progress=False, **settings)


def test_training_that_diverges_stops_with_what_to_lower():
    lower = r"lower the learning rate \(lr=0.001\) or the within-image loss weight \(rank_weight=1e\+308"
    with pytest.raises(SampotError, match=r"diverged in epoch 1: .* " + lower):
        fit_regressor(TRAIN, VAL, epochs=3, batch_size=8, seed=0, progress=False, rank_weight=1e308)


@pytest.mark.parametrize("patience", [-1, 1.5, True])
def test_bad_regressor_patience_is_refused(patience):
    with pytest.raises(SampotError, match="patience must be a whole number"):
        fit_regressor(TRAIN, VAL, epochs=2, progress=False, patience=patience)


# -- the settings of a run --------------------------------------------------------------------------------------------


def test_a_run_config_refuses_a_negative_min_gain_and_takes_a_patience_beyond_its_steps():
    from sampot_lib.experiment.config import ExperimentConfig

    with pytest.raises(SampotError, match="'patience' must be a whole number >= 0 or None"):
        ExperimentConfig(data="d", out="o", patience=-1)
    for gain in (-0.1, 1.0):  # a score lies in [0, 1]: no step could rise by 1
        with pytest.raises(SampotError, match=re.escape("'min_gain' must be a score gain in [0, 1)")):
            ExperimentConfig(data="d", out="o", min_gain=gain)
    assert ExperimentConfig(data="d", out="o", min_gain=0.999).min_gain == 0.999
    with pytest.raises(SampotError, match="'regressor_patience' must be >= 0"):
        ExperimentConfig(data="d", out="o", regressor_patience=-1)
    with pytest.raises(SampotError, match="'regressor_schedule' must be one of constant, plateau, got 'linear'"):
        ExperimentConfig(data="d", out="o", regressor_schedule="linear")
    assert ExperimentConfig(data="d", out="o", steps=2, patience=10).patience == 10  # a default's short run


def test_a_changed_patience_redoes_the_stage_it_changes():
    """--resume reuses a stage while its settings are unchanged: the patiences must be among them."""
    from sampot_lib.experiment.config import STAGE_SETTINGS

    assert {"patience", "min_gain"} <= set(STAGE_SETTINGS["evolve"])
    assert {"regressor_patience", "regressor_schedule"} <= set(STAGE_SETTINGS["train"])
    assert "patience" not in STAGE_SETTINGS["train"]


def test_a_runs_evolution_uses_the_configs_patience(monkeypatch):
    """The evolution stage hands the config's patience and min_gain to every evolve_prompt it runs."""
    from sampot_lib.experiment import evolution
    from sampot_lib.experiment.config import ExperimentConfig
    from sampot_lib.method.regressor import SegmentationRegressor

    image, mask = disk_image()
    seen = []

    class Images:
        def image(self, image_id):  # noqa: ANN001, ANN201
            return image

        def mask(self, image_id, structure):  # noqa: ANN001, ANN201
            return mask

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append((kwargs["patience"], kwargs["min_gain"], kwargs["steps"]))
        raise RuntimeError("enough")

    monkeypatch.setattr(evolution, "evolve_prompt", spy)
    config = ExperimentConfig(data="d", out="o", prompt="box", steps=12, patience=4, min_gain=0.002)
    with pytest.raises(RuntimeError, match="enough"):
        evolution._evolve_image("a", config=config, model=None, dataset=Images(), regressor=SegmentationRegressor(32),
                                plan=[("on", "regressor", "on", 0.1)], weight=None)  # fmt: skip
    assert seen == [(4, 0.002, 12)]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--patience", "-1"], "-1 must be >= 0"),
        (["--patience", "31", "--steps", "30"], "--patience 31 is larger than --steps 30"),
        (["--min-gain", "-0.5"], "-0.5 must be a finite number >= 0"),
        (["--min-gain", "5"], "--min-gain must be in [0, 1), got 5"),
        (["--regressor-patience", "x"], "'x' is not a whole number"),
    ],
)
def test_the_command_line_refuses_bad_patience_in_one_line(tmp_path, capsys, argv, message):
    from sampot_lib.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        rc = main(["run", str(tmp_path), "--out", str(tmp_path / "out"), *argv])
        raise SystemExit(rc)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
