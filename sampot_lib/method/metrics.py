"""Overlap scores and correlation: what SAMPOT is judged by."""

from __future__ import annotations

import numpy as np
from scipy import stats

from sampot_lib.errors import SampotError


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise SampotError(f"masks differ in shape: {a.shape} vs {b.shape}.")
    return a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2 |A ∩ B| / (|A| + |B|)`` of two binary masks.

    Args:
        a: A binary mask, H x W.
        b: Another, of the same shape.

    Returns:
        The Dice; 1.0 when both are empty.

    Raises:
        SampotError: The masks differ in shape.
    """
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union ``|A ∩ B| / |A ∪ B|`` of two binary masks.

    Args:
        a: A binary mask, H x W.
        b: Another, of the same shape.

    Returns:
        The IoU; 1.0 when both are empty.

    Raises:
        SampotError: The masks differ in shape.
    """
    a, b = _pair(a, b)
    union = int(np.logical_or(a, b).sum())
    return 1.0 if union == 0 else int(np.logical_and(a, b).sum()) / union


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length 1-D samples (scipy.stats.pearsonr).

    Args:
        x: A sample.
        y: Another, of equal length.

    Returns:
        r; NaN if either sample is constant.

    Raises:
        SampotError: Samples of different lengths, or under 3 pairs.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise SampotError(f"pearson_r needs samples of equal length, got {x.size} and {y.size}.")
    if x.size < 3:
        raise SampotError(f"pearson_r needs at least 3 pairs, got {x.size}.")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x, y).statistic)


def pearson_or_none(x: np.ndarray, y: np.ndarray) -> float | None:
    """:func:`pearson_r`, or None where it is undefined: what a report shows.

    Args:
        x: A sample.
        y: Another, of equal length.

    Returns:
        r; None under 3 pairs, or for a constant sample.

    Raises:
        SampotError: Samples of different lengths (of 3 pairs or more).
    """
    if np.asarray(x).size < 3:
        return None
    r = pearson_r(x, y)
    return None if np.isnan(r) else r


def spearman_or_none(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation of two equal-length samples (average ranks for ties).

    Args:
        x: A sample.
        y: Another, of equal length.

    Returns:
        rho; None under 3 pairs or for a constant sample.

    Raises:
        SampotError: Samples of different lengths.
    """
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise SampotError(f"spearman needs samples of equal length, got {x.size} and {y.size}.")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    r = float(stats.spearmanr(x, y).statistic)
    return None if np.isnan(r) else r
