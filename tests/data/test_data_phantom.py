"""The procedural chest X-ray phantom: exact masks, JSRT/SCR conventions, inhomogeneous lungs, the folder set."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from scipy import ndimage

from sampot_lib.cli.data import add_data_commands
from sampot_lib.data import phantom
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import make_phantom, write_phantom_set
from sampot_lib.data.phantom_shapes import geometry
from sampot_lib.data.validate import validate_folder
from sampot_lib.errors import SampotError

S = 256


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser(prog="sampot")
    add_data_commands(ap.add_subparsers(dest="cmd", required=True))
    args = ap.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(seed, S, confounders="none", return_info=True) for seed in range(6)]


def test_shapes_types_and_determinism(phantoms):
    img, masks, _ = phantoms[0]
    assert img.shape == (S, S) and img.dtype == np.uint8
    assert set(masks) == {"left_lung", "right_lung"}
    assert all(m.shape == (S, S) and m.dtype == bool for m in masks.values())
    img2, masks2 = make_phantom(0, S, confounders="none")
    assert np.array_equal(img, img2) and all(np.array_equal(masks[k], masks2[k]) for k in masks)
    assert not np.array_equal(img, phantoms[1][0])
    rng_img, _ = make_phantom(np.random.default_rng(0), S, confounders="none")
    assert rng_img.shape == (S, S)


def test_masks_follow_scr_conventions(phantoms):
    cols = np.arange(S)
    for _img, masks, _ in phantoms:
        left, right = masks["left_lung"], masks["right_lung"]
        # Patient's left lung on the image's right.
        assert (cols * left.sum(0)).sum() / left.sum() > S / 2 > (cols * right.sum(0)).sum() / right.sum()
        assert not (left & right).any()
        for m in (left, right):
            assert ndimage.label(m)[1] == 1  # one field
            assert np.array_equal(ndimage.binary_fill_holes(m), m)  # no holes
            assert 0.06 < m.mean() < 0.3
        # The heart takes a bite from the left lung's lower medial side: the left field is narrower low down.
        rows = np.nonzero(left.any(1))[0]
        upper, lower = rows[len(rows) // 3], rows[int(len(rows) * 0.85)]
        med_upper = np.nonzero(left[upper])[0].min()
        med_lower = np.nonzero(left[lower])[0].min()
        assert med_lower - med_upper > 0.04 * S


def test_masks_are_exact_at_full_size():
    # The image is rendered at a smaller size, the masks at full size from the same anatomy: they agree.
    _, full = make_phantom(3, 512, confounders="none")
    geo_small = geometry(np.random.default_rng(np.random.default_rng(3).integers(2**63)), 256)
    small = geo_small["masks"]["left_lung"]
    down = full["left_lung"].reshape(256, 2, 256, 2).mean((1, 3)) >= 0.5
    assert (down != small).mean() < 0.01


def test_display_polarity_and_inhomogeneous_lungs(phantoms):
    for img, masks, _ in phantoms:
        lung = masks["left_lung"] | masks["right_lung"]
        centre_column = np.zeros_like(lung)
        centre_column[int(0.3 * S) : int(0.6 * S), int(0.48 * S) : int(0.52 * S)] = True
        assert img[lung].mean() + 40 < img[centre_column].mean()  # lungs dark, mediastinum bright
        # Ribs and vessels: the lung is far from flat, along columns and along rows.
        assert img[lung].std() > 12
        inside = ndimage.binary_erosion(masks["left_lung"], iterations=3)
        col = int(np.median(np.nonzero(inside)[1]))
        profile = img[inside[:, col], col].astype(float)
        assert np.abs(np.diff(ndimage.uniform_filter1d(profile, 3))).max() > 3


def test_confounders_change_the_lungs_not_the_masks():
    plain, m0, i0 = make_phantom(5, S, confounders="none", return_info=True)
    busy, m1, i1 = make_phantom(5, S, confounders="all", return_info=True)
    assert i0.confounders == [] and set(i1.confounders) == {"opacity", "nodule", "picc", "label"}
    assert all(np.array_equal(m0[k], m1[k]) for k in m0)  # the lung outline is anatomy, not appearance
    lung = m0["left_lung"] | m0["right_lung"]
    assert busy[lung].astype(float).mean() > plain[lung].astype(float).mean() + 3  # opacities brighten
    only_picc = make_phantom(5, S, confounders={"picc": 1.0}, return_info=True)[2]
    assert only_picc.confounders == ["picc"]
    with pytest.raises(SampotError, match="unknown confounder"):
        make_phantom(0, S, confounders={"tube": 1.0})
    with pytest.raises(SampotError, match="preset"):
        make_phantom(0, S, confounders="lots")
    with pytest.raises(SampotError, match="too small"):
        make_phantom(0, 16)


def test_write_phantom_set_is_a_valid_folder(tmp_path, capsys):
    out = write_phantom_set(tmp_path / "ph", 4, seed=7, size=128)
    rep = validate_folder(out)
    assert rep.ok, rep.format()
    ds = FolderDataset(out)
    assert ds.ids == [f"phantom_{i:04d}" for i in range(4)] and ds.structures == ["left_lung", "right_lung"]
    img, masks = make_phantom(np.random.default_rng([7, 2]), 128)
    assert np.array_equal(ds.image("phantom_0002"), img)
    assert np.array_equal(ds.mask("phantom_0002", "left_lung"), masks["left_lung"])
    with pytest.raises(SampotError, match="not empty"):
        write_phantom_set(tmp_path / "ph", 1, seed=1, size=128)
    assert run_cli("data", "phantom", "--n", "2", "--seed", "1", "--size", "96", "--out", str(tmp_path / "c")) == 0
    assert "wrote 2 phantoms" in capsys.readouterr().out
    assert validate_folder(tmp_path / "c").ok


def test_an_interrupted_phantom_set_leaves_no_part_of_itself_and_the_same_command_then_writes_it(tmp_path, monkeypatch):
    made = []

    def interrupted(*args, **kwargs):
        if len(made) == 2:
            raise KeyboardInterrupt  # Ctrl-C on the third image
        made.append(1)
        return make_phantom(*args, **kwargs)

    monkeypatch.setattr(phantom, "make_phantom", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_phantom_set(tmp_path / "ph", 4, seed=7, size=96)
    assert list(tmp_path.iterdir()) == []  # neither a part of the set in --out nor its staging folder
    monkeypatch.undo()
    out = write_phantom_set(tmp_path / "ph", 4, seed=7, size=96)
    assert validate_folder(out).ok and FolderDataset(out).ids == [f"phantom_{i:04d}" for i in range(4)]
    assert list(tmp_path.iterdir()) == [out]


# Phantom speed is measured in benchmarks/bench_phantoms.py (a printed table), not in timed unit tests.


def test_a_phantom_set_with_dilated_masks_has_the_same_images_and_masks_grown_by_that_many_pixels(tmp_path):
    plain = FolderDataset(write_phantom_set(tmp_path / "a", 2, seed=3, size=128))
    grown = FolderDataset(write_phantom_set(tmp_path / "b", 2, seed=3, size=128, mask_dilation=4))
    for i in plain.ids:
        assert np.array_equal(plain.image(i), grown.image(i))
        m = plain.mask(i, "left_lung")
        assert np.array_equal(grown.mask(i, "left_lung"), ndimage.binary_dilation(m, iterations=4))
        assert grown.mask(i, "left_lung").sum() > m.sum()
    with pytest.raises(SampotError, match="mask_dilation"):
        write_phantom_set(tmp_path / "c", 1, mask_dilation=-1)
