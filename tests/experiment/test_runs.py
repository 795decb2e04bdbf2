"""The run folder (lock, manifest, resume, split rule), the regressor's provenance, presets and multi-seed summaries.

Small phantoms and the toy SAM keep every end-to-end test to a few seconds.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from data_fixtures import make_folder
from filelock import FileLock
from PIL import Image

from sampot_lib import SampotError
from sampot_lib.cli.checks import check_args
from sampot_lib.cli.experiment import _config
from sampot_lib.cli.main import build_parser, main
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.data.splits import save_splits
from sampot_lib.defaults import OPTIMIZERS
from sampot_lib.experiment import evolution as evolution_module
from sampot_lib.experiment import stages as pipeline_module
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.evolution import evolve_stage
from sampot_lib.experiment.presets import apply_preset, differs_from_paper
from sampot_lib.experiment.provenance import mask_hashes
from sampot_lib.experiment.records import read_json, write_json
from sampot_lib.experiment.runfolder import LOCK, OWNER, RunFolder
from sampot_lib.experiment.runner import run_experiment
from sampot_lib.experiment.stages import evaluate_stage, train_regressor_stage
from sampot_lib.experiment.summary import summarise_seeds
from sampot_lib.method.prompts import Safeguards
from sampot_lib.method.regressor import load_regressor, save_regressor
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.method.training_set import regressor_samples


@pytest.fixture(scope="module")
def other_phantoms(tmp_path_factory):
    return write_phantom_set(tmp_path_factory.mktemp("data2") / "other", 12, seed=7, size=128)


def _config_for(data, out, ckpt, **kw) -> ExperimentConfig:
    base = dict(data=str(data), out=str(out), model="tiny", checkpoint=str(ckpt), n_synthetic=4, n_outside=2,
                regressor_size=32, epochs=2, steps=2, max_images=3)  # fmt: skip
    return ExperimentConfig(**(base | kw))


@pytest.fixture
def count_training(monkeypatch):
    """How often the regressor is fitted (the pipeline's fit_regressor, wrapped)."""
    calls = []
    real = pipeline_module.fit_regressor

    def counted(*args, **kwargs):
        calls.append(kwargs.get("epochs"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "fit_regressor", counted)
    return calls


def _edit_manifest(out, edit) -> None:
    path = out / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc["stages"])
    path.write_text(json.dumps(doc))


# -- lock ---------------------------------------------------------------------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused_before_any_work(phantoms, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    held = FileLock(str(out / LOCK))  # another process's run, as the OS sees it: the lock file held
    held.acquire()
    (out / OWNER).write_text(json.dumps({"pid": 4242, "host": "box", "started": "t0", "command": "sampot run X"}))
    try:
        rc = main(["run", str(phantoms), "--out", str(out), "--model", "tiny", "--checkpoint", str(tiny_checkpoint),
                   "--max-images", "3", "--epochs", "1", "--regressor-size", "32"])  # fmt: skip
        err = capsys.readouterr().err
        assert rc == 2 and "another sampot run is writing to" in err and "pid 4242" in err and "Traceback" not in err
        assert sorted(p.name for p in out.iterdir()) == sorted([LOCK, OWNER])  # nothing written
        with pytest.raises(SampotError, match="another sampot run"):
            train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    finally:
        held.release()
    # once the first run is gone, the folder is free again
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    assert (out / "regressor.pt").is_file() and not (out / OWNER).exists()


# -- manifest: interrupted and mixed folders ---------------------------------------------------------------------


def test_interrupted_and_mixed_folders_are_detected_and_named(phantoms, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    config = _config_for(phantoms, out, tiny_checkpoint)
    train_regressor_stage(config, progress=False)
    folder = RunFolder(out)
    assert folder.problems() == []
    entry = folder.entry("train")
    assert entry["status"] == "done" and set(entry["outputs"]) == {"regressor.pt", "regressor_history.csv"}

    # 1. The training stage was interrupted (its finished marker gone, its process dead).
    _edit_manifest(out, lambda st: st["train"].update(status="running", pid=-1))
    assert any("stage 'train' was interrupted" in p for p in folder.problems())
    with pytest.raises(SampotError, match="stage 'train' was interrupted"):
        evaluate_stage(config, progress=False)
    _edit_manifest(out, lambda st: st["train"].update(status="done"))

    # 2. The stage's output was written by a run with other settings (its recorded settings hash differs).
    _edit_manifest(out, lambda st: st["train"].update(settings={**st["train"]["settings"], "epochs": 99},
                                                      settings_hash="0" * 64))  # fmt: skip
    with pytest.raises(SampotError, match=r"stage 'train' was made with other settings \(epochs 99 -> 2\)"):
        evaluate_stage(config, progress=False)

    # 3. regressor.pt replaced behind the manifest's back (another run, a copy).
    train_regressor_stage(config, progress=False)
    save_regressor(load_regressor(out / "regressor.pt")[0], out / "regressor.pt", {"model": "tiny"})
    assert any("regressor.pt changed after stage 'train' wrote it" in p for p in folder.problems())
    with pytest.raises(SampotError, match="regressor.pt changed after stage 'train' wrote it"):
        evolve_stage(config, progress=False)


def test_a_damaged_manifest_is_named_and_force_starts_over(phantoms, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    config = _config_for(phantoms, out, tiny_checkpoint)
    train_regressor_stage(config, progress=False)  # a finished stage, so splits.json and the results exist
    (out / "manifest.json").write_text('{"format": "sampot-manif')
    with pytest.raises(SampotError, match=r"manifest.json: the run manifest is damaged .*--force to start this folder"):
        train_regressor_stage(config, progress=False, resume=True)
    train_regressor_stage(config, progress=False, force=True)  # once is enough
    assert RunFolder(out).entry("train")["status"] == "done" and RunFolder(out).entry("split")["status"] == "done"
    assert (out / "splits.json").is_file() and not RunFolder(out).problems()


def test_redoing_the_training_marks_later_results_stale(phantoms, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    assert RunFolder(out).problems() == []
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, epochs=3), progress=False)
    problems = " | ".join(RunFolder(out).problems())
    assert "stage 'evaluate' is stale" in problems and "stage 'evolve' is stale" in problems


def test_a_split_recorded_again_keeps_what_was_made_on_it_and_another_split_makes_it_stale(tmp_path):
    folder = RunFolder(tmp_path)
    with folder.locked():
        (tmp_path / "splits.json").write_text("{}")
        folder.record("split", {"seed": 0}, "A", {}, ["splits.json"])
        folder.record("train", {"epochs": 2}, "A", {}, [])
        folder.record("split", {"seed": 0}, "A", {}, ["splits.json"])  # the same split's file written again
        assert folder.entry("train")["status"] == "done" and folder.problems() == []
        folder.record("split", {"seed": 1}, "B", {}, ["splits.json"])
        assert folder.entry("train")["status"] == "stale"
        assert any("stage 'train' is stale" in p for p in folder.problems())


# -- resume --------------------------------------------------------------------------------------------------------


def test_resume_reuses_finished_stages_and_redoes_what_changed(phantoms, tiny_checkpoint, tmp_path, count_training):
    out = tmp_path / "run"
    first = run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    assert len(count_training) == 1
    again = run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=False, resume=True)
    assert len(count_training) == 1 and again == first  # nothing redone: the same results, read back
    # Another number of evolution steps: the regressor is reused, the evolution redone.
    more_steps = run_experiment(_config_for(phantoms, out, tiny_checkpoint, steps=3), progress=False, resume=True)
    assert len(count_training) == 1 and more_steps["config"]["steps"] == 3
    trajectories = read_json(out / "trajectories.json")
    assert all(len(t["trajectory"]) == 4 for t in trajectories.values())  # steps 0..3: redone with the new steps
    # Another number of epochs: the regressor's inputs changed, so it is trained again.
    run_experiment(_config_for(phantoms, out, tiny_checkpoint, epochs=3), progress=False, resume=True)
    assert count_training == [2, 3]
    # Without --resume a run starts afresh.
    run_experiment(_config_for(phantoms, out, tiny_checkpoint, epochs=3), progress=False)
    assert count_training == [2, 3, 3]
    assert RunFolder(out).problems() == []


def test_resume_says_once_what_is_missing_and_what_it_redoes(phantoms, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "run"
    run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    (out / "regressor.pt").unlink()
    run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=True, resume=True)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert sum("regressor.pt (written by stage 'train') is missing" in n for n in notes) == 1, notes
    assert sum("stage 'evaluate' is stale" in n for n in notes) == 1, notes
    assert sum("stage 'evolve' is stale" in n for n in notes) == 1, notes
    # Without --resume the folder's problems are said up front, as every stage is redone.
    (out / "regressor.pt").unlink()
    run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=True)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert any("is missing; every stage is redone" in n for n in notes), notes


