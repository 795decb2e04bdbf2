"""The folder format: a valid set loads; every kind of problem is reported, all at once; `sampot data check`."""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import lung_pair, make_folder
from PIL import Image

from sampot_lib.cli.data import add_data_commands
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.validate import validate_folder
from sampot_lib.errors import SampotError

JSRT = Path(__file__).parents[2].parent / "shared/data/jsrt_scr"


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="sampot")
    add_data_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(list(argv))
    return args.func(args)


def test_valid_folder_loads(tmp_path):
    root = make_folder(tmp_path / "d", n=4, manifest=True)
    rep = validate_folder(root)
    assert rep.ok, rep.format()
    assert rep.ids == ["im0", "im1", "im2", "im3"] and rep.structures == ["left_lung", "right_lung"]
    assert rep.n_subjects == 2 and rep.masks_checked == 8
    ds = FolderDataset(root)
    assert len(ds) == 4 and ds.subject_of("im3") == "subj1" and ds.subjects == ["subj0", "subj1"]
    img = ds.image("im0")
    left = ds.mask("im0", "left_lung")
    assert img.shape == (32, 40) and img.dtype == np.uint8
    assert left.dtype == bool and np.array_equal(left, lung_pair()[0])
    with pytest.raises(SampotError, match="not in"):
        ds.image("nope")
    with pytest.raises(SampotError, match="structure 'heart'"):
        ds.mask("im0", "heart")


def test_no_manifest_means_one_subject_per_image(tmp_path):
    ds = FolderDataset(make_folder(tmp_path / "d", n=3))
    assert [ds.subject_of(i) for i in ds.ids] == ds.ids


