"""The shipped regressors: the registry's lookup, the file check, the conformal interval, and the shipped files."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import disk_image, regressor_with_statistics

from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.files import sha256_file
from sampot_lib.method import shipped
from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.regressor import load_regressor, save_regressor, score_mask
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.method.selection import DoNoHarm
from sampot_lib.models import SamModel

STRUCTURES = ("left_lung", "heart", "right_clavicle")


def _record(name: str, path, model: str = "litemedsam", kind: str = "box", structure: str = "heart", **extra):
    return shipped.ShippedRegressor(
        name=name, model=model, prompt_kind=kind, structure=structure, input_size=32, filename=path.name,
        sha256=sha256_file(path), size=path.stat().st_size,
        training_data={"name": "toy", "data_identity": "x", "split_hash": "y", "train_ids": ["a"], "val_ids": ["b"]},
        numbers={"conformal": {"half_width": 0.1, "level": 0.9, "n": 20}, "test": {"n": 5, "r": 0.9, "mae": 0.05,
                 "coverage": 0.8}}, margin=0.02, blend_weight=0.5, license="research", card=f"{name}.md", **extra,
    )  # fmt: skip


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """A registry of three toy regressors (LiteMedSAM boxes for three structures) in a folder of its own."""
    monkeypatch.setattr(shipped, "REGRESSORS_DIR", tmp_path)
    monkeypatch.setattr(shipped, "REGISTRY_FILE", tmp_path / "registry.json")
    records = []
    for i, structure in enumerate(STRUCTURES):
        path = save_regressor(regressor_with_statistics(seed=i), tmp_path / f"toy_{structure}.pt",
                              {"model": "litemedsam", "structure": structure, "prompt": "box"})  # fmt: skip
        records.append(_record(f"toy_{structure}", path, structure=structure))
    (tmp_path / "registry.json").write_text(json.dumps({"regressors": [r.to_dict() for r in records]}))
    return {r.structure: r for r in records}


def test_the_default_lookup_picks_the_record_of_each_structure(fake_registry):
    for structure in STRUCTURES:
        assert shipped.find_shipped("litemedsam", "box", structure).name == f"toy_{structure}"
    assert shipped.find_shipped("litemedsam", "box+clicks", "heart").name == "toy_heart"  # a box counts as a box


@pytest.mark.parametrize("key", [("litemedsam", "box", "spleen"), ("sam_nano", "box", "heart")])
def test_no_shipped_regressor_is_one_line_naming_those_there_are_and_how_to_train(fake_registry, key):
    with pytest.raises(SampotError) as err:
        shipped.find_shipped(*key)
    text = str(err.value)
    assert "\n" not in text and all(f"toy_{s}" in text for s in STRUCTURES)
    assert "sampot train-regressor" in text and repr(key[2]) in text


def test_a_click_for_a_model_shipped_for_boxes_is_told_to_give_a_box_and_an_unknown_kind_is_refused(fake_registry):
    with pytest.raises(SampotError) as err:
        shipped.find_shipped("litemedsam", "click", "heart")
    text = str(err.value)
    assert "\n" not in text and "toy_heart" in text and "give a box (--box X0 Y0 X1 Y1)" in text
    assert "--regressor NAME" not in text  # each of the model's records is for boxes, and would be refused too
    assert "sampot train-regressor" in text
    with pytest.raises(SampotError, match=r"unknown prompt kind 'lasso'; known: click, box, clicks, box\+clicks"):
        shipped.find_shipped("litemedsam", "lasso", "heart")  # was taken for a click


def test_an_unknown_name_is_refused_naming_the_shipped_ones(fake_registry):
    with pytest.raises(SampotError, match="toy_heart"):
        shipped.load_shipped_regressor("nope")


def test_a_registry_given_that_is_not_a_file_is_named_not_taken_for_none_shipped(fake_registry, tmp_path):
    for missing in (tmp_path / "nope.json", tmp_path):
        with pytest.raises(SampotError, match=f"registry {missing} is not a file"):
            shipped.find_shipped("litemedsam", "box", "heart", registry=missing)
    with pytest.raises(SampotError, match="prompt_options must map 'box' and 'click'"):
        shipped.find_shipped("litemedsam", "click", "heart", prompt_options=None)


@pytest.mark.parametrize("device", ["tpu", "cuda:99"])
def test_a_shipped_regressor_on_a_device_that_is_not_here_is_refused_naming_it(fake_registry, device):
    with pytest.raises(SampotError, match=f"device '?{device}'?[ :]"):
        shipped.load_shipped_regressor("toy_heart", device=device)


def test_a_shipped_file_loads_after_its_check_and_a_tampered_one_is_refused(fake_registry):
    regressor, meta, record = shipped.load_shipped_regressor("toy_heart")
    assert meta["structure"] == "heart" and record.name == "toy_heart" and regressor.input_size == 32
    data = bytearray(record.path.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes
    record.path.write_bytes(bytes(data))
    with pytest.raises(SampotError, match="has been changed.*reinstall"):
        shipped.load_shipped_regressor("toy_heart")
    record.path.write_bytes(bytes(data[:-1]))  # another size
    with pytest.raises(SampotError, match="has been changed"):
        shipped.verify_shipped(record)


def test_resolve_takes_a_name_a_file_or_the_default(fake_registry, tmp_path):
    assert shipped.resolve_regressor(None, "litemedsam", "box", "heart")[2].name == "toy_heart"
    assert shipped.resolve_regressor("toy_left_lung", "sam_nano", "click", "heart")[2].name == "toy_left_lung"
    own = save_regressor(regressor_with_statistics(), tmp_path / "own" / "mine.pt", {"structure": "heart"})
    assert shipped.resolve_regressor(str(own), "litemedsam", "box", "heart")[2] is None
    assert shipped.resolve_regressor(fake_registry["heart"].path, "x", "box", "y")[2].name == "toy_heart"
    # a byte copy beside the user's project is the shipped regressor too; one changed byte is the user's own file
    copy = tmp_path / "project" / "heart.pt"
    copy.parent.mkdir()
    copy.write_bytes(fake_registry["heart"].path.read_bytes())
    assert shipped.resolve_regressor(str(copy), "x", "box", "y")[2].name == "toy_heart"
    assert shipped.shipped_for_file(copy).name == "toy_heart"
    changed = bytearray(fake_registry["heart"].path.read_bytes())
    changed[len(changed) // 2] ^= 0xFF
    copy.write_bytes(bytes(changed))
    assert shipped.shipped_for_file(copy) is None


def test_the_conformal_half_width_is_the_quantile_of_the_absolute_residuals():
    rng = np.random.default_rng(0)
    for n, level in ((19, 0.9), (57, 0.9), (200, 0.8), (10, 0.5)):
        res = rng.normal(0, 0.1, n)
        k = math.ceil((n + 1) * level)  # the k-th smallest |residual|, computed independently
        expected = np.quantile(np.abs(res), k / n, method="inverted_cdf")
        assert shipped.conformal_half_width(res, level) == pytest.approx(expected)
    assert shipped.conformal_half_width(np.arange(1, 20) / 100, 0.9) == pytest.approx(0.18)  # 18th of 19
    with pytest.raises(SampotError, match="too few"):
        shipped.conformal_half_width(np.ones(5), 0.9)


def test_coverage_counts_the_residuals_within_the_half_width():
    assert shipped.coverage(np.array([0.1, -0.2, 0.3, 0.05]), 0.2) == 0.75  # |-0.2| <= 0.2 counts
    assert shipped.coverage(np.array([]), 0.1) != shipped.coverage(np.array([]), 0.1)  # NaN for none
    assert shipped.predicted_interval(0.95, 0.1) == (pytest.approx(0.85), 1.0)
    assert shipped.predicted_interval(0.05, 0.1) == (0.0, pytest.approx(0.15))


def test_users_prompts_binary_masks_and_evolved_winners_get_the_intervals_measured_on_them(tmp_path):
    path = save_regressor(regressor_with_statistics(seed=0), tmp_path / "toy.pt", {})
    record = _record("toy", path)
    soft = (pytest.approx(0.4), pytest.approx(0.6))
    assert record.interval(0.5, of="binary") == record.interval(0.5, of="evolved") == record.interval(0.5) == soft
    assert record.interval(0.5, of="user") == soft
    record.numbers["conformal"] |= {"half_width_binary": 0.25, "half_width_evolved": 0.15,
                                    "half_width_user": 0.05}  # measured apart # fmt: skip
    assert record.interval(0.5, of="binary") == (pytest.approx(0.25), pytest.approx(0.75))
    assert record.interval(0.5, of="evolved") == (pytest.approx(0.35), pytest.approx(0.65))
    assert record.interval(0.5, of="user") == (pytest.approx(0.45), pytest.approx(0.55))
    assert record.interval(0.5) == soft
    with pytest.raises(SampotError, match="no interval of 'users'"):
        record.interval(0.5, of="users")


def test_score_mask_is_the_regressor_on_the_resized_pair():
    image, mask = disk_image(64)
    reg = regressor_with_statistics().eval()
    got = score_mask(reg, image, mask)
    area = lambda a: torch.nn.functional.interpolate(torch.tensor(a).float()[None, None], size=(32, 32), mode="area")  # noqa: E731
    with torch.no_grad():
        want = float(reg(area(image) / 255, area(mask.astype(np.float32)))[0])
    assert got == pytest.approx(want, abs=1e-6) and 0 < got < 1


def test_score_mask_reads_any_two_value_mask_as_binary_and_refuses_what_it_would_score_wrongly():
    image, mask = disk_image(64)
    reg = regressor_with_statistics().eval()
    want = score_mask(reg, image, mask)
    assert score_mask(reg, image, mask.astype(np.uint8) * 7) == pytest.approx(want, abs=1e-7)  # not 7/255 of a mask
    assert score_mask(reg, np.stack([image] * 3, axis=-1), mask) == pytest.approx(want, abs=1e-6)  # gray as RGB
    with pytest.warns(SampotWarning, match="the mask is empty"):  # a mask a model can give: scored, with a word
        assert 0 < score_mask(reg, image, np.zeros_like(mask)) < 1
    refused = {
        "dtype uint16; expected uint8": (image.astype(np.uint16) * 257, mask),  # it scored as if 0..255: 1.0
        "dtype float32; expected uint8": (np.full(image.shape, np.nan, np.float32), mask),
        "it must be at least 16x16": (image[:2, :2], mask[:2, :2]),
        "expected H x W": (image.ravel(), mask),
        "NaN or infinite": (image, np.where(mask, np.nan, 0.0)),
        "mask is not binary": (image, mask * 0.5 + 0.25),  # a probability map
    }
    for why, (img, msk) in refused.items():
        with pytest.raises(SampotError, match=why):
            score_mask(reg, img, msk)
    with pytest.raises(SampotError, match="needs a SegmentationRegressor .* got str"):
        score_mask("sam_nano_click_left_lung", image, mask)


def test_evolve_prompt_without_a_scorer_uses_the_shipped_default_and_its_rule(fake_registry, monkeypatch):
    from conftest import build_tiny_sam

    model = SamModel(build_tiny_sam(), name="litemedsam")
    image, mask = disk_image(64, center=(30, 34), radius=16)
    box = Prompt.from_box((12, 16, 50, 52))
    # the toy records name no mask output or sharpness, so the file's record passes for this model
    res = evolve_prompt(model, None, image, box, steps=4, structure="heart", gt_mask=mask)
    assert res.settings["regressor"] == "toy_heart" and res.settings["rule"]["margin"] == 0.02
    assert res.settings["rule"]["weight"] == 0.5
    own = evolve_prompt(model, None, image, box, steps=4, structure="heart", do_no_harm=False)
    assert "rule" not in own.settings
    with pytest.raises(SampotError, match="no shipped regressor"):
        evolve_prompt(model, None, image, box, steps=2, structure="spleen")
    given = evolve_prompt(model, regressor_with_statistics(), image, box, steps=2, do_no_harm=DoNoHarm(1.0))
    assert given.best_step == 0 and given.settings["rule"]["kept_user_prompt"] in (True, False)


# --- the regressors this package ships ---------------------------------------------------------------------------

REAL = shipped.shipped_regressors()


def test_at_least_one_regressor_ships():
    assert REAL, "no regressor in sampot_lib/method/regressors/registry.json"


@pytest.mark.parametrize("name", sorted(REAL))
def test_each_shipped_file_is_checked_small_and_carded(name):
    record = REAL[name]
    assert shipped.verify_shipped(record) == record.path and record.size <= 2 * 1024 * 1024
    regressor, meta = load_regressor(record.path)
    assert (meta["model"], meta["structure"], meta["prompt"]) == (record.model, record.structure, record.prompt_kind)
    assert meta["shipped"]["name"] == name and meta["shipped"]["half_width"] == record.half_width
    assert set(record.training_data["train_ids"]) and not set(record.training_data["train_ids"]) & set(
        record.training_data["val_ids"])  # fmt: skip
    card = record.card_path.read_text()
    test = record.numbers["test"]
    for number in (f"{test['r']:.3f}", f"{test['mae']:.3f}", f"{test['coverage']:.1%}", f"{record.half_width:.3f}"):
        assert number in card  # the card's numbers are the record's
    assert "research" in card and "r 0.50" in card and "13 of" in card and "sampot calibrate" in card
    # the label convention is the structure's own: a clavicle's card never describes the lungs' outline
    conventions = {"left_lung": "behind the heart", "right_lung": "behind the heart", "heart": "lower border",
                   "left_clavicle": "over the lung field", "right_clavicle": "over the lung field"}  # fmt: skip
    convention = card.split("## Label convention")[1].split("##")[0]
    assert {s for s, words in conventions.items() if words in convention} == {
        s for s in conventions if conventions[s] == conventions[record.structure]}  # fmt: skip
    assert shipped.find_shipped(record.model, record.prompt_kind, record.structure) == record


@pytest.mark.parametrize("name", sorted(REAL))
def test_a_test_on_a_shipped_regressors_training_images_is_refused_even_as_foreign(name):
    _, meta = load_regressor(REAL[name].path)
    image_id, digest = next(iter(meta["train_masks"].items()))
    with pytest.raises(SampotError, match="cannot be evaluated here.*without --mask evolves such an image"):
        check_regressor(meta, {"test_masks": {image_id: digest}}, allow_foreign=True)
    other = replace(REAL[name]).structure + "_other"
    with pytest.raises(SampotError, match="structure"):
        check_regressor(meta, {"structure": other})
    assert check_regressor(meta, {"structure": other}, allow_foreign=True)  # said on purpose: a warning
