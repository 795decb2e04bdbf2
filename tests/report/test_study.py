"""The book's study tables: the optimiser comparison's table and verdict, the spread over seeds, a study's runs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from sampot_lib import SampotError
from sampot_lib.data.folder import FolderDataset
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.runner import run_experiment, seed_runs
from sampot_lib.method.regressor import load_regressor
from sampot_lib.method.synth import user_prompt_for
from sampot_lib.report.study import optimizer_rows, run_study
from sampot_lib.report.tables import optimizer_markdown, optimizer_verdict, seeds_markdown


def _rows(ends: dict[tuple[str, str, int, str], list[float]], start: float = 0.5) -> list[dict]:
    """Comparison rows with the given winning Dice per (structure, score, budget, optimizer), one per image."""
    rows = []
    for (structure, score, budget, opt), values in ends.items():
        for i, end in enumerate(values):
            rows.append({"structure": structure, "score": score, "budget": budget, "optimizer": opt,
                         "image_id": f"im{i}", "dice_start": start, "dice_end": end, "seconds": 1.0 + i})  # fmt: skip
    return rows


def test_optimizer_verdict_names_the_winner_of_every_case_and_counts_wins():
    rows = _rows({
        ("heart", "regressor", 10, "adam"): [0.8, 0.9], ("heart", "regressor", 10, "random"): [0.7, 0.7],
        ("heart", "regressor", 100, "adam"): [0.8, 0.8], ("heart", "regressor", 100, "random"): [0.9, 0.9],
        ("heart", "oracle", 10, "adam"): [0.95, 0.95], ("heart", "oracle", 10, "random"): [0.9505, 0.9495],
    })  # fmt: skip
    text = optimizer_verdict(rows, tie=0.002)
    # adam wins at 10 calls with the regressor, random at 100; with the oracle they tie (0.950 vs 0.950)
    assert "10 calls: adam 0.850 > random 0.700" in text
    assert "100 calls: random 0.900 > adam 0.800" in text
    assert "adam 2 of 3" in text and "random 2 of 3" in text
    assert "(2 images)" in text


def test_optimizer_markdown_means_and_bold_winner():
    rows = _rows({("lung", "regressor", 30, "adam"): [0.6, 0.8], ("lung", "regressor", 30, "cmaes"): [0.9, 0.9]})
    table = optimizer_markdown(rows).splitlines()
    adam = next(line for line in table if "| adam |" in line)
    cmaes = next(line for line in table if "| cmaes |" in line)
    assert "| 0.500 | 0.700 | 2/2 | 1.5 |" in adam  # start, mean winner, improved, mean seconds
    assert "**0.900**" in cmaes and "**" not in adam


def test_seeds_markdown_shows_mean_and_sd_of_each_group():
    spread = {
        "seeds": [0, 1, 2],
        "mean": {"on": {"n": 10, "improved": 6.0, "mean_gain": 0.0123}, "regressor": {"r_regressor_all": 0.81}},
        "sd": {"on": {"n": 0.0, "improved": 1.5, "mean_gain": 0.004}, "regressor": {"r_regressor_all": 0.03}},
    }
    table = seeds_markdown(spread, {"on": "safeguards on", "off": "safeguards off"})
    assert "| over seeds 0, 1, 2 | safeguards on |" in table  # a group no seed has is left out
    assert "| images improved | 6.0 (1.5) |" in table
    assert "| mean Dice gain | 0.0123 (0.0040) |" in table
    assert "| r(regressor, Dice), all test masks | 0.81 (0.03) |" in table
    assert "| images worse | n/a |" in table


def _tiny_config(phantoms, tiny_checkpoint, out, **kw) -> ExperimentConfig:
    base = dict(data=str(phantoms), out=str(out), model="tiny", checkpoint=str(tiny_checkpoint), max_images=3,
                epochs=2, steps=2, regressor_size=32)  # fmt: skip
    return ExperimentConfig(**(base | kw))


def test_seed_runs_adds_seeds_beside_a_finished_run_on_its_split(phantoms, tiny_checkpoint, tmp_path):
    cfg = _tiny_config(phantoms, tiny_checkpoint, tmp_path / "run")
    with pytest.raises(SampotError, match="summary.json is missing"):
        seed_runs(cfg, [0, 1], progress=False)
    first = run_experiment(cfg, progress=False)
    spread = seed_runs(cfg, [0, 1], progress=False)
    second = json.loads((tmp_path / "run" / "seed_1" / "summary.json").read_text())
    gains = [first["on"]["mean_gain"], second["on"]["mean_gain"]]
    assert spread["seeds"] == [0, 1]
    assert spread["mean"]["on"]["mean_gain"] == pytest.approx(np.mean(gains))
    assert spread["sd"]["on"]["mean_gain"] == pytest.approx(np.std(gains, ddof=1))
    split = json.loads((tmp_path / "run" / "splits.json").read_text())["splits"]
    _, meta = load_regressor(tmp_path / "run" / "seed_1" / "regressor.pt")
    assert meta["seed"] == 1 and set(meta["train_masks"]) == set(split["train"][:3])  # same split, own regressor


def test_optimizer_rows_read_the_runs_test_images_and_prompts(phantoms, tiny_checkpoint, tmp_path):
    cfg = _tiny_config(phantoms, tiny_checkpoint, tmp_path / "run")
    run_experiment(cfg, progress=False)
    rows = optimizer_rows(cfg, cfg.out_dir, FolderDataset(phantoms), n_images=2, budgets=(2, 4),
                          optimizers=("adam", "random"))  # fmt: skip
    test_ids = sorted({line.split(",")[0] for line in (cfg.out_dir / "evolution.csv").read_text().splitlines()[1:]})
    assert sorted({r["image_id"] for r in rows}) == test_ids[:2]
    assert len(rows) == 2 * 2 * 2 * 2  # images x scores x optimizers x budgets
    for r in (r for r in rows if r["budget"] == 2):  # both budgets come from one run: its first 2 or 4 calls
        longer = next(o for o in rows if o["budget"] == 4 and all(o[k] == r[k] for k in ("image_id", "score",
                                                                                          "optimizer")))  # fmt: skip
        assert r["best_step"] < 2 and longer["best_step"] < 4
        if longer["best_step"] < 2:  # the longer run's winner lies in the shorter one's calls: the same winner
            assert longer["best_step"] == r["best_step"] and longer["dice_end"] == r["dice_end"]
    with pytest.raises(SampotError, match="budgets >= 1"):
        optimizer_rows(cfg, cfg.out_dir, FolderDataset(phantoms), n_images=1, budgets=(0,))


def test_a_studys_extra_jitters_run_on_its_first_structure_only(phantoms, tiny_checkpoint, tmp_path):
    study = run_study(
        data=str(phantoms), out=tmp_path / "study", structures=["left_lung", "right_lung"], progress=False,
        model="tiny", checkpoint=str(tiny_checkpoint), prompt="box", max_images=3, epochs=2, steps=2,
        regressor_size=32, scorers=["regressor", "oracle", "do-no-harm"], extra_jitters=[0.05],
    )  # fmt: skip
    first, second = (study.per_seed(s)[0] for s in ("left_lung", "right_lung"))
    assert "jitter_0.05" in first and "jitter_0.05" not in second
    # the oracle evolved the main jitter's boxes: the main group has its share, another jitter's users have none
    assert first["on"]["share_of_oracle_gain"] is not None and first["jitter_0.05"]["share_of_oracle_gain"] is None
    # each jitter's users start from their own box: the box the simulated user draws with that jitter
    with open(tmp_path / "study" / "left_lung" / "seed_0" / "evolution.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    data, seed = FolderDataset(phantoms), first["config"]["seed"]
    for row in (r for r in rows if r["group"] in ("on", "jitter_0.05")):
        jitter = 0.05 if row["group"] == "jitter_0.05" else first["config"]["box_jitter"]
        box = user_prompt_for(seed, "box", jitter, row["image_id"], data.mask(row["image_id"], "left_lung"))
        assert [float(v) for v in row["coords0"].split()] == pytest.approx(box.coords())
    assert "oracle" in second and "on" in second and "do-no-harm" in second
    table = study.jitter_table()
    assert "| left_lung | 0.05 |" in table and "| right_lung | 0.05 |" not in table
    selection = study.selection_table().splitlines()
    rule = next(line for line in selection if line.startswith("| right_lung | do-no-harm rule"))
    cells = [c.strip() for c in rule.strip("|").split("|")]
    rule_summary = second["do-no-harm"]
    assert cells[2] == f"{rule_summary['worst_drop']:.3f}" and cells[7] == f"{rule_summary['gamed']:.2f}"
    assert len(study.margin_figures()) == 2
    results = study.results_table()
    assert f"| {first['on']['improved']} |" in results  # one seed: counts are whole numbers


def test_the_books_stage_calls_and_sampot_run_give_the_same_numbers(phantoms, tiny_checkpoint, tmp_path):
    """The book (start_run, then the stages one by one in chapters 3 and 5) and `sampot run` with the same
    settings must differ in nothing; only torch's thread count (SAMPOT_THREADS in the book) may add float noise."""
    from sampot_lib.cli.main import main
    from sampot_lib.experiment.evolution import evolve_stage
    from sampot_lib.experiment.setup import start_run
    from sampot_lib.experiment.stages import build_model, evaluate_stage, train_regressor_stage

    settings = ["--max-images", "3", "--epochs", "3", "--steps", "3", "--regressor-size", "32"]
    assert main(["run", str(phantoms), "--out", str(tmp_path / "cli"), "--model", "tiny", "--checkpoint",
                 str(tiny_checkpoint), *settings]) == 0  # fmt: skip
    run = start_run(data=str(phantoms), out=tmp_path / "book", model="tiny", checkpoint=str(tiny_checkpoint),
                    max_images=3, epochs=3, steps=3, regressor_size=32)  # fmt: skip
    cfg = run.config
    train_regressor_stage(cfg, build_model(cfg), progress=False)
    evaluate_stage(cfg, build_model(cfg), progress=False)
    evolve_stage(cfg, build_model(cfg), progress=False)
    for name in ("regressor_history.csv", "regressor_eval.csv", "evolution.csv"):
        assert (tmp_path / "cli" / name).read_text() == (tmp_path / "book" / name).read_text(), name


def test_sampot_threads_sets_torchs_threads_for_the_cli_as_for_the_book(monkeypatch):
    import torch

    from sampot_lib.experiment.setup import apply_thread_setting

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("SAMPOT_THREADS", "1")
        assert apply_thread_setting() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("SAMPOT_THREADS", "two")
        with pytest.raises(SampotError, match="SAMPOT_THREADS='two'"):
            apply_thread_setting()
        monkeypatch.setenv("SAMPOT_THREADS", "")
        assert apply_thread_setting() is None
    finally:
        torch.set_num_threads(before)
