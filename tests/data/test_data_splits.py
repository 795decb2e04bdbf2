"""Subject-level splits: proportions, seeds, subjects never straddle, the JSON file, `sampot data split`."""

from __future__ import annotations

import argparse
import json
import unicodedata

import pytest
from data_fixtures import make_folder

from sampot_lib.cli.data import add_data_commands
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.splits import load_splits, make_splits, save_splits, split_counts, split_info
from sampot_lib.errors import SampotError


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="sampot")
    add_data_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(list(argv))
    return args.func(args)


def test_paper_proportions():
    assert split_counts(122, (41, 28, 53)) == [41, 28, 53]
    assert sum(split_counts(247, (41, 28, 53))) == 247
    assert split_counts(3, (41, 28, 53)) == [1, 1, 1]  # no requested split left empty
    assert split_counts(10, (1, 0, 1)) == [5, 0, 5]
    for bad in [(1, 2), (-1, 1, 1), (0, 0, 0)]:
        with pytest.raises(SampotError, match="fractions"):
            split_counts(10, bad)


def test_seeded_and_disjoint():
    ids = [f"x{i:03d}" for i in range(122)]
    a, b, c = make_splits(ids, seed=1), make_splits(ids, seed=1), make_splits(ids, seed=2)
    assert a == b and a != c
    assert [len(a[k]) for k in ("train", "val", "test")] == [41, 28, 53]
    assert sorted(a["train"] + a["val"] + a["test"]) == ids


def test_subjects_never_straddle():
    # 40 subjects with 1 to 4 images each.
    subject_of = {f"s{s}_im{k}": f"s{s}" for s in range(40) for k in range(1 + s % 4)}
    for seed in range(5):
        splits = make_splits(subject_of, seed=seed)
        where = {}
        for name, ids in splits.items():
            for i in ids:
                assert where.setdefault(subject_of[i], name) == name
        n_subj = {k: len({subject_of[i] for i in v}) for k, v in splits.items()}
        assert list(n_subj.values()) == split_counts(40, (41, 28, 53))


def test_save_load_roundtrip(tmp_path):
    root = make_folder(tmp_path / "d", n=6, manifest=True)
    ds = FolderDataset(root)
    splits = make_splits(ds, fractions=(1, 1, 1), seed=3)
    subjects = {i: ds.subject_of(i) for i in ds.ids}
    path = save_splits(tmp_path / "s.json", splits, seed=3, fractions=(1, 1, 1), subjects=subjects)
    assert load_splits(path, ds) == splits
    info = split_info(path)
    assert info["seed"] == 3 and info["fractions"] == [1.0, 1.0, 1.0] and sum(info["counts"].values()) == 6
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ""] == ["s.json"]  # no temporary left


def test_ids_that_differ_only_in_unicode_form_are_the_same_image(tmp_path):
    root = make_folder(tmp_path / "d", n=6)
    decomposed = unicodedata.normalize("NFD", "café")  # as a macOS file system stores the name
    for i in range(6):
        (root / "images" / f"im{i}.png").rename(root / "images" / f"{decomposed}{i}.png")
        for structure in ("left_lung", "right_lung"):
            (root / "masks" / structure / f"im{i}.png").rename(root / "masks" / structure / f"{decomposed}{i}.png")
    ds = FolderDataset(root)
    typed = [f"café{i}" for i in range(6)]  # typed by hand
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"splits": {"train": typed[:3], "val": typed[3:4], "test": typed[4:]}}))
    assert load_splits(path, ds) == {"train": ds.ids[:3], "val": ds.ids[3:4], "test": ds.ids[4:]}
    path.write_text(json.dumps({"splits": {"train": typed[:3], "val": [], "test": [f"{decomposed}0", *typed[4:]]}}))
    with pytest.raises(SampotError, match=f"image '{decomposed}0' is in both 'train' and 'test'"):
        load_splits(path, ds)


def test_load_errors(tmp_path):
    with pytest.raises(SampotError, match="no such split file"):
        load_splits(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SampotError, match="damaged split file"):
        load_splits(tmp_path / "bad.json")
    (tmp_path / "keys.json").write_text(json.dumps({"splits": {"train": []}}))
    with pytest.raises(SampotError, match="keys"):
        load_splits(tmp_path / "keys.json")
    doc = {"splits": {"train": ["a"], "val": ["a"], "test": []}}
    (tmp_path / "dup.json").write_text(json.dumps(doc))
    with pytest.raises(SampotError, match="image 'a' is in both 'train' and 'val'"):
        load_splits(tmp_path / "dup.json")
    doc = {"splits": {"train": ["a", "b", "a"], "val": [], "test": ["c"]}}
    (tmp_path / "twice.json").write_text(json.dumps(doc))
    with pytest.raises(SampotError, match="image 'a' is listed twice in 'train'; list each image once"):
        load_splits(tmp_path / "twice.json")
    doc = {"splits": {"train": ["a"], "val": ["b"], "test": []}, "subjects": {"a": "p", "b": "p"}}
    (tmp_path / "straddle.json").write_text(json.dumps(doc))
    with pytest.raises(SampotError, match="subject 'p'"):
        load_splits(tmp_path / "straddle.json")
    doc = {"splits": {"train": ["a"], "val": ["zz"], "test": []}}
    (tmp_path / "other.json").write_text(json.dumps(doc))
    with pytest.raises(SampotError, match="not in the data set"):
        load_splits(tmp_path / "other.json", ["a", "b"])


def test_cli_split(tmp_path, capsys):
    root = make_folder(tmp_path / "d", n=6, manifest=True)
    assert run_cli("data", "split", str(root), "--seed", "4", "--fractions", "1", "1", "1") == 0
    assert "wrote" in capsys.readouterr().out
    splits = load_splits(root / "splits.json", FolderDataset(root))
    assert splits == make_splits(FolderDataset(root), fractions=(1, 1, 1), seed=4)
    assert all(len(v) == 2 for v in splits.values())  # three subjects of two images each
