"""The experiment pipeline and the command line, end to end on small phantoms with a toy SAM."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from sampot_lib import SampotError
from sampot_lib.cli.main import main
from sampot_lib.data.io import write_png
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.records import read_csv
from sampot_lib.experiment.runner import run_experiment
from sampot_lib.method.regressor import SegmentationRegressor, save_regressor


def _config(phantoms, out, ckpt, **kw):
    base = dict(data=str(phantoms), out=str(out), model="tiny", checkpoint=str(ckpt), n_synthetic=6, n_outside=2,
                regressor_size=32, epochs=3, steps=4, max_images=3)  # fmt: skip
    return ExperimentConfig(**(base | kw))


def test_experiment_writes_every_result(phantoms, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    summary = run_experiment(_config(phantoms, out, tiny_checkpoint), progress=False)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "splits.json", "regressor.pt", "regressor_history.csv", "regressor_eval.csv",
            "regressor_eval.json", "evolution.csv", "trajectories.json", "summary.json"} <= names  # fmt: skip
    assert not [n for n in names if n.endswith(".tmp")]
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert not set(splits["train"]) & set(splits["test"])
    rows = read_csv(out / "evolution.csv")
    assert len(rows) == 2 * 3 and {r["safeguards"] for r in rows} == {"on", "off"}
    for name in ("on", "off"):
        gains = [float(r["dice"]) - float(r["dice0"]) for r in rows if r.get("group", r["safeguards"]) == name]
        assert summary[name]["n"] == 3 and summary[name]["mean_gain"] == pytest.approx(np.mean(gains))
    ev = read_csv(out / "regressor_eval.csv")
    assert {r["kind"] for r in ev} == {"synthetic", "model_band", "model_outside", "model_centroid"}
    # One scoring path: the evaluation's score of the centroid click is evolution's step-0 score, image by image.
    centroid = {r["image_id"]: float(r["regressor"]) for r in ev if r["kind"] == "model_centroid"}
    assert len(centroid) == 3
    for r in rows:
        if r.get("scorer", "regressor") == "regressor":
            assert float(r["score0"]) == pytest.approx(centroid[r["image_id"]], abs=1e-6)
    assert len(read_csv(out / "regressor_history.csv")) == 3


def test_experiment_is_deterministic(phantoms, tiny_checkpoint, tmp_path):
    a = run_experiment(_config(phantoms, tmp_path / "a", tiny_checkpoint, epochs=2, steps=2), progress=False)
    b = run_experiment(_config(phantoms, tmp_path / "b", tiny_checkpoint, epochs=2, steps=2), progress=False)
    a.pop("config"), b.pop("config"), a.pop("seconds"), b.pop("seconds")  # where and how long it ran
    assert a == b


def test_cli_run_evolve_heatmap(phantoms, tiny_checkpoint, tmp_path, capsys):
    common = ["--model", "tiny", "--checkpoint", str(tiny_checkpoint)]
    out = tmp_path / "cli"
    rc = main(["run", str(phantoms), "--out", str(out), "--max-images", "3", "--epochs", "2", "--steps", "3",
               "--regressor-size", "32", *common])  # fmt: skip
    assert rc == 0 and "improved" in capsys.readouterr().out
    splits = json.loads((out / "splits.json").read_text())["splits"]
    test_id, train_id = splits["test"][0], splits["train"][0]
    image = phantoms / "images" / f"{test_id}.png"
    mask = phantoms / "masks" / "left_lung" / f"{test_id}.png"
    ys, xs = np.nonzero(np.asarray(Image.open(mask)))
    x, y = str(int(xs.mean())), str(int(ys.mean()))
    rc = main(["evolve", str(image), "--click", x, y, "--regressor", str(out / "regressor.pt"), "--mask",
               str(mask), "--steps", "3", "--out", str(tmp_path / "one"), *common])  # fmt: skip
    assert rc == 0
    record = json.loads((tmp_path / "one" / f"{test_id}_evolution.json").read_text())
    assert record["prompt"]["points"] == [[float(x), float(y)]] and len(record["trajectory"]) == 4
    assert record["best_prompt"]["points"][0] == [record["best"]["x"], record["best"]["y"]]
    assert record["seconds_embed"] > 0 and record["seconds_evolve"] > 0  # anyone can time it on their machine
    assert (tmp_path / "one" / f"{test_id}_mask.png").is_file()
    rc = main(["heatmap", str(image), "--mask", str(mask), "--step", "16", "--out", str(tmp_path / "h.csv"), *common])
    assert rc == 0 and (tmp_path / "h.csv").read_text().startswith("x,y,dice")
    # The regressor's own training image: refused by evolve and heatmap alike, unless asked for on purpose.
    seen, seen_mask = phantoms / "images" / f"{train_id}.png", phantoms / "masks" / "left_lung" / f"{train_id}.png"
    capsys.readouterr()
    for argv in (["evolve", str(seen), "--click", x, y, "--steps", "1", "--out", str(tmp_path / "seen")],
                 ["heatmap", str(seen), "--step", "32", "--out", str(tmp_path / "seen.csv")]):  # fmt: skip
        rc = main([*argv, "--regressor", str(out / "regressor.pt"), "--mask", str(seen_mask), *common])
        err = capsys.readouterr().err
        assert rc == 2 and f"1 test image(s) were among its training or validation images: {train_id}" in err
        assert main([*argv, "--regressor", str(out / "regressor.pt"), "--mask", str(seen_mask), *common,
                     "--allow-foreign-regressor"]) == 0  # fmt: skip
    assert "among its training" in json.loads((tmp_path / "seen" / f"{train_id}_evolution.json").read_text())[
        "regressor_foreign"][0]  # fmt: skip
    # Without --mask nothing is measured: evolved, with a warning naming the image it learned from; a new image, none.
    evolve = ["evolve", "--click", x, y, "--steps", "1", "--regressor", str(out / "regressor.pt"), *common]
    assert main([*evolve, str(seen), "--out", str(tmp_path / "seen_nomask")]) == 0
    err = capsys.readouterr().err
    assert f"the image is among the regressor's training or validation images ({train_id})" in err, err
    assert main([*evolve, str(image), "--out", str(tmp_path / "new_nomask")]) == 0
    assert "training or validation images" not in capsys.readouterr().err
    # A regressor for another structure: refused (the structure read from masks/<structure>/, or --structure).
    other = phantoms / "masks" / "right_lung" / f"{test_id}.png"
    for argv in (["--mask", str(other)], ["--mask", str(mask), "--structure", "right_lung"]):
        rc = main(["heatmap", str(image), "--step", "32", "--out", str(tmp_path / "o.csv"), "--regressor",
                   str(out / "regressor.pt"), *argv, *common])  # fmt: skip
        assert rc == 2 and "trained with structure 'left_lung' but is used with structure 'right_lung'" in (
            capsys.readouterr().err)  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        ("evolve {img} --click 500 5 --regressor {reg} --out {o}", "outside the 128x128 image"),
        ("evolve {missing} --click 5 5 --regressor {reg} --out {o}", "no such file"),
        ("evolve {img} --click 5 5 --regressor {missing} --out {o}", "no such file"),
        ("heatmap {img} --mask {small} --out {o}/h.csv", "masks must have the image's size"),
        ("heatmap {img} --mask {empty} --out {o}/h.csv", "empty"),
        ("run {data} --out {o} --structure heart", "structure 'heart'"),
        ("download vit_x", "unknown model"),
    ],
)
def test_cli_bad_input_gives_one_clear_line(phantoms, tiny_checkpoint, tmp_path, capsys, argv, message):
    write_png(tmp_path / "small.png", np.ones((64, 64), bool))
    write_png(tmp_path / "empty.png", np.zeros((128, 128), bool))
    reg = tmp_path / "reg.pt"
    save_regressor(SegmentationRegressor(32), reg)
    paths = {
        "img": phantoms / "images" / "phantom_0001.png", "reg": reg, "missing": tmp_path / "missing.png",
        "small": tmp_path / "small.png", "empty": tmp_path / "empty.png", "data": phantoms, "o": tmp_path / "o",
    }  # fmt: skip
    args = argv.format(**paths).split()
    if args[0] != "download":
        args += ["--model", "tiny", "--checkpoint", str(tiny_checkpoint)]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written on failure


def test_cli_rejects_parameters_of_the_wrong_type(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "DATA", "--out", "O", "--steps", "ten"])
    assert exc.value.code == 2 and "not a whole number" in capsys.readouterr().err


def test_stages_share_one_split_and_a_new_split_is_not_made_under_results(phantoms, tmp_path):
    from sampot_lib.data.folder import FolderDataset
    from sampot_lib.experiment.runfolder import RunFolder
    from sampot_lib.experiment.setup import prepare_splits

    dataset = FolderDataset(phantoms)
    config = ExperimentConfig(data=str(phantoms), out=str(tmp_path), seed=0)
    first = prepare_splits(config, dataset)
    assert prepare_splits(config, dataset) == first
    # Without results, another seed may remake the split ...
    config.seed = 1
    second = prepare_splits(config, dataset)
    assert json.loads((tmp_path / "splits.json").read_text())["seed"] == 1 and second != first
    # ... but not while a result made on it exists: refused, saying what to do, and splits.json is untouched.
    folder = RunFolder(tmp_path)
    folder.begin("train", {"x": 1}, RunFolder(tmp_path).entry("split")["split_hash"], {})
    (tmp_path / "regressor.pt").write_bytes(b"weights")
    folder.finish("train", ["regressor.pt"])
    config.seed = 2
    with pytest.raises(SampotError, match=r"holds results made on another split \(regressor.pt\).*new --out.*--force"):
        prepare_splits(config, dataset)
    assert json.loads((tmp_path / "splits.json").read_text())["seed"] == 1
    third = prepare_splits(config, dataset, force=True)  # --force: the results go, the new split is made
    assert not (tmp_path / "regressor.pt").exists() and json.loads((tmp_path / "splits.json").read_text())["seed"] == 2
    assert third != second


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"epochs": "ten"}, "parameter 'epochs' must be int, got 'ten'"),
        ({"steps": 2.5}, "parameter 'steps' must be int"),
        ({"seed": True}, "parameter 'seed' must be int"),
        ({"lr": "fast"}, "parameter 'lr' must be float"),
        ({"checkpoint": 3}, "parameter 'checkpoint' must be str or None"),
        ({"mask_output": 7}, "parameter 'mask_output' must be best"),
    ],
)
def test_parameters_of_the_wrong_type_are_named(bad, message):
    with pytest.raises(SampotError, match=message):
        ExperimentConfig(data="d", out="o", **bad)
    ok = ExperimentConfig(data="d", out="o", lr=10, max_images=None)  # an int where a float is wanted is fine
    assert ok.lr == 10.0 and isinstance(ok.lr, float)


def test_a_run_into_a_folder_with_results_of_other_settings_needs_force(phantoms, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", str(phantoms), "--out", str(out), "--max-images", "3", "--epochs", "1", "--regressor-size", "32",
            "--model", "tiny", "--checkpoint", str(tiny_checkpoint)]  # fmt: skip
    assert main([*argv, "--steps", "2"]) == 0
    before = (out / "evolution.csv").read_bytes()
    capsys.readouterr()
    for extra in ([], ["--resume"]):
        assert main([*argv, "--steps", "3", *extra]) == 2
        err = capsys.readouterr().err
        assert f"{out} holds results made with other settings: {out}: stage 'evolve' (steps 2 -> 3)" in err
        assert "add --force to replace them" in err
    assert (out / "evolution.csv").read_bytes() == before  # nothing replaced
    assert main([*argv, "--steps", "2", "--resume"]) == 0  # the same settings: no --force needed
    assert main([*argv, "--steps", "3", "--force"]) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["steps"] == 3


def test_a_run_folder_is_resumed_by_what_its_paths_point_to_not_how_they_are_written(
    phantoms, tiny_checkpoint, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    common = ["--max-images", "3", "--epochs", "1", "--steps", "2", "--regressor-size", "32", "--model", "tiny",
              "--checkpoint", str(tiny_checkpoint), "--seeds", "0", "1"]  # fmt: skip
    assert main(["run", str(phantoms), "--out", "run", *common]) == 0
    made = {p: p.read_bytes() for p in sorted((tmp_path / "run").glob("seed_*/*.csv"))}
    assert len(made) >= 6
    capsys.readouterr()
    # The data with a trailing slash, the folder by its absolute path, then a copy of the folder: nothing is redone.
    copy = tmp_path / "copy"
    for data, out in ((f"{phantoms}/", str(tmp_path / "run")), (str(phantoms), "copy")):
        if out == "copy":
            shutil.copytree(tmp_path / "run", copy)
        assert main(["run", data, "--out", out, *common, "--resume"]) == 0
        err = capsys.readouterr().err
        assert "redoing" not in err and "other settings" not in err, err
    assert {p: p.read_bytes() for p in sorted((tmp_path / "run").glob("seed_*/*.csv"))} == made
    assert (copy / "seed_1" / "evolution.csv").read_bytes() == made[tmp_path / "run" / "seed_1" / "evolution.csv"]


def test_one_seed_and_several_seeds_never_replace_each_others_summary_without_force(
    phantoms, tiny_checkpoint, tmp_path, capsys
):
    common = ["--max-images", "3", "--epochs", "1", "--steps", "2", "--regressor-size", "32", "--model", "tiny",
              "--checkpoint", str(tiny_checkpoint)]  # fmt: skip
    several, one = tmp_path / "several", tmp_path / "one"
    assert main(["run", str(phantoms), "--out", str(several), *common, "--seeds", "0", "1"]) == 0
    assert main(["run", str(phantoms), "--out", str(one), *common]) == 0
    summaries = {several: (several / "summary.json").read_bytes(), one: (one / "summary.json").read_bytes()}
    capsys.readouterr()
    assert main(["run", str(phantoms), "--out", str(several), *common, "--resume"]) == 2
    assert f"{several}: the summary over seeds [0, 1] (this run: seed 0 alone)" in capsys.readouterr().err
    assert main(["run", str(phantoms), "--out", str(one), *common, "--seeds", "0", "1", "--resume"]) == 2
    assert f"{one}: the results of seed 0 alone (this run: seeds [0, 1])" in capsys.readouterr().err
    assert {k: (k / "summary.json").read_bytes() for k in summaries} == summaries
    assert main(["run", str(phantoms), "--out", str(one), *common, "--seeds", "0", "1", "--force"]) == 0
    assert json.loads((one / "summary.json").read_text())["seeds"] == [0, 1]


def test_training_a_regressor_over_one_trained_with_other_settings_needs_force(phantoms, tiny_checkpoint, tmp_path,
                                                                               capsys):  # fmt: skip
    out = tmp_path / "run"
    argv = ["train-regressor", str(phantoms), "--out", str(out), "--max-images", "3", "--regressor-size", "32",
            "--model", "tiny", "--checkpoint", str(tiny_checkpoint)]  # fmt: skip
    assert main([*argv, "--epochs", "1"]) == 0
    before = (out / "regressor.pt").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--epochs", "2"]) == 2
    assert f"{out}: stage 'train' (epochs 1 -> 2)" in capsys.readouterr().err
    assert (out / "regressor.pt").read_bytes() == before
    assert main([*argv, "--epochs", "2", "--force"]) == 0 and (out / "regressor.pt").read_bytes() != before
