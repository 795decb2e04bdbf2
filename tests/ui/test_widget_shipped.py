"""The widget with a shipped regressor: the predicted Dice's interval shown live, the do-no-harm rule applied."""

from __future__ import annotations

import pytest
from conftest import disk_image

from sampot_lib.method.shipped import load_shipped_regressor, shipped_regressors
from sampot_lib.models import load_model
from sampot_lib.ui.widget import PromptWidget

NANO = "sam_nano_click_left_lung"


@pytest.mark.skipif(NANO not in shipped_regressors(), reason="the SAM-Nano regressor is not shipped")
def test_the_widget_shows_the_interval_and_applies_the_shipped_rule():
    regressor, _, record = load_shipped_regressor(NANO)
    image, mask = disk_image(128, center=(60, 64), radius=30)
    widget = PromptWidget(load_model("sam_nano"), regressor, image, mask, steps=3, frame_delay=0)
    m = widget.click(60, 64)
    low, high = record.interval(m["score"])
    assert f"(predicted Dice {low:.2f} to {high:.2f})" in widget.status.value
    res = widget.evolve(animate=False)
    assert res.settings["rule"]["margin"] == record.margin and res.settings["rule"]["weight"] == record.blend_weight
    assert "do-no-harm:" in widget.status.value


@pytest.mark.skipif(NANO not in shipped_regressors(), reason="the SAM-Nano regressor is not shipped")
def test_the_app_takes_the_shipped_regressor_when_none_is_given(phantoms, capsys):
    from sampot_lib.ui.app import check_app

    spec = check_app(phantoms, None)
    assert spec.regressor == str(shipped_regressors()[NANO].path.resolve()) and spec.structure == "left_lung"
    assert f"regressor: {NANO} (shipped" in capsys.readouterr().out
    assert check_app(phantoms, NANO).regressor == spec.regressor  # by name
