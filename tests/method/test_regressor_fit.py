"""Whether a regressor fits its use: the model's weights it was trained with, and the images it learned from when they
come back under the same ids with other pixels or as the images it was calibrated on."""

from __future__ import annotations

import pytest

from sampot_lib.errors import SampotError
from sampot_lib.method import regressor_origin
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.models import registry
from sampot_lib.models.registry import CHECKPOINTS

pytestmark = pytest.mark.skipif("sam_nano" not in CHECKPOINTS, reason="the SAM-Nano weights are not packaged")


def _record(**extra) -> dict:
    return {"model": "sam_nano", "checkpoint": "sam_nano (registry)", "data": "set A",
            "train_masks": {"JPCLN001": "m1"}, "train_images": {"JPCLN001": "i1"},
            "val_masks": {"JPCLN002": "m2"}, "val_images": {"JPCLN002": "i2"}} | extra  # fmt: skip


def test_a_regressor_used_with_other_weights_is_foreign_and_the_registry_file_is_not(tmp_path):
    other = tmp_path / "tuned.pt"
    other.write_bytes(CHECKPOINTS["sam_nano"].path.read_bytes() + b"\0")  # any change to the weights
    with pytest.raises(SampotError, match=r"checkpoint 'sam_nano \(registry\)' but is used with checkpoint 'tuned.pt'"):
        check_regressor(_record(), {"checkpoint": registry.checkpoint_identity("sam_nano", other)})
    notes = check_regressor(
        _record(), {"checkpoint": registry.checkpoint_identity("sam_nano", other)}, allow_foreign=True
    )
    assert len(notes) == 1 and notes[0].startswith("foreign regressor: it was trained with checkpoint")
    # the registry's weights, by name or as the very packaged file, are the same weights
    for given in (None, CHECKPOINTS["sam_nano"].path):
        assert check_regressor(_record(), {"checkpoint": registry.checkpoint_identity("sam_nano", given)}) == []
    # a record with the weights' sha256 is compared by content, wherever the file lies
    copy = tmp_path / "copy_of_tuned.pt"
    copy.write_bytes(other.read_bytes())
    tuned = _record(checkpoint="tuned.pt", checkpoint_sha256=registry.checkpoint_identity("sam_nano", other)["sha256"])
    assert check_regressor(tuned, {"checkpoint": registry.checkpoint_identity("sam_nano", copy)}) == []
    with pytest.raises(
        SampotError, match="checkpoint 'tuned.pt' but is used with checkpoint 'sam_nano \\(registry\\)'"
    ):
        check_regressor(tuned, {"checkpoint": registry.checkpoint_identity("sam_nano", None)})


def test_images_with_the_ids_of_its_training_images_but_other_pixels_are_warned_about_not_refused():
    expected = {"test_masks": {"JPCLN001": "resized mask", "JPCLN009": "m9"},
                "test_images": {"JPCLN001": "resized image", "JPCLN009": "i9"}}  # fmt: skip
    notes = check_regressor(_record(shipped={"name": "shipped one"}), expected)
    assert notes == ["image JPCLN001 has the id of one of the regressor's training images (other pixels: resized or "
                     "re-exported?); if it is the same X-ray, its numbers on it are optimistic."]  # fmt: skip
    # without a truth (evolve without --mask, the app): the same warning
    images = {"JPCLN001": "resized image", "JPCLN002": "other", "JPCLN009": "i9"}
    notes = regressor_origin.unmeasured_notes(_record(shipped={"name": "shipped one"}), images)
    assert notes == [
        "images JPCLN001, JPCLN002 have the ids of the regressor's training images (other pixels: "
        "resized or re-exported?); if they are the same X-rays, its numbers on them are optimistic."
    ]
    # a regressor trained here: ids of the user's own set, which other sets share by chance (phantom_0000, ...)
    assert regressor_origin.unmeasured_notes(_record(), images) == []
    assert check_regressor(_record(), expected) == []
    # the very files are named as learned from, not again as same ids
    notes = regressor_origin.unmeasured_notes(_record(shipped={"name": "shipped one"}), {"JPCLN001": "i1"})
    assert len(notes) == 1 and "among the regressor's training or validation images (JPCLN001)" in notes[0]


def test_a_test_image_that_is_a_training_image_under_another_mask_is_a_leak_and_recorded_when_allowed():
    copy = {"test_masks": {"copy": "another reader's mask"}, "test_images": {"copy": "i1"}}  # JPCLN001's file
    with pytest.raises(SampotError, match=r"1 test image\(s\) were among its training or validation images: copy "
                                          r"\(= its JPCLN001\)"):  # fmt: skip
        check_regressor(_record(), copy)
    assert check_regressor(_record(), copy, allow_foreign=True) == [
        "foreign regressor: 1 test image(s) were among its training or validation images: copy (= its JPCLN001)"
    ]
    # the same mask file on another X-ray is not
    assert check_regressor(_record(), {"test_masks": {"x": "m1"}, "test_images": {"x": "other image"}}) == []


def test_an_image_held_out_to_check_a_calibration_is_not_named_as_learned():
    labelled = {"calibration_masks": {"phantom_0003": "m3", "phantom_0004": "m4"},
                "calibration_images": {"phantom_0003": "i3", "phantom_0004": "i4"}}  # fmt: skip
    images = {"phantom_0003": "i3", "phantom_0004": "i4", "phantom_0005": "i5"}
    # as this sampot records it, and as a record of one calibration without calibration_checks gives it
    for record in (_record(**labelled, calibration_checks=["phantom_0004"]),
                   _record(**labelled, calibrated_on={"check_ids": ["phantom_0004"]})):  # fmt: skip
        learned, checked = regressor_origin.unmeasured_notes(record, images)
        assert learned.startswith("1 of the 3 images is among the labelled images the regressor was calibrated on "
                                  "(phantom_0003): it learned the Dice")  # fmt: skip
        assert checked == ("1 of the 3 images is among the images held out to check the regressor's calibration "
                           "(phantom_0004): it did not learn from it, but the calibration was judged on it, so it is "
                           "no fresh test of it.")  # fmt: skip


def test_images_it_was_calibrated_on_are_named_and_evolve_is_advised_to_leave_the_mask_out():
    calibrated = _record(calibration_masks={"phantom_0003": "m3"}, calibration_images={"phantom_0003": "i3"},
                         calibrated_on={"data": "phb"})  # fmt: skip
    notes = regressor_origin.unmeasured_notes(calibrated, {"phantom_0003": "i3", "phantom_0004": "i4"})
    assert notes == ["1 of the 2 images is among the labelled images the regressor was calibrated on (phantom_0003): "
                     "it learned the Dice of their masks, so its predicted Dice, and the do-no-harm rule that reads "
                     "it, are optimistic there."]  # fmt: skip
    expected = {"test_masks": {"phantom_0003": "m3"}, "test_images": {"phantom_0003": "i3"}}
    with pytest.raises(SampotError) as err:
        check_regressor(calibrated, expected, one_image=True)
    assert "`sampot evolve` without --mask evolves such an image without measuring it" in str(err.value)
    assert "--seed" not in str(err.value)
    with pytest.raises(SampotError, match="calibrate it again"):  # a run's advice stays a run's
        check_regressor(calibrated, expected)
