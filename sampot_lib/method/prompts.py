"""A prompt and its safeguards: one click (the paper), a box, several clicks, or a box with clicks.

A prompt is a small set of coordinates in original-image pixels. Evolution moves them as one flat vector
(:meth:`Prompt.coords`: the box's x0, y0, x1, y1 first, then each point's x, y); labels (foreground / background)
never change. :class:`Safeguards` keep evolved coordinates where they mean something and decide which evolved masks
may win.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from sampot_lib.defaults import MAX_AREA_RATIO, MIN_BOX_SIZE, MIN_OVERLAP, SAFEGUARDS_OFF, TRUST_RADIUS
from sampot_lib.errors import SampotError, check_safeguards
from sampot_lib.models.base import ImageEmbedding, MaskPrediction, PromptableModel


@dataclass(frozen=True)
class Prompt:
    """A prompt: one or more clicks, a box, or a box with clicks.

    All coordinates are in pixels of the original image, x to the right, y down. Every coordinate is finite and a
    box's corners are ordered (x0 < x1, y0 < y1), or the prompt is refused here; :meth:`check` holds it against an
    image.

    Raises:
        SampotError: Not one label per point, a label other than 0 or 1, neither a click nor a box, a box of other
            than four numbers, a coordinate that is not a finite number, or a box with its corners out of order.

    Attributes:
        points: The clicks, as (x, y) pairs.
        labels: One label per point: 1 (foreground) or 0 (background).
        box: The box as (x0, y0, x1, y1), or None for no box.
    """

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.box is not None and (not hasattr(self.box, "__len__") or len(self.box) != 4):
            raise SampotError(f"a box has four numbers (x0, y0, x1, y1), got {self.box!r}.")
        if any(v not in (0, 1) for v in self.labels):  # before int(): a label 0.5 is not 0
            raise SampotError(f"point labels must be 1 (foreground) or 0 (background), got {tuple(self.labels)}.")
        try:
            points = tuple((float(x), float(y)) for x, y in self.points)
            box = tuple(float(v) for v in self.box) if self.box is not None else None
        except (TypeError, ValueError) as exc:
            raise SampotError(f"a prompt's clicks are (x, y) pairs of numbers and its box four numbers (x0, y0, x1, "
                              f"y1); got points {self.points!r} and box {self.box!r} ({exc}).") from exc  # fmt: skip
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "labels", tuple(int(v) for v in self.labels))
        object.__setattr__(self, "box", box)
        if len(self.labels) != len(self.points):
            raise SampotError(
                f"a prompt needs one label per point: {len(self.points)} points, {len(self.labels)} labels."
            )
        if not self.points and self.box is None:
            raise SampotError("a prompt needs at least one click or a box.")
        if not all(math.isfinite(v) for v in self.coords()):
            raise SampotError(f"prompt {self.to_dict()} has a coordinate that is not a finite number.")
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (x1 > x0 and y1 > y0):
                raise SampotError(
                    f"box ({x0}, {y0}, {x1}, {y1}) has its corners out of order: it needs x0 < x1 and y0 < y1 "
                    "(give the top-left corner first, then the bottom-right)."
                )

    @classmethod
    def click(cls, x: float, y: float) -> Prompt:
        """One foreground click: the paper's prompt.

        Args:
            x: The click's column, in pixels of the original image.
            y: The click's row, in pixels of the original image.

        Returns:
            A ``click`` prompt.
        """
        return cls(points=((x, y),), labels=(1,))

    @classmethod
    def from_box(
        cls, box: tuple[float, float, float, float], points: tuple[tuple[float, float], ...] = (),
        labels: tuple[int, ...] | None = None,
    ) -> Prompt:  # fmt: skip
        """A box, optionally with clicks.

        Args:
            box: The box as (x0, y0, x1, y1), in pixels of the original image.
            points: Clicks as (x, y) pairs; empty for a box alone.
            labels: One label per click, 1 (foreground) or 0 (background); None: every click is foreground.

        Returns:
            A ``box`` or ``box+clicks`` prompt.
        """
        return cls(points=tuple(points), labels=tuple(labels) if labels is not None else (1,) * len(points), box=box)

    @property
    def kind(self) -> str:
        """``click``, ``clicks``, ``box`` or ``box+clicks``."""
        if self.box is None:
            return "click" if len(self.points) == 1 else "clicks"
        return "box" if not self.points else "box+clicks"

    @property
    def n_coords(self) -> int:
        """D, the number of movable coordinates: 4 for a box, plus 2 per point."""
        return (4 if self.box is not None else 0) + 2 * len(self.points)

    def coords(self) -> np.ndarray:
        """The prompt's movable coordinates as one vector, the layout evolution moves.

        Returns:
            A float64 array of shape (D,), the box's (x0, y0, x1, y1) first, then (x, y) per point.
        """
        parts = [list(self.box)] if self.box is not None else []
        parts += [list(p) for p in self.points]
        return np.array([v for part in parts for v in part], dtype=np.float64)

    def with_coords(self, coords: np.ndarray | torch.Tensor | list[float]) -> Prompt:
        """The same prompt (kind, labels) at other coordinates.

        Args:
            coords: D coordinates laid out as :meth:`coords` (a NumPy array, a tensor or a list).

        Returns:
            A new prompt.

        Raises:
            SampotError: ``coords`` does not hold D numbers, or gives a prompt the constructor refuses.
        """
        v = [float(c) for c in (coords.detach().cpu().tolist() if isinstance(coords, torch.Tensor) else coords)]
        if len(v) != self.n_coords:
            raise SampotError(f"a {self.kind} prompt has {self.n_coords} coordinates, got {len(v)}.")
        box = tuple(v[:4]) if self.box is not None else None
        rest = v[4:] if self.box is not None else v
        points = tuple((rest[i], rest[i + 1]) for i in range(0, len(rest), 2))
        return Prompt(points=points, labels=self.labels, box=box)  # type: ignore[arg-type]

    @property
    def center(self) -> tuple[float, float]:
        """Where the prompt is, as one point for plots: the box's centre, else the first click."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            return (x0 + x1) / 2, (y0 + y1) / 2
        return self.points[0]

    def to_dict(self) -> dict[str, Any]:
        """The prompt as a JSON-ready dict.

        Returns:
            ``{"kind": ..., "points": [[x, y], ...], "labels": [...], "box": [x0, y0, x1, y1] or None}``.
        """
        return {"kind": self.kind, "points": [list(p) for p in self.points], "labels": list(self.labels),
                "box": list(self.box) if self.box is not None else None}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Prompt:
        """The prompt a dict from :meth:`to_dict` describes.

        Args:
            d: A dict with ``points``, ``labels`` and ``box`` as :meth:`to_dict` writes them (a missing key: no
                points, no labels, no box; ``kind`` is not read).

        Returns:
            The prompt.
        """
        box = d.get("box")
        return cls(points=tuple(tuple(p) for p in d.get("points", ())), labels=tuple(d.get("labels", ())),
                   box=tuple(box) if box is not None else None)  # fmt: skip

    def check(self, shape: tuple[int, int], mask: np.ndarray | None = None) -> None:
        """Check the prompt against an image (and its mask).

        Args:
            shape: The image's (H, W).
            mask: An H x W bool mask, or None. With it, every foreground click must lie inside it.

        Raises:
            SampotError: A coordinate lies outside the image, or a foreground click outside ``mask``.
        """
        h, w = shape
        for x, y in self.points:
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                raise SampotError(
                    f"click ({x}, {y}) lies outside the {w}x{h} image; x must be in [0, {w - 1}] and y in [0, {h - 1}]."
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if not (0 <= x0 and 0 <= y0 and x1 <= w - 1 and y1 <= h - 1):
                raise SampotError(
                    f"box ({x0}, {y0}, {x1}, {y1}) reaches outside the {w}x{h} image; keep x in [0, {w - 1}] and y in "
                    f"[0, {h - 1}]."
                )
        if mask is not None:
            for (x, y), label in zip(self.points, self.labels, strict=True):
                if label == 1 and not mask[int(round(y)), int(round(x))]:
                    raise SampotError(
                        f"click ({x}, {y}) lies outside the structure's mask; click inside the structure."
                    )


def as_prompt(prompt: Prompt | tuple[float, float]) -> Prompt:
    """A :class:`Prompt`, or an (x, y) pair taken as one foreground click."""
    if isinstance(prompt, Prompt):
        return prompt
    try:
        x, y = prompt
    except (TypeError, ValueError):
        raise SampotError(f"expected a Prompt or an (x, y) click, got {prompt!r}.") from None
    return Prompt.click(float(x), float(y))


def prompt_tensors(
    prompt: Prompt, coords: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Lay ``coords`` (B x D, or D) out as the model's inputs: points B x N x 2 (or None), labels B x N (or None),
    boxes B x 4 (or None). Differentiable with respect to ``coords``."""
    c = coords[None] if coords.ndim == 1 else coords
    if c.shape[-1] != prompt.n_coords:
        raise SampotError(f"a {prompt.kind} prompt has {prompt.n_coords} coordinates, got {c.shape[-1]}.")
    batch = c.shape[0]
    boxes = c[:, :4] if prompt.box is not None else None
    rest = c[:, 4:] if prompt.box is not None else c
    points = labels = None
    if prompt.points:
        points = rest.reshape(batch, len(prompt.points), 2)
        labels = torch.tensor(prompt.labels, dtype=torch.long, device=c.device).expand(batch, -1)
    return points, labels, boxes


def predict(
    model: PromptableModel,
    embedding: ImageEmbedding,
    prompt: Prompt,
    coords: torch.Tensor | None = None,
    output_size: tuple[int, int] | None = None,
) -> MaskPrediction:
    """The model's mask for a prompt, differentiable with respect to the prompt's coordinates.

    Args:
        model: The promptable model.
        embedding: The image's embedding.
        prompt: The prompt.
        coords: The coordinates of the same kind of prompt to predict at instead, B x D or D; None: ``prompt``'s own.
        output_size: The logits' size (H, W); None: the image's size.

    Returns:
        The prediction, its logits B x 1 x H x W at ``output_size``, differentiable with respect to ``coords``.
    """
    if coords is None:
        coords = torch.as_tensor(prompt.coords(), dtype=torch.float32, device=model.device)
    points, labels, boxes = prompt_tensors(prompt, coords)
    return model.predict(embedding, points, labels, boxes, output_size=output_size)


@torch.no_grad()
def predict_mask(model: PromptableModel, embedding: ImageEmbedding, prompt: Prompt) -> np.ndarray:
    """The mask of a prompt at the original image size.

    Args:
        model: The promptable model.
        embedding: The image's embedding.
        prompt: The prompt.

    Returns:
        The mask, H x W bool.
    """
    return (predict(model, embedding, prompt).logits[0, 0] > 0).cpu().numpy()


@dataclass(frozen=True)
class Safeguards:
    """Limits on where evolution may take a prompt and which masks may win.

    ``None`` switches a limit off.

    Raises:
        SampotError: A limit that cannot work (e.g. ``min_overlap`` outside [0, 1], ``max_area_ratio`` below 1).

    Attributes:
        keep_in_image: Clamp every coordinate to the image after every step.
        trust_radius: Each click stays within this distance of where the user put it, and each box edge within this
            distance of the user's edge, as a fraction of the image's longer side.
        min_overlap: An evolved mask must overlap the initial mask with at least this IoU to win.
        max_area_ratio: An evolved mask's area must lie within [initial / r, initial * r] to win.
        min_box_size: A box keeps its corners ordered and at least this width and height (fraction of the longer
            side). Always applied: a box of no size, or inside out, is not a box.
    """

    keep_in_image: bool = True
    trust_radius: float | None = TRUST_RADIUS
    min_overlap: float | None = MIN_OVERLAP
    max_area_ratio: float | None = MAX_AREA_RATIO
    min_box_size: float = MIN_BOX_SIZE

    def __post_init__(self) -> None:
        check_safeguards(asdict(self))

    @classmethod
    def off(cls) -> Safeguards:
        """The paper's setting: no limit but the image border (a prompt outside the image has no meaning).

        Returns:
            Safeguards with ``trust_radius``, ``min_overlap`` and ``max_area_ratio`` off.
        """
        return cls(**SAFEGUARDS_OFF)

    def project(
        self, coords: torch.Tensor, start: torch.Tensor, prompt: Prompt, shape: tuple[int, int]
    ) -> torch.Tensor:
        """Move coordinates to the nearest place the limits allow.

        Args:
            coords: The coordinates to move, a tensor of shape (D,) laid out as ``prompt``'s :meth:`Prompt.coords`.
            start: The user's coordinates, a tensor of shape (D,).
            prompt: The prompt whose coordinates these are (its kind says which are a box's).
            shape: The image's (H, W).

        Returns:
            A new tensor of shape (D,), with no gradient.
        """
        h, w = shape
        c = coords.detach().clone()
        s = start.detach().to(c)
        longer = max(h, w)
        nb = 4 if prompt.box is not None else 0
        if self.trust_radius is not None:
            radius = self.trust_radius * longer
            if nb:  # each edge within the radius of the user's edge
                c[:4] = torch.maximum(torch.minimum(c[:4], s[:4] + radius), s[:4] - radius)
            pts, spts = c[nb:].reshape(-1, 2), s[nb:].reshape(-1, 2)
            d = pts - spts
            n = d.norm(dim=1, keepdim=True).clamp_min(1e-12)
            pts = torch.where(n > radius, spts + d * (radius / n), pts)
            c[nb:] = pts.reshape(-1)
        hi = torch.tensor([w - 1.0, h - 1.0], dtype=c.dtype, device=c.device)
        if nb:
            c[:4] = _ordered_box(c[:4], self.min_box_size * longer, hi if self.keep_in_image else None)
        if self.keep_in_image and c.numel() > nb:
            pts = c[nb:].reshape(-1, 2)
            c[nb:] = torch.minimum(torch.clamp_min(pts, 0.0), hi).reshape(-1)
        return c

    def mask_allowed(self, mask: np.ndarray, mask0: np.ndarray) -> tuple[float, bool]:
        """Whether an evolved mask may win.

        Args:
            mask: The evolved mask, H x W bool.
            mask0: The initial mask (the user's prompt's), H x W bool.

        Returns:
            The pair (overlap, allowed), the IoU of ``mask`` with ``mask0`` (1.0 when both are empty) and whether the
            overlap and area limits let it win.
        """
        union = np.logical_or(mask, mask0).sum()
        overlap = float(np.logical_and(mask, mask0).sum() / union) if union else 1.0
        ok = True
        if self.min_overlap is not None and overlap < self.min_overlap:
            ok = False
        if self.max_area_ratio is not None:
            a0, a = max(int(mask0.sum()), 1), int(mask.sum())
            ok = ok and a0 / self.max_area_ratio <= a <= a0 * self.max_area_ratio
        return overlap, bool(ok)


def _ordered_box(box: torch.Tensor, min_size: float, hi: torch.Tensor | None) -> torch.Tensor:
    """(x0, y0, x1, y1) with x0 < x1 and y0 < y1 at least ``min_size`` apart (around their midpoint when they are
    not), shifted back inside [0, hi] when ``hi`` (W - 1, H - 1) is given."""
    lo_c, hi_c = box[:2].clone(), box[2:].clone()
    if hi is not None:  # clamp each edge first: shifting a box that pokes out would drag its other edge along
        lo_c, hi_c = torch.minimum(lo_c.clamp_min(0.0), hi), torch.minimum(hi_c.clamp_min(0.0), hi)
    mid = (lo_c + hi_c) / 2
    size = torch.clamp_min(hi_c - lo_c, max(min_size, 1.0))
    if hi is not None:
        size = torch.minimum(size, hi)
    lo_c, hi_c = mid - size / 2, mid + size / 2
    if hi is not None:
        shift = torch.clamp_min(-lo_c, 0.0) - torch.clamp_min(hi_c - hi, 0.0)
        lo_c, hi_c = lo_c + shift, hi_c + shift
    return torch.cat([lo_c, hi_c])


def prompt_of(coords: Sequence[float]) -> Prompt:
    """The prompt a results row's coordinates stand for: (x, y) a click, (x0, y0, x1, y1) a box."""
    if len(coords) == 2:
        return Prompt.click(float(coords[0]), float(coords[1]))
    if len(coords) == 4:
        return Prompt(box=tuple(float(v) for v in coords))  # type: ignore[arg-type]
    raise SampotError(f"a results row's prompt has 2 (click) or 4 (box) coordinates, got {len(coords)}.")
