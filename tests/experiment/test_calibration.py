"""Calibrating a foreign regressor on a few labelled images of a new data set.

A regressor is trained on phantoms (set A) and calibrated on another phantom set whose masks follow another label
convention (set B: every lung mask dilated by 6 px, as one collection's outlines may be more generous than
another's), with the shipped SAM-Nano.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from sampot_lib.cli.main import main
from sampot_lib.cli.output_checks import CALIBRATE_FILES
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.data.splits import make_splits, save_splits
from sampot_lib.errors import SampotError
from sampot_lib.experiment.calibration import CALIBRATION_FILES, choose_labelled, recommendation
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.provenance import calibrated_record, mask_hashes
from sampot_lib.experiment.regressor_transfer import measure_transfer, score_summary, transfer_samples
from sampot_lib.method.regressor import load_regressor, save_regressor
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.method.regressor_training import RegressorData, fine_tune, fit_regressor, predict_dice
from sampot_lib.models import load_model
from sampot_lib.report.transfer import compare_on_test, markdown_table

SIZE = 64  # regressor input
WIDTHS = (8, 16, 32, 64)
KW = dict(size=SIZE, n_synthetic=8, n_outside=2)


@pytest.fixture(scope="module")
def nano():
    return load_model("sam_nano")


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """Set B: 12 other phantoms whose lung masks are dilated by 6 px (another label convention)."""
    root = write_phantom_set(tmp_path_factory.mktemp("b") / "B", 12, seed=1, size=128)
    for path in (root / "masks" / "left_lung").iterdir():
        mask = ndimage.binary_dilation(np.asarray(Image.open(path)) > 0, iterations=6)
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return root


@pytest.fixture(scope="module")
def base(phantoms, nano, tmp_path_factory):
    """(regressor file, regressor, record): trained on set A's 12 images, with the record a run writes."""
    data = FolderDataset(phantoms)
    train = transfer_samples(nano, data, data.ids[:8], "left_lung", seed=0, **KW)
    val = transfer_samples(nano, data, data.ids[8:], "left_lung", seed=1, **KW)
    regressor, _ = fit_regressor(train, val, epochs=25, widths=WIDTHS, progress=False)
    meta = {"data": str(phantoms), "model": "sam_nano", "mask_output": nano.mask_output, "structure": "left_lung",
            "prompt": "click", "sharpness": 5.0, "input_size": SIZE,
            "train_masks": mask_hashes(data, data.ids[:8], "left_lung"),
            "val_masks": mask_hashes(data, data.ids[8:], "left_lung")}  # fmt: skip
    path = save_regressor(regressor, tmp_path_factory.mktemp("a") / "regressor.pt", meta)
    return path, regressor, meta


@pytest.fixture(scope="module")
def calibrated(shifted, base, tmp_path_factory):
    """``sampot calibrate B --labelled 6`` into a run folder: (folder, the command's output)."""
    out = tmp_path_factory.mktemp("cal") / "run"
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        rc = main(["calibrate", str(shifted), "--regressor", str(base[0]), "--labelled", "6", "--out", str(out),
                   "--steps", "2", "--epochs", "15"])  # fmt: skip
    assert rc == 0
    return out, text.getvalue()


# -- fine-tuning -------------------------------------------------------------------------------------------------------


def _flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_fine_tuning_starts_from_the_base_weights_and_leaves_the_base_alone(shifted, nano, base):
    _, regressor, _ = base
    data = FolderDataset(shifted)
    train = transfer_samples(nano, data, data.ids[:3], "left_lung", seed=0, **KW)
    val = transfer_samples(nano, data, data.ids[3:5], "left_lung", seed=0, **KW)
    before = {k: v.clone() for k, v in regressor.state_dict().items()}
    same, history = fine_tune(regressor, train, val, epochs=0)
    assert history == [
        {
            "epoch": 0,
            "train_mse": pytest.approx(history[0]["train_mse"]),
            "val_mse": pytest.approx(float(np.mean((predict_dice(regressor, val) - val.dice) ** 2))),
        }
    ]
    np.testing.assert_array_equal(predict_dice(same, val), predict_dice(regressor, val))
    tuned, history = fine_tune(regressor, train, val, epochs=3, lr=1e-4)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert all(torch.equal(v, regressor.state_dict()[k]) for k, v in before.items())  # the base is untouched
    # Near the base's weights, far from where training from scratch (same seed, same data) ends up.
    scratch, _ = fit_regressor(train, val, epochs=3, lr=1e-4, widths=WIDTHS, progress=False)
    moved, fresh = (_flat(tuned) - _flat(regressor)).norm(), (_flat(scratch) - _flat(regressor)).norm()
    assert 0 < moved < 0.1 * fresh
    with pytest.raises(SampotError, match="reads 64x64 inputs"):
        fit_regressor(_resized(train, 32), _resized(val, 32), epochs=1, init=regressor, progress=False)


