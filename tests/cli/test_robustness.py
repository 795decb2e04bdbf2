"""Every input a user can give either works or fails with one line that names it (SampotError, exit 2);
never a traceback, never a silent wrong result. Property-based (hypothesis) at the boundaries, plus the command line's
exit status and message for each kind of bad input, unwritable outputs and a full disk."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sampot_lib import errors as checks
from sampot_lib.cli.checks import check_args
from sampot_lib.cli.main import build_parser, main
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.io import check_mask, read_image, read_mask, write_png
from sampot_lib.data.phantom import write_phantom_set
from sampot_lib.data.pixels import preprocess
from sampot_lib.data.splits import load_splits, split_info
from sampot_lib.data.validate import validate_folder
from sampot_lib.defaults import MAX_REGRESSOR_SIZE
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.files import atomic_write, write_text
from sampot_lib.method.regressor import SegmentationRegressor, load_regressor, save_regressor

FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 4-image phantom set at 128 px, one image, its mask, an inverted mask, a small regressor file."""
    root = tmp_path_factory.mktemp("robust")
    data = write_phantom_set(root / "ph", 4, seed=0, size=128)
    mask = read_mask(data / "masks" / "left_lung" / "phantom_0000.png")
    write_png(root / "inverted.png", ~mask)
    save_regressor(SegmentationRegressor(32), root / "reg.pt")
    (root / "random.bin").write_bytes(np.random.default_rng(0).bytes(4000))
    return {
        "root": root, "data": data, "img": data / "images" / "phantom_0000.png",
        "mask": data / "masks" / "left_lung" / "phantom_0000.png", "inv": root / "inverted.png",
        "reg": root / "reg.pt", "rnd": root / "random.bin",
    }  # fmt: skip


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors (a value of the wrong syntax) exit from parse_args
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err


