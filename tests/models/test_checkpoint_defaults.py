"""A registry model's recommended settings hold whatever weights file it is given."""

from __future__ import annotations

import pytest

from sampot_lib.models import load_model
from sampot_lib.models.registry import CHECKPOINTS


@pytest.mark.skipif("sam_nano" not in CHECKPOINTS, reason="the SAM-Nano weights are not packaged")
def test_a_checkpoint_for_a_registry_model_keeps_its_recommended_mask_output(tmp_path):
    recommended = CHECKPOINTS["sam_nano"].meta["mask_output"]
    assert recommended != "best"  # else this test shows nothing
    copy = tmp_path / "my_nano.pt"
    copy.write_bytes(CHECKPOINTS["sam_nano"].path.read_bytes())
    assert load_model("sam_nano").mask_output == recommended
    assert load_model("sam_nano", checkpoint=CHECKPOINTS["sam_nano"].path).mask_output == recommended
    assert load_model("sam_nano", checkpoint=copy).mask_output == recommended
    assert load_model("sam_nano", checkpoint=copy, mask_output="best").mask_output == "best"  # said outright
