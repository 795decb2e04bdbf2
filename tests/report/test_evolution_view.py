"""The overlay image and the offline HTML page of one evolution."""

from __future__ import annotations

import re

import numpy as np

from sampot_lib.method.evolve import EvolutionResult, EvolutionStep
from sampot_lib.method.prompts import Prompt
from sampot_lib.report.evolution_view import EVOLVED_COLOUR, USER_COLOUR, overlay, trajectory_figure, trajectory_html


def _masks(h: int = 80, w: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((h, w), 100, np.uint8)
    a = np.zeros((h, w), bool)
    b = np.zeros((h, w), bool)
    a[10:50, 10:50] = True  # the user's mask
    b[20:60, 30:70] = True  # the evolved one: shifted
    return image, a, b


def test_the_overlay_differs_where_the_masks_differ():
    image, a, b = _masks()
    out = overlay(image, a, b, Prompt.click(30, 30), Prompt.click(50, 40)).astype(int)
    assert out.shape == (*image.shape, 3)
    only_user, only_evolved = out[14:18, 12:18], out[52:58, 60:66]  # inside one mask only, away from edges and dots
    both, neither = out[30:34, 40:44], out[70:76, 80:90]
    assert (neither == 100).all() and (both == 100).all()  # untouched where the masks agree
    assert (np.sign(only_user - 100) == np.sign(np.array(USER_COLOUR) - 100)).all()  # tinted towards orange
    assert (np.sign(only_evolved - 100) == np.sign(np.array(EVOLVED_COLOUR) - 100)).all()  # towards cyan
    assert (out[10, 20] == USER_COLOUR).all() and (out[59, 50] == EVOLVED_COLOUR).all()  # outlines
    same = overlay(image, a, a, Prompt.click(30, 30), Prompt.click(30, 30)).astype(int)
    assert (same[52:58, 60:66] == 100).all()  # nothing changed: nothing tinted


def test_the_overlay_draws_both_boxes():
    image, a, b = _masks()
    out = overlay(image, a, b, Prompt.from_box((5, 5, 60, 60)), Prompt.from_box((15, 18, 80, 70)))
    assert (out[5, 40] == USER_COLOUR).all() and (out[70, 40] == EVOLVED_COLOUR).all()


def _result() -> EvolutionResult:
    _, a, b = _masks()
    steps = [EvolutionStep(step=i, x=30 + 5 * i, y=30 + 2 * i, score=0.5 + 0.1 * i, confidence=0.8, area=0.2,
                           overlap=1.0, allowed=True, dice=0.6 + 0.05 * i, coords=(30 + 5 * i, 30 + 2 * i))
             for i in range(4)]  # fmt: skip
    return EvolutionResult(Prompt.click(30, 30), steps, 3, a, b)


def test_the_page_is_offline_and_holds_the_trajectory():
    image, a, b = _masks()
    result = _result()
    page = trajectory_html(result, overlay(image, a, b, result.prompt, result.best_prompt), "title 0.5 -> 0.8")
    assert "<title>title 0.5 -&gt; 0.8</title>" in page
    assert not re.search(r"<script[^>]+src=", page)  # plotly inlined: no script fetched from a network
    assert "data:image/png;base64," in page  # the image inside the page
    for text in ("predicted Dice (score)", "true Dice", "prompt centre"):
        assert text in page


def test_the_figure_plots_the_trajectory_s_numbers():
    image, a, b = _masks()
    result = _result()
    fig = trajectory_figure(result, overlay(image, a, b, result.prompt, result.best_prompt))
    traces = {t.name: t for t in fig.data}
    assert list(traces["predicted Dice (score)"].y) == [s.score for s in result.trajectory]
    assert list(traces["true Dice"].y) == [s.dice for s in result.trajectory]
    assert list(traces["prompt centre"].x) == [s.x for s in result.trajectory]
    assert traces["winner"].x[0] == result.best.x
