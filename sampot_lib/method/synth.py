"""Synthetic candidate masks and prompts for the regressor's training set (paper section 3.2).

Under- and over-segmentations are level sets of the ground truth's signed distance map: thresholding it at a
negative offset erodes the mask, at a positive offset dilates it, and Dice with the truth falls as the offset grows.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sampot_lib.data.io import check_mask, outside_ring
from sampot_lib.defaults import BOX_JITTER, OUTSIDE_OFFSET
from sampot_lib.errors import SampotError
from sampot_lib.method.metrics import dice
from sampot_lib.method.prompts import Prompt


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """The signed distance to a mask's boundary.

    Args:
        mask: The mask, H x W (two values at most, not empty).

    Returns:
        H x W distances in pixels, negative inside and positive outside.

    Raises:
        SampotError: ``mask`` is not a 2-D mask of two values at most, or is empty.
    """
    mask = check_mask(mask)
    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)


def level_set_mask(sdm: np.ndarray, offset: float) -> np.ndarray:
    """A level set of a signed distance map: the truth for offset 0, eroded for offset < 0, dilated for offset > 0.

    Args:
        sdm: The signed distance map, H x W (:func:`signed_distance`).
        offset: The level in pixels.

    Returns:
        The mask ``sdm < offset``, H x W bool.
    """
    return sdm < offset


@dataclass(frozen=True)
class Candidate:
    """One synthetic mask.

    Attributes:
        offset: The level offset in pixels.
        mask: The mask, H x W bool.
        dice: Its Dice with the truth.
    """

    offset: float
    mask: np.ndarray
    dice: float


def candidate_masks(
    mask: np.ndarray,
    n: int,
    seed: int | np.random.Generator,
    max_erode: float = 0.7,
    max_dilate: float = 1.0,
    roughness: float = 0.15,
) -> list[Candidate]:
    """Under- and over-segmented masks (half each) from level sets of a mask's signed distance map.

    Offsets are drawn uniformly as fractions of the structure's inradius (the largest inside distance), so candidates
    span Dice from about 0.3 to 1 whatever the image size. Candidates that vanish (eroded to nothing) are dropped.

    Args:
        mask: The true mask, H x W.
        n: The number of candidates drawn.
        seed: The seed, or a generator to draw from.
        max_erode: The largest offset inside, as a fraction of the inradius.
        max_dilate: The largest offset outside, as a fraction of the inradius.
        roughness: With ``roughness`` > 0, half of them add a smooth random field (amplitude ``roughness`` x inradius)
            to the distance map before thresholding, so the regressor also sees irregular boundaries, not only
            concentric ones.

    Returns:
        Up to ``n`` candidates.

    Raises:
        SampotError: ``mask`` is not a 2-D mask of two values at most, or is empty.
    """
    rng = np.random.default_rng(seed)
    truth = check_mask(mask)
    inradius = float(ndimage.distance_transform_edt(truth[_window(truth, 1)]).max())
    # No candidate reaches further out than the largest offset plus the field's amplitude, so the distances are
    # computed on the mask's bounding box widened by that much: the same numbers as on the whole image (every mask
    # pixel, and the nearest background pixel of each, lie in the window), on a fraction of its pixels.
    window = _window(truth, math.ceil((max_dilate + max(roughness, 0.0)) * inradius) + 1)
    sdm = signed_distance(truth[window])
    out: list[Candidate] = []
    for i in range(n):
        frac = rng.uniform(0.02, max_erode) * -1 if i % 2 == 0 else rng.uniform(0.02, max_dilate)
        offset = frac * inradius
        field = sdm
        if roughness > 0 and rng.random() < 0.5:
            noise = _smooth_field(rng, truth.shape, scale=max(2.0, inradius / 2), amplitude=roughness * inradius)
            field = sdm + noise[window]
        inside = level_set_mask(field, offset)
        if inside.any():
            cand = np.zeros(truth.shape, dtype=bool)
            cand[window] = inside
            out.append(Candidate(offset=offset, mask=cand, dice=dice(inside, truth[window])))
    return out


def _window(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The bounding box of a non-empty H x W bool mask widened by ``pad`` px on each side, within the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(max(rows[0] - pad, 0), rows[-1] + pad + 1), slice(max(cols[0] - pad, 0), cols[-1] + pad + 1)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float, amplitude: float) -> np.ndarray:
    """H x W smooth random field with features about ``scale`` px wide and peak ``amplitude``.

    Drawn on a grid 8x coarser and enlarged bilinearly: a Gaussian blur of width ``scale`` at full size costs
    seconds on a 1024 px image, this a few milliseconds, and the field is smooth either way.
    """
    coarse = tuple(max(2, -(-n // 8)) for n in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma=max(scale / 8, 0.5))
    noise = ndimage.zoom(noise, [n / c for n, c in zip(shape, coarse, strict=True)], order=1)[: shape[0], : shape[1]]
    return noise * amplitude / (np.abs(noise).max() + 1e-12)


def _nearest_inside(mask: np.ndarray, x: float, y: float) -> tuple[float, float]:
    """(x, y) itself if it lies in the mask, else the mask pixel nearest to it."""
    if mask[int(round(y)), int(round(x))]:
        return float(x), float(y)
    ys, xs = np.nonzero(mask)
    k = int(np.argmin((xs - x) ** 2 + (ys - y) ** 2))
    return float(xs[k]), float(ys[k])


def centroid_prompt(mask: np.ndarray) -> tuple[float, float]:
    """The mask's centroid as a click: the paper's initial prompt.

    Args:
        mask: The mask, H x W.

    Returns:
        (x, y), moved to the nearest mask pixel if the centroid falls outside (a human clicks inside the structure).

    Raises:
        SampotError: ``mask`` is not a 2-D mask of two values at most, or is empty.
    """
    mask = check_mask(mask)
    ys, xs = np.nonzero(mask)
    return _nearest_inside(mask, xs.mean(), ys.mean())


def inside_click(mask: np.ndarray, seed: int | np.random.Generator, depth: float = 0.25) -> tuple[float, float]:
    """A click drawn uniformly from the structure's inner part: a user who clicks somewhere inside it, not on its edge.

    Args:
        mask: The mask, H x W.
        seed: The draw's seed, or a generator to draw from.
        depth: The inner part: the pixels at least ``depth`` times the mask's largest distance to its border away from
            that border (0: any mask pixel).

    Returns:
        (x, y) of a mask pixel.

    Raises:
        SampotError: ``mask`` is not a 2-D mask of two values at most, or is empty; ``depth`` is outside [0, 1).
    """
    if not 0 <= depth < 1:
        raise SampotError(f"depth must be in [0, 1) (a share of the deepest pixel's distance), got {depth}.")
    mask = check_mask(mask)
    inner = ndimage.distance_transform_edt(mask)
    ys, xs = np.nonzero(inner >= max(depth * inner.max(), 1.0))
    k = int(np.random.default_rng(seed).integers(len(xs)))
    return float(xs[k]), float(ys[k])


def band_prompts(mask: np.ndarray, n_bands: int = 3) -> list[tuple[float, float]]:
    """The paper's three in-structure prompts: centroids of horizontal bands of equal height over the mask's rows.

    Args:
        mask: The mask, H x W.
        n_bands: The number of bands.

    Returns:
        One (x, y) click per band with mask pixels, top to bottom, each moved into the mask if needed.

    Raises:
        SampotError: ``mask`` is not a 2-D mask of two values at most, or is empty.
    """
    mask = check_mask(mask)
    rows = np.nonzero(mask.any(axis=1))[0]
    edges = np.linspace(rows[0], rows[-1] + 1, n_bands + 1)
    points = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        band = np.zeros_like(mask)
        band[int(lo) : int(np.ceil(hi))] = mask[int(lo) : int(np.ceil(hi))]
        if band.any():
            ys, xs = np.nonzero(band)
            points.append(_nearest_inside(band, xs.mean(), ys.mean()))
    return points


def outside_prompts(
    mask: np.ndarray, n: int, seed: int | np.random.Generator, offset: float = OUTSIDE_OFFSET
) -> list[tuple[float, float]]:
    """Random clicks just outside the structure.

    Our reading of the paper's "random points outside the three bands, with an offset of 5 pixels": clicks that miss
    the structure by a few pixels, so the regressor also learns what a wrong mask from a near-miss looks like.

    Args:
        mask: The mask, H x W.
        n: The number of clicks.
        seed: The seed, or a generator to draw from.
        offset: The clicks' distance from the structure's edge in pixels.

    Returns:
        ``n`` (x, y) clicks, fewer when fewer pixels lie at that distance.

    Raises:
        SampotError: No pixel lies ``offset`` px outside the mask (it fills the image, or nearly), or ``mask`` is not a
            usable mask.
    """
    mask = check_mask(mask)
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(outside_ring(mask, offset))
    if len(xs) == 0:
        raise SampotError(
            f"no pixel lies {offset:g} px outside the mask (it fills the image, or nearly); the regressor's training "
            f"set clicks there: give the image a margin of at least {offset:g} px around the structure, or keep it "
            "out of the training and validation parts (--split-file)."
        )
    pick = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return [(float(xs[k]), float(ys[k])) for k in pick]


def box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The mask's tight bounding box.

    Args:
        mask: The mask, H x W.

    Returns:
        The box (x0, y0, x1, y1), its outermost pixels' coordinates.

    Raises:
        SampotError: ``mask`` is not a 2-D mask of two values at most, or is empty.
    """
    mask = check_mask(mask)
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def jittered_box(mask: np.ndarray, jitter: float, seed: int | np.random.Generator) -> tuple[float, float, float, float]:
    """A sloppy user's box: the mask's bounding box with each edge moved at random.

    Each edge moves by a seeded uniform fraction in [-jitter, jitter] of the box's width (x edges) or height (y edges),
    and the box is kept inside the image and at least 2 px wide. It plays the part of the paper's centroid click for
    box prompts.

    Args:
        mask: The mask, H x W.
        jitter: The largest move, a fraction in [0, 1] of the box's size; 0: the tight box.
        seed: The seed, or a generator to draw from.

    Returns:
        (x0, y0, x1, y1).

    Raises:
        SampotError: ``jitter`` is not in [0, 1], or ``mask`` is not a usable mask.
    """
    if not (math.isfinite(jitter) and 0 <= jitter <= 1):
        raise SampotError(f"box jitter must be a fraction in [0, 1], got {jitter!r}.")
    mask = check_mask(mask)
    h, w = mask.shape
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box_from_mask(mask)
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    dx0, dy0, dx1, dy1 = rng.uniform(-jitter, jitter, size=4)
    x0, x1 = x0 + dx0 * bw, x1 + dx1 * bw
    y0, y1 = y0 + dy0 * bh, y1 + dy1 * bh
    x0, x1 = float(np.clip(min(x0, x1 - 2), 0, w - 3)), float(np.clip(max(x1, x0 + 2), 2, w - 1))
    y0, y1 = float(np.clip(min(y0, y1 - 2), 0, h - 3)), float(np.clip(max(y1, y0 + 2), 2, h - 1))
    return x0, y0, x1, y1


