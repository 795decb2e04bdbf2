"""Non-medical training data for SAM-Nano: procedural scenes and natural images with class-agnostic region masks.

Nothing here reads a chest X-ray, a lung mask or a phantom from :mod:`sampot_lib.data`: SAM-Nano must meet chest
X-rays zero-shot, as SAM does. Every sample is a ``Scene``: an ``S x S x 3`` uint8 image and ``L x S x S`` int32
label maps of nested region hierarchies (level 0 = sub-parts, 1 = parts/objects, 2 = groups/wholes), so one click can
stand for several valid masks, the ambiguity SAM's three outputs are trained on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage import color, segmentation, transform

# scikit-image sample images that ship inside the wheel (no download). Medical and microscopy images (cell,
# immunohistochemistry, microaneurysms, retina, shepp_logan_phantom, brain, ...) are left out on purpose.
SKIMAGE_IMAGES: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cat", "chelsea", "checkerboard", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "horse", "hubble_deep_field", "logo", "moon", "page", "rocket", "text",
)  # fmt: skip
# matplotlib's sample photograph (its other samples are plots, data or an MRI volume, which we skip).
MATPLOTLIB_IMAGES: tuple[str, ...] = ("grace_hopper.jpg",)

# Felzenszwalb scales from fine to coarse: one label map per hierarchy level.
_FELZ_LEVELS: tuple[tuple[float, int], ...] = ((60.0, 40), (300.0, 150), (1200.0, 600))


@dataclass
class Scene:
    """image: S x S x 3 uint8; levels: L x S x S int32 region labels (>= 0; one map per hierarchy level)."""

    image: np.ndarray
    levels: np.ndarray


def _to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float64) / max(float(arr.max()), 1e-9), 0, 1) * 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


def load_natural_images() -> dict[str, np.ndarray]:
    """The offline natural images, name -> H x W x 3 uint8. Images that would need a download are skipped."""
    from skimage import data

    out: dict[str, np.ndarray] = {}
    for name in SKIMAGE_IMAGES:
        try:
            out[name] = _to_rgb_uint8(getattr(data, name)())
        except Exception:  # noqa: BLE001 - an image that is missing offline is simply not used
            continue
    try:
        import matplotlib

        sample_dir = Path(matplotlib.get_data_path()) / "sample_data"
        from PIL import Image

        for name in MATPLOTLIB_IMAGES:
            if (sample_dir / name).is_file():
                out[name] = _to_rgb_uint8(np.asarray(Image.open(sample_dir / name).convert("RGB")))
    except ImportError:
        pass
    return out


def _felzenszwalb_levels(image: np.ndarray) -> np.ndarray:
    """L x H x W labels from fine-to-coarse Felzenszwalb segmentations, made nested (each fine region is cut along the
    coarser borders), so level 0 subdivides level 1 subdivides level 2."""
    maps = [
        segmentation.felzenszwalb(image, scale=scale, sigma=0.8, min_size=min_size).astype(np.int32)
        for scale, min_size in _FELZ_LEVELS
    ]
    nested = [maps[-1]]
    for fine in reversed(maps[:-1]):
        coarse = nested[0]
        n_f = int(fine.max()) + 1
        # split every fine region along the coarse borders, so each fine label lies inside exactly one coarse one
        relabel = coarse.astype(np.int64) * n_f + fine
        _, relabel = np.unique(relabel, return_inverse=True)
        nested.insert(0, relabel.reshape(fine.shape).astype(np.int32))
    return np.stack(nested)


def natural_pool(cache: Path | None = None, short_sides: tuple[int, ...] = (256, 384)) -> list[Scene]:
    """Natural images resized so their short side is each of ``short_sides``, with nested region labels.

    Felzenszwalb takes about a minute for the whole pool on one core, so the result is cached as ``.npz``.
    """
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            n = int(z["n"])
            return [Scene(z[f"image{i}"], z[f"levels{i}"]) for i in range(n)]
    pool: list[Scene] = []
    for img in load_natural_images().values():
        h, w = img.shape[:2]
        for side in short_sides:
            scale = side / min(h, w)
            size = (max(side, round(h * scale)), max(side, round(w * scale)))
            small = (transform.resize(img, size, order=1, anti_aliasing=True) * 255).astype(np.uint8)
            pool.append(Scene(small, _felzenszwalb_levels(small)))
    if cache is not None:
        arrays = {"n": np.array(len(pool))}
        for i, s in enumerate(pool):
            arrays[f"image{i}"], arrays[f"levels{i}"] = s.image, s.levels
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, cache)
    return pool


def natural_scene(rng: np.random.Generator, pool: list[Scene], size: int = 256) -> Scene:
    """A random size x size crop of a random pool image, randomly flipped and rotated by a multiple of 90 degrees."""
    src = pool[int(rng.integers(len(pool)))]
    h, w = src.image.shape[:2]
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    image = src.image[y : y + size, x : x + size]
    levels = src.levels[:, y : y + size, x : x + size]
    k = int(rng.integers(4))
    image, levels = np.rot90(image, k, axes=(0, 1)), np.rot90(levels, k, axes=(1, 2))
    if rng.random() < 0.5:
        image, levels = image[:, ::-1], levels[:, :, ::-1]
    return Scene(np.ascontiguousarray(image), np.ascontiguousarray(levels))


# ----------------------------------------------------------------------------------------------------------------
# procedural scenes


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """size x size noise with features about ``scale`` pixels wide, roughly unit variance."""
    n = int(np.clip(round(size / max(scale, 1.0)), 2, size))
    small = torch.from_numpy(rng.standard_normal((1, 1, n, n)))
    # torch's bicubic upsampling is about 20x faster than scipy.ndimage.zoom here, and data making is on the clock
    big = F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
    return ((big - big.mean()) / (big.std() + 1e-6)).astype(np.float32)


def _texture(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A random zero-mean texture: smooth noise, stripes, grain, or a sum of two."""

    def one() -> np.ndarray:
        kind = rng.choice(["noise", "stripes", "grain", "flat"], p=[0.45, 0.25, 0.15, 0.15])
        if kind == "noise":
            return _smooth_noise(rng, size, float(np.exp(rng.uniform(np.log(2), np.log(48)))))
        if kind == "stripes":
            theta, period = rng.uniform(0, np.pi), rng.uniform(4, 40)
            phase = (xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period
            warp = _smooth_noise(rng, size, 40) * rng.uniform(0, 3)
            return np.sin(phase + warp)
        if kind == "grain":
            return rng.standard_normal((size, size))
        return np.zeros((size, size))

    tex = one()
    if rng.random() < 0.3:
        tex = tex + one()
    return tex


def _shape(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray, radius: float) -> np.ndarray:
    """A random filled shape of about ``radius`` pixels: a wobbly ellipse, a polygon, a noise blob, or a half-plane
    split by a wavy curve (a very large region)."""
    cy, cx = rng.uniform(-0.1, 1.1, 2) * size
    kind = rng.choice(["blob", "polygon", "noise", "split"], p=[0.45, 0.2, 0.2, 0.15])
    if kind == "split":
        theta = rng.uniform(0, 2 * np.pi)
        d = (xx - size / 2) * np.cos(theta) + (yy - size / 2) * np.sin(theta)
        along = -(xx - size / 2) * np.sin(theta) + (yy - size / 2) * np.cos(theta)
        wave = rng.uniform(0, 25) * np.sin(along * 2 * np.pi / rng.uniform(60, 400) + rng.uniform(0, 6.3))
        return d + wave > rng.uniform(-0.35, 0.35) * size
    if kind == "polygon":
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.5, 1.2, n)
        from skimage.draw import polygon

        mask = np.zeros((size, size), bool)
        rr, cc = polygon(cy + radii * np.sin(angles), cx + radii * np.cos(angles), (size, size))
        mask[rr, cc] = True
        return mask
    aspect = np.exp(rng.uniform(-0.9, 0.9))
    theta = rng.uniform(0, np.pi)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / (radius * aspect)
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) * aspect / radius
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    if kind == "blob":  # radius modulated by a few harmonics: kidney, bean, lung-field and leaf-like outlines
        edge = np.ones_like(rho)
        for k in range(2, 6):
            edge += rng.uniform(0, 0.35 / k * 2) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
        return rho < edge
    return rho + 0.35 * _smooth_noise(rng, size, radius * 0.6) < 1.0


