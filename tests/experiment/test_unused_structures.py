"""A command reads and checks only the masks of the structure it uses: a lesion folder with empty masks (how "no
nodule" is said) or missing files blocks neither a left-lung run, its calibration, the app, nor a split (which reads
no mask); `sampot data check DIR` still checks every structure."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sampot_lib.cli.main import main
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.setup import open_dataset


@pytest.fixture(scope="module")
def with_lesions(tmp_path_factory):
    """6 phantoms with a masks/nodule/ folder where 5 of 6 masks are empty (no nodule) and a masks/heart/ folder
    with one mask."""
    root = write_phantom_set(tmp_path_factory.mktemp("lesions") / "ph", 6, seed=0, size=96)
    ids = sorted(p.stem for p in (root / "images").iterdir())
    (root / "masks" / "nodule").mkdir()
    for k, image_id in enumerate(ids):
        mask = np.zeros((96, 96), np.uint8)
        if k == 0:
            mask[40:48, 20:28] = 255
        Image.fromarray(mask).save(root / "masks" / "nodule" / f"{image_id}.png")
    (root / "masks" / "heart").mkdir()
    shutil.copy(root / "masks" / "left_lung" / f"{ids[0]}.png", root / "masks" / "heart" / f"{ids[0]}.png")
    return root


def test_a_left_lung_run_and_calibration_read_only_the_left_lungs_masks(with_lesions, tmp_path):
    dataset = open_dataset(ExperimentConfig(data=str(with_lesions), out=str(tmp_path / "r"), structure="left_lung"))
    assert dataset.structures == ["left_lung"] and len(dataset) == 6
    with pytest.raises(SampotError, match=r"structure 'lung' is not in .* \(it has heart, left_lung, nodule, right"):
        open_dataset(ExperimentConfig(data=str(with_lesions), out=str(tmp_path / "r"), structure="lung"))
    with pytest.raises(SampotError, match=r"masks/nodule/phantom_0001.png: mask is empty"):
        open_dataset(ExperimentConfig(data=str(with_lesions), out=str(tmp_path / "r"), structure="nodule"))


def test_data_split_reads_no_mask_and_data_check_still_checks_every_structure(with_lesions, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["data", "split", str(with_lesions), "--fractions", "1", "1", "1", "--out", str(out)]) == 0
    assert sum(len(ids) for ids in json.loads(out.read_text())["splits"].values()) == 6
    capsys.readouterr()
    assert main(["data", "check", str(with_lesions), "--quiet"]) == 1
    report = capsys.readouterr().out
    assert (
        "masks/nodule/phantom_0001.png: mask is empty" in report and "masks/heart/phantom_0001.png: missing" in report
    )
    assert main(["data", "check", str(with_lesions), "--quiet", "--structures", "left_lung"]) == 0


def test_train_regressor_on_the_left_lung_ignores_the_lesion_masks(with_lesions, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["train-regressor", str(with_lesions), "--out", str(out), "--model", "tiny", "--checkpoint",
            str(tiny_checkpoint), "--max-images", "3", "--epochs", "1", "--regressor-size", "32"]  # fmt: skip
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 0 and "nodule" not in err and "heart" not in err, err
    assert (out / "regressor.pt").is_file()


def test_the_app_checks_only_the_structure_it_shows(with_lesions):
    from sampot_lib.ui.app import AppSpec, _Images, check_app

    spec = check_app(with_lesions, None, structure="left_lung")
    assert isinstance(spec, AppSpec) and spec.structure == "left_lung"
    images = _Images(spec)
    assert images.dataset is not None and images.dataset.structures == ["left_lung"]
    assert images.truth("phantom_0000").any()
    with pytest.raises(SampotError, match=r"masks/nodule/phantom_0001.png: mask is empty"):
        FolderDataset(with_lesions)  # every structure, as before, when none is named


def test_a_worker_opens_the_data_set_with_the_structures_the_run_checked(with_lesions, tmp_path):
    from sampot_lib.experiment.parallel import DatasetRef

    dataset = open_dataset(ExperimentConfig(data=str(with_lesions), out=str(tmp_path / "r"), structure="left_lung"))
    ref = DatasetRef(str(dataset.root), tuple(dataset.structures))
    opened = ref.load()  # masks/heart/ lacks five files: a worker must not need them
    assert opened.structures == ["left_lung"] and opened.ids == dataset.ids
    assert np.array_equal(opened.mask(opened.ids[1], "left_lung"), dataset.mask(dataset.ids[1], "left_lung"))
    with pytest.raises(SampotError, match="heart"):
        DatasetRef(str(dataset.root)).load()  # every structure: the incomplete one is named
