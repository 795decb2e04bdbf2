"""The commands check a regressor against what it is used with: the shipped regressor's own model when only its name
is given, the model's weights, images with its training images' ids, and a mask that belongs elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_command as run

from sampot_lib.errors import SampotError
from sampot_lib.method.shipped import shipped_regressors
from sampot_lib.models.registry import CHECKPOINTS

NANO = "sam_nano_click_left_lung"
BOXES = "litemedsam_box_left_lung"
pytestmark = pytest.mark.skipif(NANO not in shipped_regressors(), reason="the SAM-Nano regressor is not shipped")


@pytest.mark.skipif(BOXES not in shipped_regressors(), reason="the LiteMedSAM regressor is not shipped")
def test_score_takes_the_model_and_prompt_of_a_shipped_regressor_given_by_name(phantoms, tmp_path, capsys):
    rc, out, err = run(["score", phantoms, "--regressor", BOXES, "--out", tmp_path / "s.csv"], capsys)
    assert rc == 0 and BOXES in out, err
    rc, _, err = run(["score", phantoms, "--regressor", BOXES, "--model", "sam_nano", "--out", tmp_path / "t.csv"],
                     capsys)  # fmt: skip
    assert rc == 2 and "change --model to litemedsam" in err and "train-regressor" not in err
    rc, _, err = run(["score", phantoms, "--regressor", BOXES, "--prompt", "click", "--out", tmp_path / "u.csv"],
                     capsys)  # fmt: skip
    assert rc == 2 and "change --prompt to box" in err


def test_score_warns_for_images_with_the_ids_of_the_shipped_regressors_training_images(phantoms, tmp_path, capsys):
    trained_id = shipped_regressors()[NANO].training_data["train_ids"][0]
    image = sorted((Path(phantoms) / "images").glob("*.png"))[0]
    mask = Path(phantoms) / "masks" / "left_lung" / image.name
    (tmp_path / "images").mkdir()
    (tmp_path / "masks" / "left_lung").mkdir(parents=True)
    shutil.copy(image, tmp_path / "images" / f"{trained_id}.png")  # another picture under a training image's id
    shutil.copy(mask, tmp_path / "masks" / "left_lung" / f"{trained_id}.png")
    rc, out, err = run(["score", tmp_path / "images" / f"{trained_id}.png",
                        tmp_path / "masks" / "left_lung" / f"{trained_id}.png"], capsys)  # fmt: skip
    assert rc == 0 and "predicted Dice" in out
    assert f"image {trained_id} has the id of one of the regressor's training images (other pixels" in err
    rc, _, err = run(["score", image, mask], capsys)  # its own id: nothing to say
    assert rc == 0 and "warning" not in err


def test_score_warns_for_a_mask_of_another_structure_or_another_image(phantoms, tmp_path, capsys):
    images = sorted((Path(phantoms) / "images").glob("*.png"))
    right = Path(phantoms) / "masks" / "right_lung" / images[0].name
    rc, _, err = run(["score", images[0], right, "--structure", "left_lung"], capsys)
    assert rc == 0 and "lies in masks/right_lung/ but --structure is left_lung" in err
    other = Path(phantoms) / "masks" / "left_lung" / images[1].name
    rc, _, err = run(["score", images[0], other], capsys)
    assert rc == 0 and f"is the mask of image {images[1].stem} of the data set, not of {images[0].stem}" in err
    # a mask named after its image (x_mask.png for x.png) is no other image's: the set has no image x_mask
    own = tmp_path / "set"
    shutil.copytree(phantoms, own)
    named = own / "masks" / "left_lung" / f"{images[0].stem}_mask.png"
    shutil.copy(own / "masks" / "left_lung" / images[0].name, named)
    rc, _, err = run(["score", own / "images" / images[0].name, named], capsys)
    assert rc == 0 and "is the mask of image" not in err, err


@pytest.mark.skipif("sam_nano" not in CHECKPOINTS, reason="the SAM-Nano weights are not packaged")
def test_evolve_refuses_the_shipped_regressor_with_other_weights_and_not_with_the_packaged_file(
    phantoms, tmp_path, capsys
):
    import torch

    image = sorted((Path(phantoms) / "images").glob("*.png"))[0]
    state = torch.load(CHECKPOINTS["sam_nano"].path, map_location="cpu")
    key = next(k for k in state if k.startswith("mask_decoder."))
    state[key] = state[key] + 0.05
    tuned = tmp_path / "tuned.pt"
    torch.save(state, tuned)
    common = ["evolve", image, "--click", 40, 64, "--steps", 1, "--out", tmp_path / "e"]
    rc, _, err = run([*common, "--checkpoint", tuned, "--mask-output", "single"], capsys)
    assert rc == 2 and "checkpoint 'sam_nano (registry)' but is used with checkpoint 'tuned.pt'" in err
    rc, _, err = run([*common, "--checkpoint", tuned, "--mask-output", "single", "--allow-foreign-regressor"], capsys)
    assert rc == 0, err
    record = json.loads((tmp_path / "e" / f"{image.stem}_evolution.json").read_text())
    assert any("checkpoint 'tuned.pt'" in note for note in record["regressor_foreign"])
    # the packaged weights given as a file: the same weights, and the model's recommended mask output
    rc, _, err = run([*common, "--checkpoint", CHECKPOINTS["sam_nano"].path], capsys)
    assert rc == 0 and "foreign" not in err, err


@pytest.mark.skipif(BOXES not in shipped_regressors(), reason="the LiteMedSAM regressor is not shipped")
def test_the_app_heatmap_and_run_take_the_model_of_a_shipped_regressor_given_by_name(phantoms, tmp_path):
    from sampot_lib.cli.checks import check_args
    from sampot_lib.cli.main import build_parser
    from sampot_lib.cli.options import shipped_settings

    for argv in (["app", phantoms, "--regressor", BOXES], ["heatmap", phantoms, "--mask", "m.png", "--out", "h.csv",
                                                            "--regressor", BOXES]):  # fmt: skip
        args = build_parser().parse_args([str(a) for a in argv])
        if argv[0] == "app":
            check_args(args)
        shipped_settings(args)
        assert args.model == "litemedsam"
    args = build_parser().parse_args(["app", str(phantoms), "--regressor", BOXES, "--model", "vit_b"])
    with pytest.raises(SampotError, match="change --model to litemedsam"):
        shipped_settings(args)
    # `sampot run --regressor NAME`: its model before the regressor is checked against it
    args = build_parser().parse_args(["run", str(phantoms), "--out", str(tmp_path / "r"), "--regressor", BOXES])
    check_args(args)
    assert args.model == "litemedsam" and type(args.model) is str
    args = build_parser().parse_args(["run", str(phantoms), "--out", str(tmp_path / "r"), "--regressor", BOXES,
                                      "--model", "sam_nano"])  # fmt: skip
    with pytest.raises(SampotError, match="change --model to litemedsam"):
        check_args(args)


def test_score_names_the_images_a_regressor_was_calibrated_on(phantoms, tmp_path, capsys):
    from sampot_lib.files import sha256_file
    from sampot_lib.method.regressor import save_regressor
    from sampot_lib.method.shipped import load_shipped_regressor

    image = sorted((Path(phantoms) / "images").glob("*.png"))[0]
    mask = Path(phantoms) / "masks" / "left_lung" / image.name
    regressor, meta, _ = load_shipped_regressor(NANO)
    calibrated = {k: v for k, v in meta.items() if k != "shipped"} | {
        "calibration_masks": {image.stem: sha256_file(mask)}, "calibration_images": {image.stem: sha256_file(image)},
    }  # fmt: skip
    path = save_regressor(regressor, tmp_path / "calibrated.pt", calibrated)
    rc, _, err = run(["score", image, mask, "--regressor", path], capsys)
    assert rc == 0 and f"among the labelled images the regressor was calibrated on ({image.stem})" in err
    # held out to check the calibration: named as such, not as learned
    path = save_regressor(regressor, tmp_path / "checked.pt", calibrated | {"calibration_checks": [image.stem]})
    rc, _, err = run(["score", image, mask, "--regressor", path], capsys)
    assert rc == 0 and "learned" not in err, err
    assert f"among the images held out to check the regressor's calibration ({image.stem})" in err, err
