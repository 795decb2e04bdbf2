"""The "Try it" app for a live Jupyter kernel: click on the image to place the prompt, see the model's mask, the
regressor's score, the model's confidence and (when the truth is known) the Dice; a button evolves the click and
animates its path.

Needs a live kernel with ipywidgets and plotly's FigureWidget (which needs ``anywidget``); a static page cannot run
the Python callbacks.
"""

from __future__ import annotations

import html
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch

from sampot_lib.defaults import LR, SHARPNESS, STEPS
from sampot_lib.errors import SampotError
from sampot_lib.method.evolve import EvolutionResult, EvolutionStep, evolve_prompt, measure_prompt
from sampot_lib.method.prompts import Prompt, Safeguards, as_prompt
from sampot_lib.method.regressor import SegmentationRegressor
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.method.selection import DoNoHarm
from sampot_lib.method.shipped import predicted_interval, prompt_family
from sampot_lib.models.base import PromptableModel
from sampot_lib.report.figures import MASK_COLOR, PATH_COLOR, TRUTH_COLOR, clear_modebar, contour_xy, image_trace

# Clicks are caught by an almost transparent grid over the image (a plotly Image trace reports no click position
# in every front end); this many cells along the longer side.
_CLICK_CELLS = 128


def default_prompt_mode(model: PromptableModel) -> str:
    """The mouse's prompt kind for ``model``: a click, unless its record says it answers boxes but not clicks."""
    kinds = getattr(model, "prompt_kinds", ("click",))
    return "box" if "box" in kinds and "click" not in kinds else "click"


def regressor_prompt_modes(provenance: dict[str, Any] | None) -> tuple[str, ...]:
    """The prompt kinds the mouse may place with a regressor: the one its record says it learned to score (masks
    from clicks, or from boxes), or both for a regressor that records none."""
    kind = (provenance or {}).get("prompt")
    if not isinstance(kind, str):
        return PromptWidget.prompt_modes
    return (prompt_family(kind),)


def starting_prompt_mode(model: PromptableModel, provenance: dict[str, Any] | None) -> str:
    """The prompt kind the mouse places first: the regressor's, else the one ``model`` answers best."""
    modes = regressor_prompt_modes(provenance)
    return modes[0] if len(modes) == 1 else default_prompt_mode(model)