def initial_prompt(mask: np.ndarray, kind: str, box_jitter: float = BOX_JITTER, seed: int | np.random.Generator = 0):
    """The simulated user's first prompt for a structure.

    Args:
        mask: The structure's true mask, H x W.
        kind: ``"click"``: the centroid click (paper 3.3); ``"box"``: a jittered box.
        box_jitter: The box's jitter (:func:`jittered_box`).
        seed: The box's seed, or a generator to draw from.

    Returns:
        The :class:`~sampot_lib.method.prompts.Prompt`.

    Raises:
        SampotError: ``kind`` is neither ``"click"`` nor ``"box"``.
    """

    if kind == "click":
        return Prompt.click(*centroid_prompt(mask))
    if kind == "box":
        return Prompt.from_box(jittered_box(mask, box_jitter, seed))
    raise SampotError(f"the pipeline simulates 'click' or 'box' first prompts, not {kind!r}.")


def user_prompt_for(
    seed: int, kind: str, box_jitter: float, image_id: str, truth: np.ndarray, anywhere_inside: bool = False
):  # fmt: skip
    """The simulated user's first prompt on an image.

    :func:`initial_prompt` drawn from a generator seeded by (``seed``, crc32 of the id), so every stage, run and
    calibration gets the same one.

    Args:
        seed: The run's seed.
        kind: ``"click"`` or ``"box"``.
        box_jitter: The box's jitter.
        image_id: The image's id.
        truth: The structure's true mask, H x W bool.
        anywhere_inside: For clicks: an :func:`inside_click` drawn from that generator instead of the centroid (a
            user who clicks elsewhere in the structure); boxes ignore it.

    Returns:
        The :class:`~sampot_lib.method.prompts.Prompt`.
    """

    rng = np.random.default_rng([seed, zlib.crc32(image_id.encode())])
    if anywhere_inside and kind == "click":
        return Prompt.click(*inside_click(truth, rng))
    return initial_prompt(truth, kind, box_jitter, rng)


