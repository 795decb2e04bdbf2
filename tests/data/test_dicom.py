"""DICOM grayscale through pydicom's own LUT functions: each file is made here with pydicom, and what sampot reads is
checked against what pydicom's apply_modality_lut / apply_voi_lut give for it (mapped onto 0..255 by the output
range the standard gives), not only its shape."""

import re

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from data_fixtures import dicom_dataset  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: E402

from sampot_lib import SampotError  # noqa: E402
from sampot_lib.data.dicom import read_dicom  # noqa: E402
from sampot_lib.data.io import read_image  # noqa: E402

BITS = 12
RAMP = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (3, 1))  # 3 x 256, every 16th 12-bit value


def _dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> Dataset:
    return dicom_dataset(pixels, photometric, bits=BITS, **tags)


def _save(ds: Dataset, path):
    ds.save_as(path, enforce_file_format=True)
    return path


def _lut_item(data: list[int], first: int = 0, bits: int = 16) -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "US", [len(data), first, bits])  # LUTDescriptor; US or SS, US when the first is >= 0
    item.add_new(0x00283006, "US", data)  # LUTData; US or OW
    return item


def _pydicom_voi(path) -> np.ndarray:
    """pydicom's own pipeline for the file: stored -> modality LUT -> VOI LUT (its table or its window)."""
    ds = pydicom.dcmread(path)
    values = apply_modality_lut(ds.pixel_array, ds)
    if "VOILUTSequence" in ds and np.array_equal(values, np.round(values)):
        values = values.astype(np.int64)  # a table is indexed by whole numbers (pydicom warns about floats)
    return np.asarray(apply_voi_lut(values, ds), dtype=np.float64)


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.round(unit * 255.0).astype(np.uint8)


def test_a_voi_lut_sequence_is_applied_by_pydicom_and_scaled_by_its_table(tmp_path):
    # A gamma-like table over the 12-bit range, 16-bit entries that never reach 65535: the table's own lowest and
    # highest entries are its output range.
    table = [int(round(3000 * (i / 4095) ** 0.4)) + 100 for i in range(4096)]
    path = _save(_dataset(RAMP, VOILUTSequence=[_lut_item(table)]), tmp_path / "lut.dcm")
    expected = _to_uint8((_pydicom_voi(path) - 100) / 3000)
    out = read_image(path)
    assert np.array_equal(out, expected) and out.min() == 0 and out.max() == 255
    assert not np.array_equal(out, read_dicom(path, use_voi=False))  # the table shaped it: not a straight ramp
    # With a window too, the table wins (pydicom's apply_voi_lut prefers it).
    both = _save(
        _dataset(RAMP, VOILUTSequence=[_lut_item(table)], WindowCenter=100, WindowWidth=10), tmp_path / "b.dcm"
    )
    assert np.array_equal(read_image(both), expected)


def test_a_voi_lut_after_a_rescale_is_indexed_by_the_rescaled_values(tmp_path):
    # value = stored + 1000 (whole numbers, as floats from pydicom's rescale); the table's first entry is for 1000.
    table = [min(4095, 2 * i) for i in range(4096)]
    lut = [_lut_item(table, first=1000)]
    path = _save(_dataset(RAMP, RescaleSlope=1, RescaleIntercept=1000, VOILUTSequence=lut), tmp_path / "lut_r.dcm")
    expected = _to_uint8(_pydicom_voi(path) / 4095)
    out = read_image(path)
    assert np.array_equal(out, expected)
    assert out[0, 127] < 255 and out[0, 128] == 255  # stored 2048 -> value 3048 -> entry 2048 -> 4095, the top