def test_a_run_whose_own_split_no_longer_fits_the_data_sets_subjects_is_started_over_only_with_force(
    phantoms, tiny_checkpoint, tmp_path
):
    data = tmp_path / "set"
    shutil.copytree(phantoms, data)
    ids = FolderDataset(data).ids
    out = tmp_path / "run"
    run_experiment(_config_for(data, out, tiny_checkpoint), progress=False)
    made = json.loads((out / "splits.json").read_text())["splits"]
    # the manifest now says a training image and a test image are one patient's
    together = {made["train"][0], made["test"][0]}
    (data / "manifest.csv").write_text("id,subject\n" + "".join(f"{i},{'P' if i in together else i}\n" for i in ids))
    with pytest.raises(SampotError, match=r"the split this run made no longer fits the data set, which changed since "
                                          r"\(.*subject 'P'.*\)\. Add --force to start"):  # fmt: skip
        run_experiment(_config_for(data, out, tiny_checkpoint), progress=False, resume=True)
    run_experiment(_config_for(data, out, tiny_checkpoint), progress=False, force=True)
    parts = json.loads((out / "splits.json").read_text())["splits"]
    assert len({part for part, part_ids in parts.items() for i in part_ids if i in together}) == 1, parts


def test_a_split_file_whose_ids_change_order_is_another_split(phantoms, tiny_checkpoint, tmp_path):
    """The order of a split's ids decides which images --max-images keeps: a resumed run on the same ids in another
    order evolves the images the new order puts first, not the old ones read back."""
    out = tmp_path / "run"
    first = run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    splits = json.loads((out / "splits.json").read_text())["splits"]
    assert len(splits["test"]) > 3
    mine = tmp_path / "mine.json"
    reordered = splits | {"test": splits["test"][::-1]}
    save_splits(mine, reordered, seed=0, fractions=[0.6, 0.2, 0.2])
    with pytest.raises(SampotError, match="results made on another split"):
        run_experiment(_config_for(phantoms, out, tiny_checkpoint, split_file=str(mine)), progress=False, resume=True)
    again = run_experiment(_config_for(phantoms, out, tiny_checkpoint, split_file=str(mine)), progress=False,
                           resume=True, force=True)  # fmt: skip
    with open(out / "evolution.csv", newline="") as f:
        evolved = list(dict.fromkeys(row["image_id"] for row in csv.DictReader(f)))
    assert evolved == reordered["test"][:3] != splits["test"][:3]
    assert again["on"]["n"] == first["on"]["n"] == 3