def one_line_error(err: str) -> str:
    """The single error line (warnings and progress bars aside); fails on a traceback or several error lines."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    return lines[0]


# -- numbers, devices, sizes ----------------------------------------------------------------------------------------


@FEW
@given(x=ANY_FLOAT)
def test_number_accepts_only_finite_values_in_range(x):
    try:
        got = checks.number(x, "--lr", low=0, high=10_000, low_open=True)
    except SampotError as exc:
        assert str(exc).startswith("--lr ")
        assert not (math.isfinite(x) and 0 < x <= 10_000)
    else:
        assert math.isfinite(got) and 0 < got <= 10_000


@pytest.mark.parametrize("bad", [True, "3", None, [1.0], float("nan"), float("-inf")])
def test_number_refuses_non_numbers_by_name(bad):
    with pytest.raises(SampotError, match="^--sharpness must be"):
        checks.number(bad, "--sharpness")


@FEW
@given(n=st.integers(-64, 300))
def test_regressor_size_check_agrees_with_the_network(n):
    """checks.regressor_size accepts exactly the sizes SegmentationRegressor can be built for."""
    try:
        checks.regressor_size(n, "--regressor-size", high=MAX_REGRESSOR_SIZE)
    except SampotError as exc:
        assert "--regressor-size" in str(exc) and "multiple of 16" in str(exc)
        with pytest.raises(SampotError):
            SegmentationRegressor(n)
    else:
        net = SegmentationRegressor(n, widths=(2, 2, 2, 2))
        x = torch.zeros(2, 1, n, n)
        assert net(x, x).shape == (2,)


@pytest.mark.parametrize("text", ["gpu0", "cuda:x", "cpu:1", "mps:0", "", "tpu", "cuda:-1", "0"])
def test_device_refuses_other_forms_naming_the_accepted_ones(text):
    with pytest.raises(SampotError, match=r"is not a device; use cpu, cuda, cuda:N .* or mps"):
        checks.device(text, "--device")


def test_device_exists_here(monkeypatch):
    assert checks.device(" CPU ", "--device") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SampotError, match="no CUDA GPU is available on this machine; use --device cpu"):
        checks.device("cuda", "--device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert checks.device("cuda:1", "--device") == "cuda:1"
    with pytest.raises(SampotError, match=r"has 2 CUDA GPU\(s\) \(cuda:0 .. cuda:1\)"):
        checks.device("cuda:2", "--device")
    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        with pytest.raises(SampotError, match="MPS"):
            checks.device("mps", "--device")


# -- prompts: clicks and boxes (sampot_lib.method.prompts) ---------------------------------------------------------

prompts = pytest.importorskip("sampot_lib.method.prompts")


@FEW
@given(x=ANY_FLOAT, y=ANY_FLOAT, h=st.integers(1, 300), w=st.integers(1, 300))
def test_click_is_accepted_iff_finite_and_inside_the_image(x, y, h, w):
    try:
        prompts.Prompt.click(x, y).check((h, w))
    except SampotError as exc:
        assert "click" in str(exc) or "coordinate" in str(exc)
        assert not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= w - 1 and 0 <= y <= h - 1)
    else:
        assert 0 <= x <= w - 1 and 0 <= y <= h - 1


@FEW
@given(box=st.tuples(ANY_FLOAT, ANY_FLOAT, ANY_FLOAT, ANY_FLOAT), h=st.integers(1, 300), w=st.integers(1, 300))
def test_box_is_accepted_iff_finite_ordered_and_inside(box, h, w):
    """Any four floats (NaN, inf, reversed, outside): a box that works, or SampotError that names the box."""
    try:
        prompts.Prompt.from_box(box).check((h, w))
    except SampotError as exc:
        assert "box" in str(exc) or "coordinate" in str(exc)
    else:
        x0, y0, x1, y1 = box
        assert all(math.isfinite(v) for v in box)
        assert 0 <= x0 < x1 <= w - 1 and 0 <= y0 < y1 <= h - 1


@FEW
@given(
    box=st.one_of(st.none(), st.tuples(ANY_FLOAT, ANY_FLOAT, ANY_FLOAT, ANY_FLOAT)),
    points=st.lists(st.tuples(ANY_FLOAT, ANY_FLOAT), max_size=3),
    labels=st.lists(st.integers(-1, 2), max_size=3),
)
def test_any_prompt_is_made_or_refused_by_name(box, points, labels):
    try:
        p = prompts.Prompt(points=tuple(points), labels=tuple(labels), box=box)
        p.check((64, 64))
    except SampotError:
        pass


# -- images and masks -----------------------------------------------------------------------------------------------

_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, bool, np.int8])


@FEW
@given(
    shape=st.one_of(
        st.tuples(st.integers(0, 20), st.integers(0, 20)),
        st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 5)),
        st.tuples(st.integers(1, 4)),
        st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    ),
    dtype=_DTYPES,
    seed=st.integers(0, 1000),
    special=st.sampled_from([None, np.nan, np.inf, -np.inf]),
)
def test_any_image_array_becomes_uint8_or_is_refused(shape, dtype, seed, special):
    arr = (np.random.default_rng(seed).random(shape) * 300).astype(dtype)
    if special is not None and np.issubdtype(arr.dtype, np.floating) and arr.size:
        arr.flat[0] = special
    try:
        out = preprocess(arr)
    except SampotError as exc:
        assert "image" in str(exc)
    else:
        assert out.dtype == np.uint8 and out.shape == shape[:2]


@FEW
@given(
    shape=st.tuples(st.integers(0, 12), st.integers(0, 12)),
    values=st.lists(st.integers(0, 300), min_size=1, max_size=3),
    dtype=_DTYPES,
    seed=st.integers(0, 1000),
)
def test_any_mask_array_is_a_bool_mask_or_refused_by_name(shape, values, dtype, seed):
    arr = np.random.default_rng(seed).choice(values, size=shape).astype(dtype)
    try:
        out = check_mask(arr, name="masks/x.png", expected_shape=(6, 6))
    except SampotError as exc:
        assert str(exc).startswith("masks/x.png")
    else:
        assert out.dtype == bool and out.shape == (6, 6) and out.any()


@FEW
@given(content=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".dcm", ".bin"]))
def test_any_file_bytes_read_as_an_image_or_refused_naming_the_file(tmp_path_factory, content, suffix):
    path = tmp_path_factory.mktemp("img") / f"x{suffix}"
    path.write_bytes(content)
    with pytest.raises(SampotError) as exc:  # random bytes are never an image
        read_image(path)
    assert str(path) in str(exc.value)


def test_dicom_with_window_width_zero_names_the_file(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 16, 12, 11
    ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    for width in ("0", "-5"):
        ds.WindowCenter, ds.WindowWidth = "30", width
        path = tmp_path / f"w{width}.dcm"
        ds.save_as(path, enforce_file_format=True)
        with pytest.raises(SampotError, match=rf"^{path}: its DICOM window .* WindowWidth {width}\) is invalid"):
            read_image(path)


# -- data-set folders built from random bad parts ---------------------------------------------------------------------

_IMAGE_PARTS = ["ok", "garbage", "empty", "txt", "rgb", "16bit", "tiny"]
_MASK_PARTS = ["ok", "missing", "garbage", "wrong_size", "not_binary", "empty", "colour", "inverted", "extra"]
_MANIFEST_PARTS = ["none", "ok", "garbage", "no_id", "duplicate", "unknown_id", "empty", "latin1"]


def _write_part(root: Path, i: int, image: str, mask: str) -> None:
    rng = np.random.default_rng(i)
    img = rng.integers(0, 256, (16, 20), dtype=np.uint8)
    ipath = root / "images" / f"im{i}.png"
    if image == "ok":
        Image.fromarray(img).save(ipath)
    elif image == "garbage":
        ipath.write_bytes(rng.bytes(100))
    elif image == "empty":
        ipath.write_bytes(b"")
    elif image == "txt":
        (root / "images" / f"im{i}.txt").write_text("not an image")
    elif image == "rgb":
        Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(ipath)
    elif image == "16bit":
        Image.fromarray(img.astype(np.uint16) * 200).save(ipath)
    elif image == "tiny":
        Image.fromarray(img[:1, :1]).save(ipath)
    m = np.zeros((16, 20), np.uint8)
    m[4:12, 5:15] = 255
    mpath = root / "masks" / "left_lung" / f"im{i}.png"
    if mask == "ok":
        Image.fromarray(m).save(mpath)
    elif mask == "garbage":
        mpath.write_bytes(rng.bytes(50))
    elif mask == "wrong_size":
        Image.fromarray(m[:8]).save(mpath)
    elif mask == "not_binary":
        Image.fromarray(rng.integers(0, 256, (16, 20), dtype=np.uint8)).save(mpath)
    elif mask == "empty":
        Image.fromarray(np.zeros_like(m)).save(mpath)
    elif mask == "colour":
        Image.fromarray(np.stack([m, m * 0, m], -1)).save(mpath)
    elif mask == "inverted":  # the structure as background, room left inside it for clicks 5 px from the mask
        inverted = np.full_like(m, 255)
        inverted[2:14, 4:16] = 0
        Image.fromarray(inverted).save(mpath)
    elif mask == "extra":
        Image.fromarray(m).save(mpath)
        Image.fromarray(m).save(root / "masks" / "left_lung" / f"orphan{i}.png")


def _write_manifest(root: Path, kind: str, n: int) -> None:
    path = root / "manifest.csv"
    rows = [f"im{i},s{i // 2}" for i in range(n)]
    content = {
        "ok": "id,subject\n" + "\n".join(rows),
        "garbage": None,
        "no_id": "name,subject\n" + "\n".join(rows),
        "duplicate": "id,subject\n" + "\n".join(rows + rows[:1]),
        "unknown_id": "id,subject\n" + "\n".join(rows + ["ghost,s9"]),
        "empty": "",
        "latin1": None,
    }.get(kind)
    if kind == "garbage":
        path.write_bytes(np.random.default_rng(n).bytes(80))
    elif kind == "latin1":
        path.write_bytes(("id,subject\n" + "\n".join(rows) + "\nim\xe9,s\n").encode("latin-1"))
    elif content is not None:
        path.write_text(content)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.tuples(st.sampled_from(_IMAGE_PARTS), st.sampled_from(_MASK_PARTS)), min_size=0, max_size=4),
    manifest=st.sampled_from(_MANIFEST_PARTS),
    layout=st.sampled_from(["ok", "no_masks", "no_images", "masks_is_file", "no_structure"]),
)
def test_any_folder_is_a_data_set_or_every_problem_is_named(tmp_path_factory, parts, manifest, layout):
    root = tmp_path_factory.mktemp("set")
    (root / "images").mkdir()
    (root / "masks" / "left_lung").mkdir(parents=True)
    for i, (image, mask) in enumerate(parts):
        _write_part(root, i, image, mask)
    _write_manifest(root, manifest, len(parts))
    if layout == "no_masks":
        for p in (root / "masks" / "left_lung").iterdir():
            p.unlink()
        (root / "masks" / "left_lung").rmdir()
        (root / "masks").rmdir()
    elif layout == "no_images":
        for p in (root / "images").iterdir():
            p.unlink()
        (root / "images").rmdir()
    elif layout == "masks_is_file":
        for p in (root / "masks" / "left_lung").iterdir():
            p.unlink()
        (root / "masks" / "left_lung").rmdir()
        (root / "masks").rmdir()
        (root / "masks").write_text("x")
    elif layout == "no_structure":
        (root / "masks" / "left_lung").rename(root / "masks" / ".hidden")

    report = validate_folder(root)  # never raises: it lists problems
    for problem in report.problems:  # each names a file or folder of the set
        assert any(t in problem for t in ("images/", "masks/", "manifest.csv", str(root))), problem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SampotWarning)  # inverted masks: tested on their own below
            ds = FolderDataset(root)
    except SampotError as exc:
        assert not report.ok and str(root) in str(exc)
    else:
        assert report.ok and len(ds) == len(parts) > 0
        for image_id in ds.ids:
            assert ds.image(image_id).dtype == np.uint8 and ds.mask(image_id, "left_lung").any()


def test_inverted_masks_are_a_warning_of_data_check(tmp_path):
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "masks" / "left_lung").mkdir(parents=True)
    _write_part(root, 0, "ok", "inverted")
    _write_part(root, 1, "ok", "ok")
    report = validate_folder(root)
    assert report.ok and len(report.warnings) == 1 and "masks/left_lung/im0.png" in report.warnings[0]
    assert "inverted" in report.format()
    with pytest.warns(SampotWarning, match="im0.png: covers .* is it inverted"):
        FolderDataset(root)


# -- state files: splits, regressors, checkpoints ---------------------------------------------------------------------


@FEW
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_split_file_is_read_or_refused_naming_it(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("split") / "splits.json"
    path.write_bytes(content)
    for read in (load_splits, split_info):
        try:
            read(path)
        except SampotError as exc:
            assert str(path) in str(exc)


def test_truncated_split_file_says_what_to_do(tmp_path):
    good = {"splits": {"train": ["a"], "val": ["b"], "test": ["c"]}, "seed": 0}
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(good)[:30])
    with pytest.raises(SampotError, match=r"splits.json: damaged split file .* make a new one with `sampot data split"):
        load_splits(path)
    with pytest.raises(SampotError, match="damaged split file"):
        split_info(path)
    path.write_bytes(b"\xf7\x00\x13garbage")
    with pytest.raises(SampotError, match="not a split file"):
        load_splits(path)


def test_damaged_regressor_files_are_named(tmp_path, files):
    payload = torch.load(files["reg"], weights_only=True)
    payload["config"]["input_size"] = 64  # settings that do not match the weights
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(SampotError, match=r"mismatch.pt is damaged: its weights do not match its settings"):
        load_regressor(tmp_path / "mismatch.pt")
    payload["config"] = "garbage"
    torch.save(payload, tmp_path / "noconfig.pt")
    with pytest.raises(SampotError, match="noconfig.pt is damaged: unreadable settings"):
        load_regressor(tmp_path / "noconfig.pt")
    with pytest.raises(SampotError, match="random.bin cannot be read") as exc:
        load_regressor(files["rnd"])
    assert "weights_only" not in str(exc.value)
    with pytest.raises(SampotError, match="is a folder, not a file"):
        load_regressor(tmp_path)
    torch.save({"image_encoder.x": torch.zeros(1)}, tmp_path / "sam.pth")
    with pytest.raises(SampotError, match="looks like a SAM checkpoint: pass it as --checkpoint"):
        load_regressor(tmp_path / "sam.pth")


def test_checkpoint_messages(tmp_path, files):
    from sampot_lib.models.registry import load_state_dict

    with pytest.raises(SampotError, match="cannot be read") as exc:
        load_state_dict(files["rnd"])
    assert "weights_only" not in str(exc.value)
    with pytest.raises(SampotError, match="is a sampot segmentation regressor, .* pass it as --regressor"):
        load_state_dict(files["reg"])
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(SampotError, match="holds no SAM weights"):
        load_state_dict(tmp_path / "other.pth")


def test_offline_download_says_truly_whether_a_partial_file_was_kept(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from sampot_lib.models.registry import Checkpoint, fetch_checkpoint

    ckpt = Checkpoint("x", "vit_b", "x.pth", "0" * 64, 1000, url="http://invalid.example/x.pth")

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SampotError, match="If this machine is offline.*No partial file was kept") as exc:
        fetch_checkpoint(ckpt, cache_dir=tmp_path, progress=False)
    assert not (tmp_path / "x.pth.part").exists() and "is kept" not in str(exc.value)
    (tmp_path / "x.pth.part").write_bytes(b"a" * 300)
    with pytest.raises(SampotError, match=r"The 300 bytes fetched so far are kept in .*x.pth.part"):
        fetch_checkpoint(ckpt, cache_dir=tmp_path, progress=False)


# -- files: umask, atomic, disk full, read-only ------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_png(tmp_path / "a.png", np.ones((4, 4), bool))
        save_regressor(SegmentationRegressor(32), tmp_path / "r.pt")
    finally:
        os.umask(old)
    for name in ("a.txt", "a.png", "r.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def _disk_full(monkeypatch, after: int = 0) -> None:
    """Make every write through os.fdopen fail with ENOSPC after ``after`` bytes (a full disk)."""
    real = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, fh):
            self.fh, self.left = fh, after

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            if len(b) > self.left:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.left -= len(b)
            return self.fh.write(b)

        def close(self) -> None:
            self.fh.close()
            super().close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real(fd, *a, **k)))


def test_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    target.write_text("old")
    _disk_full(monkeypatch, after=10)
    with pytest.raises(OSError) as exc:
        write_text(target, "new contents that do not fit")
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(target)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
    with pytest.raises(OSError, match="No space left"):
        write_png(tmp_path / "m.png", np.ones((40, 40), bool))
    assert not (tmp_path / "m.png").exists()


def test_a_folder_in_the_way_of_a_file(tmp_path):
    (tmp_path / "x.csv").mkdir()
    with pytest.raises(IsADirectoryError, match="a folder, where sampot writes a file") as exc:
        atomic_write(tmp_path / "x.csv", lambda fh: fh.write(b"1"))
    assert exc.value.filename == str(tmp_path / "x.csv")
    assert "x.csv" in checks.describe_os_error(exc.value) and (tmp_path / "x.csv").is_dir()


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"), (errno.EACCES, "no permission")])
def test_unwritable_output_places_are_named_before_work(tmp_path, monkeypatch, code, words):
    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(checks.tempfile, "mkstemp", refuse)
    for check in (checks.output_dir, checks.output_file, checks.cache_dir):
        with pytest.raises(SampotError, match=rf"cannot write in {tmp_path} .*{words}"):
            check(tmp_path / "new" / "thing")
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_for_real(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(SampotError, match="cannot write in"):
            checks.output_dir(ro / "out")
    finally:
        ro.chmod(0o755)


def test_describe_os_error_names_path_cause_and_fix():
    text = checks.describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/runs/a/summary.json"))
    assert text == (
        "/runs/a/summary.json: No space left on device, ENOSPC; the disk is full; free some space, or write "
        "somewhere else."
    )
    assert errno.ENOSPC in checks.USER_ERRNOS and errno.EIO not in checks.USER_ERRNOS


# -- the command line: every kind of bad input, one line, exit 2, before any work --------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --lr 1e39", "--lr must be in (0, 10000]"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --lr inf", "argument --lr: inf must be a finite"),
        ("evolve {img} --click nan 60 --regressor {reg} --out {o}", "--click nan 60.0: must be a finite number"),
        ("evolve {img} --box 1 1 inf 9 --regressor {reg} --out {o}", "--box must be a finite number"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --min-overlap 5", "--min-overlap must be in [0, 1]"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --max-area-ratio 0.5", "--max-area-ratio must be >="),
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --sharpness 1e9", "--sharpness must be in (0, 1000]"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --seed -1", "--seed must be a whole number in [0,"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --device gpu0", "--device 'gpu0' is not a device"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {o} --model vit_x", "--model 'vit_x' is unknown"),
        ("evolve {img} --click 60 60 --regressor {root} --out {o}", "--regressor {root} is a folder, not a file"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {reg}", "--out {reg} is a file, not a folder"),
        ("evolve {img} --click 60 60 --regressor {reg} --out {reg}/sub", "{reg} is a file, so no folder can be made"),
        ("evolve {root} --click 60 60 --regressor {reg} --out {o}", "image {root} is a folder, not a file"),
        ("evolve {img} --click 60 60 --regressor {reg} --checkpoint {rnd} --out {o}", "{rnd} cannot be read"),
        ("evolve {img} --click 60 60 --regressor {reg} --checkpoint {reg} --out {o}", "pass it as --regressor"),
        ("evolve {img} --click 60 60 --regressor {rnd} --out {o}", "{rnd} cannot be read"),
        ("heatmap {img} --mask {mask} --out {root}", "--out {root} is a folder; give a file name"),
        # a new name ending in '/' means a folder, where these commands write one file
        ("heatmap {img} --mask {mask} --out {o}/heat/", "--out {o}/heat/ names a folder (it ends in '/')"),
        ("score {data} --regressor {reg} --out {o}/scores/", "--out {o}/scores/ names a folder (it ends in '/')"),
        ("data split {data} --out {o}/new/", "--out {o}/new/ names a folder (it ends in '/'), where sampot writes"),
        ("heatmap {img} --mask {mask} --out {o}/h.csv --step 0", "--step must be a whole number >= 1"),
        ("heatmap {img} --mask {mask} --out {o}/h.csv --step 100000", None),  # one click: works
        ("run {data} --out {o} --epochs 0", "--epochs must be a whole number >= 1"),
        ("run {data} --out {o} --max-images 2", "--max-images must be at least 3"),
        ("run {data} --out {o} --regressor-size 40", "--regressor-size must be a multiple of 16"),
        ("run {data} --out {o} --split-file {rnd}", "not a split file"),
        ("run {data} --out {o} --split-file {root}", "--split-file {root} is a folder"),
        ("run {o} --out {o}", "data set {o}: no such folder"),
        ("data split {data} --out {o}/s.json --fractions 1 nan 1", "--fractions must be a finite number"),
        ("data split {data} --out {o}/s.json --fractions 0 0 0", "--fractions must have a positive sum"),
        ("data split {data} --out {root}", "--out {root} is a folder"),
        ("data phantom --n 0 --out {o}", "--n must be a whole number >= 1"),
        ("data phantom --n 2 --size 8 --out {o}", "--size must be a whole number in [64, 8000]"),
        ("data phantom --n 2 --size 1000000 --out {o}", "--size must be a whole number in [64, 8000]"),
        ("run {data} --out {o} --regressor-size 100000", "--regressor-size must be a multiple of 16 from 32 to 1024"),
        ("run {data} --out {o} --box-jitter nan", "--box-jitter must be a finite number"),
        ("run {data} --out {o} --box-jitter 5", "--box-jitter must be in [0, 1], got 5"),
        ("calibrate {data} --regressor {reg} --labelled 3 --out {o} --box-jitter -1", "--box-jitter must be in [0, 1]"),
        ("run {data} --out {o} --extra-jitters 0.1 -0.5", "--extra-jitters must be in [0, 1], got -0.5"),
        ("run {data} --out {o} --seeds 1 1", "--seeds lists a seed twice (1 1)"),
        ("run {data} --out {o} --seeds 99999999999", "--seeds must be a whole number in [0, 4294967295]"),
        ("run {data} --out {o} --workers 100000", "--workers 100000 is more than 4 per core"),
        ("data phantom --n 2 --out {reg}", "--out {reg} is a file"),
        ("data prepare jsrt --src {root} --out {o} --max-size 5", "--max-size must be 0 (keep the size) or at least"),
        # an option that another makes do nothing: refused, not recorded in config.json as used
        ("run {data} --out {o} --box-jitter 0.3", "--box-jitter jitters the user's box, but the prompt is a click"),
        ("run {data} --out {o} --no-safeguards --trust-radius 0.1", "so --trust-radius would be dropped: give one"),
        (
            "evolve {img} --click 60 60 --regressor {reg} --out {o} --margin 0.5 --no-do-no-harm",
            "--margin 0.5 is the do-no-harm rule's margin, but --no-do-no-harm turns the rule off",
        ),
        (
            "evolve {img} --click 60 60 --regressor {reg} --out {o} --seed 7",
            "--seed 7 seeds the cmaes and random optimizers, but --optimizer adam makes no random choice",
        ),
        ("run {data} --out {o} --epochs 2 --regressor-patience 3", "--regressor-patience 3 is larger than --epochs 2"),
        (
            "evolve {img} --click 60 60 --regressor {reg} --out {o} --no-safeguards --min-overlap 0.2",
            "--no-safeguards turns every safeguard off, so --min-overlap would be dropped",
        ),
        (
            "run {data} --out {o} --regressor {reg} --epochs 5 --rank-weight 1",
            "--epochs and --rank-weight set how a regressor is trained, but --regressor {reg} is used as it is",
        ),
        ("data prepare montgomery --src {root} --out {o} --masks x.zip", "--masks is the covid set's masks zip"),
        ("run {data} --out {o} --regressor {rnd}", "{rnd} cannot be read"),  # before the run folder is written
        ("run {data} --out {o} --regressor {root}/c/regressor_calibrated.pt", "`sampot calibrate DATA --regressor R"),
        # nothing is written into a data set's images/ or masks/, which it would break for every later command
        ("run {data} --out {data}/images/run", "--out {data}/images/run lies inside the data set's images/ folder"),
        ("data split {data} --out {data}/masks/s.json", "lies inside the data set's masks/ folder"),
        (
            "evolve {img} --click 60 60 --regressor {reg} --out {data}/masks/left_lung",
            "--out {data}/masks/left_lung lies inside the data set's masks/ folder",
        ),
        ("score {data} --regressor {reg} --out {data}/images/s.csv", "lies inside the data set's images/ folder"),
        ("heatmap {img} --mask {mask} --regressor {reg} --out {data}/masks/h.csv", "inside the data set's masks/"),
        # nor over its manifest.csv (its images' ids and subjects), with or without one there
        (
            "score {data} --regressor {reg} --out {data}/manifest.csv",
            "--out {data}/manifest.csv is the data set's manifest",
        ),
        ("data split {data} --out {data}/manifest.csv", "is the data set's manifest (its images' ids and subjects)"),
        (
            "calibrate {data} --regressor {reg} --labelled 3 --out {o} --epochs 0",
            "--epochs must be a whole number >= 1",
        ),
        (
            "calibrate {data} --regressor {reg} --labelled 3 --out {o} --epochs -1",
            "--epochs must be a whole number >= 1",
        ),
        ("calibrate {data} --regressor no_such_one --labelled 3 --out {o}", "shipped one (`sampot regressors` lists"),
    ],
)
def test_cli_bad_input_is_one_line_before_any_work(files, tmp_path, capsys, argv, message):
    paths = {k: str(v) for k, v in files.items()} | {"o": str(tmp_path / "o")}
    rc, err = run_cli(argv.format(**paths).split(), capsys)
    if message is None:
        assert rc == 0, err
        return
    line = one_line_error(err)
    assert rc == 2 and message.format(**paths) in line, err
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize(
    "argv",
    [
        "run {data} --out {o} --epochs 3 --regressor-patience 3",  # patience up to the epochs is allowed
        "run {data} --out {o} --preset paper --regressor-patience 150",  # the preset's 200 epochs, not the default's
        "evolve {img} --click 60 60 --out {o} --seed 7 --optimizer random",
        "evolve {img} --click 60 60 --out {o} --seed 7 --optimizer cmaes",
        "evolve {img} --click 60 60 --out {o} --margin 0.05",
    ],
)
def test_option_combinations_that_do_something_are_accepted(files, tmp_path, argv):
    from sampot_lib.cli.checks import check_args
    from sampot_lib.cli.main import build_parser

    paths = {k: str(v) for k, v in files.items()} | {"o": str(tmp_path / "o")}
    check_args(build_parser().parse_args(argv.format(**paths).split()))


def test_a_data_sets_manifest_is_never_an_output(files, tmp_path, capsys):
    data = tmp_path / "set"
    shutil.copytree(files["data"], data)
    manifest = data / "manifest.csv"
    ids = sorted(p.stem for p in (data / "images").iterdir())
    manifest.write_text("id,subject\n" + "".join(f"{i},s{k // 2}\n" for k, i in enumerate(ids)))
    before = manifest.read_bytes()
    score = ["score", data, "--regressor", files["reg"], "--out"]
    for argv in ([*score, manifest], ["data", "split", data, "--out", manifest]):
        rc, err = run_cli([str(a) for a in argv], capsys)
        assert rc == 2 and f"--out {manifest} is the data set's manifest" in one_line_error(err), err
        assert manifest.read_bytes() == before
    # a file of that name elsewhere is an ordinary output
    rc, err = run_cli([*score, tmp_path / "manifest.csv"], capsys)
    assert rc == 0, err


def test_an_output_that_is_one_of_the_commands_inputs_is_refused_and_the_input_kept(files, tmp_path, capsys):
    img, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    shutil.copy(files["img"], img)
    shutil.copy(files["mask"], mask)
    before = {p: p.read_bytes() for p in (img, mask)}
    reg = ["--regressor", files["reg"]]
    cases = [
        (["score", img, mask, "--out", mask, *reg], f"{mask} is the mask (a_mask.png)"),
        (["heatmap", img, "--mask", mask, "--out", img, *reg], f"{img} is the image (a.png)"),
        (["evolve", img, "--click", "60", "60", "--mask", mask, "--out", tmp_path, *reg], "is the --mask file"),
    ]
    for argv, message in cases:
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and message in one_line_error(err), err
    assert {p: p.read_bytes() for p in (img, mask)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_mask.png"]


def test_embeddings_inside_the_data_set_are_refused_before_any_work(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(files["data"] / "images" / "emb"))
    rc, err = run_cli(["run", files["data"], "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "$SAMPOT_EMBEDDINGS" in one_line_error(err) and "inside the data set's images/ folder" in err
    assert not (tmp_path / "o").exists() and not (files["data"] / "images" / "emb").exists()


def test_an_unusable_embeddings_folder_is_refused_before_the_run_folder_is_written(
    files, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("SAMPOT_EMBEDDINGS", str(files["reg"]))
    evolve = ["evolve", files["img"], "--click", 60, 60, "--regressor", files["reg"], "--out", tmp_path / "o"]
    for argv in (["run", files["data"], "--out", tmp_path / "o"], evolve):
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and f"$SAMPOT_EMBEDDINGS {files['reg']} is a file, not a folder" in one_line_error(err), err
        assert not (tmp_path / "o").exists()


def test_cache_that_is_a_file(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SAMPOT_CACHE", str(files["reg"]))
    rc, err = run_cli(["download", "vit_b"], capsys)
    assert rc == 2 and "$SAMPOT_CACHE" in one_line_error(err) and "is a file, not a folder" in err
    rc, err = run_cli(["evolve", files["img"], "--click", 60, 60, "--regressor", files["reg"], "--model", "vit_b",
                       "--out", tmp_path / "o"], capsys)  # fmt: skip
    assert rc == 2 and "$SAMPOT_CACHE" in one_line_error(err)


def test_cli_device_without_a_gpu(files, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cmd in (["evolve", files["img"], "--click", 60, 60], ["heatmap", files["img"], "--mask", files["mask"]]):
        out = tmp_path / ("o" if cmd[0] == "evolve" else "h.csv")
        rc, err = run_cli([*cmd, "--regressor", files["reg"], "--out", out, "--device", "cuda:1"], capsys)
        assert rc == 2 and "--device cuda:1: no CUDA GPU is available" in one_line_error(err)


def test_cli_full_disk_is_one_line_naming_the_file(files, tmp_path, capsys, monkeypatch):
    _disk_full(monkeypatch)
    rc, err = run_cli(["data", "phantom", "--n", 2, "--size", 64, "--out", tmp_path / "ph"], capsys)
    line = one_line_error(err)
    assert rc == 2 and "phantom_0000.png: No space left on device, ENOSPC; the disk is full; free some space" in line
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no partial or temporary file


def test_cli_read_only_at_write_time_and_other_os_errors(files, tmp_path, capsys, monkeypatch):
    import sampot_lib.cli.data as cli_data

    def fail(code):
        def raise_it(*a, **k):
            raise OSError(code, os.strerror(code), str(tmp_path / "ph" / "x.png"))

        return raise_it

    monkeypatch.setattr(cli_data, "_phantom", fail(errno.EROFS))
    rc, err = run_cli(["data", "phantom", "--out", tmp_path / "ph"], capsys)
    assert rc == 2 and "x.png: Read-only file system, EROFS; that file system is read-only" in one_line_error(err)
    monkeypatch.setattr(cli_data, "_phantom", fail(errno.EIO))
    rc, err = run_cli(["data", "phantom", "--out", tmp_path / "ph"], capsys)
    assert rc == 1 and "EIO" in one_line_error(err)


def test_cli_internal_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import sampot_lib.cli.data as cli_data

    def bug(args):
        raise KeyError("oops")

    monkeypatch.setattr(cli_data, "_phantom", bug)
    rc, err = run_cli(["data", "phantom", "--out", tmp_path / "ph"], capsys)
    assert rc == 1 and "internal error: KeyError" in one_line_error(err) and "--debug" in err
    for argv in (["--debug", "data", "phantom"], ["data", "phantom", "--debug"]):
        with pytest.raises(KeyError):
            main([*argv, "--out", str(tmp_path / "ph")])
    capsys.readouterr()
    rc = main(["data", "phantom", "--n", "0", "--out", str(tmp_path / "ph"), "--debug"])
    err = capsys.readouterr().err  # --debug shows the traceback of a user error too, which keeps its exit status
    assert rc == 2 and "Traceback" in err and err.rstrip().endswith("--n must be a whole number >= 1, got 0."), err


def test_cli_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "DATA", "--out", "O", "--steps", "ten"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "argument --steps: 'ten' is not a whole number (see `sampot run --help`)" in err


@FEW
@given(
    flag=st.sampled_from(["--lr", "--sharpness", "--trust-radius", "--min-overlap", "--max-area-ratio", "--steps"]),
    value=st.one_of(ANY_FLOAT.map(repr), st.integers(-5, 10**6).map(str), st.sampled_from(["", "x", "1e999", "-0"])),
)
def test_any_evolution_value_is_accepted_in_range_or_named(tmp_path_factory, flag, value):
    out = tmp_path_factory.mktemp("cli")
    (out / "img.png").write_bytes(b"")
    argv = ["evolve", str(out / "img.png"), "--click", "1", "1", "--regressor", str(out / "img.png"), "--out",
            str(out / "o"), flag, value]  # fmt: skip
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
    except SystemExit as exc:  # argparse: a value of the wrong syntax
        assert exc.code == 2
    except SampotError as exc:
        assert str(exc).startswith(flag)
    else:
        got = getattr(args, flag[2:].replace("-", "_"))
        assert math.isfinite(got)
        assert {"--min-overlap": 0 <= got <= 1, "--max-area-ratio": got >= 1, "--steps": got >= 0}.get(flag, got > 0)


# -- warnings: work goes on, one line says what looks wrong ------------------------------------------------------------


def test_cli_warns_on_a_click_in_the_background_and_an_inverted_mask(files, tmp_path, capsys):
    rc, err = run_cli(["evolve", files["img"], "--click", 3, 3, "--mask", files["mask"], "--regressor", files["reg"],
                       "--steps", 1, "--out", tmp_path / "o"], capsys)  # fmt: skip
    assert rc == 0, err
    assert "sampot: warning: click (3, 3) lies in the background of the mask" in err
    rc, err = run_cli(["heatmap", files["img"], "--mask", files["inv"], "--step", 64, "--out", tmp_path / "h.csv"],
                      capsys)  # fmt: skip
    assert rc == 0 and "sampot: warning: mask" in err and "is it inverted" in err
    rows = (tmp_path / "h.csv").read_text().splitlines()
    assert rows[1].endswith(",") and "nan" not in (tmp_path / "h.csv").read_text()  # no regressor: a blank cell


def test_cli_warns_on_a_split_with_an_empty_part(tmp_path, capsys):
    data = write_phantom_set(tmp_path / "two", 2, seed=0, size=64)
    rc, err = run_cli(["data", "split", data, "--out", tmp_path / "s.json"], capsys)
    assert rc == 0 and "sampot: warning: val is empty" in err
    assert load_splits(tmp_path / "s.json")["val"] == []
    rc, err = run_cli(["data", "split", data, "--out", tmp_path / "s2.json", "--fractions", 1, 0, 1], capsys)
    assert rc == 0 and "warning" not in err  # a fraction of 0 is empty on purpose


def test_evolution_record_with_nan_is_refused_before_any_file(files, tmp_path, capsys, monkeypatch):
    import sampot_lib.cli.evolve as evolve  # the command's own name for the library's evolve_prompt

    real = evolve.evolve_prompt

    def diverging(*a, **k):
        result = real(*a, **k)
        result.trajectory[-1] = type(result.trajectory[-1])(**{**result.trajectory[-1].__dict__, "score": float("nan")})
        return result

    monkeypatch.setattr(evolve, "evolve_prompt", diverging)
    rc, err = run_cli(["evolve", files["img"], "--click", 60, 60, "--regressor", files["reg"], "--steps", 1,
                       "--out", tmp_path / "o"], capsys)  # fmt: skip
    assert rc == 2 and "refusing to write NaN" in one_line_error(err) and "trajectory[1].score" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@FEW
@given(
    fractions=st.lists(st.one_of(ANY_FLOAT, st.integers(-3, 100), st.just("x")), min_size=0, max_size=4),
    n=st.integers(0, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_split_request_gives_a_partition_or_is_refused(fractions, n, seed):
    from sampot_lib.data.splits import make_splits

    ids = [f"im{i}" for i in range(n)]
    try:
        splits = make_splits(ids, fractions=fractions, seed=seed)
    except SampotError as exc:
        assert "split fractions" in str(exc) or "empty data set" in str(exc)
    else:
        assert sorted(i for part in splits.values() for i in part) == sorted(ids)


def test_an_output_file_that_is_a_pipe_or_device_is_refused_not_replaced(tmp_path, files, capsys):
    # The atomic write renames a temporary file over the target: a named pipe (or, as root, /dev/full) would be
    # replaced by a regular file and the command would report success.
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(SampotError, match="not a regular file"):
        checks.output_file(fifo, "--out")
    rc, err = run_cli(["data", "split", files["data"], "--out", fifo], capsys)
    assert rc == 2 and "--out" in one_line_error(err) and "not a regular file" in err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_an_input_that_is_a_pipe_or_a_device_is_not_called_missing(tmp_path, files, capsys):
    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    out = tmp_path / "o"
    for image in (fifo, "/dev/null"):
        rc, err = run_cli(["evolve", image, "--click", 60, 60, "--regressor", files["reg"], "--out", out], capsys)
        assert rc == 2 and f"image {image} is not a regular file" in one_line_error(err), err
    rc, err = run_cli(["evolve", files["img"], "--click", 60, 60, "--regressor", fifo, "--out", out], capsys)
    assert rc == 2 and f"--regressor {fifo} is not a regular file" in one_line_error(err), err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evolve", "{img}", "--click", "60", "60", "--regressor", "{reg}", "--out", ""], "--out is empty"),
        (["evolve", "{img}", "--click", "60", "60", "--regressor", "", "--out", "{o}"], "--regressor is empty"),
        (["heatmap", "{img}", "--mask", "{mask}", "--out", ""], "--out is empty"),
        (["score", "{data}", "--regressor", "{reg}", "--out", ""], "--out is empty"),
        (["data", "split", "{data}", "--out", ""], "--out is empty"),
    ],
)
def test_an_empty_path_is_refused_not_read_as_this_folder(files, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # where an empty path would have written
    paths = {k: str(v) for k, v in files.items()} | {"o": str(tmp_path / "o")}
    rc, err = run_cli([a.format(**paths) for a in argv], capsys)
    assert rc == 2 and message in one_line_error(err), err
    assert list(tmp_path.iterdir()) == []


def test_a_split_file_without_the_parts_a_command_needs_fails_before_the_run_folder(files, tmp_path, capsys):
    split = tmp_path / "train_only.json"
    assert run_cli(["data", "split", files["data"], "--out", split, "--fractions", "1", "0", "0"], capsys)[0] == 0
    out = tmp_path / "o"
    for argv, message in [
        (["run", files["data"], "--split-file", split, "--out", out], "the val and test part of --split-file"),
        (["train-regressor", files["data"], "--split-file", split, "--out", out], "the val part of --split-file"),
        (["run", files["data"], "--split-file", split, "--regressor", files["reg"], "--out", out], "the test part"),
    ]:
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and message in one_line_error(err) and "leave out --split-file" in err, err
        assert not out.exists()
    few = tmp_path / "two_labelled.json"  # 1 train, 1 validation and 2 test images of the 4
    assert run_cli(["data", "split", files["data"], "--out", few, "--fractions", "1", "1", "2"], capsys)[0] == 0
    argv = [
        "calibrate",
        files["data"],
        "--regressor",
        files["reg"],
        "--labelled",
        "3",
        "--split-file",
        few,
        "--out",
        out,
    ]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and "holds 2 train and validation images; calibration labels at least 3" in one_line_error(err)
    assert not out.exists()


def test_config_states_the_bounds_of_the_command_line():
    """ExperimentConfig (the notebooks' way in) refuses what the command line refuses, with the same bound."""
    from sampot_lib.experiment.config import ExperimentConfig

    for bad, message in [
        ({"seed": 2**32}, "'seed' must be a whole number in [0, 4294967295]"),
        ({"seeds": [0, 2**40]}, "'seeds': each seed must be a whole number in [0, 4294967295]"),
        ({"sharpness": 1e9}, "'sharpness' must be in (0, 1000]"),
        ({"lr": 1e6}, "'lr' must be in (0, 10000]"),
        ({"regressor_size": 100_000}, "'regressor_size' must be a multiple of 16 from 32 to 1024"),
        ({"split_fractions": [1e308, 1e308, 1e308]}, "'split_fractions' must be three non-negative numbers"),
        ({"structure": "../images"}, "'structure' must be the name of a folder in masks/"),
        ({"device": "gpu"}, "parameter 'device' 'gpu' is not a device; use cpu, cuda"),
    ]:
        with pytest.raises(SampotError, match=re.escape(message)):
            ExperimentConfig(data="d", out="o", **bad)
    with pytest.raises(SampotError, match="regressor input_size must be a multiple of 16 from 32 to 1024"):
        SegmentationRegressor(2048)


def test_phantom_size_bound_is_the_command_lines(tmp_path):
    with pytest.raises(SampotError, match=re.escape("phantom size must be a whole number in [64, 8000]")):
        write_phantom_set(tmp_path / "p", 1, size=1_000_000)
    assert not (tmp_path / "p").exists()


def test_an_image_too_small_is_named_before_the_click_or_the_mask(files, tmp_path, capsys):
    # Measured first against a 1 x 1 image, the click (or the mask) would be blamed and the user sent to move it.
    tiny = tmp_path / "tiny.png"
    write_png(tiny, np.full((8, 8), 100, np.uint8))
    for argv in (
        ["evolve", tiny, "--click", 20, 20, "--regressor", files["reg"], "--out", tmp_path / "o"],
        ["heatmap", tiny, "--mask", files["mask"], "--out", tmp_path / "h.csv"],
    ):
        rc, err = run_cli(argv, capsys)
        line = one_line_error(err)
        assert rc == 2 and f"{tiny}: 8x8 pixels; the models need at least 16x16" in line, err
        assert "click" not in line and "mask" not in line


@pytest.mark.parametrize("value, traceback", [("0", False), ("false", False), ("", False), ("1", True)])
def test_sampot_debug_0_is_off(files, tmp_path, capsys, monkeypatch, value, traceback):
    monkeypatch.setenv("SAMPOT_DEBUG", value)
    argv = ["evolve", files["img"], "--click", 500, 60, "--regressor", files["reg"], "--out", tmp_path / "o"]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and ("Traceback" in err) == traceback and "lies outside" in err.strip().splitlines()[-1], err


def test_a_box_model_given_clicks_is_warned_of_by_evolve_and_heatmap(files, tiny_checkpoint, tmp_path, capsys,
                                                                     monkeypatch):  # fmt: skip
    from sampot_lib.cli import evolve as evolve_cli

    real = evolve_cli.model_of

    def box_model(args):
        model = real(args)
        model.prompt_kinds = ("box",)  # as LiteMedSAM's record says
        return model

    monkeypatch.setattr(evolve_cli, "model_of", box_model)
    common = ["--model", "tiny", "--checkpoint", tiny_checkpoint, "--regressor", files["reg"], "--allow-foreign"]
    evolve = ["evolve", files["img"], "--click", "60", "60", "--steps", "1", "--out", tmp_path / "e"]
    heatmap = ["heatmap", files["img"], "--mask", files["mask"], "--step", "16", "--out", tmp_path / "h.csv"]
    for argv in (evolve, heatmap):
        rc, err = run_cli([*argv, *common], capsys)
        assert rc == 0 and "model 'tiny' answers box prompts well, not a click" in err, err


def test_an_empty_structure_is_named_as_empty(files, tmp_path, capsys):
    rc, err = run_cli(
        ["evolve", files["img"], "--click", "60", "60", "--out", tmp_path / "o", "--structure", ""], capsys
    )
    assert rc == 2 and "--structure is empty; give a structure's name" in one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_the_commands_own_data_set_counts_even_without_a_masks_folder(files, tmp_path, capsys):
    images_only = tmp_path / "set"
    shutil.copytree(files["data"] / "images", images_only / "images")  # `data split` needs no masks
    rc, err = run_cli(["data", "split", images_only, "--out", images_only / "images" / "s.json"], capsys)
    assert rc == 2 and "lies inside the data set's images/ folder" in one_line_error(err)
    assert sorted(p.name for p in (images_only / "images").iterdir()) == sorted(
        p.name for p in (files["data"] / "images").iterdir()
    )


def test_a_reader_that_closes_stdout_ends_the_command_quietly_with_sigpipes_status(files, tmp_path):
    """`sampot data split ... | head -0`: the split file is written whole, nothing is blamed on the path or the disk,
    and the status is a SIGPIPE'd process's (141), not an error's."""
    out = tmp_path / "split.json"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the command prints its line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sampot_lib", "data", "split", str(files["data"]), "--out", str(out)],
            stdout=write_end, stderr=subprocess.PIPE, env=os.environ | {"SAMPOT_THREADS": "1"}, timeout=300,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr.decode()
    assert proc.stderr.decode() == ""
    assert sorted(sum(load_splits(out).values(), [])) == FolderDataset(files["data"]).ids


def test_evolve_replaces_only_the_files_an_earlier_evolve_wrote(files, tmp_path, capsys):
    """A hand-drawn ``xray_mask.png`` beside ``xray.png`` is not what evolve wrote: refused before any work, kept
    byte for byte. Files an earlier evolve of the image wrote (its ``_evolution.json`` beside them) are replaced."""
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(files["img"], folder / "xray.png")
    shutil.copy(files["mask"], folder / "xray_mask.png")
    drawn = (folder / "xray_mask.png").read_bytes()
    argv = ["evolve", folder / "xray.png", "--click", 40, 60, "--regressor", files["reg"], "--steps", 2]
    rc, err = run_cli([*argv, "--out", folder], capsys)
    assert rc == 2 and "already holds xray_mask.png, which sampot evolve would replace" in one_line_error(err)
    assert (folder / "xray_mask.png").read_bytes() == drawn
    assert sorted(p.name for p in folder.iterdir()) == ["xray.png", "xray_mask.png"]
    out = tmp_path / "out"
    assert run_cli([*argv, "--out", out], capsys)[0] == 0
    first = (out / "xray_evolution.json").read_bytes()
    assert run_cli([*argv, "--out", out, "--lr", 3], capsys)[0] == 0  # its own files: replaced
    assert (out / "xray_evolution.json").read_bytes() != first
