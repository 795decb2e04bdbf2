"""The committed full-size results: index rows from a run's summary, and the check that names the first row of a
re-run that differs from the committed one."""

from __future__ import annotations

from sampot_lib.report.results import first_difference, index_rows


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