def test_resume_redoes_the_evolution_when_any_setting_it_uses_changes(phantoms, tiny_checkpoint, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    evolved = []
    real = evolution_module._evolve_image

    def counted(image_id, **kwargs):
        evolved.append(image_id)
        return real(image_id, **kwargs)

    monkeypatch.setattr(evolution_module, "_evolve_image", counted)
    out = tmp_path / "run"
    run_experiment(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    changes = {"steps": 3, "patience": 1, "min_gain": 0.01, "lr": 4.0, "optimizer": "random",
               "safeguards": {**Safeguards().__dict__, "trust_radius": 0.2},
               "scorers": ["regressor", "oracle"]}  # fmt: skip
    settings = {}
    for key, value in changes.items():  # one more setting changed at each step
        settings[key] = value
        evolved.clear()
        run_experiment(_config_for(phantoms, out, tiny_checkpoint, **settings), progress=False, resume=True)
        assert len(evolved) == 3, f"{key} changed, yet the evolution was reused"
        evolved.clear()
        run_experiment(_config_for(phantoms, out, tiny_checkpoint, **settings), progress=False, resume=True)
        assert evolved == [], f"nothing changed after {key}, yet the evolution was redone"


def _fit_regressor_calls(monkeypatch, argument: str) -> list:
    """The value of ``argument`` in every fit_regressor call the training stage makes from now on."""
    seen = []
    real = pipeline_module.fit_regressor

    def spy(*args, **kwargs):
        seen.append(kwargs[argument])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "fit_regressor", spy)
    return seen


def test_the_training_stage_fits_with_the_configs_learning_rate_schedule(phantoms, tiny_checkpoint, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    schedules = _fit_regressor_calls(monkeypatch, "lr_schedule")
    out = tmp_path / "run"
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, epochs=2), progress=False)
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, epochs=2), progress=False, resume=True)
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, epochs=2, regressor_schedule="plateau"),
                          progress=False, resume=True)  # fmt: skip
    assert schedules == ["constant", "plateau"]  # the same settings reused, another schedule trained again
    with open(out / "regressor_history.csv") as f:
        assert [float(row["lr"]) for row in csv.DictReader(f)] == [1e-3, 1e-3]


def test_the_training_stage_fits_and_records_the_configs_precision(phantoms, tiny_checkpoint, tmp_path, monkeypatch):
    precisions = _fit_regressor_calls(monkeypatch, "precision")
    out = tmp_path / "run"
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, epochs=1), progress=False)
    assert load_regressor(out / "regressor.pt")[1]["training_precision"] == "float32"
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, epochs=1, regressor_precision="bfloat16"),
                          progress=False, resume=True)  # fmt: skip
    assert precisions == ["float32", "bfloat16"]  # another precision is another training
    assert load_regressor(out / "regressor.pt")[1]["training_precision"] == "bfloat16"


def test_resume_retrains_on_the_kept_training_set_when_only_the_fitting_changed(
    phantoms, tiny_checkpoint, tmp_path, count_training, monkeypatch
):
    """Another epoch count or patience retrains from regressor_set.npz; another set setting, a damaged file, or a run
    without --resume makes the set again."""
    built = []
    real = pipeline_module.regressor_samples

    def counted(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "regressor_samples", counted)
    out = tmp_path / "run"
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    assert len(built) == 2 and (out / "regressor_set.npz").is_file()  # train and val, kept
    first = load_regressor(out / "regressor.pt")[1]
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, epochs=3, regressor_patience=1), progress=False,
                          resume=True)  # fmt: skip
    assert len(built) == 2 and count_training == [2, 3]  # refitted on the same masks
    again = load_regressor(out / "regressor.pt")[1]
    assert (again["n_train"], again["n_val"]) == (first["n_train"], first["n_val"])
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint, n_synthetic=3), progress=False, resume=True)
    assert len(built) == 4  # another number of synthetic masks: a new set
    (out / "regressor_set.npz").write_bytes(b"not a zip")
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint), progress=False, resume=True)
    assert len(built) == 6
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    assert len(built) == 8  # without --resume everything is made again


def test_resume_redoes_what_an_edited_image_or_mask_feeds(tmp_path, tiny_checkpoint, count_training, capsys):
    data = write_phantom_set(tmp_path / "data", 12, seed=1, size=128)
    out = tmp_path / "run"
    config = _config_for(data, out, tiny_checkpoint)
    run_experiment(config, progress=False)
    splits = json.loads((out / "splits.json").read_text())["splits"]
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.*")}
    # A test image edited in place (same name and size): evaluation and evolution are redone, training is not.
    test_image = FolderDataset(data).image_path(splits["test"][0])
    pixels = np.array(Image.open(test_image))
    Image.fromarray(255 - pixels).save(test_image)
    run_experiment(config, progress=True, resume=True)
    assert len(count_training) == 1
    said = capsys.readouterr().err
    assert "stage 'evaluate' was made from other inputs (data:test images changed); redoing it." in said
    assert "stage 'evolve'" in said and "stage 'train'" not in said
    second = {p.name: p.stat().st_mtime_ns for p in out.glob("*.*")}
    assert second["regressor.pt"] == first["regressor.pt"] and second["evolution.csv"] != first["evolution.csv"]
    # A training mask edited in place: the regressor is trained again.
    mask = FolderDataset(data).mask_path(splits["train"][0], "left_lung")
    Image.fromarray(np.array(Image.open(mask))[::-1].copy()).save(mask)
    run_experiment(config, progress=True, resume=True)
    assert len(count_training) == 2
    said = capsys.readouterr().err
    assert "stage 'train' was made from other inputs (data:train+val masks changed); redoing it." in said


def test_resume_redoes_an_interrupted_stage(phantoms, tiny_checkpoint, tmp_path, count_training):
    out = tmp_path / "run"
    config = _config_for(phantoms, out, tiny_checkpoint)
    train_regressor_stage(config, progress=False)
    _edit_manifest(out, lambda st: st["train"].update(status="running", pid=-1))
    train_regressor_stage(config, progress=False, resume=True)
    assert len(count_training) == 2 and RunFolder(out).entry("train")["status"] == "done"


# -- provenance and foreign regressors ------------------------------------------------------------------------------


