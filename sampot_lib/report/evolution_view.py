"""What a person looks at after one evolution: an overlay image and an offline HTML page of the trajectory.

:func:`overlay` draws the user's mask and prompt (orange) against the evolved ones (cyan) on the image; the pixels
only one of the two masks covers are tinted with its colour, so a change shows where it happened.
:func:`trajectory_html` is a self-contained page (plotly's script inlined: it opens offline) with the score by
step, the true Dice by step when the truth is known, and the prompt's path over the image.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image, ImageDraw
from plotly.subplots import make_subplots
from skimage.segmentation import find_boundaries

from sampot_lib.method.evolve import EvolutionResult
from sampot_lib.method.prompts import Prompt

#: Colours (RGB) of the user's prompt and mask, and of the evolved ones.
USER_COLOUR = (255, 140, 0)
EVOLVED_COLOUR = (0, 200, 255)
#: How strongly a pixel only one mask covers takes that mask's colour.
TINT = 0.45
#: The longest side of the image shown in the HTML page (the page stays small).
HTML_SIDE = 512


def _rgb(image: np.ndarray) -> np.ndarray:
    """H x W (x 3) uint8 as H x W x 3 float."""
    img = np.asarray(image, dtype=np.float32)
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3].copy()


def _draw_prompt(draw: ImageDraw.ImageDraw, prompt: Prompt, colour: tuple[int, int, int], width: int) -> None:
    if prompt.box is not None:
        draw.rectangle(list(prompt.box), outline=colour, width=width)
    r = 3 * width
    for (x, y), label in zip(prompt.points, prompt.labels, strict=True):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour if label == 1 else None, outline=colour, width=width)


def overlay(
    image: np.ndarray, initial_mask: np.ndarray, final_mask: np.ndarray, initial: Prompt, final: Prompt
) -> np.ndarray:
    """The image (H x W or H x W x 3 uint8) with the user's mask and prompt in orange and the evolved ones in cyan:
    each mask's outline, a tint on the pixels only that mask covers, and each prompt (a box's outline, a click's
    dot). Returns H x W x 3 uint8."""
    out = _rgb(image)
    a, b = np.asarray(initial_mask, bool), np.asarray(final_mask, bool)
    for only, colour in ((a & ~b, USER_COLOUR), (b & ~a, EVOLVED_COLOUR)):
        out[only] = (1 - TINT) * out[only] + TINT * np.array(colour, dtype=np.float32)
    width = max(1, round(max(out.shape[:2]) / 400))
    for mask, colour in ((a, USER_COLOUR), (b, EVOLVED_COLOUR)):
        edge = find_boundaries(mask, mode="inner")
        if width > 1:
            edge = find_boundaries(mask, mode="thick") | edge
        out[edge] = colour
    pil = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    _draw_prompt(draw, initial, USER_COLOUR, width)
    _draw_prompt(draw, final, EVOLVED_COLOUR, width)
    return np.asarray(pil)


def _png_uri(rgb: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def trajectory_figure(result: EvolutionResult, picture: np.ndarray, title: str = "") -> go.Figure:
    """Two panels: the prompt's path (its centre at every step; start and winner marked) over ``picture`` (H x W x 3
    uint8, e.g. the :func:`overlay`), and the score (and true Dice, where known) by step with the winner marked."""
    h, w = picture.shape[:2]
    scale = min(1.0, HTML_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(picture).resize(size))
    titles = ("the prompt's path (orange: yours, cyan: evolved)", "score by step")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.08, subplot_titles=titles)
    fig.add_layout_image(source=_png_uri(small), x=0, y=0, sizex=w, sizey=h, xref="x", yref="y", layer="below",
                         sizing="stretch", xanchor="left", yanchor="top")  # fmt: skip
    steps = [s.step for s in result.trajectory]
    xs, ys = [s.x for s in result.trajectory], [s.y for s in result.trajectory]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="lines+markers",
            name="prompt centre",
            text=[f"step {s}" for s in steps],
            line=dict(color="white", width=1),
            marker=dict(size=4, color="white"),
        ),
        row=1,
        col=1,
    )
    best = result.best
    for step, colour, name in ((result.initial, USER_COLOUR, "your prompt"), (best, EVOLVED_COLOUR, "winner")):
        fig.add_trace(go.Scatter(x=[step.x], y=[step.y], mode="markers", name=name,
                                 marker=dict(size=12, color=f"rgb{colour}", line=dict(color="black", width=1))),
                      row=1, col=1)  # fmt: skip
    fig.update_xaxes(range=[0, w], showgrid=False, row=1, col=1)
    fig.update_yaxes(range=[h, 0], showgrid=False, scaleanchor="x", row=1, col=1)
    fig.add_trace(go.Scatter(x=steps, y=[s.score for s in result.trajectory], mode="lines+markers",
                             name="predicted Dice (score)"), row=1, col=2)  # fmt: skip
    if all(s.dice is not None for s in result.trajectory):
        fig.add_trace(go.Scatter(x=steps, y=[s.dice for s in result.trajectory], mode="lines+markers",
                                 name="true Dice"), row=1, col=2)  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=[best.step],
            y=[best.score],
            mode="markers",
            name="winner's score",
            marker=dict(size=12, color=f"rgb{EVOLVED_COLOUR}", symbol="star"),
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="step (model call)", row=1, col=2)
    fig.update_yaxes(title_text="Dice", row=1, col=2)
    fig.update_layout(title=title, height=560, width=1100, template="plotly_white")
    return fig


def trajectory_html(result: EvolutionResult, picture: np.ndarray, title: str = "") -> str:
    """A self-contained HTML page (plotly's script inlined, no network) of :func:`trajectory_figure`."""
    fig = trajectory_figure(result, picture, title)
    page = fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})
    return page.replace("<head>", f"<head>\n    <title>{html.escape(title or 'sampot evolution')}</title>", 1)
