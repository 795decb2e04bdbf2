"""Public-set converters, each on a tiny archive in its published layout that the test builds itself."""

from __future__ import annotations

import argparse
import hashlib
import zipfile

import numpy as np
import pytest
from data_fixtures import lung_pair
from PIL import Image

from sampot_lib.cli.data import add_data_commands
from sampot_lib.data import public
from sampot_lib.data.folder import FolderDataset
from sampot_lib.errors import SampotError

H, W = 48, 64


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="sampot")
    add_data_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(list(argv))
    return args.func(args)


def _img(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _montgomery_image(src, i: int) -> None:
    """Image ``i`` of a Montgomery set at ``src``, with its left and right lung masks (0/255)."""
    left, right = lung_pair(H, W)
    name = f"MCUCXR_000{i}_0.png"
    _save(src / "CXR_png" / name, _img(i))
    _save(src / "ManualMask" / "leftMask" / name, left.astype(np.uint8) * 255)
    _save(src / "ManualMask" / "rightMask" / name, right.astype(np.uint8) * 255)


def _check_sides(ds: FolderDataset, image_id: str) -> None:
    left, right = lung_pair(H, W)
    assert np.array_equal(ds.mask(image_id, "left_lung"), left)
    assert np.array_equal(ds.mask(image_id, "right_lung"), right)


def test_montgomery(tmp_path):
    src = tmp_path / "MontgomerySet"
    left, right = lung_pair(H, W)
    for i in range(2):
        name = f"MCUCXR_000{i}_0.png"
        _save(src / "CXR_png" / name, _img(i))
        # Masks named by their file: the converter decides sides from position, so swap one pair on purpose.
        a, b = (left, right) if i == 0 else (right, left)
        _save(src / "ManualMask" / "leftMask" / name, a.astype(np.uint8) * 255)
        _save(src / "ManualMask" / "rightMask" / name, b.astype(np.uint8))  # 0/1 masks are accepted too
    _save(src / "CXR_png" / "MCUCXR_0009_1.png", _img(9))  # no masks: skipped, reported
    res = public.prepare("montgomery", src, tmp_path / "out")
    assert res.written == 2 and len(res.skipped) == 1
    ds = FolderDataset(res.out)
    assert ds.ids == ["MCUCXR_0000_0", "MCUCXR_0001_0"]
    for i in ds.ids:
        _check_sides(ds, i)
    assert np.array_equal(ds.image("MCUCXR_0001_0"), _img(1))


def test_shenzhen_splits_combined_mask(tmp_path):
    src = tmp_path / "ChinaSet_AllFiles"
    left, right = lung_pair(H, W)
    _save(src / "CXR_png" / "CHNCXR_0001_0.png", _img(1))
    _save(src / "mask" / "CHNCXR_0001_0_mask.png", (left | right).astype(np.uint8) * 255)
    _save(src / "CXR_png" / "CHNCXR_0002_1.png", _img(2))
    _save(src / "mask" / "CHNCXR_0002_1_mask.png", left.astype(np.uint8) * 255)  # one lung only: skipped
    _save(src / "CXR_png" / "CHNCXR_0003_0.png", _img(3))  # not annotated
    res = public.prepare("shenzhen", src, tmp_path / "out", max_size=None)
    assert res.written == 1 and len(res.skipped) == 2
    _check_sides(FolderDataset(res.out), "CHNCXR_0001_0")


def test_jsrt_raw_img_and_scr_gif(tmp_path):
    src = tmp_path / "jsrt"
    raw = np.random.default_rng(0).integers(0, 4096, (2048, 2048)).astype(">u2")
    raw[:1024] = 4000  # top half: high density = dark film
    raw[1024:] = 100
    (src / "All247images").mkdir(parents=True)
    raw.tofile(src / "All247images" / "JPCLN001.IMG")
    left, right = lung_pair(1024, 1024)
    for name, m in (("left lung", left), ("right lung", right)):
        p = src / "scr" / "masks" / name / "JPCLN001.gif"
        p.parent.mkdir(parents=True)
        Image.fromarray(m.astype(np.uint8) * 255).save(p)
    res = public.prepare("jsrt", src, tmp_path / "out")
    ds = FolderDataset(res.out)
    img = ds.image("JPCLN001")
    assert img.shape == (1024, 1024)
    assert img[:512].mean() < 10 and img[512:].mean() > 245  # inverted: dense film shows dark
    assert np.array_equal(ds.mask("JPCLN001", "left_lung"), left)
    (src / "All247images" / "JPCLN002.IMG").write_bytes(b"\x00" * 10)
    with pytest.raises(SampotError, match="a JSRT .IMG has"):
        public.read_jsrt_img(src / "All247images" / "JPCLN002.IMG")


def test_covid_with_v7_zip(tmp_path):
    src = tmp_path / "covid-chestxray-dataset"
    left, right = lung_pair(H, W)
    _save(src / "images" / "a.jpg", np.stack([_img(1)] * 3, -1))
    _save(src / "images" / "b.png", _img(2))
    _save(src / "images" / "c.png", _img(3))
    (src / "metadata.csv").write_text(
        "patientid,offset,view,filename\n7,0,PA,a.jpg\n7,3,AP,b.png\n8,0,L,c.png\n9,0,PA,missing.png\n"
    )
    zpath = tmp_path / "semantic_masks_v7labs_lungs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for fname in ("a.jpg", "b.png", "c.png"):
            buf = tmp_path / f"m_{fname}.png"
            Image.fromarray((left | right).astype(np.uint8) * 255).save(buf, format="PNG")
            zf.write(buf, f"semantic_masks_v7labs_lungs/{fname}")
    res = public.prepare("covid", src, tmp_path / "out", masks=zpath)
    ds = FolderDataset(res.out)
    assert ds.ids == ["a", "b"]  # lateral view c left out
    assert ds.subject_of("a") == ds.subject_of("b") == "patient_7"
    _check_sides(ds, "a")


def test_split_lungs_errors():
    left, right = lung_pair(H, W)
    with pytest.raises(SampotError, match="connected region"):
        public.split_lungs(left)
    two_right = np.zeros((H, W), bool)
    two_right[2:20, W // 2 + 4 : W - 4] = True
    two_right[24:44, W // 2 + 4 : W - 4] = True
    with pytest.raises(SampotError, match="same side"):
        public.split_lungs(two_right)
    speck = left.copy()
    speck[0, 0] = True  # a one-pixel second region: the lungs are probably merged into the first
    with pytest.raises(SampotError, match="under a tenth"):
        public.split_lungs(speck)


def test_prepare_errors(tmp_path):
    with pytest.raises(SampotError, match="unknown data set"):
        public.prepare("nih", tmp_path, tmp_path / "o")
    with pytest.raises(SampotError, match="no such folder"):
        public.prepare("montgomery", tmp_path / "none", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SampotError, match="CXR_png"):
        public.prepare("montgomery", tmp_path / "empty", tmp_path / "o")
    with pytest.raises(SampotError, match="cannot be downloaded"):
        public.fetch_and_extract("jsrt", tmp_path)


def test_download_checks_sha256(tmp_path, monkeypatch, capsys):
    # A local "server": file:// goes through the same urllib code path as https.
    src = tmp_path / "MontgomerySet"
    _montgomery_image(src, 1)
    archive = tmp_path / "mc.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in src.rglob("*.png"):
            zf.write(p, p.relative_to(tmp_path))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    path, got = public.download(archive.as_uri(), tmp_path / "dl" / "a.zip")
    assert got == digest and path.read_bytes() == archive.read_bytes()
    with pytest.raises(SampotError, match="checksum mismatch"):
        public.download(archive.as_uri(), tmp_path / "dl" / "b.zip", sha256="0" * 64)
    assert not (tmp_path / "dl" / "b.zip").exists() and len(list((tmp_path / "dl").iterdir())) == 1
    # The whole `--download` path, pointed at the local archive with the right checksum.
    monkeypatch.setitem(public.DOWNLOADS, "montgomery", public.Download(archive.as_uri(), digest))
    assert run_cli("data", "prepare", "montgomery", "--download", "--src", str(tmp_path / "dl2"),
                   "--out", str(tmp_path / "out")) == 0  # fmt: skip
    assert f"sha256 {digest} (matches)" in capsys.readouterr().out
    assert FolderDataset(tmp_path / "out").ids == ["MCUCXR_0001_0"]


def test_a_conversion_that_fails_part_way_leaves_out_as_it_was_and_can_be_run_again(tmp_path):
    src = tmp_path / "MontgomerySet"
    for i in range(3):
        _montgomery_image(src, i)
    broken = src / "CXR_png" / "MCUCXR_0002_0.png"
    good = broken.read_bytes()
    broken.write_bytes(b"not a png")  # the last image: two are converted before the error
    out = tmp_path / "sets" / "montgomery"
    with pytest.raises(SampotError, match="MCUCXR_0002_0"):
        public.prepare("montgomery", src, out, max_size=None)
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing written, nothing staged left behind
    broken.write_bytes(good)
    res = public.prepare("montgomery", src, out, max_size=None)
    assert res.out == out and res.written == 3
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.csv", "masks"]
    assert FolderDataset(out).ids == ["MCUCXR_0000_0", "MCUCXR_0001_0", "MCUCXR_0002_0"]
    assert list(out.parent.iterdir()) == [out]