def test_regressor_file_records_what_it_learned_from(phantoms, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    config = _config_for(phantoms, out, tiny_checkpoint)
    train_regressor_stage(config, progress=False)
    _, meta = load_regressor(out / "regressor.pt")
    splits = json.loads((out / "splits.json").read_text())["splits"]
    dataset = FolderDataset(phantoms)
    assert meta["train_masks"] == mask_hashes(dataset, splits["train"][:3], "left_lung")
    assert meta["n_train_ids"] == 3 and meta["n_val_ids"] == len(splits["val"][:3])
    assert meta["split_hash"] == RunFolder(out).entry("split")["split_hash"]
    assert {k: meta[k] for k in ("model", "structure", "prompt", "input_size", "sharpness", "seed", "checkpoint")} == {
        "model": "tiny", "structure": "left_lung", "prompt": "click", "input_size": 32, "sharpness": 5.0, "seed": 0,
        "checkpoint": "tiny.pth",
    }  # fmt: skip
    assert meta["mask_output"] == "best" and len(meta["data_identity"]) == 64 and meta["sampot_version"]


def test_check_regressor_names_both_values_or_returns_warnings():
    meta = {"model": "vit_b", "mask_output": "best", "structure": "left_lung", "prompt": "click", "sharpness": 5.0,
            "input_size": 128, "data": "jsrt", "train_masks": {"a": "h1"}, "val_masks": {"b": "h2"}}  # fmt: skip
    same = {"model": "vit_b", "mask_output": "best", "structure": "left_lung", "prompt": "click", "sharpness": 5,
            "input_size": 128, "test_masks": {"c": "h3"}}  # fmt: skip
    assert check_regressor(meta, same) == []
    for key, value in [("model", "sam_nano"), ("mask_output", "single"), ("structure", "heart"), ("prompt", "box"),
                       ("sharpness", 3.0), ("input_size", 64)]:  # fmt: skip
        with pytest.raises(SampotError, match=rf"trained with {key} {meta[key]!r} but is used with {key} {value!r}"):
            check_regressor(meta, same | {key: value})
        notes = check_regressor(meta, same | {key: value}, allow_foreign=True)
        assert len(notes) == 1 and key in notes[0]
    # A test image among its training images, also under another name (same mask file bytes).
    with pytest.raises(SampotError, match=r"2 test image\(s\) were among its training or validation images: a, x"):
        check_regressor(meta, same | {"test_masks": {"a": "h1", "x": "h2"}})
    # An older file without a record: warnings, never an error.
    assert all("records no" in w for w in check_regressor({}, same))


def test_evaluation_refuses_a_regressor_trained_for_other_settings(phantoms, tiny_checkpoint, tmp_path):
    out = tmp_path / "run"
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint), progress=False)
    for change, message in [({"structure": "right_lung"}, "structure 'left_lung' -> 'right_lung'"),
                            ({"prompt": "box"}, "prompt 'click' -> 'box'"),
                            ({"sharpness": 3.0}, "sharpness 5.0 -> 3.0")]:  # fmt: skip
        with pytest.raises(SampotError, match=message):
            evaluate_stage(_config_for(phantoms, out, tiny_checkpoint, **change), progress=False)
    assert not (out / "regressor_eval.csv").exists()


def test_a_regressor_trained_on_the_test_images_is_refused_and_recorded_when_foreign(
    phantoms, tiny_checkpoint, tmp_path
):
    out = tmp_path / "run"
    config = _config_for(phantoms, out, tiny_checkpoint)
    train_regressor_stage(config, progress=False)
    regressor, meta = load_regressor(out / "regressor.pt")
    test_ids = json.loads((out / "splits.json").read_text())["splits"]["test"][:3]
    leaked = meta | {"train_masks": meta["train_masks"] | mask_hashes(FolderDataset(phantoms), test_ids[:1],
                                                                       "left_lung")}  # fmt: skip
    save_regressor(regressor, out / "regressor.pt", leaked)
    # the manifest agrees with the file (as if this sampot had trained it): only its record can tell
    _edit_manifest(out, lambda st: st["train"]["outputs"].update({"regressor.pt": _sha(out / "regressor.pt")}))
    with pytest.raises(SampotError, match=rf"1 test image\(s\) were among its training.*{test_ids[0]}"):
        evaluate_stage(config, progress=False)
    with pytest.raises(SampotError, match="were among its training"):
        evolve_stage(config, progress=False)
    # Passed as a regressor from elsewhere: refused all the same.
    with pytest.raises(SampotError, match="were among its training.*--allow-foreign-regressor"):
        run_experiment(_config_for(phantoms, tmp_path / "passed", tiny_checkpoint, regressor=str(out / "regressor.pt")),
                       progress=False)  # fmt: skip
    # ... and with force into a folder of results, refused before anything there is removed
    kept = tmp_path / "kept"
    run_experiment(_config_for(phantoms, kept, tiny_checkpoint), progress=False)
    before = {p.name: _sha(p) for p in kept.iterdir() if p.is_file()}
    with pytest.raises(SampotError, match="were among its training"):
        run_experiment(_config_for(phantoms, kept, tiny_checkpoint, regressor=str(out / "regressor.pt")),
                       progress=False, force=True)  # fmt: skip
    assert {p.name: _sha(p) for p in kept.iterdir() if p.is_file()} == before
    # Asked for on purpose (--allow-foreign-regressor): accepted, and the results say so.
    summary = run_experiment(_config_for(phantoms, tmp_path / "foreign", tiny_checkpoint, allow_foreign_regressor=True,
                                         regressor=str(out / "regressor.pt")), progress=False)  # fmt: skip
    assert any("were among its training" in n for n in summary["regressor_foreign"])
    assert summary["regressor_foreign"] == json.loads((tmp_path / "foreign" / "summary.json").read_text())[
        "regressor_foreign"]  # fmt: skip


