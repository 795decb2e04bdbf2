"""The phantom's anatomy: its randomised geometry (lungs, ribs, heart, diaphragm...) as implicit functions of warped
image coordinates, and the drawing primitives the image is made of (smooth noise, bands, bones, polylines, vessels)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import line_aa

STRUCTURES = ("left_lung", "right_lung")


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """``size x size`` float32 smooth random field (about unit std) from a ``cells x cells`` grid, bicubic."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))


def band(dist: np.ndarray, half: float) -> np.ndarray:
    """Cross-section of a tube of half-width ``half`` at signed distance ``dist`` (0 outside, 1 at the axis)."""
    d = np.clip(1.0 - (dist / half) ** 2, 0.0, None)
    return np.sqrt(d, dtype=np.float32)


def bone(dist: np.ndarray, half: float) -> np.ndarray:
    """Tubular bone: a shell with a lighter marrow, so the cortices show as two bright lines."""
    return band(dist, half) - 0.55 * band(dist, 0.72 * half)


def draw_polyline(canvas: np.ndarray, pts: np.ndarray, value: float) -> None:
    """Anti-aliased polyline (``K x 2`` pixel coords ``(x, y)``) into ``canvas`` with max-compositing."""
    h, w = canvas.shape
    rows, cols, vals = [], [], []
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        rr, cc, vv = line_aa(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
        rows.append(rr)
        cols.append(cc)
        vals.append(vv)
    if not rows:
        return
    rr, cc, vv = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals).astype(np.float32) * value
    keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    np.maximum.at(canvas, (rr[keep], cc[keep]), vv[keep])


def vessel_tree(
    rng: np.random.Generator, thick: np.ndarray, thin: np.ndarray, start: tuple[float, float], angle: float, n: int
) -> None:
    """Branching pulmonary vessels from a hilum: trunks into ``thick``, twigs into ``thin`` (pixel units)."""
    size = thick.shape[0]
    stack = [(start[0], start[1], angle, 0.11 * size, 1.0, 0)]
    while stack:
        x, y, a, length, weight, depth = stack.pop()
        n_seg = 4
        pts = [(x, y)]
        for _ in range(n_seg):
            a += rng.normal(0.0, 0.12)
            x += np.cos(a) * length / n_seg
            y += np.sin(a) * length / n_seg
            pts.append((x, y))
        draw_polyline(thick if depth < 2 else thin, np.array(pts), weight)
        if depth < n:
            spread = rng.uniform(0.25, 0.55)
            for sign in (-1.0, 1.0):
                stack.append((x, y, a + sign * spread, length * rng.uniform(0.6, 0.8), weight * 0.78, depth + 1))


