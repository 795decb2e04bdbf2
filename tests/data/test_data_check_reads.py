"""`sampot data check` reads what a run reads and refuses what a run refuses: channels, EXIF orientation, the
smallest image, masks that leave no room for the regressor's outside clicks, identical masks, odd manifests."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import make_folder
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sampot_lib.cli.data import add_data_commands
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.io import has_outside_ring, read_image
from sampot_lib.data.splits import split_counts
from sampot_lib.data.validate import validate_folder
from sampot_lib.defaults import MIN_IMAGE_SIDE, OUTSIDE_OFFSET
from sampot_lib.errors import SampotError
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.method.synth import outside_prompts
from sampot_lib.models.sam import check_image


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="sampot")
    add_data_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(list(argv))
    return args.func(args)


def _gray(root: Path, image_id: str = "im0") -> np.ndarray:
    return np.asarray(Image.open(root / "images" / f"{image_id}.png").convert("L"))


def test_grayscale_alpha_and_palette_images_pass_the_check_and_are_read_as_their_gray_values(tmp_path):
    root = make_folder(tmp_path / "d", n=3)
    gray = _gray(root)
    Image.fromarray(np.stack([gray, np.full_like(gray, 200)], -1), mode="LA").save(root / "images" / "im0.png")
    g1 = _gray(root, "im1")
    Image.fromarray(g1).convert("P").save(root / "images" / "im1.png")
    report = validate_folder(root)
    assert report.ok, report.format()
    ds = FolderDataset(root)
    assert np.array_equal(ds.image("im0"), gray)  # the gray channel, alpha dropped
    assert np.abs(ds.image("im1").astype(int) - g1).max() <= 1  # palette -> RGB -> luminance
    check_image(ds.image("im0"))  # what a model is given


def test_exif_orientation_is_applied_and_said_and_explains_a_size_mismatch(tmp_path):
    root = make_folder(tmp_path / "d", n=2, h=32, w=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees: shown (and read) as 32 wide, 40 high
    stored = _gray(root)
    Image.fromarray(stored).save(root / "images" / "im0.png", exif=exif)
    report = validate_folder(root)
    assert not report.ok  # its masks were drawn on the stored, unturned pixels
    assert any("EXIF orientation 6" in p and "masks/left_lung/im0.png" in p for p in report.problems), report.problems
    assert any("images/im0.png: EXIF orientation 6" in n and "32x40" in n for n in report.notes)
    for s in ("left_lung", "right_lung"):  # masks drawn on the image as shown: accepted
        mask = np.asarray(Image.open(root / "masks" / s / "im0.png"))
        Image.fromarray(np.ascontiguousarray(np.rot90(mask, -1))).save(root / "masks" / s / "im0.png")
    report = validate_folder(root)
    assert report.ok, report.format()
    ds = FolderDataset(root)
    assert ds.image("im0").shape == (40, 32) == ds.image_size("im0")
    assert np.array_equal(ds.image("im0"), np.rot90(stored, -1))  # turned as a viewer shows it


def test_a_command_given_one_turned_image_says_the_exif_orientation_was_applied(tmp_path):
    from sampot_lib.data.io import read_user_image
    from sampot_lib.errors import SampotWarning

    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.tile(np.arange(40, dtype=np.uint8) * 6, (32, 1))
    Image.fromarray(stored).save(tmp_path / "turned.png", exif=exif)
    with pytest.warns(SampotWarning, match=r"turned.png: its EXIF orientation 6 is applied.* read as 32x40 \(W x H\)"):
        image = read_user_image(tmp_path / "turned.png")
    assert image.shape == (40, 32)
    Image.fromarray(stored).save(tmp_path / "plain.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampotWarning)
        assert read_user_image(tmp_path / "plain.png").shape == (32, 40)  # nothing to say


def test_images_too_small_for_the_models_are_refused_with_the_models_bound(tmp_path):
    side = MIN_IMAGE_SIDE - 1
    root = make_folder(tmp_path / "d", n=2, h=side, w=40)
    report = validate_folder(root)
    expected = f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"
    assert any(f"40x{side} pixels" in p and expected in p for p in report.problems), report.problems
    with pytest.raises(SampotError, match=expected):  # the model refuses it with the same bound
        check_image(read_image(root / "images" / "im0.png"))
    assert validate_folder(make_folder(tmp_path / "e", n=2, h=MIN_IMAGE_SIDE, w=40)).ok


def test_a_mask_with_no_room_for_the_outside_clicks_is_refused_before_a_run(tmp_path):
    root = make_folder(tmp_path / "d", n=2, h=32, w=40)
    full = np.zeros((32, 40), np.uint8)
    full[1:-1, 1:-1] = 255
    Image.fromarray(full).save(root / "masks" / "left_lung" / "im1.png")
    report = validate_folder(root)
    assert any("masks/left_lung/im1.png" in p and f"{OUTSIDE_OFFSET:g} px outside" in p for p in report.problems)
    with pytest.raises(SampotError, match="margin of at least"):  # what the regressor's training set would do
        outside_prompts(full > 0, 3, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(3, 24),
    w=st.integers(3, 24),
    box=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
)
def test_the_checks_shortcut_agrees_with_the_training_sets_outside_clicks(h, w, box):
    y0, y1 = sorted(int(v * h) for v in box[:2])
    x0, x1 = sorted(int(v * w) for v in box[2:])
    mask = np.zeros((h, w), bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    try:
        outside_prompts(mask, 1, seed=0)
        works = True
    except SampotError:
        works = False
    assert has_outside_ring(mask, OUTSIDE_OFFSET) == works


def test_a_manifest_row_longer_than_its_header_is_a_problem_not_a_crash(tmp_path, capsys):
    root = make_folder(tmp_path / "d", n=3, manifest=True)
    (root / "manifest.csv").write_text("id,subject\nim0,s0,extra\nim1,s1\nim2,s2\n")
    report = validate_folder(root)
    assert any("line(s) 2 have more fields than its header (id, subject)" in p for p in report.problems)
    assert run_cli("data", "check", str(root)) == 1
    assert "more fields than its header" in capsys.readouterr().out
    with pytest.raises(SampotError, match="more fields than its header"):
        FolderDataset(root)  # what `sampot app` and `run` open


def test_split_fractions_near_the_float_maximum_split_as_their_proportions(tmp_path, capsys):
    assert split_counts(10, (1e308, 1e308, 0)) == [5, 5, 0]
    assert split_counts(9, (1e308, 1e308, 1e308)) == [3, 3, 3]
    root = make_folder(tmp_path / "d", n=4)
    assert run_cli("data", "split", str(root), "--fractions", "1e308", "1e308", "1e308") == 0
    assert "train 2 subjects" in capsys.readouterr().out


def test_a_path_that_is_not_a_file_is_not_called_missing(tmp_path):
    (tmp_path / "x.png").mkdir()
    with pytest.raises(SampotError, match="not a regular file"):
        read_image(tmp_path / "x.png")


def test_identical_masks_of_different_images_are_noted_and_never_a_leak(tmp_path):
    root = make_folder(tmp_path / "d", n=3)  # every image has the same two mask files
    report = validate_folder(root)
    assert report.ok and any("identical mask files" in n and "im0.png = im1.png = im2.png" in n for n in report.notes)
    meta = {"train_masks": {"im0": "m"}, "val_masks": {}, "train_images": {"im0": "a"}, "val_images": {}}
    assert check_regressor(meta, {"test_masks": {"im1": "m"}, "test_images": {"im1": "b"}}) == []
    with pytest.raises(SampotError, match=r"1 test image\(s\) were among its training.*copy \(= its im0\)"):
        check_regressor(meta, {"test_masks": {"copy": "m"}, "test_images": {"copy": "a"}})
    with pytest.raises(SampotError, match="were among its training"):  # a record without image hashes: masks decide
        check_regressor({"train_masks": {"im0": "m"}}, {"test_masks": {"im1": "m"}, "test_images": {"im1": "b"}})


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A small PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header, cheaply)."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])  # width, height, then depth, colour, ...
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return path


def test_images_over_the_pixel_limit_are_refused_from_their_header(tmp_path, monkeypatch):
    from PIL import ImageFile
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from sampot_lib.defaults import MAX_IMAGE_PIXELS

    side = int(MAX_IMAGE_PIXELS**0.5) + 1  # just over the limit
    pngs = {width: _png_claiming(tmp_path / f"big{width}.png", width, height)
            for width, height in ((side, side), (30_000, 30_000))}  # ours, and past PIL's own refusal  # fmt: skip
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or pytest.fail("decoded"))
    for width, png in pngs.items():  # sampot's own bound, stated exactly, even past PIL's refusal
        with pytest.raises(SampotError, match=rf"big{width}.png: .*{width * width:,}\)?( pixels)? is more than the "
                                              rf"{MAX_IMAGE_PIXELS:,} pixels sampot decodes"):  # fmt: skip
            read_image(png)
    assert not decoded
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = side, side, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.zeros(16, np.uint16).tobytes()  # the header's size is what counts
    ds.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    with pytest.raises(SampotError, match=rf"big.dcm: {side}x{side} pixels .* more than the") as err:
        read_image(tmp_path / "big.dcm")
    assert "pixel-data plugin" not in str(err.value)  # its own bound, not wrapped as an unreadable file


def test_a_mask_named_with_an_upper_case_png_is_named_with_the_fix_not_called_missing(tmp_path):
    root = make_folder(tmp_path / "ds", n=3, h=64, w=64)
    mask = root / "masks" / "left_lung" / "im1.png"
    mask.rename(mask.with_suffix(".PNG"))
    if mask.is_file():
        pytest.skip("a case-insensitive file system finds im1.PNG as im1.png, and reads it")
    problems = validate_folder(root, check_contents=False).problems
    assert problems == [
        "masks/left_lung/im1.PNG: mask files are read as <id>.png, in lower case: rename it to im1.png."
    ]
    (root / "masks" / "left_lung" / "im1.PNG").rename(mask)
    assert validate_folder(root).ok
