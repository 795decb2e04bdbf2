"""The manifest's subject column: found whatever its case and separators, so one patient's images stay in one part
of a split; two subject columns are refused; subject ids that differ only in case are kept apart, with a warning."""

from __future__ import annotations

import argparse
import json
import unicodedata
import warnings

import pytest
from data_fixtures import make_folder

from sampot_lib.cli.data import add_data_commands
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.splits import load_splits
from sampot_lib.errors import SampotError, SampotWarning


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="sampot")
    add_data_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(list(argv))
    return args.func(args)


def _with_manifest(root, header: str, subjects: list[str]):
    make_folder(root, n=len(subjects))
    rows = [header] + [f"im{i},{s},PA" for i, s in enumerate(subjects)]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize("column", ["PatientID", "Patient_ID", "Subject", "SUBJECT_ID", "patient id", "Patient-Id"])
def test_a_subject_column_in_any_case_or_spelling_keeps_each_patients_images_in_one_part(tmp_path, column):
    patients = [f"P{i // 4}" for i in range(12)]  # 3 patients, 4 images each
    root = _with_manifest(tmp_path / "d", f"id,{column},view", patients)
    ds = FolderDataset(root)
    assert ds.subjects == ["P0", "P1", "P2"] and [ds.subject_of(f"im{i}") for i in range(12)] == patients
    out = tmp_path / "s.json"
    assert run_cli("data", "split", str(root), "--fractions", "1", "1", "1", "--out", str(out)) == 0
    parts = json.loads(out.read_text())["splits"]
    patients_in = {part: {patients[int(i[2:])] for i in ids} for part, ids in parts.items()}
    assert sorted(len(p) for p in patients_in.values()) == [1, 1, 1], patients_in
    assert set.union(*patients_in.values()) == {"P0", "P1", "P2"}


def test_two_subject_columns_are_refused_naming_both(tmp_path):
    root = make_folder(tmp_path / "d", n=2)
    (root / "manifest.csv").write_text("id,subject,PatientID\nim0,a,x\nim1,b,y\n")
    with pytest.raises(SampotError, match=r"columns 'subject' and 'PatientID' both name the subject; keep one"):
        FolderDataset(root)


def test_subjects_that_differ_only_in_case_are_two_subjects_with_a_warning(tmp_path, capsys):
    root = _with_manifest(tmp_path / "d", "id,subject,view", ["P1", "p1", "P2", "P2"])
    assert run_cli("data", "check", str(root), "--quiet") == 0
    out = capsys.readouterr().out
    assert "subjects:   3" in out and "subjects 'P1' and 'p1' differ only in letter case" in out, out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_cli("data", "split", str(root), "--out", str(tmp_path / "s.json")) == 0
    said = [str(w.message) for w in caught if issubclass(w.category, SampotWarning)]
    assert any("subjects 'P1' and 'p1' differ only in letter case" in m for m in said), said
    with pytest.warns(SampotWarning, match="differ only in letter case"):
        assert FolderDataset(root).subjects == ["P1", "P2", "p1"]


def _split_file(path, parts: dict[str, list[int]]):
    path.write_text(json.dumps({"splits": {k: [f"im{i}" for i in v] for k, v in parts.items()}}))
    return path


def test_a_split_file_recording_no_subjects_is_checked_against_the_manifests_subjects(tmp_path):
    patients = [f"P{i // 4}" for i in range(12)]  # im0..im3 are P0, im4..im7 P1, im8..im11 P2
    root = _with_manifest(tmp_path / "d", "id,PatientID,view", patients)
    ds = FolderDataset(root)
    by_patient = _split_file(tmp_path / "ok.json", {"train": [0, 1, 2, 3], "val": [4, 5, 6, 7], "test": [8, 9, 10, 11]})
    assert load_splits(by_patient, ds)["test"] == ["im8", "im9", "im10", "im11"]
    by_image = _split_file(tmp_path / "leak.json", {"train": list(range(6)), "val": [6, 7], "test": [8, 9, 10, 11]})
    with pytest.raises(SampotError, match=r"subject 'P1' \(the data set's manifest\) has images in both 'train' and "
                                          r"'val': a patient's images must stay in one part"):  # fmt: skip
        load_splits(by_image, ds)
    assert load_splits(by_image) and load_splits(by_image, ds.ids)  # without the data set's subjects: nothing to check


def test_run_refuses_a_split_file_that_puts_a_patient_in_training_and_test_before_any_work(tmp_path, capsys):
    from conftest import run_command

    patients = [f"P{i // 4}" for i in range(12)]
    root = _with_manifest(tmp_path / "d", "id,PatientID,view", patients)
    leak = _split_file(tmp_path / "leak.json", {"train": [0, 1, 2], "val": [4, 5, 6, 7], "test": [3, 8, 9, 10, 11]})
    for command in ("run", "train-regressor"):
        out = tmp_path / command
        rc, _, err = run_command([command, root, "--split-file", leak, "--out", out, "--model", "sam_nano"], capsys)
        assert rc == 2 and "subject 'P0' (the data set's manifest) has images in both 'train' and 'test'" in err, err
        assert not out.exists()


