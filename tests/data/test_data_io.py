"""Reading images for SAM: 8/16-bit grayscale, RGB, percentile windows, DICOM (rescale, VOI, MONOCHROME1); the ring
outside a mask."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from data_fixtures import dicom_dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from sampot_lib.data.dicom import read_dicom
from sampot_lib.data.io import is_dicom, outside_ring, read_image, read_mask, write_png
from sampot_lib.data.pixels import preprocess, to_uint8
from sampot_lib.errors import SampotError, SampotWarning


def test_8bit_kept_16bit_stretched(tmp_path):
    a8 = np.arange(64, dtype=np.uint8).reshape(8, 8) + 10
    Image.fromarray(a8).save(tmp_path / "a.png")
    assert np.array_equal(read_image(tmp_path / "a.png"), a8)

    a16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    # Order is kept: a monotone ramp stays monotone.
    assert (np.diff(out.ravel().astype(int)) >= 0).all()


def test_a_hot_pixel_that_crushes_a_16bit_image_to_a_few_grey_levels_is_warned_about(tmp_path):
    twelve = (np.add.outer(np.arange(64), np.arange(64)) * 32).astype(np.uint16)  # 12-bit data: 0 .. 4032
    Image.fromarray(twelve).save(tmp_path / "twelve.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SampotWarning)
        assert len(np.unique(read_image(tmp_path / "twelve.png"))) > 100
    hot = twelve.copy()
    hot[0, 1] = 65535
    Image.fromarray(hot).save(tmp_path / "hot.png")
    with pytest.warns(SampotWarning, match=r"hot.png: a few extreme pixels set its grey range \(0 to 65535\), so "
                                           r"only \d+ of 256 grey levels are left"):  # fmt: skip
        image = read_image(tmp_path / "hot.png")
    assert len(np.unique(image)) < 32
    with warnings.catch_warnings():  # a window chosen by the caller is the caller's
        warnings.simplefilter("error", SampotWarning)
        preprocess(hot, low_pct=0.5, high_pct=99.5)


def test_rgb_becomes_luminance(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 1] = 200  # pure green: luminance 0.587 * 200
    rgb[3, 3] = 0  # an image of one value is refused
    Image.fromarray(rgb).save(tmp_path / "c.png")
    out = read_image(tmp_path / "c.png")
    assert out.shape == (4, 4) and abs(int(out[0, 0]) - round(0.587 * 200)) <= 1
    # red, green and blue weigh as in PIL's own "L" conversion (ITU-R 601), which users compare against
    colours = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(colours).save(tmp_path / "d.png")
    pil_gray = np.asarray(Image.fromarray(colours).convert("L"), dtype=int)
    assert np.abs(read_image(tmp_path / "d.png").astype(int) - pil_gray).max() <= 1
    gray3 = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10, 3, axis=2)
    assert np.array_equal(preprocess(gray3), gray3[..., 0])


def test_percentile_window_ignores_outliers():
    img = np.full((100, 100), 100.0)
    img[:50] = 200.0
    img[0, 0] = 1e6  # a burned-in marker
    plain = to_uint8(img)
    windowed = preprocess(img, low_pct=1, high_pct=99)
    assert plain[50, 0] == plain[99, 99] and plain[10, 10] < 5  # the outlier crushes min-max
    assert windowed[99, 99] == 0 and windowed[10, 10] == 255
    with pytest.raises(SampotError, match="percentile window"):
        to_uint8(img, 60, 40)


def test_unreadable_and_bad_shapes(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(SampotError, match="not a readable image") as err:
        read_image(tmp_path / "x.png")
    assert str(err.value).startswith(f"{tmp_path / 'x.png'}: not a readable image")  # named once, first
    with pytest.raises(SampotError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(SampotError, match="2-D"):
        preprocess(np.zeros((2, 3, 4, 5)))


def test_write_png_atomic_and_mask_roundtrip(tmp_path):
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    write_png(tmp_path / "sub" / "m.png", m)
    assert np.array_equal(read_mask(tmp_path / "sub" / "m.png", expected_shape=(10, 12)), m)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.png"]  # no temporary left
    with pytest.raises(SampotError):
        write_png(tmp_path / "f.png", np.zeros((3, 3), np.float32))


def _write_dicom(path, pixels, *, photometric="MONOCHROME2", slope=None, intercept=None, window=None, signed=False):
    tags = {}
    if slope is not None:
        tags |= {"RescaleSlope": slope, "RescaleIntercept": intercept}
    if window is not None:
        tags |= {"WindowCenter": window[0], "WindowWidth": window[1]}
    ds = dicom_dataset(pixels, photometric, bits=16 if signed else 12, signed=signed, **tags)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_monochrome2_and_1(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (4, 1))  # 4 x 64, 0..4032
    p2 = _write_dicom(tmp_path / "m2.dcm", ramp)
    p1 = _write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1")
    a, b = read_image(p2), read_image(p1)
    assert a.dtype == np.uint8 and a.shape == ramp.shape
    assert a[0, 0] == 0 and a[0, -1] == 255
    assert np.array_equal(b, 255 - a)  # MONOCHROME1: high stored value = dark
    # A DICOM without the .dcm name is still recognised by its preamble.
    p2.rename(tmp_path / "noext")
    assert is_dicom(tmp_path / "noext") and np.array_equal(read_image(tmp_path / "noext"), a)


def test_dicom_rescale_and_voi_window(tmp_path):
    stored = np.tile(np.arange(0, 2000, 20, dtype=np.uint16), (2, 1))  # 0..1980
    # HU-like: value = 2 * stored - 1000 -> -1000..2960. Window centre 0, width 1001 -> [-500, 500] maps to 0..255.
    p = _write_dicom(tmp_path / "w.dcm", stored, slope=2, intercept=-1000, window=(0, 1001))
    out = read_dicom(p)
    values = 2.0 * stored - 1000
    assert (out[values <= -500.5] == 0).all() and (out[values >= 500] == 255).all()
    mid = (values > -400) & (values < 400)
    expected = np.round(((values[mid] + 0.5) / 1000 + 0.5) * 255)
    assert np.abs(out[mid].astype(int) - expected).max() <= 1
    # Without the VOI window (or with a percentile window) the whole range is used instead.
    full = read_dicom(p, use_voi=False)
    assert full[0, 0] == 0 and full[0, -1] == 255 and (full[mid] > 0).all() and (full[mid] < 255).all()
    assert np.array_equal(read_dicom(p, low_pct=0, high_pct=100), full)


def test_dicom_rescale_changes_sign(tmp_path):
    stored = np.tile(np.arange(0, 100, dtype=np.uint16), (3, 1))
    p = _write_dicom(tmp_path / "neg.dcm", stored, slope=-1, intercept=0)  # slope -1 reverses the order
    out = read_image(p)
    assert out[0, 0] == 255 and out[0, -1] == 0


def test_dicom_unreadable(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(SampotError, match="not a readable DICOM"):
        read_image(tmp_path / "bad.dcm")


def test_a_stack_of_frames_is_refused_as_a_multi_frame_dicom_is(tmp_path):
    # Read as its first frame alone, a volume would be segmented on whichever slice comes first, without a word.
    frames = [Image.fromarray(np.pad(np.full((30, 30), v, np.uint8), 1)) for v in (10, 120, 240)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(SampotError, match="stack.tif: holds 3 frames"):
        read_image(tmp_path / "stack.tif")
    frames[0].save(tmp_path / "one.tif")
    assert read_image(tmp_path / "one.tif").shape == (32, 32)
    with pytest.raises(SampotError, match="an image path must be a str or a Path, got 5"):
        read_image(5)


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 29)), min_size=1, max_size=12),
    offset=st.floats(0, 12),
)
def test_the_outside_ring_is_the_ring_of_the_whole_image_distances(cells, offset):
    mask = np.zeros((40, 30), bool)
    for y, x in cells:
        mask[y, x] = True
    whole = np.abs(ndimage.distance_transform_edt(~mask) - offset) <= 0.5
    assert np.array_equal(outside_ring(mask, offset), whole)


def test_an_image_of_one_value_is_refused_by_name_and_a_dicom_says_why(tmp_path):
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(SampotError, match=r"black\.png: every pixel has the value 0: there is nothing to segment"):
        read_image(tmp_path / "black.png")
    one_off = np.zeros((40, 40), np.uint8)
    one_off[3, 7] = 1  # two values are an image, however faint
    Image.fromarray(one_off).save(tmp_path / "faint.png")
    assert read_image(tmp_path / "faint.png")[3, 7] == 1
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "small.png")
    assert read_image(tmp_path / "small.png").shape == (8, 8)  # named for its size where it is used, not its value
    stored = np.tile(np.arange(0, 100, dtype=np.uint16), (20, 1))
    flat = _write_dicom(tmp_path / "flat.dcm", stored, slope=0, intercept=50)  # the rescale flattens every pixel
    with pytest.raises(SampotError, match=r"flat\.dcm: every pixel has the value \d+ \(a DICOM's rescale slope or "):
        read_image(flat)


def test_a_mask_with_nan_or_of_no_numbers_is_refused_and_an_empty_one_only_when_asked():
    from sampot_lib.data.io import check_mask

    nan = np.zeros((8, 8), np.float32)
    nan[2:5, 2:5] = np.nan  # NaN is truthy: it would have counted as foreground
    with pytest.raises(SampotError, match="NaN or infinite"):
        check_mask(nan)
    with pytest.raises(SampotError, match="dtype <U1; expected bool or numbers"):
        check_mask(np.full((8, 8), "a"))
    with pytest.raises(SampotError, match="mask is empty"):
        check_mask(np.zeros((8, 8), np.uint8))
    assert not check_mask(np.zeros((8, 8), np.uint8), allow_empty=True).any()
    seven = np.zeros((8, 8), np.uint8)
    seven[1:3, 1:3] = 7
    assert check_mask(seven).sum() == 4
