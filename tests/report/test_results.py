"""The committed full-size results: index rows from a run's summary, and the check that names the first row of a
re-run that differs from the committed one."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest
import torch

from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.defaults import HARM_TOLERANCE, RULE, RULE_POOLED
from sampot_lib.experiment.provenance import cpu_model
from sampot_lib.experiment.records import read_csv
from sampot_lib.report.results import (
    INDEX_COLUMNS,
    buys_markdown,
    first_difference,
    index_rows,
    margins_markdown,
    pooled_index_rows,
    pooling_markdown,
    results_table_of,
    spread_markdown,
    with_results_table,
)


def _row(image_id: str, group: str = "on", dice: float = 0.8) -> dict:
    return {"image_id": image_id, "group": group, "scorer": "regressor", "safeguards": "on", "box_jitter": "",
            "x0": 1.0, "y0": 2.0, "x": 3.0, "y": 4.0, "best_step": 2, "score0": 0.5, "score": 0.6, "dice0": 0.7,
            "dice": dice, "gain": dice - 0.7}  # fmt: skip


def test_a_rerun_equal_to_the_committed_rows_passes_and_the_first_difference_is_named():
    committed = [_row("a"), _row("b"), _row("a", "oracle")]
    assert first_difference([_row("b"), _row("a")], committed) is None
    assert first_difference([{k: str(v) for k, v in _row("a").items()}], committed) is None  # as read from a CSV
    diff = first_difference([_row("a"), _row("b", dice=0.8000001)], committed)
    assert diff is not None and diff.startswith("image b, group on, dice: re-run 0.8000001, committed 0.8")
    assert "no committed row" in first_difference([_row("c")], committed)
    assert first_difference([_row("a", dice=0.8 + 4e-9)], committed) is not None  # same CPU: equal to 1e-9 only


def test_index_rows_name_the_score_and_the_run():
    summary = {
        "config": {"model": "litemedsam", "structure": "heart", "prompt": "box", "box_jitter": 0.1, "seed": 2},
        "torch_threads": 1, "seconds": 12.5,
        "on": {"n": 3, "mean_dice_initial": 0.7, "mean_dice_evolved": 0.75, "mean_gain": 0.05, "improved": 2,
               "unchanged": 1, "worse": 0, "share_of_oracle_gain": 0.5},
        "oracle": {"n": 3, "mean_dice_initial": 0.7, "mean_dice_evolved": 0.8, "mean_gain": 0.1, "improved": 3,
                   "unchanged": 0, "worse": 0},
        "jitter_0.2": {"n": 3, "mean_dice_initial": 0.6, "mean_dice_evolved": 0.62, "mean_gain": 0.02, "improved": 1,
                       "unchanged": 2, "worse": 0},
        "regressor": {"r_regressor_all": 0.9},
    }  # fmt: skip
    rows = {r["scorer"] + str(r["jitter"]): r for r in index_rows("run", summary, commit="abc")}
    assert set(rows) == {"regressor0.1", "oracle0.1", "regressor0.2"}
    assert rows["regressor0.1"]["mean_dice_oracle"] == 0.8 and rows["regressor0.1"]["share_of_oracle_gain"] == 0.5
    assert rows["regressor0.2"]["mean_dice_oracle"] is None and rows["oracle0.1"]["seed"] == 2
    assert rows["regressor0.1"]["commit"] == "abc" and rows["regressor0.1"]["threads"] == 1
    assert rows["regressor0.1"]["device"] == "cpu"  # a summary without a GPU was made on the CPU
    on_gpu = {r["scorer"]: r for r in index_rows("run", summary | {"gpu": "NVIDIA H200"}, commit="abc")}
    assert on_gpu["regressor"]["device"] == "NVIDIA H200"


def _index_row(scorer: str, seed: int, initial: float, final: float, worse: int, harmed, worst: float) -> dict:
    return {"run": "heart_box", "jitter": "0.1", "scorer": scorer, "seed": seed, "mean_dice_initial": initial,
            "mean_dice_final": final, "share_of_oracle_gain": (final - initial) / 0.1, "improved": 10 - worse,
            "unchanged": 0, "worse": worse, "harmed": harmed, "worst_drop": worst,
            "median_within_image_spearman": 0.5, "median_top1_regret": 0.01, "gamed": 0.1}  # fmt: skip


def test_spread_table_gives_mean_and_sd_over_seeds_and_whole_counts():
    seeds = ((0, 0.84, 2, 1, -0.03), (1, 0.86, 2, 0, -0.01), (2, 0.85, 2, 0, -0.015))
    index = [_index_row("regressor", s, 0.80, f, w, h, d) for s, f, w, h, d in seeds]
    line = spread_markdown(index).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    finals = [0.84, 0.86, 0.85]
    assert cells[3] == "3"  # seeds
    assert cells[5] == f"{statistics.mean(finals):.3f} ± {statistics.stdev(finals):.3f}"
    assert cells[7] == "8" and cells[9] == "2"  # the same count at every seed: a whole number, no "8.0"
    assert cells[10] == "-0.030"  # the worst drop of any seed, not their mean


def test_what_sampot_buys_says_helps_only_when_the_rule_gains_and_harms_no_image():
    def index(rule_harmed: list[int], rule_final: float) -> list[dict]:
        rows = [_index_row("regressor", s, 0.80, 0.85, 2, 1, -0.03) for s in range(2)]
        rows += [_index_row(RULE, s, 0.80, rule_final, 0, h, -0.01) for s, h in enumerate(rule_harmed)]
        rows += [_index_row("oracle", s, 0.80, 0.90, 0, 0, 0.0) for s in range(2)]
        return rows

    def verdict(table: str) -> str:
        return table.splitlines()[2].strip("|").split("|")[-1].strip()

    assert verdict(buys_markdown(index([0, 0], 0.83), 0.02)) == "helps"
    assert verdict(buys_markdown(index([0, 1], 0.83), 0.02)) == "mixed"  # one seed harmed an image
    assert verdict(buys_markdown(index([0, 0], 0.80), 0.02)) == "no gain"
    cells = [c.strip() for c in buys_markdown(index([0, 1], 0.83), 0.02).splitlines()[2].strip("|").split("|")]
    assert cells[2] == "0.800" and cells[3] == "0.850" and cells[4] == "0.830" and cells[6] == "0.900"
    assert cells[8] == "1 / 1"  # the worst seed's count, regressor / rule


ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_table_is_the_one_the_committed_results_give():
    index = read_csv(ROOT / "results" / "index.csv")
    assert results_table_of((ROOT / "README.md").read_text()) == buys_markdown(index, HARM_TOLERANCE), (
        "README.md's results table is stale: `make results` (or scripts/make_results.py --only RUN) rewrites it"
    )


def test_the_readme_table_is_replaced_between_its_markers_only():
    text = "intro\n<!-- results table: begin -->\nold\n<!-- results table: end -->\nafter\n"
    new = with_results_table(text, "| a |")
    assert new == "intro\n<!-- results table: begin -->\n| a |\n<!-- results table: end -->\nafter\n"
    assert results_table_of(new) == "| a |"


def test_a_rerun_on_another_cpu_is_compared_within_the_stated_tolerances():
    from sampot_lib.report.results import CROSS_CPU_TOLERANCE

    committed = [_row("a"), _row("b")]
    near = [_row("a", dice=0.8004) | {"x": 3.5, "best_step": 7}, _row("b")]  # rounding carried on: still the same
    assert first_difference(near, committed, absolute=CROSS_CPU_TOLERANCE) is None
    assert first_difference(near, committed) is not None  # on the same CPU it would be a difference
    far = [_row("a", dice=0.81)]
    assert first_difference(far, committed, absolute=CROSS_CPU_TOLERANCE).startswith("image a, group on, dice:")
    just_past = [_row("a", dice=0.8 + 1.5 * CROSS_CPU_TOLERANCE["dice"])]  # the tolerance is the bound itself
    assert first_difference(just_past, committed, absolute=CROSS_CPU_TOLERANCE).startswith("image a, group on, dice:")
    moved = [_row("a") | {"y": 6.5}]
    assert "y: re-run 6.5, committed 4.0" in first_difference(moved, committed, absolute=CROSS_CPU_TOLERANCE)
    renamed = [_row("a") | {"safeguards": "off"}]
    assert "safeguards" in first_difference(renamed, committed, absolute=CROSS_CPU_TOLERANCE)


def _cpuinfo(family: int, model: int, flags: str) -> str:
    block = f"processor\t: {{}}\nmodel name\t: AMD EPYC\ncpu family\t: {family}\nmodel\t\t: {model}\n"
    block += f"flags\t\t: {flags}\n"
    return block.format(0) + "\n" + block.format(1).replace(flags, "sse2")  # only the first processor is read


def test_two_generations_of_one_cpu_name_are_two_kinds_of_cpu():
    """A virtual machine names Zen 3 and Zen 4 EPYCs alike; their kernels round differently (AVX2 against AVX-512), so
    the strict same-CPU comparison of results-check must not treat them as one kind."""
    zen3 = cpu_model(_cpuinfo(25, 1, "fpu sse2 avx avx2 fma"))
    zen4 = cpu_model(_cpuinfo(25, 17, "fpu sse2 avx avx2 fma avx512f avx512_bf16"))
    assert zen3 == "AMD EPYC (family 25, model 1; avx2)"
    assert zen4 == "AMD EPYC (family 25, model 17; avx2, avx512f, avx512_bf16)"
    assert cpu_model(_cpuinfo(25, 1, "fpu sse2 avx avx2 fma")) == zen3
    assert cpu_model("") != zen3  # no /proc/cpuinfo: the platform's answer


def test_the_table_reads_a_run_at_its_main_jitter_and_extra_jitters_have_no_oracle_share():
    rows = [_index_row("regressor", 0, 0.96, 0.97, 1, 0, -0.01) | {"jitter": "0.05"}]  # listed first, as index.csv
    rows += [_index_row(s, 0, 0.80, f, 0, 0, -0.01) for s, f in (("regressor", 0.85), (RULE, 0.83), ("oracle", 0.9))]
    cells = [c.strip() for c in buys_markdown(rows, HARM_TOLERANCE).splitlines()[2].strip("|").split("|")]
    assert cells[2] == "0.800" and cells[3] == "0.850" and cells[6] == "0.900"  # J = 0.1, where the oracle ran
    summary = {
        "config": {"model": "litemedsam", "structure": "heart", "prompt": "box", "box_jitter": 0.1, "seed": 0},
        "on": {"n": 3, "mean_dice_initial": 0.7, "mean_dice_evolved": 0.75, "mean_gain": 0.05, "improved": 2,
               "unchanged": 1, "worse": 0, "share_of_oracle_gain": 0.5},
        "jitter_0.2": {"n": 3, "mean_dice_initial": 0.5, "mean_dice_evolved": 0.75, "mean_gain": 0.25, "improved": 3,
                       "unchanged": 0, "worse": 0, "share_of_oracle_gain": 2.5},
    }  # fmt: skip
    shares = {r["jitter"]: r["share_of_oracle_gain"] for r in index_rows("heart_box", summary, commit=None)}
    assert shares == {0.1: 0.5, 0.2: None}


def test_harmed_images_come_from_the_runs_own_count_never_from_the_worst_drop():
    from sampot_lib.report.results import harmed_count

    assert harmed_count({"harmed": "3", "worst_drop": "0.0"}) == 3
    assert harmed_count({"harmed": "", "worst_drop": "-0.001"}) is None  # no count recorded: unknown, not 0


def _make_results():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import make_results
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return make_results


def test_the_committed_index_is_the_one_the_committed_summaries_give():
    """Every number of results/index.csv, made again from the committed summaries and evolution rows: a column read
    from the wrong summary key, or an index not rebuilt after a run, fails here."""
    committed = read_csv(ROOT / "results" / "index.csv")
    made = _make_results().index_of(ROOT / "results")
    assert len(made) == len(committed) > 0

    def value(v):  # read_csv gives numbers as floats, the summaries ints or floats
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    def key(r):
        return tuple(value(r[k]) for k in ("run", "scorer", "jitter", "seed"))

    made_by = {key(r): r for r in made}
    assert len(made_by) == len(made)
    for row in committed:
        fresh = made_by[key(row)]
        for column in INDEX_COLUMNS:
            want, got = value(row[column]), value(fresh[column])
            where = (row["run"], row["scorer"], row["jitter"], row["seed"], column)
            assert want == (pytest.approx(got, rel=1e-12, abs=1e-15) if isinstance(got, float) else got), where


def test_make_results_names_a_missing_gpu_before_any_work(tmp_path, capsys, monkeypatch):
    make_results = _make_results()
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks" / "heart").mkdir(parents=True)
    work = tmp_path / "work"
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(tmp_path / "embeddings"))  # the script's default would outlive the test
    if not torch.cuda.is_available():
        where = "cuda"
    elif torch.cuda.device_count() < 8:
        where = "cuda:7"
    else:
        pytest.skip("this machine has 8 or more CUDA GPUs")
    rc = make_results.main(["--only", "litemedsam_heart_box", "--seeds", "1", "--data", str(data), "--work", str(work),
                            "--results", str(tmp_path / "results"), "--device", where])  # fmt: skip
    assert rc == 2
    assert f"--device {where}" in capsys.readouterr().err
    assert not work.exists()


def test_make_results_refuses_another_data_set_before_writing_anything(tmp_path, capsys, monkeypatch):
    make_results = _make_results()
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(tmp_path / "embeddings"))
    name = "sam_nano_left_lung_click_paper"
    results = tmp_path / "results"
    (results / name / "seed_0").mkdir(parents=True)
    committed = ROOT / "results" / name / "seed_0" / "splits.json"
    (results / name / "seed_0" / "splits.json").write_bytes(committed.read_bytes())
    other = write_phantom_set(tmp_path / "ph", 6, seed=0, size=64)
    work = tmp_path / "work"
    rc = make_results.main(["--only", name, "--seeds", "0", "--data", str(other), "--work", str(work),
                            "--results", str(results)])  # fmt: skip
    assert rc == 2
    assert "the data set is not the one the results were made on" in capsys.readouterr().err
    assert not work.exists()
    assert sorted(p.name for p in results.rglob("*")) == sorted([name, "seed_0", "splits.json"])


def test_margins_table_shows_each_seeds_margin_and_what_the_rule_did():
    def summary(margin, n, unchanged, improved, worse, worst):
        return {RULE: {"n": n, "unchanged": unchanged, "improved": improved, "worse": worse, "worst_drop": worst},
                "rule_validation": {"margin": margin}}  # fmt: skip

    table = margins_markdown({
        ("heart", 1): summary(0.05, 107, 24, 77, 6, -0.08),
        ("heart", 0): summary(0.11, 107, 43, 63, 1, -0.01),
        ("sam_nano", 0): {"on": {"n": 107}},  # no rule: no row
    })  # fmt: skip
    rows = table.splitlines()[2:]
    assert rows == ["| heart | 0 | 0.11 | 64 | 63 | 1 | -0.010 |", "| heart | 1 | 0.05 | 83 | 77 | 6 | -0.080 |"]
    assert margins_markdown({("sam_nano", 0): {"on": {"n": 107}}}) == ""


def test_pooling_table_averages_the_held_out_readings_of_each_choice():
    held_out = [
        {"held_out": "0", "chosen_by": "1", "margin": 0.0, "harmed": 2, "mean_gain": 0.04},
        {"held_out": "0", "chosen_by": "2", "margin": 0.1, "harmed": 0, "mean_gain": 0.02},
        {"held_out": "0", "chosen_by": "pooled", "margin": 0.1, "harmed": 0, "mean_gain": 0.02},
        {"held_out": "1", "chosen_by": "0", "margin": 0.05, "harmed": 1, "mean_gain": 0.03},
        {"held_out": "1", "chosen_by": "2", "margin": 0.1, "harmed": 0, "mean_gain": 0.01},
        {"held_out": "1", "chosen_by": "pooled", "margin": 0.1, "harmed": 1, "mean_gain": 0.01},
    ]
    table = pooling_markdown({"heart": {"margins": {1: 0.05, 0: 0.0}, "pooled": 0.1, "held_out": held_out}})
    # one seed's margin: 3 harmed over 4 readings, gains 0.10 / 4; pooled: 1 over 2, gains 0.03 / 2
    assert table.splitlines()[2] == "| heart | 0, 0.05 | 0.1 | 0.75 / 0.50 | +0.0250 / +0.0150 |"
    assert pooling_markdown({}) == ""


def test_the_pooled_rules_index_rows_take_each_seeds_settings_and_outcome():
    def summary(seed, spearman):
        config = {"model": "litemedsam", "structure": "heart", "prompt": "box", "box_jitter": 0.1, "seed": seed}
        return {"config": config, "oracle": {"mean_dice_evolved": 0.92}, "commit": f"c{seed}", "torch_threads": 1,
                "on": {"median_within_image_spearman": spearman}}  # fmt: skip

    outcome = {"n": 107, "mean_dice_initial": 0.77, "mean_dice_evolved": 0.80, "share_of_oracle_gain": 0.2,
               "improved": 20, "unchanged": 87, "worse": 0, "harmed": 0, "worst_drop": 0.0, "p5_change": 0.0,
               "gamed": 0.0}  # fmt: skip
    pooled = {"margin": 0.2, "seeds": {"0": outcome, "2": outcome | {"worse": 1, "worst_drop": -0.01}}}
    rows = pooled_index_rows("litemedsam_heart_box", pooled, {"0": summary(0, 0.6), "2": summary(2, 0.5)})
    assert [r["seed"] for r in rows] == [0, 2] and {r["scorer"] for r in rows} == {RULE_POOLED}
    assert rows[1]["worse"] == 1 and rows[1]["worst_drop"] == -0.01 and rows[1]["commit"] == "c2"
    assert rows[0]["mean_dice_final"] == 0.80 and rows[0]["mean_dice_oracle"] == 0.92 and rows[0]["jitter"] == 0.1
    assert rows[1]["median_within_image_spearman"] == 0.5 and rows[0]["median_top1_regret"] is None
    assert set(rows[0]) == set(INDEX_COLUMNS)
    # each column from its own number of the outcome (every number distinct, so a column read from another fails)
    distinct = {"n": 107, "mean_dice_initial": 0.71, "mean_dice_evolved": 0.79, "share_of_oracle_gain": 0.37,
                "improved": 21, "unchanged": 83, "worse": 3, "harmed": 2, "worst_drop": -0.04, "p5_change": -0.006,
                "gamed": 0.028}  # fmt: skip
    row = pooled_index_rows("r", {"margin": 0.2, "seeds": {"0": distinct}}, {"0": summary(0, 0.6)})[0]
    column_of = {"n": "n_images", "mean_dice_evolved": "mean_dice_final"}
    assert {column_of.get(k, k): row[column_of.get(k, k)] for k in distinct} == {
        column_of.get(k, k): v for k, v in distinct.items()
    }


def test_results_check_names_a_bad_image_count_and_a_data_set_without_the_results_images(tmp_path, capsys, monkeypatch):
    make_results = _make_results()
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(tmp_path / "embeddings"))
    other = write_phantom_set(tmp_path / "ph", 3, seed=0, size=64)  # with the left lung the checked run segments
    assert make_results.main(["--check", "2", "--data", str(other)]) == 2
    assert "--check N (CHECK_IMAGES of `make results-check`) must be a whole number >= 3" in capsys.readouterr().err
    assert make_results.main(["--check", "3", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"results-check re-runs images of the data set the results were made on, and {other} lacks" in err, err
    assert "sampot data split" not in err  # a new split cannot help


def test_results_check_re_runs_each_run_only_names_in_turn_and_stops_at_the_first_that_differs(
    tmp_path, capsys, monkeypatch
):
    make_results = _make_results()
    results = tmp_path / "results"
    with_regressor = ["litemedsam_heart_box", "litemedsam_right_lung_box", "litemedsam_left_clavicle_box"]
    for name in with_regressor:
        (results / name / "seed_0").mkdir(parents=True)
        (results / name / "seed_0" / "regressor.pt").write_bytes(b"")
    checked = []
    monkeypatch.setattr(make_results, "check_data", lambda data, names: checked.append(("data", tuple(names))))
    outcome = {"litemedsam_right_lung_box": 1}
    monkeypatch.setattr(make_results, "check_run",
                        lambda name, n, data, where: checked.append(name) or outcome.get(name, 0))  # fmt: skip
    args = ["--check", "3", "--data", str(tmp_path), "--results", str(results)]

    assert make_results.main(args) == 0  # no --only: the first committed run with a regressor, in RUNS' order
    assert checked == [("data", ("litemedsam_heart_box",)), "litemedsam_heart_box"]
    checked.clear()
    assert make_results.main([*args, "--only", "litemedsam_left_clavicle_box", "litemedsam_heart_box"]) == 0
    assert checked == [("data", ("litemedsam_left_clavicle_box", "litemedsam_heart_box")),
                       "litemedsam_left_clavicle_box", "litemedsam_heart_box"]  # fmt: skip
    checked.clear()
    only = ["litemedsam_heart_box", "litemedsam_right_lung_box", "litemedsam_left_clavicle_box"]
    assert make_results.main([*args, "--only", *only]) == 1
    assert checked[1:] == ["litemedsam_heart_box", "litemedsam_right_lung_box"]  # stopped at the one that differs

    checked.clear()
    assert make_results.main([*args, "--only", "litemedsam_heart_box", "litemedsam_right_clavicle_box"]) == 2
    err = capsys.readouterr().err
    assert "--only litemedsam_right_clavicle_box has no committed seed-0 regressor" in err, err
    assert "litemedsam_heart_box, litemedsam_right_lung_box, litemedsam_left_clavicle_box" in err
    assert checked == []  # refused before any run is re-evolved
