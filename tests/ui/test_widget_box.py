"""The widget's box mode: two clicks are a box's corners; its score is evolution's step 0; evolve moves the box."""

import numpy as np
import pytest
from conftest import disk_image

from sampot_lib import SampotError
from sampot_lib.method.evolve import evolve_prompt
from sampot_lib.method.prompts import Prompt
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.ui.widget import PromptWidget, default_prompt_mode


def test_two_clicks_draw_a_box_scored_as_evolution_scores_it(tiny_model):
    image, mask = disk_image()
    regressor = SegmentationRegressor(32).eval()
    w = PromptWidget(tiny_model, regressor, image, mask, steps=4, lr=5.0, frame_delay=0)
    w.prompt_mode = "box"
    w.click(70.0, 80.0)  # corners in any order
    assert w.prompt is None and "opposite corner" in w.status.value
    shown = w.click(15.0, 20.0)
    assert w.prompt == Prompt.from_box((15.0, 20.0, 70.0, 80.0))
    box_trace = w.figure.data[w._box]
    assert list(box_trace.x) == [15.0, 70.0, 70.0, 15.0, 15.0] and list(box_trace.y) == [20.0, 20.0, 80.0, 80.0, 20.0]
    reference = evolve_prompt(tiny_model, regressor, image, w.prompt, steps=0, gt_mask=mask)
    assert shown["score"] == pytest.approx(reference.initial.score, abs=1e-6)
    assert shown["dice"] == pytest.approx(reference.initial.dice)
    res = w.evolve(animate=False)
    assert res.prompt.kind == "box" and len(res.trajectory) == 5
    assert w.mask is res.best_mask and np.array_equal(w.mask, res.best_mask)
    x0, y0, x1, y1 = res.best_prompt.box
    assert list(w.figure.data[w._box].x) == [x0, x1, x1, x0, x0]


def test_degenerate_box_is_refused_and_box_models_start_in_box_mode(tiny_model):
    image, _ = disk_image()
    w = PromptWidget(tiny_model, SegmentationRegressor(32), image)
    w.prompt_mode = "box"
    w.click(10.0, 10.0)
    with pytest.raises(SampotError, match="less than 2 pixels apart"):
        w.click(11.0, 50.0)
    assert default_prompt_mode(tiny_model) == "click"
    tiny_model.prompt_kinds = ("box",)
    assert default_prompt_mode(tiny_model) == "box"


def test_the_status_line_shows_each_step_while_evolving(tiny_model):
    image, mask = disk_image()
    w = PromptWidget(tiny_model, SegmentationRegressor(32).eval(), image, mask, steps=3, lr=5.0, frame_delay=0)
    w.click(40.0, 50.0)
    shown = []
    w.status.observe(lambda change: shown.append(change["new"]), "value")
    res = w.evolve(animate=False)
    steps = [s for s in shown if s.startswith("Evolving: step")]
    assert steps == [f"Evolving: step {s.step} of 3, score {s.score:.3f}" for s in res.trajectory]
