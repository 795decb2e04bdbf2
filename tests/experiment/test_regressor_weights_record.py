"""A trained regressor records the model's weights by sha256, and a run checks them against the weights it uses."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import ExperimentConfig
from sampot_lib.experiment.provenance import expected_record, regressor_record
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.models.registry import CHECKPOINTS


@pytest.mark.skipif("sam_nano" not in CHECKPOINTS, reason="the SAM-Nano weights are not packaged")
def test_a_run_with_other_weights_than_its_regressor_was_trained_with_is_refused(tmp_path):
    tuned = tmp_path / "sam_nano.pt"  # the packaged file's name, other bytes: only the sha256 tells them apart
    tuned.write_bytes(CHECKPOINTS["sam_nano"].path.read_bytes() + b"\0")
    model = SimpleNamespace(mask_output="single")
    trained = ExperimentConfig(data=str(tmp_path), out=str(tmp_path / "a"), mask_output="single")
    record = regressor_record(trained, model, {"train": {}, "val": {}}, "split", [], [], [{"val_mse": 0.1}])
    assert record["checkpoint"] == "sam_nano (registry)"
    assert record["checkpoint_sha256"] == CHECKPOINTS["sam_nano"].sha256
    used = ExperimentConfig(data=str(tmp_path), out=str(tmp_path / "b"), mask_output="single", checkpoint=str(tuned))
    with pytest.raises(SampotError, match="checkpoint 'sam_nano \\(registry\\)' but is used with checkpoint"):
        check_regressor(record, expected_record(used, model, None))
    notes = check_regressor(record, expected_record(used, model, None), allow_foreign=True)
    assert any(n.startswith("foreign regressor: it was trained with checkpoint") for n in notes)
    shutil.copy(CHECKPOINTS["sam_nano"].path, tuned)  # the packaged weights under a path of the user's
    assert check_regressor(record, expected_record(used, model, None)) == []