def _line_families(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Families of roughly parallel thin curved bands that cross region borders without being regions (branches,
    wires, cracks, fence rails): a mask must learn to go through them."""
    out = np.zeros((size, size))
    for _ in range(int(rng.integers(1, 3))):
        theta = rng.uniform(0, np.pi)
        along = (xx - size / 2) * np.cos(theta) + (yy - size / 2) * np.sin(theta)
        across = -(xx - size / 2) * np.sin(theta) + (yy - size / 2) * np.cos(theta)
        bend = rng.uniform(-1, 1) * 2.5 / size
        spacing, width = rng.uniform(12, 45), rng.uniform(1.5, 7)
        amp = rng.uniform(0.08, 0.35) * rng.choice([-1, 1])
        offset = rng.uniform(0, spacing)
        n = int(rng.integers(2, 9))
        curve = across - bend * along**2
        for i in range(n):
            d = curve - (offset + (i - n / 2) * spacing)
            out += amp * np.exp(-((d / width) ** 2))
    return out


def procedural_scene(rng: np.random.Generator, size: int = 256) -> Scene:
    """A synthetic scene: 2 to 7 textured, shaded, occluding shapes of many sizes (some with sub-parts, some merged
    into groups) on a textured background, crossed by line families. Returns the image and nested labels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    colourful = rng.random() < 0.3
    n_objects = int(rng.integers(2, 8))
    sub = np.zeros((size, size), np.int32)  # level 0
    obj = np.zeros((size, size), np.int32)  # level 1
    group_of = [0]  # level 2 id of each object; the background (object 0) is its own group
    base = rng.uniform(0, 1, 3) if colourful else np.full(3, rng.uniform(0, 1))
    img = base[None, None, :] + rng.uniform(0.02, 0.25) * _texture(rng, size, yy, xx)[..., None]
    n_sub = 1
    for k in range(1, n_objects + 1):
        radius = float(np.exp(rng.uniform(np.log(10), np.log(150))))
        mask = _shape(rng, size, yy, xx, radius)
        if mask.sum() < 30:
            group_of.append(k)  # keeps group_of[k] aligned with object k
            continue
        # contrast to what lies under it: sometimes faint, usually clear; brighter or darker
        under = img[mask].mean(axis=0)
        delta = rng.choice([-1, 1]) * rng.uniform(0.08, 0.6)
        value = np.clip(under + delta, 0, 1)
        if colourful:
            value = np.clip(value + rng.uniform(-0.3, 0.3, 3), 0, 1)
        shade = rng.uniform(0, 0.25) * ((xx - xx[mask].mean()) * rng.normal() + (yy - yy[mask].mean()) * rng.normal())
        shade = shade / (radius + 1)
        fill = value[None, None, :] + (shade + rng.uniform(0.02, 0.3) * _texture(rng, size, yy, xx))[..., None]
        img[mask] = fill[mask]
        obj[mask] = k
        sub[mask] = n_sub
        n_sub += 1
        # sub-parts: smaller shapes clipped to the object, in a different shade
        if rng.random() < 0.5:
            for _ in range(int(rng.integers(1, 4))):
                part = _shape(rng, size, yy, xx, radius * rng.uniform(0.25, 0.6)) & mask
                if part.sum() < 20:
                    continue
                img[part] += rng.choice([-1, 1]) * rng.uniform(0.06, 0.35)
                sub[part] = n_sub
                n_sub += 1
        # groups: an object overlapping the previous one joins its group half of the time
        prev = k - 1
        touches = prev > 0 and bool(np.any(ndimage.binary_dilation(mask, iterations=2) & (obj == prev)))
        group_of.append(group_of[prev] if touches and rng.random() < 0.5 else k)
    if rng.random() < 0.75:
        img += _line_families(rng, size, yy, xx)[..., None]
    groups = np.asarray(group_of, np.int32)[obj]
    # level 0 must be nested in level 1: a sub-part cut by a later object keeps only its own object's pixels
    sub = np.unique(sub.astype(np.int64) * (n_objects + 1) + obj, return_inverse=True)[1].reshape(size, size)
    levels = np.stack([sub.astype(np.int32), obj, groups])
    return Scene(_finish(rng, img, colourful), levels)


def _finish(rng: np.random.Generator, img: np.ndarray, colourful: bool) -> np.ndarray:
    """Global photometric variation: blur, noise, illumination, gamma, contrast, inversion -> uint8."""
    if rng.random() < 0.7:
        img = ndimage.gaussian_filter(img, sigma=(*([rng.uniform(0.3, 2.5)] * 2), 0))
    size = img.shape[0]
    if rng.random() < 0.5:
        img = img + rng.uniform(0, 0.3) * _smooth_noise(rng, size, 128)[..., None]
    img = img + rng.uniform(0, 0.06) * rng.standard_normal(img.shape[:2])[..., None]
    lo, hi = np.percentile(img, [rng.uniform(0, 2), rng.uniform(98, 100)])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    img = img ** np.exp(rng.uniform(-0.7, 0.7))
    if rng.random() < 0.25:
        img = 1 - img
    if not colourful:
        img = img.mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    return (img * 255 + 0.5).astype(np.uint8)


def augment_natural(rng: np.random.Generator, scene: Scene) -> Scene:
    """Natural crops made more X-ray-like half the time: grayscale, gamma, blur, noise, inversion, line families."""
    img = scene.image.astype(np.float64) / 255
    gray = rng.random() < 0.7
    if gray:
        img = color.rgb2gray(img)[..., None].repeat(3, axis=-1)
    if rng.random() < 0.3:
        yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
        img = img + _line_families(rng, img.shape[0], yy, xx)[..., None]
    return Scene(_finish(rng, img, colourful=not gray), scene.levels)