def geometry(rng: np.random.Generator, n: int, *, masks_only: bool = False) -> dict:
    """Anatomy on an ``n x n`` grid: warped coordinates, body, lungs, diaphragm, heart and the lung masks.

    Draws the same numbers from ``rng`` whatever ``n`` is, so two calls with equal generators give the same
    anatomy at two resolutions (exact masks at full size, the image rendered at a smaller size).
    ``masks_only`` skips what only the image needs (about a third of the work at full size).
    """
    params: dict[str, float] = {}
    px = 1.0 / n
    # --- Coordinates: pixel centres, a small random pose (rotation, scale, shift) and a smooth elastic warp.
    v0, u0 = np.mgrid[0:n, 0:n].astype(np.float32)
    u0 = (u0 + 0.5) * px - 0.5
    v0 = (v0 + 0.5) * px - 0.5
    rot = np.deg2rad(rng.normal(0.0, 1.5))
    zoom = rng.uniform(0.94, 1.06)
    shift_u, shift_v = rng.normal(0.0, 0.012), rng.normal(0.0, 0.015)
    U = (np.cos(rot) * u0 - np.sin(rot) * v0) / zoom + 0.5 + shift_u
    V = (np.sin(rot) * u0 + np.cos(rot) * v0) / zoom + 0.5 + shift_v
    U += 0.008 * smooth_noise(rng, n, 5)
    V += 0.008 * smooth_noise(rng, n, 5)
    dU = U - 0.5

    # --- Body outline: neck, shoulders, trunk; soft-tissue thickness of an elliptic cross-section.
    neck = rng.uniform(0.08, 0.11)
    shoulder_v = rng.uniform(-0.02, 0.05)
    trunk = rng.uniform(0.43, 0.52)
    knots_v = [-1.0, shoulder_v - 0.06, shoulder_v, shoulder_v + 0.1, 0.5, 1.0, 2.0]
    knots_w = [neck, neck, 0.6 * trunk, trunk + 0.02, trunk, trunk - rng.uniform(0.0, 0.05), trunk - 0.05]
    if masks_only:
        body_t = body = None
    else:
        half_w = np.interp(V, knots_v, knots_w).astype(np.float32)
        body_t = np.sqrt(np.clip(1.0 - (dU / half_w) ** 2, 0.0, None), dtype=np.float32)
        body = body_t > 0

    # --- Lungs: per side, s = distance from the midline towards that side's chest wall.
    lungs_full = {}  # lung fields including the part behind the heart (for the air term of the image)
    dia = {}
    # A lung stays on its own side (its medial border is >= 0.05 from the midline; pose and warp move it by less
    # than 0.08): evaluating it on 5/8 of the columns saves time without changing a pixel.
    margin = n // 8
    side_cols = {"right_lung": slice(0, n // 2 + margin), "left_lung": slice(n // 2 - margin, n)}
    for name, sgn in (("right_lung", -1.0), ("left_lung", 1.0)):
        cols = side_cols[name]
        Vs = V[:, cols]
        s = sgn * dU[:, cols]
        apex = rng.uniform(0.07, 0.13)
        # The patient's right hemidiaphragm sits higher (the liver is under it).
        base = rng.uniform(0.76, 0.88) - (0.02 if name == "right_lung" else 0.0)
        lat = rng.uniform(0.34, 0.42) * (trunk / 0.47) ** 0.5
        med = rng.uniform(0.05, 0.08)
        s_apex = rng.uniform(0.15, 0.2)
        t = (Vs - apex) / (base - apex)
        t_round = rng.uniform(0.45, 0.65)
        g_lat = np.sqrt(np.clip(1.0 - (1.0 - np.clip(t / t_round, 0.0, 1.0)) ** 2, 0.0, 1.0))
        g_med = np.sqrt(np.clip(1.0 - (1.0 - np.clip(t / (0.5 * t_round), 0.0, 1.0)) ** 2, 0.0, 1.0))
        s_lat = s_apex + (lat - s_apex) * g_lat * (0.94 + 0.08 * np.clip(t, 0.0, 1.0))
        s_med = s_apex - (s_apex - med) * g_med
        dome_h = rng.uniform(0.05, 0.11)
        s_dc = rng.uniform(0.45, 0.6) * lat
        bump = np.clip(1.0 - ((s - s_dc) / (lat - s_dc + 0.02)) ** 2, 0.0, None)
        v_dia = base - dome_h * bump
        dia[name] = np.full((n, n), base, np.float32)
        dia[name][:, cols] = v_dia
        lungs_full[name] = np.zeros((n, n), bool)
        lungs_full[name][:, cols] = (t >= 0) & (s > s_med) & (s < s_lat) & (Vs < v_dia)
        params.update({f"{name}_apex": apex, f"{name}_base": base, f"{name}_width": lat - med, f"{name}_dome": dome_h})

    # Diaphragm for the whole width: each side's dome, the lower one in the middle.
    abdomen = None if masks_only else body & (V > np.where(dU < 0, dia["right_lung"], dia["left_lung"]))

    # --- Heart (shifted to the patient's left) and aortic knob; the lung fields stop at their borders.
    hc_u = 0.5 + rng.uniform(0.02, 0.06)
    # The heart rests on the left dome (its centre a little above the dome's top), so the left lung field ends
    # at the heart border and does not wrap under it (as in SCR).
    hc_v = params["left_lung_base"] - params["left_lung_dome"] - rng.uniform(0.0, 0.04)
    ha, hb = rng.uniform(0.17, 0.22), rng.uniform(0.11, 0.145)
    th = np.deg2rad(rng.uniform(-35.0, -15.0))
    du, dv = U - hc_u, V - hc_v
    hr2 = ((np.cos(th) * du + np.sin(th) * dv) / ha) ** 2 + ((-np.sin(th) * du + np.cos(th) * dv) / hb) ** 2
    heart = hr2 < 1.0
    heart_t = None if masks_only else np.sqrt(np.clip(1.0 - hr2, 0.0, None), dtype=np.float32)
    # The aortic knob: a horizontal oval from the midline, so it always notches the lung's medial border.
    knob_v = rng.uniform(0.27, 0.33)
    knob_ru, knob_rv = rng.uniform(0.085, 0.11), rng.uniform(0.03, 0.045)
    knob_r2 = ((U - 0.5 - 0.02) / knob_ru) ** 2 + ((V - knob_v) / knob_rv) ** 2
    knob = knob_r2 < 1.0
    params.update({"heart_width": 2 * ha, "heart_v": hc_v})

    masks = {}
    for name in STRUCTURES:
        m = lungs_full[name] & ~heart & ~knob
        lab, n_parts = ndimage.label(m)
        if n_parts > 1:  # keep the main field; the geometry can leave a sliver under the heart
            m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        masks[name] = m
    return {
        "U": U,
        "V": V,
        "dU": dU,
        "body": body,
        "body_t": body_t,
        "trunk": trunk,
        "lungs_full": lungs_full,
        "dia": dia,
        "abdomen": abdomen,
        "heart": heart,
        "heart_t": heart_t,
        "knob_r2": knob_r2,
        "masks": masks,
        "params": params,
    }
