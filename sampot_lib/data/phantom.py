"""A procedural chest X-ray phantom (PA view) with exact lung masks.

Every structure is an implicit function of warped, normalised image coordinates ``(u, v)`` (``u`` from the image's
left to right, ``v`` from top to bottom), so the masks are exact and the image is made from the same shapes:
body outline with soft-tissue thickness, two lungs of varied shape and size, posterior and anterior ribs crossing
the lungs, clavicles, spine and trachea, heart and mediastinum, diaphragm domes over a dense abdomen, branching
lung vessels, breast shadows, noise and blur. Optional confounders make the lung fields less homogeneous, as the
paper describes: opacities, a PICC line, a nodule, and a film label box.

Conventions follow JSRT/SCR: ``left_lung`` is the patient's left, on the image's right; the lung fields exclude
the region behind the heart and below the diaphragm domes. Display polarity: air dark, bone and heart bright.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.interpolate import CubicSpline
from tqdm import tqdm

from sampot_lib.data.io import write_png
from sampot_lib.data.phantom_shapes import STRUCTURES, band, bone, draw_polyline, geometry, smooth_noise, vessel_tree
from sampot_lib.defaults import MAX_PHANTOM_SIZE, MIN_PHANTOM_SIZE
from sampot_lib.errors import SampotError, whole
from sampot_lib.files import staged_folder, write_text

#: How often each confounder appears, per preset. ``opacity``: consolidation blobs or a basal haze;
#: ``picc``: a radio-opaque catheter from the arm to the superior vena cava; ``nodule``: a round lesion in a lung;
#: ``label``: the black label box some digitised films keep in a corner.
CONFOUNDER_PRESETS: dict[str, dict[str, float]] = {
    "none": {"opacity": 0.0, "picc": 0.0, "nodule": 0.0, "label": 0.0},
    "default": {"opacity": 0.35, "picc": 0.25, "nodule": 0.35, "label": 0.15},
    "all": {"opacity": 1.0, "picc": 1.0, "nodule": 1.0, "label": 1.0},
}


@dataclass
class PhantomInfo:
    """What one phantom contains (for the manifest and for tests)."""

    confounders: list[str] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)


def _rng(seed_or_rng: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)


def _confounder_rates(confounders: str | Mapping[str, float] | None) -> dict[str, float]:
    if confounders is None:
        confounders = "default"
    if isinstance(confounders, str):
        if confounders not in CONFOUNDER_PRESETS:
            raise SampotError(
                f"unknown confounder preset '{confounders}'; use one of {', '.join(CONFOUNDER_PRESETS)} "
                "or a dict such as {'picc': 1.0}."
            )
        return dict(CONFOUNDER_PRESETS[confounders])
    rates = {k: 0.0 for k in CONFOUNDER_PRESETS["none"]}
    for k, v in confounders.items():
        if k not in rates:
            raise SampotError(f"unknown confounder '{k}'; known: {', '.join(rates)}.")
        if not 0.0 <= float(v) <= 1.0:
            raise SampotError(f"confounder rate {k}={v} must lie between 0 and 1.")
        rates[k] = float(v)
    return rates


def make_phantom(
    seed: int | np.random.Generator | None = None,
    size: int = 1024,
    *,
    confounders: str | Mapping[str, float] | None = "default",
    return_info: bool = False,
    render_size: int = 512,
) -> tuple[np.ndarray, dict[str, np.ndarray]] | tuple[np.ndarray, dict[str, np.ndarray], PhantomInfo]:
    """One phantom: ``(image: size x size uint8, {"left_lung": size x size bool, "right_lung": ...})``.

    ``seed``: an int or a numpy Generator (same seed, same phantom). ``confounders``: a preset name from
    :data:`CONFOUNDER_PRESETS` or ``{name: probability}``. With ``return_info`` a :class:`PhantomInfo` is appended.
    """
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise SampotError(f"phantom size {size} is too small; use at least 64 pixels (JSRT: 1024).")
    size = int(size)
    rates = _confounder_rates(confounders)
    rng = _rng(seed)
    info = PhantomInfo()
    P = info.params

    # Anatomy from a child generator: evaluated once at full size for exact masks and once at the (smaller)
    # render size for the image, from the same numbers.
    geo_seed = int(rng.integers(2**63))
    render = min(size, render_size)
    masks = geometry(np.random.default_rng(geo_seed), size, masks_only=render != size)["masks"]
    g = geometry(np.random.default_rng(geo_seed), render) if render != size else None
    if g is None:
        g = geometry(np.random.default_rng(geo_seed), size)
    info.params.update(g["params"])
    U, V, dU, body, body_t, trunk = g["U"], g["V"], g["dU"], g["body"], g["body_t"], g["trunk"]
    lungs_full, dia, abdomen = g["lungs_full"], g["dia"], g["abdomen"]
    heart_t, knob_r2, rmasks = g["heart_t"], g["knob_r2"], g["masks"]
    full_size, size = size, render
    px = 1.0 / size
    scale = size / 1024.0

    air = (lungs_full["left_lung"] | lungs_full["right_lung"]).astype(np.float32)
    # The lung behind the heart still holds air, but less of the beam passes through it.
    air_depth = np.asarray(
        Image.fromarray(
            ndimage.gaussian_filter(air[:: max(1, size // 128), :: max(1, size // 128)], 3.0), mode="F"
        ).resize((size, size), Image.BICUBIC)
    )

    # --- Attenuation map, built up from its parts (arbitrary units; bigger = more attenuating = brighter).
    soft = body * (0.35 + 0.65 * body_t) * (0.92 + 0.08 * smooth_noise(rng, size, 6))
    att = 1.4 * soft
    att += rng.uniform(0.7, 1.0) * abdomen * (0.6 + 0.4 * body_t)
    att += rng.uniform(0.45, 0.7) * heart_t**0.5 * (body & ~abdomen) + 0.5 * np.sqrt(np.clip(1.0 - knob_r2, 0.0, None))
    # Mediastinum and spine: a bright central column with vertebral bodies; the trachea is dark.
    med_w = rng.uniform(0.07, 0.09)
    att += 0.9 * band(dU, med_w) * (V > 0.0)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * V / rng.uniform(0.034, 0.04)) ** 2
    att += 0.2 * band(dU, 0.035) * vert * body
    trachea_w = rng.uniform(0.012, 0.018)
    att -= 0.45 * band(dU + 0.003 * np.sin(9 * V), trachea_w) * np.clip((0.33 - V) / 0.05, 0.0, 1.0)

    # Ribs. Posterior ribs rise slightly from the spine then fall laterally; their cortices make bright lines.
    ribs = np.zeros_like(att)
    rib_lat = trunk - 0.02  # ribs end at the chest wall
    for sgn in (-1.0, 1.0):
        s = sgn * dU
        c1, c2 = rng.uniform(0.18, 0.3), rng.uniform(0.9, 1.3)
        r = V - (-c1 * s + c2 * s**2) * (1.0 + 0.8 * np.clip(V - 0.2, 0.0, None))
        r0 = rng.uniform(0.08, 0.12)
        spacing = rng.uniform(0.062, 0.075)
        centres = r0 + np.cumsum(spacing * (0.85 + 0.3 * np.linspace(0, 1, 12)) * rng.uniform(0.92, 1.08, 12))
        phi = np.interp(r, centres, np.arange(12, dtype=np.float32)).astype(np.float32)
        frac = phi - np.round(phi)
        half = rng.uniform(0.16, 0.22)
        extent = np.clip((s - 0.02) / 0.03, 0.0, 1.0) * np.clip(rib_lat - s, 0.0, 0.03) / 0.03
        inside = (r > centres[0] - spacing) & (r < centres[-1] + spacing)
        ribs += bone(frac, half) * extent * inside
        # Anterior ribs: fainter, sloping down towards the sternum, ending short of the midline.
        ra = V + 0.55 * s - 0.3 * s**2
        pa = (ra - rng.uniform(0.0, 1.0)) / rng.uniform(0.085, 0.1)
        fa = pa - np.round(pa)
        ant_extent = np.clip((s - 0.12) / 0.05, 0.0, 1.0) * np.clip((rib_lat - s) / 0.03, 0.0, 1.0)
        ribs += 0.35 * bone(fa, 0.25) * ant_extent * (V > 0.15) * (V < 0.75)
        # Clavicle: an S-shaped bar from the sternal notch to the shoulder.
        cv = rng.uniform(0.09, 0.14) - 0.18 * s + 0.12 * s**2 + 0.15 * (s - 0.15) ** 3
        clav_len = rng.uniform(0.3, 0.38)
        clav_ext = np.clip((s - 0.02) / 0.02, 0.0, 1.0) * np.clip((clav_len - s) / 0.03, 0.0, 1.0)
        ribs += 1.2 * bone(V - cv, rng.uniform(0.011, 0.015)) * clav_ext
    att += rng.uniform(0.4, 0.6) * ribs * (1.0 - 0.7 * abdomen)

    # Breast or pectoral soft-tissue shadows over the lower lung fields.
    if rng.random() < 0.5:
        for sgn in (-1.0, 1.0):
            s = sgn * dU
            by, bx = rng.uniform(0.72, 0.82), rng.uniform(0.25, 0.33)
            br2 = ((s - bx) / rng.uniform(0.12, 0.17)) ** 2 + ((V - by) / rng.uniform(0.1, 0.14)) ** 2
            att += rng.uniform(0.15, 0.35) * np.clip(1.0 - br2, 0.0, None) ** 0.3 * body

    # Pulmonary vessels fanning out from the hila, and a mild parenchymal mottle.
    thick = np.zeros((size, size), np.float32)
    thin = np.zeros((size, size), np.float32)
    for sgn in (-1.0, 1.0):
        hx = (0.5 + sgn * rng.uniform(0.09, 0.12)) * size
        hy = rng.uniform(0.4, 0.47) * size
        for theta in (-1.1, -0.4, 0.3, 1.0):  # up-and-out to down-and-out, y pointing down
            a = theta if sgn > 0 else np.pi - theta
            vessel_tree(rng, thick, thin, (hx, hy), a + rng.normal(0, 0.12), 4)
    # Gains scale with the render size so that a vessel's contrast does not depend on it.
    vessels = ndimage.gaussian_filter(thick, 2.6 * scale, truncate=2.5) * (3.0 * scale)
    vessels += ndimage.gaussian_filter(thin, 1.2 * scale, truncate=2.5) * (1.5 * scale)
    mottle = 0.05 * smooth_noise(rng, size, 48)
    lung_att = rng.uniform(0.65, 0.9)
    air_eff = air * (1.0 - 0.8 * heart_t**0.3) * (0.45 + 0.55 * np.clip(air_depth, 0.0, 1.0))
    att -= lung_att * air_eff * (1.0 - mottle)
    att += 0.5 * np.minimum(vessels, 1.0) * air

    # Stomach gas under the left hemidiaphragm.
    if rng.random() < 0.5:
        gx, gy = 0.5 + rng.uniform(0.12, 0.22), dia["left_lung"] + rng.uniform(0.03, 0.06)
        g2 = ((U - gx) / rng.uniform(0.04, 0.07)) ** 2 + ((V - gy) / rng.uniform(0.025, 0.04)) ** 2
        att -= rng.uniform(0.2, 0.4) * np.clip(1.0 - g2, 0.0, None) ** 0.5

    # --- Confounders.
    lung_any = rmasks["left_lung"] | rmasks["right_lung"]
    if rng.random() < rates["opacity"]:
        info.confounders.append("opacity")
        field_ = np.zeros_like(att)
        if rng.random() < 0.4:  # basal haze with a meniscus-like gradient (effusion / consolidation)
            side = "left_lung" if rng.random() < 0.5 else "right_lung"
            top = rng.uniform(0.55, 0.7)
            field_ += np.clip((V - top) / 0.12, 0.0, 1.0) * lungs_full[side]
        for _ in range(int(rng.integers(1, 4))):
            ys, xs = np.nonzero(lung_any[::8, ::8])
            k = rng.integers(len(ys))
            cy, cx = (ys[k] * 8 + 4) * px, (xs[k] * 8 + 4) * px
            rad = rng.uniform(0.04, 0.1)
            blob = np.exp(-(((U - cx) ** 2 + (V - cy) ** 2) / (2 * rad**2)))
            field_ += blob * (1.0 + 0.6 * smooth_noise(rng, size, 24))
        att += rng.uniform(0.6, 1.1) * np.clip(field_, 0.0, 1.2) * air
    if rng.random() < rates["nodule"]:
        info.confounders.append("nodule")
        ys, xs = np.nonzero(lung_any[::8, ::8])
        k = rng.integers(len(ys))
        cy, cx = (ys[k] * 8 + 4) * px, (xs[k] * 8 + 4) * px
        rad = rng.uniform(0.008, 0.022)
        nr2 = ((U - cx) ** 2 + (V - cy) ** 2) / rad**2
        att += rng.uniform(0.4, 0.8) * np.clip(1.0 - nr2, 0.0, None) ** 0.5
        P.update({"nodule_u": float(cx), "nodule_v": float(cy), "nodule_r": rad})
    line = np.zeros((size, size), np.float32)
    if rng.random() < rates["picc"]:
        info.confounders.append("picc")
        sgn = -1.0 if rng.random() < 0.5 else 1.0  # which arm
        tip = (0.5 - rng.uniform(0.02, 0.05), rng.uniform(0.33, 0.45))
        knots = np.array(
            [
                (0.5 + sgn * 0.5, rng.uniform(0.2, 0.3)),
                (0.5 + sgn * rng.uniform(0.3, 0.38), rng.uniform(0.15, 0.2)),
                (0.5 + sgn * rng.uniform(0.12, 0.2), rng.uniform(0.15, 0.2)),
                (0.5 - rng.uniform(0.0, 0.03), rng.uniform(0.22, 0.28)),
                tip,
            ]
        )
        tt = np.linspace(0, 1, len(knots))
        fine = np.linspace(0, 1, 80)

        curve = CubicSpline(tt, knots, bc_type="natural")(fine)
        # Draw in pose-free pixel coordinates: a catheter need not follow the anatomy's warp exactly.
        draw_polyline(line, curve * size, 1.0)
        line = ndimage.gaussian_filter(line, 1.3 * scale, truncate=2.5) * 3.0
        att += 1.2 * np.minimum(line, 1.0)

    # --- Imaging: detector blur, exponential attenuation, upsampling to full size, quantum noise, a window.
    att = ndimage.gaussian_filter(att, rng.uniform(0.7, 1.3) * scale, truncate=2.5)
    k = rng.uniform(0.55, 0.8)
    att += rng.uniform(0.0, 0.5)  # scatter and processing: the air outside the body is rarely black
    img = 1.0 - np.exp(-k * np.clip(att + 0.05, 0.0, None))
    if size != full_size:
        img = Image.fromarray(img.astype(np.float32), mode="F")
        img = np.asarray(img.resize((full_size, full_size), Image.BICUBIC))
    size = full_size
    img = img + rng.uniform(0.008, 0.02) * rng.standard_normal((size, size), dtype=np.float32)
    sub = img[:: max(1, size // 256), :: max(1, size // 256)]
    lo, hi = np.percentile(sub, [0.5, 99.7])
    # Processed radiographs are bright overall (JSRT: median grey about 210): a gamma below one.
    img = np.clip((img - lo) / (hi - lo), 0.0, 1.0) ** rng.uniform(0.55, 0.85)
    out = np.round(img * 255.0).astype(np.uint8)
    if rng.random() < rates["label"]:
        info.confounders.append("label")
        bw, bh = int(rng.uniform(0.05, 0.1) * size), int(rng.uniform(0.03, 0.05) * size)
        corner = rng.integers(4)
        rs = slice(0, bh) if corner < 2 else slice(size - bh, size)
        cs = slice(0, bw) if corner % 2 == 0 else slice(size - bw, size)
        out[rs, cs] = 0
    if return_info:
        return out, masks, info
    return out, masks


def write_phantom_set(
    out: str | Path,
    n: int,
    seed: int = 0,
    *,
    size: int = 1024,
    confounders: str | Mapping[str, float] | None = "default",
    progress: bool = False,
    compress_level: int = 1,
    mask_dilation: int = 0,
) -> Path:
    """Write phantoms in the folder format (images/, masks/left_lung/, masks/right_lung/, manifest.csv).

    Phantom ``i`` is drawn from ``np.random.default_rng([seed, i])``, so a set is reproducible and its first ``k``
    images do not depend on ``n``. Each file is written atomically; the manifest comes last.

    Args:
        out: The folder to write (its ``images/`` must be empty or absent).
        n: The number of phantoms, at least 1.
        seed: The set's seed.
        size: The images' side in pixels (64 to 8000).
        confounders: A preset of :data:`CONFOUNDER_PRESETS` by name, or {confounder: rate in [0, 1]}; None: the
            ``"default"`` preset.
        progress: Show a progress bar.
        compress_level: The PNG compression level.
        mask_dilation: Grow every mask by this many pixels, as another collection's label convention would (one set's
            lung fields leave out the lung behind the heart, another's take it in): a set a regressor trained on the
            plain masks was not trained for.

    Returns:
        ``out``.

    Raises:
        SampotError: A value out of range, an unknown confounder or preset, or a folder that already holds images.
    """
    if n < 1:
        raise SampotError(f"phantom count {n} must be at least 1.")
    whole(size, "phantom size", low=MIN_PHANTOM_SIZE, high=MAX_PHANTOM_SIZE)  # a huge one exhausts memory at once
    if not isinstance(mask_dilation, int) or mask_dilation < 0:
        raise SampotError(f"mask_dilation must be a whole number of pixels >= 0, got {mask_dilation!r}.")
    _confounder_rates(confounders)  # fail before writing anything
    out = Path(out)
    if (out / "images").is_dir() and any((out / "images").iterdir()):
        raise SampotError(f"{out}/images is not empty; choose a new --out folder or delete the old set first.")
    ids = [f"phantom_{i:04d}" for i in range(n)]
    rows = []
    iterator = range(n)
    if progress:
        iterator = tqdm(iterator, desc="phantoms", unit="image")
    with staged_folder(out) as stage:
        for i in iterator:
            image, masks, info = make_phantom(
                np.random.default_rng([seed, i]), size, confounders=confounders, return_info=True
            )
            write_png(stage / "images" / f"{ids[i]}.png", image, compress_level=compress_level)
            for name in STRUCTURES:
                mask = masks[name]
                if mask_dilation:
                    mask = ndimage.binary_dilation(mask, iterations=mask_dilation)
                write_png(stage / "masks" / name / f"{ids[i]}.png", mask, compress_level=compress_level)
            rows.append((ids[i], ids[i], seed, i, size, ";".join(info.confounders)))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["id", "subject", "seed", "index", "size", "confounders"])
        w.writerows(rows)
        write_text(stage / "manifest.csv", buf.getvalue())
    return out