def _resized(data: RegressorData, size: int) -> RegressorData:
    def shrink(a: np.ndarray) -> np.ndarray:
        return a[:, :: a.shape[-1] // size, :: a.shape[-1] // size]

    return RegressorData(shrink(data.images), shrink(data.masks), data.dice, data.kind, data.image_id)


# -- what a transfer report says ---------------------------------------------------------------------------------------


def test_score_summary_on_hand_checked_numbers():
    dice = np.array([0.2, 0.5, 0.8, 0.3, 0.6, 0.9], dtype=np.float32)
    kind = np.array(["synthetic"] * 3 + ["model_band"] * 3)
    scores = np.array([0.3, 0.6, 0.9, 0.9, 0.6, 0.3])  # level sets: +0.1 each, ranked right; model masks reversed
    data = RegressorData(np.zeros((6, 4, 4), np.uint8), np.zeros((6, 4, 4), np.uint8), dice, kind, np.array(["a"] * 6))
    s = score_summary(scores, data)
    assert s["r_synthetic"] == pytest.approx(1.0) and s["r_model"] == pytest.approx(-1.0)
    assert s["mae"] == pytest.approx((0.1 * 3 + 0.6 + 0 + 0.6) / 6, abs=1e-6)
    assert s["bias"] == pytest.approx(0.05, abs=1e-6) and s["n_model_masks"] == 3
    assert s["mse"] == pytest.approx((0.01 * 3 + 0.36 * 2) / 6, abs=1e-6)


def test_measure_transfer_scores_the_run_s_masks_and_evolves_the_run_s_prompt(shifted, nano, base, monkeypatch):
    _, regressor, _ = base
    data = FolderDataset(shifted)
    ids = data.ids[:3]
    report = measure_transfer(nano, regressor, data, ids, "left_lung", steps=2, n_synthetic=8, n_outside=2)
    samples = transfer_samples(nano, data, ids, "left_lung", seed=0, **KW)
    assert report["r_all"] == pytest.approx(np.corrcoef(predict_dice(regressor, samples), samples.dice)[0, 1], abs=1e-5)
    rows = report["evolution"]["per_image"]
    assert [r["image_id"] for r in rows] == ids and report["evolution"]["n"] == 3
    # The user's prompt is the one a run's evolution stage starts from (same seed, same image).
    from sampot_lib.experiment import stages as pipeline
    from sampot_lib.method.metrics import dice
    from sampot_lib.method.prompts import predict_mask

    config = ExperimentConfig(data=str(shifted), out="unused", seed=0)
    for row in rows:
        start = pipeline.user_prompt(config, row["image_id"], data.mask(row["image_id"], "left_lung"))
        first = predict_mask(nano, nano.embed(data.image(row["image_id"])), start)
        assert row["dice0"] == pytest.approx(dice(first, data.mask(row["image_id"], "left_lung")))


def test_the_recommendation_says_when_fine_tuning_kept_the_base_weights():
    check = {"n_images": 2, "r_all": 0.5, "mae": 0.1, "mse": 0.02}
    history = [{"epoch": 0, "val_mse": 0.02}, {"epoch": 1, "val_mse": 0.03}]
    report = {"before": {"n_images": 8, "r_all": 0.5, "r_model": 0.4, "mae": 0.1}, "check_before": check,
              "check_after": check, "history": history}  # fmt: skip
    assert "the calibrated regressor is the base one unchanged" in recommendation(report)
    report["history"][1]["val_mse"] = 0.01  # epoch 1 lowered it: its weights are the calibrated ones
    assert "unchanged" not in recommendation(report)


def test_choose_labelled_is_seeded_and_keeps_a_held_out_part():
    pool = [f"im{i:02d}" for i in range(20)]
    fine, check = choose_labelled(pool, 10, seed=0)
    assert (len(fine), len(check)) == (7, 3) and not set(fine) & set(check) and set(fine + check) <= set(pool)
    assert choose_labelled(pool, 10, seed=0) == (fine, check) and choose_labelled(pool, 10, seed=1) != (fine, check)
    assert [len(p) for p in choose_labelled(pool, 3, seed=0)] == [2, 1]
    with pytest.raises(SampotError, match="at least 3"):
        choose_labelled(pool, 2, seed=0)
    with pytest.raises(SampotError, match="only 20 are available"):
        choose_labelled(pool, 21, seed=0)


def test_the_check_images_are_whole_subjects_so_no_checked_patient_is_fine_tuned_on():
    pool = [f"im{i:02d}" for i in range(24)]
    subject_of = {i: f"P{k % 8}" for k, i in enumerate(pool)}  # 8 patients, 3 images each
    for seed in range(10):
        fine, check = choose_labelled(pool, 6, seed, subject_of=subject_of)
        assert len(fine) + len(check) == 6 and len(fine) >= 2 and check
        assert not {subject_of[i] for i in fine} & {subject_of[i] for i in check}, (seed, fine, check)
        # the same six images as the choice by image: only the cut between the parts moves
        assert sorted(fine + check) == sorted(sum(choose_labelled(pool, 6, seed), []))
    # one image per subject: the choice by image, unchanged
    assert choose_labelled(pool, 10, 3, subject_of={i: i for i in pool}) == choose_labelled(pool, 10, 3)
    with pytest.raises(SampotError, match="none of which can be held out whole"):
        choose_labelled(pool, 3, 0, subject_of={i: "one patient" for i in pool})


# -- the command: calibration.json, the calibrated file, and what it refuses -----------------------------------------


def test_calibration_improves_the_regressor_on_held_out_images_of_shifted_data(calibrated, shifted):
    out, text = calibrated
    report = json.loads((out / "calibration.json").read_text())
    before, after = report["check_before"], report["check_after"]
    assert before["ids"] == after["ids"] == report["check_ids"] and len(report["check_ids"]) == 2
    # the evolution before and after fine-tuning, on the check images alone: before, the base's rows for them
    for part in (before, after):
        assert [r["image_id"] for r in part["evolution"]["per_image"]] == report["check_ids"]
        assert part["evolution"]["n"] == 2
    base_rows = {r["image_id"]: r for r in report["before"]["evolution"]["per_image"]}
    assert before["evolution"]["per_image"] == [base_rows[i] for i in report["check_ids"]]
    assert after["mse"] < 0.6 * before["mse"] and after["r_all"] > before["r_all"]
    assert report["before"]["n_images"] == 6 and report["before"]["evolution"]["n"] == 6
    # Every labelled image comes from the train and validation parts: the test part stays for `sampot run`.
    splits = json.loads((out / "splits.json").read_text())["splits"]
    labelled = report["fine_tune_ids"] + report["check_ids"]
    assert len(set(labelled)) == 6 and set(labelled) <= set(splits["train"] + splits["val"])
    assert f"{after['r_all']:.3f}" in text and "recommendation: " in text and "Use the calibrated" in text
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_the_calibrated_file_records_its_base_and_its_labelled_images(calibrated, shifted, base, nano):
    out, _ = calibrated
    path, _, base_meta = base
    tuned, meta = load_regressor(out / "regressor_calibrated.pt")
    report = json.loads((out / "calibration.json").read_text())
    # The file holds the regressor whose held-out numbers the report gives (the same masks, rebuilt).
    data = FolderDataset(shifted)
    samples = transfer_samples(nano, data, sorted(report["fine_tune_ids"] + report["check_ids"]), "left_lung",
                               size=SIZE, seed=0)  # fmt: skip
    check = samples.subset(np.isin(samples.image_id, report["check_ids"]))
    assert score_summary(predict_dice(tuned, check), check)["mse"] == pytest.approx(report["check_after"]["mse"])
    assert meta["calibrated_from"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["calibrated_from"]["record"] == base_meta
    labelled = report["fine_tune_ids"] + report["check_ids"]
    assert meta["calibration_masks"] == mask_hashes(FolderDataset(shifted), labelled, "left_lung")
    assert meta["calibrated_on"]["data"] == str(shifted) and meta["calibrated_on"]["check_ids"] == report["check_ids"]
    assert meta["calibration_checks"] == sorted(report["check_ids"])  # held out: not named as learned
    assert {k: meta[k] for k in ("model", "structure", "prompt", "input_size")} == {
        k: base_meta[k] for k in ("model", "structure", "prompt", "input_size")}  # fmt: skip
    # Refused on its labelled images, even as a regressor given on purpose, and under another name too.
    one = report["check_ids"][0]
    with pytest.raises(SampotError, match=rf"1 test image\(s\) were among the labelled images it was cal.*{one}"):
        check_regressor(meta, {"test_masks": {"renamed": meta["calibration_masks"][one]}}, allow_foreign=True)
    assert check_regressor(meta, {"test_masks": {"new": "0" * 64}}, allow_foreign=True) == []


def test_a_chain_of_calibrations_names_as_held_out_only_what_none_of_them_fitted_on(tmp_path):
    base = tmp_path / "base.pt"
    base.write_bytes(b"base")
    history = [{"epoch": 0, "val_mse": 0.1}]

    def calibrate(meta, fine, check):
        return calibrated_record(meta, base, data=tmp_path / "set", fine_masks={i: f"m{i}" for i in fine},
                                 check_masks={i: f"m{i}" for i in check}, split_hash=None, seed=0, settings={},
                                 history=history)  # fmt: skip

    first = calibrate({"model": "sam_nano"}, fine=["a", "b"], check=["c", "d"])
    assert first["calibration_checks"] == ["c", "d"]
    second = calibrate(first, fine=["c", "e"], check=["a", "f"])  # c now fitted on; a was fitted on before
    assert sorted(second["calibration_masks"]) == ["a", "b", "c", "d", "e", "f"]
    assert second["calibration_checks"] == ["d", "f"]


def test_calibrating_again_on_a_split_testing_on_its_labelled_images_is_refused(calibrated, shifted, tmp_path, capsys):
    out, _ = calibrated
    report = json.loads((out / "calibration.json").read_text())
    labelled = set(report["fine_tune_ids"] + report["check_ids"])
    seed = next(s for s in range(1, 50) if labelled & set(make_splits(FolderDataset(shifted), seed=s)["test"]))
    again = tmp_path / "again"
    rc = main(["calibrate", str(shifted), "--regressor", str(out / "regressor_calibrated.pt"), "--labelled", "3",
               "--seed", str(seed), "--out", str(again)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "image(s) the regressor has already learned from in its test part" in err, err
    assert "Calibrate with the split it was made on (seed 0)" in err, err
    assert not again.exists() or not [p for p in again.iterdir() if p.suffix in (".pt", ".json")]


def test_a_run_that_would_test_on_a_labelled_image_is_refused(calibrated, shifted, tmp_path):
    from sampot_lib.experiment.stages import evaluate_stage

    out, _ = calibrated
    report = json.loads((out / "calibration.json").read_text())
    common = dict(data=str(shifted), model="sam_nano", regressor=str(out / "regressor_calibrated.pt"),
                  regressor_size=SIZE, n_synthetic=4, n_outside=1, max_images=3)  # fmt: skip
    # Its own folder (same seed, same split): the test part holds none of the labelled images.
    summary = evaluate_stage(ExperimentConfig(out=str(out), **common), progress=False)
    assert summary["n_initial"] == 3 and summary["regressor_origin"]["calibrated_on"]["data"] == str(shifted)
    # Another split whose test part holds a labelled image: refused before anything is evaluated.
    ids = FolderDataset(shifted).ids
    test = [report["check_ids"][0], *[i for i in ids if i not in report["fine_tune_ids"] + report["check_ids"]][:2]]
    parts = {"train": [i for i in ids if i not in test], "val": [], "test": test}
    split = save_splits(tmp_path / "split.json", parts, seed=0, fractions=[1, 0, 1])
    other = ExperimentConfig(out=str(tmp_path / "other"), split_file=str(split), **common)
    with pytest.raises(SampotError, match="labelled images it was calibrated on"):
        evaluate_stage(other, progress=False)
    assert not (tmp_path / "other" / "regressor_eval.csv").exists()


def test_the_run_calibrate_prints_next_works_also_in_a_folder_of_results(shifted, base, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(shifted), "--out", str(out), "--max-images", "3", "--epochs", "1", "--steps", "1",
                 "--regressor-size", str(SIZE)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["calibrate", str(shifted), "--regressor", str(base[0]), "--labelled", "4", "--out", str(out),
                 "--steps", "1", "--epochs", "2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    command = shlex.split(printed.split("never tested on): ")[1].strip())
    assert command[:2] == ["sampot", "run"] and "--force" not in command
    own = json.loads((out / "summary.json").read_text())
    assert main([*command[1:], "--max-images", "3"]) == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text()) == own  # the folder's own results are left alone
    target = Path(command[command.index("--out") + 1])
    summary = json.loads((target / "summary.json").read_text())
    assert summary["regressor_origin"]["calibrated_on"]["data"] == str(shifted)
    report = json.loads((out / "calibration.json").read_text())
    tested = {row["image_id"] for row in csv.DictReader((target / "evolution.csv").open())}
    assert tested == {row["image_id"] for row in csv.DictReader((out / "evolution.csv").open())}  # the same split
    assert tested and not tested & set(report["fine_tune_ids"] + report["check_ids"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--labelled", "2"], "--labelled must be at least 3"),
        (["--labelled", "13"], r"--labelled 13 is more than the (\d+) labelled images available.*from 3 to \1\."),
        (["--labelled", "4", "--box-jitter", "0.2"], "--box-jitter sets the jitter of the users' boxes.*clicks"),
        (["--labelled", "11"], "--labelled 11 is more than the .* labelled images available: the train and valid"),
        (
            ["--labelled", "4", "--structure", "right_lung"],
            "--structure right_lung differs from the regressor's structure 'left_lung'",
        ),
        (["--labelled", "4", "--prompt", "box"], "--prompt box differs from the regressor's prompt 'click'"),
        (["--labelled", "4", "--model", "vit_b"], "--model vit_b differs from the regressor's model 'sam_nano'"),
        (["--labelled", "4", "--tune-lr", "5"], "--tune-lr"),
    ],
)
def test_cli_refuses_bad_input_in_one_line_before_any_work(shifted, base, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    rc = main(["calibrate", str(shifted), "--regressor", str(base[0]), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("sampot: error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()  # nothing written: not even the split


def test_fine_tuning_picks_its_epoch_and_blend_weight_on_the_fine_tune_images_alone(
    shifted, base, tmp_path, monkeypatch
):
    from sampot_lib.experiment import calibration as calibration_module

    seen = {}
    real_tune, real_weight = calibration_module.fine_tune, calibration_module.blend_weight

    def tune_spy(regressor, train, val, **kwargs):
        seen["train"], seen["val"] = set(train.image_id), set(val.image_id)
        return real_tune(regressor, train, val, **kwargs)

    def weight_spy(regressor, samples):
        seen["blend"] = set(samples.image_id)
        seen["weight"] = real_weight(regressor, samples)
        return seen["weight"]

    monkeypatch.setattr(calibration_module, "fine_tune", tune_spy)
    monkeypatch.setattr(calibration_module, "blend_weight", weight_spy)
    out = tmp_path / "run"
    assert main(["calibrate", str(shifted), "--regressor", str(base[0]), "--labelled", "6", "--out", str(out),
                 "--steps", "1", "--epochs", "1"]) == 0  # fmt: skip
    report = json.loads((out / "calibration.json").read_text())
    fine, check = set(report["fine_tune_ids"]), set(report["check_ids"])
    assert seen["train"] == fine and seen["val"] <= fine
    # the check images stay unseen until they are measured: neither the epoch nor the blend weight is chosen on them
    assert not seen["val"] & check and seen["blend"] == seen["val"]
    assert load_regressor(out / "regressor_calibrated.pt")[1]["blend_weight"] == seen["weight"]


def test_the_largest_labelled_count_a_message_states_is_accepted(shifted, base, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["calibrate", str(shifted), "--regressor", str(base[0]), "--out", str(out), "--labelled", "99"]) == 2
    most = int(re.search(r"from 3 to (\d+)\.", capsys.readouterr().err).group(1))
    argv = ["calibrate", str(shifted), "--regressor", str(base[0]), "--out", str(out), "--steps", "1", "--epochs", "1"]
    assert main([*argv, "--labelled", str(most)]) == 0
    assert len(json.loads((out / "calibration.json").read_text())["fine_tune_ids"]) < most


def test_a_calibration_is_not_replaced_by_one_of_other_settings_or_regressor_without_force(
    calibrated, shifted, base, tmp_path, capsys
):
    out = shutil.copytree(calibrated[0], tmp_path / "run")
    before = {n: (out / n).read_bytes() for n in CALIBRATION_FILES}
    other = save_regressor(base[1], tmp_path / "other.pt", base[2] | {"note": "another file"})
    argv = ["calibrate", str(shifted), "--out", str(out), "--steps", "2", "--epochs", "15"]
    for extra, why in ((["--regressor", str(base[0]), "--labelled", "5"], "other settings: n_labelled 6 -> 5"),
                       (["--regressor", str(other), "--labelled", "6"], "another regressor")):  # fmt: skip
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert f"holds a calibration made with {why}" in err and "--force" in err, err
    assert {n: (out / n).read_bytes() for n in CALIBRATION_FILES} == before
    assert main([*argv, "--regressor", str(base[0]), "--labelled", "5", "--epochs", "1", "--force"]) == 0
    assert json.loads((out / "calibration.json").read_text())["settings"]["n_labelled"] == 5


def test_calibrating_into_a_run_folder_of_another_data_set_is_refused(phantoms, shifted, base, tmp_path, capsys):
    from sampot_lib.experiment.runfolder import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.begin("train", {"data": str(phantoms), "epochs": 1}, "split", {})
    folder.finish("train", [])
    rc = main(["calibrate", str(shifted), "--regressor", str(base[0]), "--labelled", "4", "--out", str(folder.path)])
    err = capsys.readouterr().err
    assert rc == 2 and f"holds a run on another data set ({phantoms}; stage 'train')" in err, err
    assert sorted(p.name for p in folder.path.iterdir() if not p.name.startswith(".")) == ["manifest.json"]


def test_too_few_unseen_images_suggests_another_regressor_only_when_it_saw_some(phantoms, base, tmp_path, capsys):
    small = write_phantom_set(tmp_path / "small", 3, seed=7, size=128)
    for data, saw in ((small, False), (phantoms, True)):  # the base regressor trained on set A (phantoms)
        rc = main(["calibrate", str(data), "--regressor", str(base[0]), "--labelled", "3", "--out",
                   str(tmp_path / f"out_{saw}")])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and "calibration needs at least 3 images the regressor has not seen" in err, err
        assert ("a regressor trained on other images" in err) == saw, err


def test_cli_refuses_a_missing_regressor(shifted, tmp_path, capsys):
    rc = main(["calibrate", str(shifted), "--regressor", str(tmp_path / "none.pt"), "--labelled", "4", "--out",
               str(tmp_path / "o")])  # fmt: skip
    assert rc == 2 and "--regressor" in capsys.readouterr().err


def test_the_cli_checks_every_file_calibration_writes():
    assert set(CALIBRATION_FILES) <= set(CALIBRATE_FILES)  # --out is probed for each before any work


# -- the book's demonstration ----------------------------------------------------------------------------------------


def test_compare_on_test_gives_a_table_of_the_foreign_and_the_calibrated_regressor(shifted, nano, base):
    ids = FolderDataset(shifted).ids
    splits = {"train": ids[:5], "val": ids[5:7], "test": ids[7:]}
    comparison = compare_on_test(nano, base[1], FolderDataset(shifted), splits, "left_lung", n_labelled=6, epochs=15,
                                 steps=1, n_synthetic=8, n_outside=2, max_test=4)  # fmt: skip
    foreign, tuned = comparison["foreign"], comparison["calibrated"]
    assert foreign["ids"] == tuned["ids"] == ids[7:11]
    labelled = comparison["labelled"]["fine_tune_ids"] + comparison["labelled"]["unused_check_ids"]
    assert len(labelled) == 6 and set(labelled) <= set(ids[:7])  # labels come from train and val, never from test
    assert tuned["mae"] < foreign["mae"]  # B's label convention learnt from its labelled images
    table = markdown_table(comparison).splitlines()
    assert len(table) == 4 and table[2].startswith("| trained on the other data set")
    assert f"| {tuned['r_all']:.3f} |" in table[3] and f"{tuned['evolution']['mean_gain']:+.4f}" in table[3]