def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sampot_evolve_refuses_a_regressor_for_another_model_or_sharpness(phantoms, tiny_checkpoint, tmp_path,
                                                                          capsys):  # fmt: skip
    out = tmp_path / "run"
    train_regressor_stage(_config_for(phantoms, out, tiny_checkpoint), progress=False)  # trained on "tiny"
    image = phantoms / "images" / "phantom_0000.png"
    base = ["evolve", str(image), "--click", "85", "60", "--regressor", str(out / "regressor.pt"), "--steps", "1"]
    rc = main([*base, "--out", str(tmp_path / "a"), "--model", "sam_nano"])
    err = capsys.readouterr().err
    assert rc == 2 and "trained with model 'tiny' but is used with model 'sam_nano'" in err
    rc = main([*base, "--out", str(tmp_path / "b"), "--model", "sam_nano", "--sharpness", "3"])
    assert rc == 2 and "model 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_run_with_a_foreign_regressor_skips_training_and_names_both_data_sets(
    phantoms, other_phantoms, tiny_checkpoint, tmp_path, count_training, capsys
):
    first = tmp_path / "first"
    train_regressor_stage(_config_for(phantoms, first, tiny_checkpoint), progress=False)
    assert len(count_training) == 1
    out = tmp_path / "new"
    argv = ["run", str(other_phantoms), "--out", str(out), "--regressor", str(first / "regressor.pt"),
            "--sharpness", "4", "--model", "tiny", "--checkpoint", str(tiny_checkpoint), "--max-images", "3",
            "--steps", "2", "--regressor-size", "32"]  # fmt: skip
    assert main(argv) == 2  # a regressor for another sharpness: refused unless asked for on purpose
    err = capsys.readouterr().err
    assert "trained with sharpness 5.0 but is used with sharpness 4.0" in err and "--allow-foreign-regressor" in err
    assert not (out / "summary.json").exists()
    rc = main([*argv, "--allow-foreign-regressor"])
    printed = capsys.readouterr().out
    assert rc == 0 and len(count_training) == 1 and not (out / "regressor.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"] == str(other_phantoms) and summary["regressor_origin"]["data"] == str(phantoms)
    assert summary["regressor_foreign"] == [
        "foreign regressor: it was trained with sharpness 5.0 but is used with sharpness 4.0 (the sigmoid sharpness)"
    ]
    assert f"trained on {phantoms}" in printed and f"applied to {other_phantoms}" in printed
    assert "sharpness 5.0" in printed
    assert json.loads((out / "config.json").read_text())["allow_foreign_regressor"] is True


# -- presets -------------------------------------------------------------------------------------------------------


def test_paper_preset_sets_the_papers_values_and_names_what_differs():
    config = apply_preset("paper", data="d", out="o")
    assert config.safeguards["trust_radius"] is None and config.safeguards["min_overlap"] is None
    assert config.safeguards["max_area_ratio"] is None and config.safeguards["keep_in_image"] is True
    assert (config.epochs, config.max_images, config.steps, config.lr, config.sharpness) == (200, None, 30, 10.0, 5.0)
    assert config.split_fractions == [41.0, 28.0, 53.0] and config.batch_size == 32 and config.regressor_lr == 1e-3
    assert config.preset == "paper"
    stopping = ["regressor_patience: 20 epochs without a lower validation loss end training (paper: all epochs; "
                "--regressor-patience 0 trains them all)",
                "patience: 5 steps without a rise end evolution (paper: every step; --patience 0 takes them "
                "all)"]  # fmt: skip
    assert differs_from_paper(config) == ["model: sam_nano (paper: vit_b)", *stopping]
    faithful = apply_preset("paper", data="d", out="o", model="vit_b", regressor_patience=0, patience=0)
    assert differs_from_paper(faithful) == []
    quick = apply_preset("paper", data="d", out="o", model="vit_b", epochs=5, max_images=8)
    assert differs_from_paper(quick) == ["epochs: 5 (paper: 200)", "max_images: 8 per split (paper: all images)",
                                         *stopping]  # fmt: skip
    assert any(line.startswith("safeguards: on") for line in differs_from_paper(ExperimentConfig(data="d", out="o")))
    # what `train-regressor` lists: the settings its regressor depends on, not the safeguards or evolution's patience
    own = ExperimentConfig(data="d", out="o", split_file="s.json", epochs=5)
    training = differs_from_paper(own, ("train",))
    assert training == [line for line in differs_from_paper(own) if not line.startswith(("safeguards", "patience"))]
    assert (
        "epochs: 5 (paper: 200)" in training and "split: from s.json (paper: its own 41 / 28 / 53 subjects)" in training
    )
    assert any(line.startswith("patience") for line in differs_from_paper(own, ("evolve",)))
    plateau = apply_preset("paper", data="d", out="o", model="vit_b", regressor_patience=0, patience=0,
                           regressor_schedule="plateau")  # fmt: skip
    decay = "regressor_schedule: plateau (learning rate times 0.5 after 5 epochs without a lower validation loss)"
    assert differs_from_paper(plateau) == [f"{decay} (paper: one rate)"]
    bf16 = apply_preset("paper", data="d", out="o", model="vit_b", regressor_patience=0, patience=0,
                        regressor_precision="bfloat16")  # fmt: skip
    assert differs_from_paper(bf16) == ["regressor_precision: bfloat16 forward passes in training (paper: float32)"]


def test_cli_preset_gives_way_to_typed_options():
    parser = build_parser()

    def config(*extra):
        return _config(parser.parse_args(["run", "D", "--out", "O", *extra]))

    paper = config("--preset", "paper")
    assert paper.safeguards == apply_preset("paper", data="D", out="O").safeguards and paper.preset == "paper"
    assert config().safeguards["trust_radius"] == 0.15  # no preset: the library's safeguards
    typed = config("--preset", "paper", "--epochs", "7", "--trust-radius", "0.2", "--max-images", "4")
    assert typed.epochs == 7 and typed.max_images == 4 and typed.safeguards["trust_radius"] == 0.2
    assert type(typed.epochs) is int and type(paper.lr) is float
    assert paper.regressor_precision == "float32"
    assert config("--preset", "paper", "--regressor-precision", "bfloat16").regressor_precision == "bfloat16"