def _break_everything(root: Path) -> None:
    """One of each problem, in one folder."""
    h, w = 32, 40
    (root / "masks" / "left_lung" / "im0.png").unlink()  # missing mask
    Image.fromarray(np.zeros((h + 1, w), np.uint8)).save(root / "masks" / "right_lung" / "im1.png")  # size
    nb = np.zeros((h, w), np.uint8)
    nb[1, 1], nb[2, 2] = 100, 200
    Image.fromarray(nb).save(root / "masks" / "left_lung" / "im1.png")  # non-binary
    Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "masks" / "left_lung" / "im2.png")  # empty
    (root / "images" / "im3.png").write_bytes(b"garbage")  # unreadable image
    (root / "masks" / "right_lung" / "im2.png").write_bytes(b"garbage")  # unreadable mask
    Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "masks" / "right_lung" / "ghost.png")  # orphan mask
    (root / "images" / "notes.txt").write_text("x")  # unsupported file
    ramp = np.tile(np.arange(w, dtype=np.uint8) * 5, (h, 1))
    Image.fromarray(ramp).save(root / "images" / "im0.jpg")  # id used twice
    colour = np.zeros((h, w, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(root / "masks" / "right_lung" / "im0.png")  # colour mask
    (root / "images" / "sorted").mkdir()  # a folder of images the run would skip
    (root / "masks" / "left_lung" / "sorted").mkdir()
    Image.fromarray(np.full((h, w), 128, np.uint8)).save(root / "images" / "im9.png")  # one value: nothing to segment
    for structure, mask in zip(("left_lung", "right_lung"), lung_pair(), strict=True):
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / structure / "im9.png")


EXPECTED = [
    "masks/left_lung/im0.png: missing",
    "masks/right_lung/im1.png: mask is 40x33",
    "masks/left_lung/im1.png: mask is not binary (values 0, 100, 200)",
    "masks/left_lung/im2.png: mask is empty",
    "images/im3.png: not usable (",
    "masks/right_lung/im2.png: not a readable image",
    "masks/right_lung/ghost.png: no image with id 'ghost'",
    "images/notes.txt: unsupported file type",
    "images/im0.png: id 'im0' also used by images/im0.jpg",
    "masks/right_lung/im0.png: mask has colour",
    "images/sorted/: a folder; only the files directly in images/ are read",
    "masks/left_lung/sorted/: a folder; only the files directly in masks/left_lung/ are read",
    "images/im9.png: not usable (every pixel has the value 128: there is nothing to segment",
]


def test_every_problem_reported_at_once(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    _break_everything(root)
    rep = validate_folder(root)
    assert not rep.ok
    text = "\n".join(rep.problems)
    for snippet in EXPECTED:
        assert snippet in text, f"{snippet!r} not in:\n{text}"
    assert len(rep.problems) == len(EXPECTED), text
    with pytest.raises(SampotError) as err:
        FolderDataset(root)
    assert all(s in str(err.value) for s in EXPECTED)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_among_the_images_or_masks_is_named_not_read(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    image, mask = root / "images" / "im1.png", root / "masks" / "left_lung" / "im2.png"
    for path in (image, mask):
        path.unlink()
        os.mkfifo(path)
    found: list[list[str]] = []
    reader = threading.Thread(target=lambda: found.append(validate_folder(root).problems), daemon=True)
    reader.start()
    reader.join(60)
    if reader.is_alive():  # waiting on a pipe for a writer: open each for writing once, so the reader ends
        for path in (image, mask):
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("validate_folder waited on a pipe")
    text = "\n".join(found[0])
    assert "images/im1.png: not a regular file (a pipe, a socket or a device)" in text, text
    assert "masks/left_lung/im2.png: not a regular file (a pipe, a socket or a device)" in text, text
    assert "im2.png: missing" not in text, text


def test_manifest_problems(tmp_path):
    root = make_folder(tmp_path / "d", n=3)
    (root / "manifest.csv").write_text("name,subject\nim0,a\n")
    assert any("no 'id' column" in p for p in validate_folder(root).problems)
    (root / "manifest.csv").write_text("id,subject\nim0,a\nim0,b\nim1,a\nzz,c\n")
    text = "\n".join(validate_folder(root).problems)
    assert "listed twice" in text and "'zz' has no image" in text and "im2.png: not listed" in text
    (root / "manifest.csv").write_text("id,subject\n")
    assert any("has no rows" in p for p in validate_folder(root).problems)


def test_structure_and_layout_problems(tmp_path):
    assert "no such folder" in validate_folder(tmp_path / "nothing").problems[0]
    (tmp_path / "empty").mkdir()
    assert "no images/ folder" in validate_folder(tmp_path / "empty").problems[0]
    root = make_folder(tmp_path / "d", n=2)
    rep = validate_folder(root, structures=["left_lung", "heart"])
    assert any("masks/heart/: missing" in p for p in rep.problems)
    for p in (root / "masks" / "left_lung").iterdir():
        p.unlink()
    for p in (root / "masks" / "right_lung").iterdir():
        p.unlink()
    (root / "masks" / "left_lung").rmdir()
    (root / "masks" / "right_lung").rmdir()
    assert any("no structure sub-folders" in p for p in validate_folder(root).problems)


def test_names_only_check_is_fast_path(tmp_path):
    root = make_folder(tmp_path / "d", n=2)
    (root / "images" / "im1.png").write_bytes(b"garbage")
    assert validate_folder(root, check_contents=False).ok
    ds = FolderDataset(root, validate=False)
    with pytest.raises(SampotError, match="not a readable image"):
        ds.image("im1")


def test_cli_check(tmp_path, capsys):
    root = make_folder(tmp_path / "d", n=3, manifest=True)
    assert run_cli("data", "check", str(root), "--quiet") == 0
    out = capsys.readouterr().out
    assert "images:     3" in out and "subjects:   2" in out and "OK" in out
    (root / "masks" / "left_lung" / "im0.png").unlink()
    assert run_cli("data", "check", str(root), "--quiet") == 1
    assert "masks/left_lung/im0.png: missing" in capsys.readouterr().out


@pytest.mark.skipif(not JSRT.is_dir(), reason="../shared/data/jsrt_scr is not beside this checkout")
def test_jsrt_scr_validates():
    rep = validate_folder(JSRT)
    assert rep.ok, rep.format()
    structures = ["heart", "left_clavicle", "left_lung", "right_clavicle", "right_lung"]  # SCR's five (README)
    assert len(rep.ids) == 247 and rep.structures == structures
    assert rep.masks_checked == 247 * len(structures) and dict(rep.sizes) == {(1024, 1024): 247}


def test_manifest_that_is_a_folder_is_a_problem_not_ignored(tmp_path):
    # Ignored, the subjects it should give are lost: images of one patient could land in train and test.
    root = make_folder(tmp_path / "d", n=4, manifest=False)
    (root / "manifest.csv").mkdir()
    rep = validate_folder(root)
    assert not rep.ok and any("manifest.csv: is a folder" in p for p in rep.problems), rep.format()
    with pytest.raises(SampotError, match="manifest.csv: is a folder"):
        FolderDataset(root)


def test_a_file_given_as_the_data_set_is_named_as_a_file_and_one_structure_is_a_name(tmp_path):
    root = make_folder(tmp_path / "d", n=4)
    image = next((root / "images").iterdir())
    rep = validate_folder(image)
    assert rep.problems == [
        f"{image}: is a file, not a folder; give the data set's folder (images/, masks/<structure>/)."
    ]
    rep = validate_folder(root, structures="left_lung")  # a string is one structure, not its letters
    assert rep.ok and rep.structures == ["left_lung"], rep.format()
