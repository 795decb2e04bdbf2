"""The commands with the shipped regressors: `sampot evolve` with none given, `sampot score`, `sampot regressors`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_command as run
from PIL import Image

from sampot_lib.data.io import read_image, read_mask
from sampot_lib.method.regressor import score_mask
from sampot_lib.method.shipped import load_shipped_regressor, shipped_regressors

NANO = "sam_nano_click_left_lung"
pytestmark = pytest.mark.skipif(NANO not in shipped_regressors(), reason="the SAM-Nano regressor is not shipped")


@pytest.fixture(scope="module")
def one(phantoms) -> tuple[Path, Path]:
    root = Path(phantoms)
    image = sorted((root / "images").glob("*.png"))[0]
    return image, root / "masks" / "left_lung" / image.name


def test_regressors_lists_the_shipped_ones_with_their_numbers(capsys):
    rc, out, _ = run(["regressors"], capsys)
    record = shipped_regressors()[NANO]
    assert rc == 0 and NANO in out and f"r {record.numbers['test']['r']:.3f}" in out and str(record.card_path) in out


def test_score_gives_the_predicted_dice_and_its_interval(one, capsys):
    image, mask = one
    rc, out, err = run(["score", image, mask, "--structure", "left_lung", "--model", "sam_nano"], capsys)
    assert rc == 0, err
    regressor, _, record = load_shipped_regressor(NANO)
    predicted = score_mask(regressor, read_image(image), read_mask(mask))
    low, high = record.interval(predicted, of="binary")  # a mask file is binary: the binary masks' interval
    assert f"predicted Dice {predicted:.3f} ({low:.3f} to {high:.3f}, 90% interval" in out and NANO in out


def _bad_masks(tmp: Path, shape: tuple[int, int]) -> dict[str, Path]:
    h, w = shape
    made = {"size": np.zeros((h + 4, w), np.uint8), "empty": np.zeros((h, w), np.uint8),
            "binary": np.arange(h * w).reshape(h, w).astype(np.uint8)}  # fmt: skip
    made["size"][5:20, 5:20] = 255
    paths = {}
    for what, arr in made.items():
        paths[what] = tmp / f"{what}_mask.png"
        Image.fromarray(arr).save(paths[what])
    return paths


@pytest.mark.parametrize("what, says", [("size", "masks must have the image's size"), ("empty", "mask is empty"),
                                        ("binary", "mask is not binary")])  # fmt: skip
def test_score_refuses_a_bad_mask_naming_the_file(one, tmp_path, capsys, what, says):
    image, _ = one
    bad = _bad_masks(tmp_path, read_image(image).shape[:2])[what]
    rc, out, err = run(["score", image, bad, "--structure", "left_lung"], capsys)
    assert rc == 2 and str(bad) in err and says in err and err.count("\n") == 1 and "predicted" not in out


def test_score_of_a_data_set_writes_one_row_per_image(phantoms, tmp_path, capsys):
    out_csv = tmp_path / "scores.csv"
    rc, out, err = run(["score", phantoms, "--structure", "left_lung", "--out", out_csv], capsys)
    assert rc == 0, err
    rows = list(csv.DictReader(out_csv.open()))
    ids = sorted(p.stem for p in (Path(phantoms) / "images").glob("*.png"))
    assert sorted(r["image_id"] for r in rows) == ids
    regressor, _, record = load_shipped_regressor(NANO)
    first = rows[0]
    image = read_image(Path(phantoms) / "images" / f"{first['image_id']}.png")
    want = score_mask(regressor, image, read_mask(first["mask"]))
    assert float(first["dice_predicted"]) == pytest.approx(want, abs=1e-5)
    assert float(first["interval_low"]) == pytest.approx(max(0.0, want - record.half_width_of("binary")), abs=1e-5)
    # the printed line's mean and lowest mask are those of the rows written
    predicted = {r["image_id"]: float(r["dice_predicted"]) for r in rows}
    lowest = min(predicted, key=predicted.get)
    assert len(set(predicted.values())) > 1, "the phantoms' masks should not all score the same"
    mean = sum(predicted.values()) / len(predicted)
    assert f"mean predicted Dice {mean:.3f}, lowest {lowest} {predicted[lowest]:.3f}" in out


def test_score_of_a_data_set_scores_a_mask_with_no_margin_and_warns_of_it(phantoms, tmp_path, capsys):
    # a model's output that fills the image is what quality control should flag, not a reason to refuse the folder
    folder = tmp_path / "outputs"
    shutil.copytree(phantoms, folder)
    shutil.rmtree(folder / "masks" / "right_lung")
    full = folder / "masks" / "left_lung" / "phantom_0001.png"
    mask = np.zeros(read_mask(full).shape, np.uint8)
    mask[2:-2, 2:-2] = 255
    Image.fromarray(mask).save(full)
    out_csv = tmp_path / "scores.csv"
    rc, _, err = run(["score", folder, "--structure", "left_lung", "--out", out_csv], capsys)
    assert rc == 0 and "phantom_0001.png: leaves no pixel" in err, err
    assert "phantom_0001" in {r["image_id"] for r in csv.DictReader(out_csv.open())}
    # a run, which draws its regressor's training clicks outside the masks, still refuses the folder
    rc, _, err = run(["run", folder, "--out", tmp_path / "run"], capsys)
    assert rc == 2 and "phantom_0001.png: leaves no pixel" in err, err


def test_score_of_a_data_set_without_out_is_refused(phantoms, capsys):
    rc, _, err = run(["score", phantoms, "--structure", "left_lung"], capsys)
    assert rc == 2 and "--out" in err


def test_no_shipped_regressor_for_the_structure_is_one_line_with_those_there_are(one, tmp_path, capsys):
    image, _ = one
    rc, _, err = run(["evolve", image, "--click", 40, 60, "--structure", "heart", "--out", tmp_path], capsys)
    assert rc == 2 and err.count("\n") == 1
    assert "no shipped regressor" in err and NANO in err and "sampot train-regressor" in err


def test_a_prompt_kind_with_no_shipped_regressor_is_advised_in_the_commands_own_options(one, tmp_path, capsys):
    image, mask = one
    rc, _, err = run(["score", image, mask, "--prompt", "box"], capsys)  # SAM-Nano ships a click regressor only
    assert rc == 2 and err.count("\n") == 1
    assert "give a click (--prompt click)" in err and "--click" not in err  # score has no --click
    rc, _, err = run(["evolve", image, "--box", 20, 30, 60, 90, "--out", tmp_path / "e"], capsys)
    assert rc == 2 and "give a click (--click X Y)" in err and not (tmp_path / "e").exists()


def test_evolve_uses_the_shipped_regressor_and_writes_what_a_person_looks_at(one, tmp_path, capsys):
    image, mask = one
    truth = read_mask(mask)
    ys, xs = np.nonzero(truth)
    click = (float(xs.mean()), float(ys.mean()))
    rc, out, err = run(["evolve", image, "--click", *click, "--truth", mask, "--steps", 6, "--out", tmp_path], capsys)
    assert rc == 0, err
    assert f"regressor: {NANO} (shipped" in out and "do-no-harm:" in out and "predicted Dice of the result" in out
    stem = image.stem
    for name in ("mask.png", "initial_mask.png", "overlay.png", "evolution.html", "evolution.json"):
        assert (tmp_path / f"{stem}_{name}").is_file(), name
    record = json.loads((tmp_path / f"{stem}_evolution.json").read_text())
    steps, best = record["trajectory"], record["best_step"]
    assert record["dice_predicted_initial"] == steps[0]["score"]
    assert record["dice_predicted_final"] == steps[best]["score"]
    assert record["dice_true_initial"] == steps[0]["dice"] and record["dice_true_final"] == steps[best]["dice"]
    assert record["regressor"]["shipped"] == NANO and record["settings"]["rule"]["margin"] == shipped_regressors()[
        NANO].margin  # fmt: skip
    low, high = record["dice_predicted_final_interval"]
    assert low <= record["dice_predicted_final"] <= high
    shipped = shipped_regressors()[NANO]  # the user's prompt and the winner: each the interval measured on its kind
    assert record["dice_predicted_initial_interval"] == list(shipped.interval(steps[0]["score"], of="user"))
    assert (low, high) == shipped.interval(steps[best]["score"], of="evolved")
    overlay = np.asarray(Image.open(tmp_path / f"{stem}_overlay.png"))
    assert overlay.shape == (*truth.shape, 3)


def test_evolve_takes_a_shipped_regressor_by_name_and_the_rule_can_be_left_off(one, tmp_path, capsys):
    image, _ = one
    argv = ["evolve", image, "--click", 70, 60, "--regressor", NANO, "--steps", 3, "--no-do-no-harm", "--out", tmp_path]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    record = json.loads((tmp_path / f"{image.stem}_evolution.json").read_text())
    assert "rule" not in record["settings"] and "dice_true_initial" not in record and NANO in out


def test_any_command_takes_a_shipped_regressor_by_name_as_its_checked_file(phantoms, tmp_path):
    from sampot_lib.cli.checks import check_args
    from sampot_lib.cli.main import build_parser

    argv = ["calibrate", str(phantoms), "--regressor", NANO, "--labelled", "4", "--out", str(tmp_path)]
    args = build_parser().parse_args(argv)
    check_args(args)
    assert args.regressor == str(shipped_regressors()[NANO].path)


def test_score_refuses_a_regressor_of_another_structure_unless_asked(one, capsys):
    image, mask = one
    argv = ["score", image, mask, "--structure", "heart", "--regressor", NANO]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "structure 'left_lung'" in err and "structure 'heart'" in err
    rc, out, err = run([*argv, "--allow-foreign"], capsys)
    assert rc == 0 and "foreign regressor" in err and "predicted Dice" in out


def test_score_takes_the_structure_from_the_masks_folder_without_structure(one, capsys):
    image, mask = one
    right = mask.parent.parent / "right_lung" / mask.name
    assert right.is_file()
    # SAM-Nano ships a left-lung regressor only: a right-lung mask is not scored by it
    rc, out, err = run(["score", image, right], capsys)
    assert rc == 2 and "no shipped regressor for model 'sam_nano', click prompts and structure 'right_lung'" in err
    assert "predicted" not in out
    rc, out, err = run(["score", image, right, "--regressor", NANO], capsys)
    assert rc == 2 and "structure 'right_lung'" in err and "structure 'left_lung'" in err
    rc, out, err = run(["score", image, mask], capsys)  # masks/left_lung/: the left-lung regressor
    assert rc == 0 and NANO in out, err
    rc, out, err = run(["score", image, right, "--structure", "left_lung"], capsys)  # said outright: taken as said
    assert rc == 0 and NANO in out, err


def test_score_warns_for_a_mask_the_regressor_trained_on_and_for_an_inverted_one(one, tmp_path, capsys):
    from sampot_lib.data.io import write_png
    from sampot_lib.files import sha256_file
    from sampot_lib.method.regressor import save_regressor

    image, mask = one
    regressor, meta, _ = load_shipped_regressor(NANO)
    seen = {k: v for k, v in meta.items() if k != "shipped"} | {
        "train_masks": {image.stem: sha256_file(mask)}, "train_images": {image.stem: sha256_file(image)},
        "val_masks": {}, "val_images": {},
    }  # fmt: skip
    path = save_regressor(regressor, tmp_path / "seen.pt", seen)
    common = ["--structure", "left_lung", "--model", "sam_nano"]
    rc, out, err = run(["score", image, mask, "--regressor", path, *common], capsys)
    assert rc == 0 and "predicted Dice" in out
    assert f"the mask scored was among the regressor's training or validation images ({image.stem})" in err
    # the same mask file under another image is not the same labelled image
    other = tmp_path / "other.png"
    write_png(other, np.flipud(read_image(image)))
    rc, _, err = run(["score", other, mask, "--regressor", path, *common], capsys)
    assert rc == 0 and "training or validation" not in err
    inverted = tmp_path / "inverted.png"
    write_png(inverted, ~read_mask(mask))
    rc, _, err = run(["score", image, inverted, *common], capsys)
    assert rc == 0 and f"the mask covers most of the image and nearly all its border ({inverted})" in err, err
    rc, _, err = run(["score", image, mask, *common], capsys)
    assert rc == 0 and "warning" not in err