def test_cli_preset_survives_the_checks_of_the_command_line(tmp_path):
    """`sampot run --preset paper` checks its values before the config is made: the checks must not turn a default
    into a value the user seems to have typed, or the preset's safeguards (off) give way to the library's (on)."""
    data = make_folder(tmp_path / "data")
    args = build_parser().parse_args(["run", str(data), "--out", str(tmp_path / "out"), "--preset", "paper"])
    check_args(args)
    assert _config(args).safeguards == apply_preset("paper", data="D", out="O").safeguards
    args = build_parser().parse_args(["run", str(data), "--out", str(tmp_path / "out"), "--preset", "paper",
                                      "--trust-radius", "0.2"])  # fmt: skip
    check_args(args)
    assert _config(args).safeguards["trust_radius"] == 0.2


# -- several seeds -------------------------------------------------------------------------------------------------


def _fake_summary(rng: np.random.Generator, r_none: bool = False) -> dict:
    def side():
        return {"n": 10, "improved": int(rng.integers(0, 10)), "unchanged": int(rng.integers(0, 3)),
                "worse": int(rng.integers(0, 5)), "catastrophes": int(rng.integers(0, 2)),
                "mean_gain": float(rng.normal(0.03, 0.02)), "median_gain": float(rng.normal(0.02, 0.02)),
                "mean_dice_initial": float(rng.uniform(0.5, 0.7)),
                "mean_dice_evolved": float(rng.uniform(0.5, 0.8))}  # fmt: skip

    reg = {"r_regressor_synthetic": float(rng.uniform(0.5, 0.9)), "r_regressor_all": float(rng.uniform(0.5, 0.9)),
           "r_regressor_centroid": None if r_none else float(rng.uniform(0, 0.9)),
           "r_confidence_centroid": float(rng.uniform(0, 0.9))}  # fmt: skip
    return {"on": side(), "off": side(), "regressor": reg}


def test_multi_seed_summary_is_numpys_mean_and_sample_sd():
    rng = np.random.default_rng(1)
    per_seed = {0: _fake_summary(rng), 1: _fake_summary(rng), 2: _fake_summary(rng, r_none=True)}
    agg = summarise_seeds(per_seed)
    for group in ("on", "off"):
        for key in ("improved", "worse", "catastrophes", "mean_gain", "mean_dice_evolved"):
            vals = [per_seed[k][group][key] for k in per_seed]
            assert agg["mean"][group][key] == pytest.approx(np.mean(vals), abs=1e-12)
            assert agg["sd"][group][key] == pytest.approx(np.std(vals, ddof=1), abs=1e-12)
    # an undefined r (None) is left out, not counted as 0
    vals = [per_seed[k]["regressor"]["r_regressor_centroid"] for k in (0, 1)]
    assert agg["n"]["regressor"]["r_regressor_centroid"] == 2
    assert agg["mean"]["regressor"]["r_regressor_centroid"] == pytest.approx(np.mean(vals))
    assert agg["sd"]["regressor"]["r_regressor_centroid"] == pytest.approx(np.std(vals, ddof=1))
    assert summarise_seeds({5: per_seed[0]})["sd"]["on"]["mean_gain"] is None  # one seed: no spread


def test_cli_runs_several_seeds_in_sub_folders_and_prints_mean_and_sd(phantoms, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "seeds"
    rc = main(["run", str(phantoms), "--out", str(out), "--seeds", "0", "1", "--model", "tiny", "--checkpoint",
               str(tiny_checkpoint), "--max-images", "3", "--epochs", "2", "--steps", "2",
               "--regressor-size", "32"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "2 seeds (0, 1)" in printed and "±" in printed
    agg = json.loads((out / "summary.json").read_text())
    per = {k: json.loads((out / f"seed_{k}" / "summary.json").read_text()) for k in (0, 1)}
    gains = [per[k]["off"]["mean_gain"] for k in (0, 1)]
    assert agg["mean"]["off"]["mean_gain"] == pytest.approx(np.mean(gains))
    assert agg["sd"]["off"]["mean_gain"] == pytest.approx(np.std(gains, ddof=1))
    # every seed on the one split made with --seed, each with its own regressor
    split = json.loads((out / "splits.json").read_text())["splits"]
    for k in (0, 1):
        _, meta = load_regressor(out / f"seed_{k}" / "regressor.pt")
        assert meta["seed"] == k and set(meta["train_masks"]) == set(split["train"][:3])


# -- files, config checks, package top -----------------------------------------------------------------------------


def test_json_never_holds_nan_or_infinity(tmp_path):
    with pytest.raises(SampotError, match=r"refusing to write NaN or Infinity \(at a\.b\[1\]\)"):
        write_json(tmp_path / "x.json", {"a": {"b": [1.0, float("nan")]}})
    assert not (tmp_path / "x.json").exists()
    with pytest.warns(UserWarning, match="written as null"):
        found = write_json(tmp_path / "y.json", {"s": float("inf"), "t": np.float32("nan"), "u": 2}, nonfinite="null")
    assert found == ["s", "t"] and json.loads((tmp_path / "y.json").read_text()) == {"s": None, "t": None, "u": 2}
    (tmp_path / "bad.json").write_text('{"trunc')
    with pytest.raises(SampotError, match="bad.json: the file is damaged"):
        read_json(tmp_path / "bad.json")


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"lr": float("inf")}, "'lr' must be a finite number > 0"),
        ({"sharpness": 0.0}, "'sharpness' must be a finite number > 0"),
        ({"regressor_lr": float("nan")}, "'regressor_lr' must be a finite number > 0"),
        ({"epochs": 0}, "'epochs' must be >= 1"),
        ({"max_images": 2}, "'max_images' must be at least 3"),
        ({"regressor_size": 40}, "'regressor_size' must be a multiple of 16 from 32 to 1024"),
        ({"regressor_size": 16}, "'regressor_size' must be a multiple of 16 from 32 to 1024"),
        ({"regressor_size": 100_000}, "'regressor_size' must be a multiple of 16 from 32 to 1024"),
        ({"batch_size": 1}, "'batch_size' must be >= 2"),
        ({"box_jitter": 1.5}, "'box_jitter' must be a fraction in"),
        ({"prompt": "scribble"}, "'prompt' must be one of click, box"),
        ({"optimizer": "sgd"}, "'optimizer' must be one of"),
        ({"scorers": ["magic"]}, "'scorers' must list some of"),
        ({"seeds": []}, "'seeds' must be a non-empty list"),
        ({"seeds": [1, 1]}, "'seeds' lists a seed twice"),
        ({"preset": "fast"}, "'preset' must be one of paper"),
        ({"split_fractions": [1, 2]}, "'split_fractions' must be three"),
        ({"safeguards": {"min_overlap": 5.0}}, "safeguard 'min_overlap' must be None or a finite number in"),
        ({"safeguards": {"radius": 1.0}}, "unknown safeguard 'radius'"),
        ({"out": " "}, "'out' must not be empty"),
        # settings that would do nothing, yet be recorded in config.json as used
        ({"margin": 0.1}, r"'margin' \(--margin\) is the do-no-harm rule's margin, but the scorers \(regressor\)"),
        ({"margin": 0.1, "scorers": ["regressor", "blend"]}, "do not include do-no-harm: add do-no-harm"),
        ({"extra_jitters": [0.2]}, r"'extra_jitters' \(--extra-jitters\) jitters users' boxes, but the prompt is"),
    ],
)
def test_values_that_cannot_work_are_refused_by_name(bad, message):
    with pytest.raises(SampotError, match=message):
        ExperimentConfig(**({"data": "d", "out": "o"} | bad))