def model_prompts(
    mask: np.ndarray, kind: str, n_outside: int, seed: int | np.random.Generator,
    box_jitters: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3) * 2,
):  # fmt: skip
    """Prompts whose model masks join the regressor's training set (paper 3.2's six SAM masks per image).

    Args:
        mask: The structure's true mask, H x W.
        kind: ``"click"``: the centroids of three horizontal bands and ``n_outside`` clicks 5 px outside the structure;
            ``"box"``: one box per entry of ``box_jitters``.
        n_outside: Clicks outside the structure (``click`` only).
        seed: The seed, or a generator to draw from.
        box_jitters: The boxes' jitters (``box`` only); the default is twice each of six levels, from near-tight to
            sloppy: 12 masks.

    Returns:
        (prompt, label) pairs; the label names the sample's kind in the training set.

    Raises:
        SampotError: ``kind`` is neither ``"click"`` nor ``"box"``.
    """

    rng = np.random.default_rng(seed)
    if kind == "click":
        inside = [(Prompt.click(*p), "model_band") for p in band_prompts(mask)]
        return inside + [(Prompt.click(*p), "model_outside") for p in outside_prompts(mask, n_outside, seed=rng)]
    if kind == "box":
        return [(Prompt.from_box(jittered_box(mask, j, rng)), f"model_box_j{j:g}") for j in box_jitters]
    raise SampotError(f"the regressor's training set has model masks for 'click' or 'box' prompts, not {kind!r}.")