class PromptWidget:
    """An ipywidgets app around one image.

    ``click(x, y)`` and ``evolve()`` do what the mouse and the button do, so the app can be driven (and tested) from
    code; :attr:`mask` is the mask it shows. A regressor loaded with its provenance is checked against the model and
    the sharpness; a shipped one brings its score interval and its do-no-harm rule.

    Args:
        model: A promptable model.
        regressor: A trained segmentation regressor (scored through a frozen copy: the caller's network is untouched).
        image: The image, H x W (or H x W x 3) uint8.
        gt_mask: The true mask, H x W bool, or None.
        steps: The steps slider's first value (1 to 100).
        lr: The step-size slider's first value, in px.
        sharpness: The sigmoid's slope on the logits the regressor scores.
        safeguards: The safeguards used while the safeguards box is ticked; None: the defaults.
        frame_delay: Seconds between the frames of an animated evolution.

    Raises:
        SampotError: An image that is not H x W or H x W x 3, a true mask of another size, or a regressor trained for
            another model, mask output or sharpness.

    Attributes:
        app: The widget to display.
        prompt: The prompt placed, or None.
        result: The last evolution of that prompt, or None.
        last: The scores of the prompt shown (:meth:`measure`).
    """

    #: The kinds of prompt the mouse can place (the app shows a "prompt mode" toggle when there are several): in
    #: "box" mode two clicks on the image are the box's opposite corners.
    prompt_modes: tuple[str, ...] = ("click", "box")

    def __init__(
        self,
        model: PromptableModel,
        regressor: SegmentationRegressor,
        image: np.ndarray,
        gt_mask: np.ndarray | None = None,
        *,
        steps: int = STEPS,
        lr: float = LR,
        sharpness: float = SHARPNESS,
        safeguards: Safeguards | None = None,
        frame_delay: float = 0.08,
    ) -> None:
        if image.ndim != 2 and not (image.ndim == 3 and image.shape[-1] == 3):
            raise SampotError(f"expected an H x W or H x W x 3 image, got shape {image.shape}.")
        h, w = image.shape[:2]
        if gt_mask is not None and gt_mask.shape != (h, w):
            raise SampotError(f"ground-truth mask is {gt_mask.shape} but the image is {(h, w)}.")
        provenance = getattr(regressor, "provenance", None)  # set by load_regressor: what the regressor learned from
        if provenance:  # a regressor trained for another model, mask output or sharpness is refused here
            check_regressor(provenance, {"model": model.name, "mask_output": getattr(model, "mask_output", None),
                                         "sharpness": sharpness}, can_allow=False)  # fmt: skip
        self.model, self.image, self.gt_mask = model, image, gt_mask
        shipped = (provenance or {}).get("shipped") or {}  # a shipped regressor: its interval and do-no-harm rule
        self._half_width: float | None = shipped.get("half_width")
        self._rule = DoNoHarm(shipped["margin"], provenance.get("blend_weight")) if "margin" in shipped else None
        self.regressor = regressor  # scored through a frozen copy (self._scorer): the caller's network is untouched
        self.sharpness = sharpness
        self.frame_delay = frame_delay
        self.prompt: Prompt | None = None
        self.result: EvolutionResult | None = None
        self.last: dict[str, Any] = {}
        # a regressor scores masks from the prompt kind it learned from: the mouse places that kind only
        self.prompt_modes = regressor_prompt_modes(provenance)
        self._mode = starting_prompt_mode(model, provenance)
        self._corner: tuple[float, float] | None = None  # the first corner of a box being drawn
        self._listeners: list[Callable[[PromptWidget], None]] = []
        self._emb = model.embed(image)
        self._scorer = RegressorScorer(regressor, image, sharpness, device=model.device)

        self.figure = go.FigureWidget(self._base_figure())
        self.figure.data[self._catcher].on_click(self._on_click)
        self.steps = widgets.IntSlider(value=steps, min=1, max=100, description="steps")
        self.lr = widgets.FloatLogSlider(value=lr, base=10, min=-1, max=2, description="lr (px)")
        self.guarded = widgets.Checkbox(value=True, description="safeguards")
        self._guards = safeguards if safeguards is not None else Safeguards()
        # No icon: Font Awesome comes from a CDN in Voila's page, and the app must work offline.
        self.button = widgets.Button(description="Evolve the prompt", disabled=True, button_style="primary")
        self.button.add_class("sampot-evolve")
        self.button.on_click(lambda _: self._safely(self.evolve))
        self.status = widgets.HTML(self._hint())
        self.status.add_class("sampot-status")
        controls = widgets.HBox([self.steps, self.lr, self.guarded, self.button])
        self.app = widgets.VBox([self.figure, controls, self.status])

    # -- figure -------------------------------------------------------------------------------------------------
    def _base_figure(self) -> go.Figure:
        h, w = self.image.shape[:2]
        image = self.image if self.image.dtype == np.uint8 else self.image.astype(np.uint8)
        fig = go.Figure(image_trace(image, max_size=512))
        if self.gt_mask is not None:
            tx, ty = contour_xy(self.gt_mask)
            fig.add_trace(go.Scatter(x=tx, y=ty, mode="lines", name="ground truth", hoverinfo="skip",
                                     line={"color": TRUTH_COLOR, "dash": "dot"}))  # fmt: skip
        cell = max(h, w) / _CLICK_CELLS
        xs, ys = np.arange(cell / 2, w, cell), np.arange(cell / 2, h, cell)
        self._catcher = len(fig.data)
        fig.add_trace(go.Heatmap(x=xs, y=ys, z=np.zeros((len(ys), len(xs))), opacity=0.01, showscale=False,
                                 colorscale=[[0, "white"], [1, "white"]], name="click here",
                                 hovertemplate="(%{x:.0f}, %{y:.0f})<extra></extra>"))  # fmt: skip
        self._mask = len(fig.data)
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name="mask", line={"color": MASK_COLOR},
                                 hoverinfo="skip"))  # fmt: skip
        self._path = len(fig.data)
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", name="evolution path", hoverinfo="skip",
                                 line={"color": PATH_COLOR, "width": 1}, marker={"size": 4}))  # fmt: skip
        self._click = len(fig.data)
        fig.add_trace(go.Scatter(x=[], y=[], mode="markers", name="click", hoverinfo="skip",
                                 marker={"size": 14, "symbol": "x", "color": "yellow",
                                         "line": {"width": 2, "color": "black"}}))  # fmt: skip
        self._box = len(fig.data)
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", name="box", hoverinfo="skip",
                                 line={"color": "yellow", "width": 2}))  # fmt: skip
        fig.update_xaxes(range=[-0.5, w - 0.5], showticklabels=False, showgrid=False, zeroline=False)
        fig.update_yaxes(range=[h - 0.5, -0.5], showticklabels=False, showgrid=False, zeroline=False)
        # A small title font: "best of 30 steps (step 12) at (x, y): score, confidence, Dice" fits in 600 px.
        fig.update_layout(width=600, height=640, margin={"l": 10, "r": 10, "t": 0, "b": 10},
                          title={"text": "Click inside the structure", "font": {"size": 13}},
                          legend={"orientation": "h", "y": -0.02})  # fmt: skip
        return clear_modebar(fig)

    def _on_click(self, trace: Any, points: Any, selector: Any) -> None:
        if points.xs:
            self._safely(self.click, points.xs[0], points.ys[0])

    @property
    def prompt_mode(self) -> str:
        """What a mouse click places: ``"click"`` (a click prompt) or ``"box"`` (a corner of a box)."""
        return self._mode

    @prompt_mode.setter
    def prompt_mode(self, mode: str) -> None:
        if mode in PromptWidget.prompt_modes and mode not in self.prompt_modes:
            raise SampotError(f"the regressor scores masks from {self.prompt_modes[0]} prompts, not from {mode} "
                              f"prompts: place a {self.prompt_modes[0]}, or use a regressor trained for {mode} "
                              "prompts.")  # fmt: skip
        if mode not in self.prompt_modes:
            raise SampotError(f"prompt mode must be one of {', '.join(self.prompt_modes)}, got {mode!r}.")
        self._mode, self._corner = mode, None
        if hasattr(self, "status"):  # say what the mouse does now (not during __init__, before the status exists)
            self.status.value = self._hint()

    def _hint(self) -> str:
        if self.prompt_mode == "box":
            return "Click two opposite corners of a box around the structure."
        return "Click inside the structure to place the prompt."

    def _safely(self, action: Callable[..., Any], *args: Any) -> None:
        """Run a mouse or button action; a failure is shown in the status line (a callback's exception would
        otherwise vanish into the kernel's log, and the page would just stop responding)."""
        try:
            action(*args)
        except SampotError as exc:
            self.status.value = f"<span style='color:#b00020'>{html.escape(str(exc))}</span>"
        except Exception as exc:  # noqa: BLE001 - the app must stay usable; the traceback goes to the server's log
            traceback.print_exc(file=sys.stderr)
            self.status.value = (
                f"<span style='color:#b00020'>unexpected error ({type(exc).__name__}: {html.escape(str(exc))}); "
                "the server's log has the details.</span>"
            )

    # -- the mask shown -----------------------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray | None:
        """The H x W bool mask shown now: the best step's after evolution, else the click's; None before a click."""
        if self.result is not None:
            return self.result.best_mask
        return self.last.get("mask")

    def on_change(self, callback: Callable[[PromptWidget], None]) -> None:
        """Call a function whenever the mask shown changes (a click, the end of an evolution).

        The no-code app refreshes its download link with it.

        Args:
            callback: Called as ``callback(self)``.
        """
        self._listeners.append(callback)

    def _changed(self) -> None:
        for callback in self._listeners:
            callback(self)

    # -- actions ------------------------------------------------------------------------------------------------
    @property
    def point(self) -> tuple[float, float] | None:
        """Where the prompt is (the click, or the box's centre); None before one is placed."""
        return None if self.prompt is None else self.prompt.center

    @torch.no_grad()
    def measure(self, prompt: Prompt | tuple[float, float]) -> dict[str, Any]:
        """A prompt's mask and scores, scored as evolution scores it (its step 0).

        Args:
            prompt: A prompt, or an (x, y) click.

        Returns:
            The mask (H x W bool), the regressor's score, the model's confidence and the true Dice (or None), as
            :func:`~sampot_lib.method.evolve.measure_prompt` gives them.

        Raises:
            SampotError: The prompt does not lie inside the image.
        """
        prompt = as_prompt(prompt)
        prompt.check(self.image.shape[:2])
        return measure_prompt(self.model, self._emb, prompt, self._scorer, self.gt_mask)

    def click(self, x: float, y: float) -> dict[str, Any]:
        """What a mouse click does: place a click prompt, or in "box" mode set a corner of the box.

        The second corner completes the box.

        Args:
            x: The click's x in original pixels.
            y: The click's y in original pixels.

        Returns:
            The scores of the prompt shown (:meth:`measure`).

        Raises:
            SampotError: A click outside the image, or a box's corners less than 2 pixels apart in x or y.
        """
        if self.prompt_mode != "box":
            return self.set_prompt(Prompt.click(float(x), float(y)))
        Prompt.click(float(x), float(y)).check(self.image.shape[:2])
        if self._corner is None:
            self._corner = (float(x), float(y))
            with self.figure.batch_update():
                self.figure.data[self._click].update(x=[x], y=[y])
            self.status.value = f"first corner at ({x:.0f}, {y:.0f}): click the opposite corner."
            return self.last
        (ax, ay), self._corner = self._corner, None
        if abs(x - ax) < 2 or abs(y - ay) < 2:
            raise SampotError("the two corners are less than 2 pixels apart in x or y: click two opposite corners.")
        return self.set_prompt(Prompt.from_box((min(ax, x), min(ay, y), max(ax, x), max(ay, y))))

    def set_prompt(self, prompt: Prompt) -> dict[str, Any]:
        """Place a prompt (a click, a box, ...): draw it and its mask, and report its scores.

        Args:
            prompt: The prompt.

        Returns:
            Its scores (:meth:`measure`).

        Raises:
            SampotError: The prompt does not lie inside the image.
        """
        self.last = self.measure(prompt)
        self.prompt, self.result = prompt, None
        mx, my = contour_xy(self.last["mask"])
        x, y = prompt.center
        with self.figure.batch_update():
            self.figure.data[self._mask].update(x=mx, y=my)
            self._draw_prompt(prompt)
            self.figure.data[self._path].update(x=[], y=[])
            self.figure.layout.title.text = self._describe(prompt.kind, x, y, self.last)
        self.status.value = self._describe(prompt.kind, x, y, self.last)
        self.button.disabled = False
        self._changed()
        return self.last

    def _draw_prompt(self, prompt: Prompt) -> None:
        px = [p[0] for p in prompt.points]
        py = [p[1] for p in prompt.points]
        self.figure.data[self._click].update(x=px, y=py)
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            self.figure.data[self._box].update(x=[x0, x1, x1, x0, x0], y=[y0, y0, y1, y1, y0])
        else:
            self.figure.data[self._box].update(x=[], y=[])

    def _show_step(self, step: EvolutionStep, steps: int) -> None:
        """The status line while evolving: the step just scored, of how many, and its score."""
        self.status.value = f"Evolving: step {step.step} of {steps}, score {step.score:.3f}"

    def evolve(self, animate: bool = True) -> EvolutionResult:
        """Evolve the current prompt (Adam on its coordinates, maximising the regressor's score); show its path.

        Args:
            animate: Draw the path step by step, ``frame_delay`` seconds apart; False: at once.

        Returns:
            The evolution.

        Raises:
            SampotError: No prompt was placed.
        """
        if self.prompt is None:
            raise SampotError("place a prompt first (click on the image, or call .click(x, y) or .set_prompt(...)).")
        self.button.disabled = True
        self.status.value = f"Evolving for {self.steps.value} steps..."
        try:
            res = evolve_prompt(
                self.model, self._scorer, self.image, self.prompt, steps=self.steps.value, lr=self.lr.value,
                sharpness=self.sharpness, safeguards=self._guards if self.guarded.value else Safeguards.off(),
                gt_mask=self.gt_mask, on_step=self._show_step,
                do_no_harm=self._rule if self._rule is not None else False,
            )  # fmt: skip
        finally:
            self.button.disabled = False
        self.result = res
        xs, ys = [s.x for s in res.trajectory], [s.y for s in res.trajectory]
        frames = range(1, len(xs) + 1) if animate else [len(xs)]
        for n in frames:
            with self.figure.batch_update():
                self.figure.data[self._path].update(x=xs[:n], y=ys[:n])
                self._draw_prompt(res.prompt_at(n - 1))
                s = res.trajectory[n - 1]
                self.figure.layout.title.text = f"step {s.step}: score {s.score:.3f}" + (
                    f", Dice {s.dice:.3f}" if s.dice is not None else ""
                )
            if animate:
                time.sleep(self.frame_delay)
        best = res.best
        mx, my = contour_xy(res.best_mask)
        with self.figure.batch_update():
            self.figure.data[self._mask].update(x=mx, y=my)
            self._draw_prompt(res.best_prompt)
        text = self._describe(f"best of {len(xs) - 1} steps (step {res.best_step})", best.x, best.y,
                              {"score": best.score, "confidence": best.confidence, "dice": best.dice})  # fmt: skip
        self.figure.layout.title.text = text
        self.status.value = (
            text
            + f" (start: score {res.initial.score:.3f}"
            + (f", Dice {res.initial.dice:.3f})" if res.initial.dice is not None else ")")
            + (f"; do-no-harm: {res.settings['rule']['reason']}" if "rule" in res.settings else "")
        )
        self._changed()
        return res

    def _describe(self, what: str, x: float, y: float, m: dict[str, Any]) -> str:
        """One line of a prompt's numbers: the score (with its interval for a shipped regressor), the model's
        confidence and the true Dice when known."""
        text = f"{what} at ({x:.0f}, {y:.0f}): score {m['score']:.3f}"
        if self._half_width is not None:
            low, high = predicted_interval(m["score"], self._half_width)
            text += f" (predicted Dice {low:.2f} to {high:.2f})"
        text += f", confidence {m['confidence']:.3f}"
        return text + (f", Dice {m['dice']:.3f}" if m.get("dice") is not None else "")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.app)