def test_the_settings_a_rule_or_boxes_use_are_taken_with_them():
    ruled = ExperimentConfig(data="d", out="o", margin=0.1, scorers=["do-no-harm"])
    assert ruled.margin == 0.1 and ruled.scorers == ["regressor", "do-no-harm"]
    assert ExperimentConfig(data="d", out="o", prompt="box", extra_jitters=[0.2]).extra_jitters == [0.2]


def test_a_run_of_no_config_or_of_a_model_no_loader_knows_stops_before_writing(phantoms, tmp_path):
    with pytest.raises(SampotError, match="run_experiment needs an ExperimentConfig, got dict"):
        run_experiment({"data": str(phantoms), "out": str(tmp_path / "a")})
    config = ExperimentConfig(data=str(phantoms), out=str(tmp_path / "b"), model="nope", max_images=3, epochs=1)
    with pytest.raises(SampotError, match="parameter 'model' is 'nope', which no loader knows; known: .*sam_nano"):
        run_experiment(config, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no config.json, splits or manifest


def test_every_optimizer_a_config_names_is_registered():
    from sampot_lib.method import optimizers

    assert set(optimizers.OPTIMIZERS) == set(OPTIMIZERS)


def test_training_set_takes_its_model_prompts_from_the_hook(phantoms, tiny_model):
    dataset = FolderDataset(phantoms)
    ids = dataset.ids[:2]
    default = regressor_samples(tiny_model, dataset, ids, "left_lung", size=32, n_synthetic=2, n_outside=1,
                                progress=False)  # fmt: skip
    kinds = list(default.kind[default.image_id == ids[0]])
    assert kinds.count("model_band") == 3 and kinds.count("model_outside") == 1

    def one_click(truth, rng):
        ys, xs = np.nonzero(truth)
        return [((float(xs[0]), float(ys[0])), "custom")]

    hooked = regressor_samples(tiny_model, dataset, ids, "left_lung", size=32, n_synthetic=2, progress=False,
                               prompts_for_image=one_click)  # fmt: skip
    assert sorted(set(hooked.kind)) == ["custom", "synthetic"] and list(hooked.kind).count("custom") == 2


def test_package_top_exports_the_api_lazily():
    import sampot_lib
    from sampot_lib.experiment import runner
    from sampot_lib.method import prompts, scoring

    code = "import sys, sampot_lib; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr  # importing the package loads no torch
    assert sampot_lib.run_experiment is runner.run_experiment and sampot_lib.Prompt is prompts.Prompt
    assert sampot_lib.RegressorScorer is scoring.RegressorScorer
    assert all(getattr(sampot_lib, name) is not None for name in sampot_lib.__all__)
    with pytest.raises(AttributeError):
        sampot_lib.no_such_name  # noqa: B018


def test_an_empty_split_part_is_named_before_any_work(tmp_path, monkeypatch):
    from sampot_lib.data.phantom import write_phantom_set
    from sampot_lib.experiment.config import ExperimentConfig
    from sampot_lib.experiment.runner import run_experiment

    write_phantom_set(tmp_path / "ph", 3, seed=0, size=96)
    config = ExperimentConfig(data=str(tmp_path / "ph"), out=str(tmp_path / "out"), split_fractions=[2, 0, 1],
                              epochs=1, regressor_size=32)  # fmt: skip
    monkeypatch.setattr("sampot_lib.experiment.stages.build_model", lambda c: pytest.fail("the model was loaded"))
    with pytest.raises(SampotError, match=r"the val part of the split of .* is empty \(train 2, val 0, test 1"):
        run_experiment(config, progress=False)
    assert not (tmp_path / "out" / "regressor.pt").exists()


@pytest.mark.parametrize(("guards", "calls_per_image"), [("on", 2), ("off", 1)])
def test_with_the_safeguards_off_the_on_and_off_groups_are_one_evolution(
    phantoms, tiny_checkpoint, tmp_path, monkeypatch, guards, calls_per_image
):
    from sampot_lib.defaults import SAFEGUARDS_OFF, SAFEGUARDS_ON
    from sampot_lib.experiment import evolution as evolution_module

    config = _config_for(phantoms, tmp_path / "run", tiny_checkpoint, prompt="click",
                         safeguards=dict(SAFEGUARDS_ON if guards == "on" else SAFEGUARDS_OFF))  # fmt: skip
    train_regressor_stage(config, progress=False)
    calls = []
    real = evolution_module.evolve_prompt
    monkeypatch.setattr(
        evolution_module, "evolve_prompt", lambda *a, **k: calls.append(k["safeguards"]) or real(*a, **k)
    )
    evolve_stage(config, progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "evolution.csv").open()))
    n_images = len({r["image_id"] for r in rows})
    assert {r["group"] for r in rows} == {"on", "off"}
    assert len(calls) == calls_per_image * n_images
    if guards == "off":  # one evolution reported twice: the same winner in both groups
        by = {(r["image_id"], r["group"]): (r["x"], r["y"], r["dice"]) for r in rows}
        assert all(by[(i, "on")] == by[(i, "off")] for i, _ in by)