def test_a_sigmoid_window_follows_the_voi_lut_function(tmp_path):
    path = _save(_dataset(RAMP, WindowCenter=2000, WindowWidth=1000, VOILUTFunction="SIGMOID"), tmp_path / "sig.dcm")
    pyd = _pydicom_voi(path)  # pydicom: (2**12 - 1) / (1 + exp(-4 (x - c) / w)) on the unsigned 12-bit range
    out = read_image(path)
    assert np.array_equal(out, _to_uint8(pyd / (2**BITS - 1)))
    formula = 1 / (1 + np.exp(-4 * (RAMP.astype(float) - 2000) / 1000))  # PS3.3 C.11.2.1.3.1, on 0..1
    assert np.abs(out.astype(int) - np.round(formula * 255)).max() == 0
    linear = read_image(_save(_dataset(RAMP, WindowCenter=2000, WindowWidth=1000), tmp_path / "lin.dcm"))
    below = RAMP[0] < 1500  # under the linear window: 0 there; the sigmoid gives 29 at 1488
    assert (linear[0, below] == 0).all() and out[0, 93] == round(255 / (1 + np.exp(4 * 512 / 1000))) > 20


def test_monochrome1_is_inverted_after_the_voi(tmp_path):
    tags = {"WindowCenter": 2048, "WindowWidth": 2000}
    m1 = _save(_dataset(RAMP, "MONOCHROME1", **tags), tmp_path / "m1.dcm")
    expected_m2 = _to_uint8(_pydicom_voi(m1) / (2**BITS - 1))  # pydicom's window does not invert: the display does
    out = read_image(m1)
    assert np.array_equal(out, 255 - expected_m2)
    assert out[0, 0] == 255 and out[0, -1] == 0  # high stored value = dark in MONOCHROME1; bone bright here
    assert np.array_equal(out, 255 - read_image(_save(_dataset(RAMP, **tags), tmp_path / "m2.dcm")))


def test_rescale_slope_and_intercept_set_the_values_the_window_sees(tmp_path):
    tags = {"RescaleSlope": 0.5, "RescaleIntercept": -1024}
    plain = _save(_dataset(RAMP, **tags), tmp_path / "rescale.dcm")
    ds = pydicom.dcmread(plain)
    values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)
    assert np.allclose(values, RAMP * 0.5 - 1024)
    lo, hi = values.min(), values.max()
    assert np.array_equal(read_image(plain), _to_uint8((values - lo) / (hi - lo)))  # no window: min to max
    # Window centre 0, width 500 on the rescaled values; pydicom's output range is the stored range rescaled.
    windowed = _save(_dataset(RAMP, WindowCenter=0, WindowWidth=500, **tags), tmp_path / "rw.dcm")
    y_min, y_max = 0 * 0.5 - 1024, (2**BITS - 1) * 0.5 - 1024
    expected = _to_uint8((_pydicom_voi(windowed) - y_min) / (y_max - y_min))
    out = read_image(windowed)
    assert np.array_equal(out, expected)
    assert (out[values <= -250] == 0).all() and (out[values >= 250] == 255).all() and 0 < out[0, 128] < 255


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        (_lut_item([0, 1000, 4000], bits=9), r"VOI LUT Sequence \(0028,3010\) cannot be applied by pydicom .*9"),
        (Dataset(), r"VOI LUT Sequence \(0028,3010\) has no LUTDescriptor \(0028,3002\) and no LUTData"),
    ],
)
def test_a_voi_lut_pydicom_cannot_apply_is_refused_naming_file_and_tag(tmp_path, item, pattern):
    path = _save(_dataset(RAMP, VOILUTSequence=[item]), tmp_path / "bad_lut.dcm")
    with pytest.raises(SampotError, match=rf"^{re.escape(str(path))}: .*{pattern}"):
        read_image(path)


def test_an_unknown_voi_lut_function_is_refused_naming_the_tag(tmp_path):
    path = _save(_dataset(RAMP, WindowCenter=2000, WindowWidth=1000, VOILUTFunction="GAMMA"), tmp_path / "fn.dcm")
    with pytest.raises(SampotError, match=rf"^{re.escape(str(path))}: .*VOI LUT Function \(0028,1056\) 'GAMMA'"):
        read_image(path)
    sigmoid_zero = _dataset(RAMP, WindowCenter=2000, WindowWidth=0, VOILUTFunction="SIGMOID")
    path = _save(sigmoid_zero, tmp_path / "w0.dcm")
    with pytest.raises(SampotError, match=r"WindowWidth 0.*is invalid: the width 0 is not above 0"):
        read_image(path)
