"""Draw phantoms beside real JSRT images (if ../shared/data/jsrt_scr is there) for the data page.

    python book/scripts/phantom_vs_real.py [--out book/_generated/phantoms_vs_jsrt.png] [--phantoms-only PATH]

The real images are read at build time and never committed (JSRT terms). Without them the figure shows phantoms
only and says so. ``--phantoms-only PATH`` writes the committed phantoms-only picture (book/images/phantoms.png).
Each tile shows the image, and the lung outlines (patient's left in red, right in blue) in the row below.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.phantom import make_phantom

BOOK = Path(__file__).resolve().parents[1]
JSRT = BOOK.parents[1] / "shared" / "data" / "jsrt_scr"
TILE = 256


def _tile(image: np.ndarray, masks: dict[str, np.ndarray], outline: bool) -> np.ndarray:
    """``TILE x TILE x 3`` uint8: the image, optionally with the lung outlines drawn on it."""
    img = np.asarray(Image.fromarray(image).resize((TILE, TILE), Image.BOX))
    rgb = np.repeat(img[..., None], 3, axis=2).copy()
    if outline:
        for name, colour in (("left_lung", (255, 40, 40)), ("right_lung", (60, 120, 255))):
            m = np.asarray(Image.fromarray(masks[name].astype(np.uint8) * 255).resize((TILE, TILE))) >= 128
            edge = m & ~ndimage.binary_erosion(m, iterations=2)
            rgb[edge] = colour
    return rgb


def _row(samples: list[tuple[np.ndarray, dict[str, np.ndarray]]], label: str) -> Image.Image:
    tiles = [_tile(i, m, False) for i, m in samples]
    outlines = [_tile(i, m, True) for i, m in samples]
    grid = np.vstack([np.hstack(tiles), np.hstack(outlines)])
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + 22), "white")
    canvas.paste(Image.fromarray(grid), (0, 22))
    ImageDraw.Draw(canvas).text((6, 5), label, fill="black")
    return canvas


def phantom_row(n: int = 4, seed: int = 0) -> Image.Image:
    samples = []
    for i in range(n):
        img, masks, info = make_phantom(np.random.default_rng([seed, i]), 1024, return_info=True)
        samples.append((img, masks))
    return _row(samples, f"Procedural phantoms (seed {seed}, 1024 px; confounders on some)")


def real_row(n: int = 4) -> Image.Image | None:
    if not JSRT.is_dir():
        return None
    ds = FolderDataset(JSRT, validate=False)
    pick = [ds.ids[k] for k in np.linspace(0, len(ds.ids) - 1, n).astype(int)]
    samples = [(ds.image(i), {s: ds.mask(i, s) for s in ("left_lung", "right_lung")}) for i in pick]
    return _row(samples, "Real JSRT images with SCR lung outlines (read at build time, not published)")


def _stack(rows: list[Image.Image]) -> Image.Image:
    w = max(r.width for r in rows)
    out = Image.new("RGB", (w, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(BOOK / "_generated" / "phantoms_vs_jsrt.png"))
    ap.add_argument("--phantoms-only", default=None, help="also write a phantoms-only picture here")
    args = ap.parse_args()
    ph = phantom_row()
    rows = [ph]
    real = real_row()
    if real is not None:
        rows.append(real)
    else:
        note = Image.new("RGB", (ph.width, 30), "white")
        ImageDraw.Draw(note).text((6, 8), f"(no real images: {JSRT} is absent)", fill="black")
        rows.append(note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _stack(rows).save(out)
    print(f"wrote {out}")
    if args.phantoms_only:
        ph.save(args.phantoms_only, optimize=True)
        print(f"wrote {args.phantoms_only}")


if __name__ == "__main__":
    main()