# -- what a run replaces in its folder -----------------------------------------------------------------------------


def _cli_run(command, data, out, ckpt, *extra) -> list[str]:
    return [command, str(data), "--out", str(out), "--model", "tiny", "--checkpoint", str(ckpt), "--max-images", "3",
            "--epochs", "1", "--regressor-size", "32", *(["--steps", "2"] if command == "run" else []),
            *map(str, extra)]  # fmt: skip


def test_a_split_no_run_made_in_out_is_refused_not_replaced(phantoms, tiny_checkpoint, tmp_path, capsys):
    from sampot_lib.experiment.setup import prepare_splits

    out = tmp_path / "r"
    mine = out / "splits.json"
    assert main(["data", "split", str(phantoms), "--fractions", "1", "1", "1", "--out", str(mine)]) == 0
    before = mine.read_bytes()
    capsys.readouterr()
    for extra in ([], ["--force"], ["--resume"]):
        assert main(_cli_run("run", phantoms, out, tiny_checkpoint, *extra)) == 2
        err = capsys.readouterr().err
        assert f"{mine} is a split no sampot run in {out} made: pass it with --split-file {mine}" in err, err
        assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1 and "Traceback" not in err
        assert mine.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [".sampot.lock", "splits.json"]
    # Named by --split-file it is the run's split, read and never rewritten, also when resumed.
    config = ExperimentConfig(data=str(phantoms), out=str(out), split_file=str(mine), max_images=None)
    dataset = FolderDataset(phantoms)
    assert prepare_splits(config, dataset) == prepare_splits(config, dataset) == json.loads(before)["splits"]
    assert mine.read_bytes() == before
    # A folder's own split is reused; `sampot data split` refuses to write over it, and written over all the same (a
    # copy, an edit), it is the user's and refused.
    own = tmp_path / "own"
    seeded = ExperimentConfig(data=str(phantoms), out=str(own), max_images=None)
    assert prepare_splits(seeded, dataset) == prepare_splits(seeded, dataset)
    capsys.readouterr()
    assert main(["data", "split", str(phantoms), "--fractions", "1", "1", "1", "--out", str(own / "splits.json")]) == 2
    assert "is a file of the run folder" in capsys.readouterr().err
    (own / "splits.json").write_bytes(before)
    with pytest.raises(SampotError, match=r"splits.json is a split no sampot run in .*\(--force never replaces"):
        prepare_splits(seeded, dataset, force=True)
    # The data set's own split (`sampot data split DIR`) with --out DIR alike.
    data = tmp_path / "ph"
    write_phantom_set(data, 6, seed=0, size=96)
    assert main(["data", "split", str(data)]) == 0
    before = (data / "splits.json").read_bytes()
    with pytest.raises(SampotError, match="is a split no sampot run in"):
        prepare_splits(ExperimentConfig(data=str(data), out=str(data)), FolderDataset(data))
    assert (data / "splits.json").read_bytes() == before and not (data / "manifest.json").exists()


def test_force_removes_what_the_earlier_run_wrote_and_keeps_the_users_files(phantoms, tiny_checkpoint, tmp_path,
                                                                            capsys):  # fmt: skip
    out = tmp_path / "r1"
    assert main(_cli_run("run", phantoms, out, tiny_checkpoint)) == 0
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(_cli_run("train-regressor", phantoms, out, tiny_checkpoint, "--epochs", "2", "--force")) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.json", "manifest.json", "notes.txt", "regressor.pt", "regressor_history.csv", "regressor_set.npz",
        "splits.json",
    ]  # fmt: skip
    assert f"note: --force: removed the earlier run's results in {out}: evolution.csv" in capsys.readouterr().err
    assert set(RunFolder(out).manifest()["stages"]) == {"split", "train"} and not RunFolder(out).problems()
    # A run over two seeds, then one seed with --force: the seeds' folders and their summary go.
    seeds = tmp_path / "sd"
    assert main(_cli_run("run", phantoms, seeds, tiny_checkpoint, "--seeds", "0", "1")) == 0
    (seeds / "seed_1" / "notes.txt").write_text("mine")
    assert main(_cli_run("run", phantoms, seeds, tiny_checkpoint, "--force")) == 0
    assert not (seeds / "seed_0").exists() and sorted(p.name for p in (seeds / "seed_1").iterdir()) == ["notes.txt"]
    summary = json.loads((seeds / "summary.json").read_text())
    assert "per_seed" not in summary and not RunFolder(seeds).problems()
    assert "aggregate" not in RunFolder(seeds).manifest()["stages"]


def test_a_split_with_an_empty_part_is_refused_before_the_run_folder_is_made(tmp_path, tiny_checkpoint, capsys):
    data = tmp_path / "ph1"
    write_phantom_set(data, 6, seed=0, size=96)
    rows = (data / "manifest.csv").read_text().splitlines()
    head, body = rows[0].split(","), [r.split(",") for r in rows[1:]]
    at = head.index("subject")
    (data / "manifest.csv").write_text("\n".join([rows[0], *(",".join(r[:at] + ["S1"] + r[at + 1 :]) for r in body)])
                                       + "\n")  # fmt: skip
    out = tmp_path / "rp"
    for argv in (_cli_run("run", data, out, tiny_checkpoint), _cli_run("train-regressor", data, out, tiny_checkpoint),
                 _cli_run("run", data, out, tiny_checkpoint, "--seeds", "0", "1")):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "part of the split of" in err and "is empty" in err, err
        assert not out.exists()