def test_the_same_image_under_two_ids_is_warned_about_and_a_run_testing_on_a_copy_is_refused(tmp_path, capsys):
    from conftest import run_command

    root = make_folder(tmp_path / "d", n=12, h=64, w=64)
    for structure in ("left_lung", "right_lung"):  # another reader's outline of the same X-ray
        (root / "masks" / structure / "im11.png").write_bytes((root / "masks" / structure / "im1.png").read_bytes())
    (root / "images" / "im11.png").write_bytes((root / "images" / "im1.png").read_bytes())
    assert run_cli("data", "check", str(root), "--quiet") == 0
    out = capsys.readouterr().out
    assert "the same image file under several ids (im1 = im11), with different subjects" in out, out
    split = _split_file(tmp_path / "s.json", {"train": [0, 1, 2, 3, 4, 5], "val": [6, 7], "test": [8, 9, 10, 11]})
    out = tmp_path / "run"
    rc, _, err = run_command(["run", root, "--split-file", split, "--out", out, "--model", "sam_nano"], capsys)
    assert rc == 2 and "the same image file is in two parts of the split: im1 (train), im11 (test)" in err, err
    assert not out.exists()
    # one subject for both ids: kept in one part by every split, and nothing to say
    (root / "manifest.csv").write_text("id,subject\n" + "".join(f"im{i},{'s1' if i in (1, 11) else i}\n"
                                                                for i in range(12)))  # fmt: skip
    assert run_cli("data", "check", str(root), "--quiet") == 0
    assert "the same image file" not in capsys.readouterr().out


@pytest.mark.parametrize("column", ["MRN", "pid", "case_id", "Patient Number"])
def test_a_column_that_reads_like_a_patient_key_but_is_not_read_as_one_is_noted(tmp_path, capsys, column):
    patients = [f"P{i // 4}" for i in range(12)]
    root = _with_manifest(tmp_path / "d", f"id,{column},view", patients)
    assert FolderDataset(root).subjects == [f"im{i}" for i in sorted(range(12), key=lambda i: f"im{i}")]
    assert run_cli("data", "check", str(root), "--quiet") == 0
    out = capsys.readouterr().out
    assert f"column '{column}' repeats its values as a patient's id would" in out, out
    # unique values (an accession number per image), or a subject column beside it: nothing to say
    root = _with_manifest(tmp_path / "u", f"id,{column},view", [f"A{i}" for i in range(12)])
    root2 = _with_manifest(tmp_path / "s", f"id,subject,{column}", patients)
    for folder in (root, root2):
        assert run_cli("data", "check", str(folder), "--quiet") == 0
        assert "repeats its values" not in capsys.readouterr().out


def test_subjects_that_differ_only_in_unicode_form_are_one_patient(tmp_path):
    composed, decomposed = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    root = _with_manifest(tmp_path / "d", "id,subject,view", [composed, decomposed, "Ana", "Ana", "Bo", "Bo"])
    assert FolderDataset(root).subjects == sorted([composed, "Ana", "Bo"])


@pytest.mark.parametrize("column", ["PatientSex", "PatientAge", "subject_group"])
def test_a_column_about_the_patient_that_is_no_key_is_not_noted(tmp_path, capsys, column):
    root = _with_manifest(tmp_path / "d", f"id,{column},view", ["M", "F"] * 6)
    assert run_cli("data", "check", str(root), "--quiet") == 0
    assert "repeats its values" not in capsys.readouterr().out


def test_a_given_regressor_is_not_tested_on_a_copy_of_an_image_it_learned_from_under_another_mask(tmp_path, capsys):
    from conftest import run_command

    from sampot_lib.files import sha256_file
    from sampot_lib.method.regressor import SegmentationRegressor, save_regressor

    root = make_folder(tmp_path / "d", n=12, h=64, w=64)
    (root / "images" / "im11.png").write_bytes((root / "images" / "im1.png").read_bytes())  # its own mask differs
    image = sha256_file(root / "images" / "im1.png")
    for key in ("train_images", "calibration_images"):  # trained on it, or calibrated on it
        regressor = save_regressor(SegmentationRegressor(32), tmp_path / f"{key}.pt", {
            "model": "sam_nano", "structure": "left_lung", key: {"im1": image}})  # fmt: skip
        split = _split_file(tmp_path / "s.json", {"train": [0, 2, 3], "val": [4, 5], "test": [6, 7, 8, 9, 10, 11]})
        argv = ["run", root, "--split-file", split, "--regressor", regressor, "--model", "sam_nano"]
        rc, _, err = run_command([*argv, "--out", tmp_path / "run"], capsys)
        learned = "its training or validation" if key == "train_images" else "the labelled images it was calibrated on"
        assert rc == 2 and f"1 test image(s) were among {learned}" in err and "im11 (= its im1)" in err, err
        assert not (tmp_path / "run").exists()
