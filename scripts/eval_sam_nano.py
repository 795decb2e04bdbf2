#!/usr/bin/env python
"""Zero-shot quality of SAM-Nano on real chest X-rays (JSRT + SCR masks), the numbers quoted in the model card.

For every image (or an evenly spaced subset, ``--limit``) and every ``mask_output`` choice:
- Dice of the mask from one click at the lung mask's centroid (moved to the nearest mask pixel if outside);
- prompt sensitivity: Dice over a grid of clicks inside the lung (``--grid`` px apart); spread = max - min per image;
- Pearson r between the model's confidence (its IoU head) and the true Dice over the same clicks, pooled over all
  clicks and per image (median);
- encoder and decoder wall time per image (median, at ``--threads``; the decoder time is one click, mask_output
  "best", upsampled to the Dice frame).

    python scripts/eval_sam_nano.py --out runs/sam_nano_eval.json
    python scripts/eval_sam_nano.py --checkpoint /tmp/nano/ckpt.pt --limit 20 --out /tmp/nano/quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import resize
from tqdm.auto import tqdm

from sampot_lib.data.io import read_image, read_mask
from sampot_lib.errors import SampotError
from sampot_lib.method.heatmap import grid_points
from sampot_lib.method.metrics import dice, pearson_r
from sampot_lib.method.synth import centroid_prompt
from sampot_lib.models.nano import WEIGHTS_PATH, build_sam_nano
from sampot_lib.models.sam import MASK_OUTPUTS, SamModel

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jsrt_scr"


def _ids(data: Path, limit: int | None) -> list[str]:
    ids = sorted(p.stem for p in (data / "images").glob("*.png"))
    if not ids:
        raise SampotError(f"no images in {data / 'images'}; pass --data pointing at the jsrt_scr folder.")
    if limit is not None and limit < len(ids):  # evenly spaced: covers nodule (JPCLN) and normal (JPCNN) cases
        ids = [ids[i] for i in np.linspace(0, len(ids) - 1, limit).round().astype(int)]
    return ids


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, float)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p10": float(np.percentile(a, 10)),
            "n": int(a.size)}  # fmt: skip


def evaluate(model: SamModel, data: Path, ids: list[str], grid: int, structure: str, size: int | None) -> dict:
    """Per-image records and per-``mask_output`` summaries (see the module docstring).

    size: side of the square frame the Dice is computed in (masks predicted at size x size, the true mask resized
    to it, > 0.5 after area averaging); None = the image's own size. 512 instead of 1024 changes Dice by well
    under 0.01 and makes the evaluation about four times faster on a CPU.
    """
    per_choice: dict[str, dict[str, list]] = {
        str(c): {"centroid": [], "area_ratio": [], "spread": [], "dice_all": [], "conf_all": [], "r_image": []}
        for c in MASK_OUTPUTS
    }
    oracle: list[float] = []
    enc_ms, dec_ms = [], []
    for image_id in tqdm(ids, desc="eval", mininterval=5):
        image = read_image(data / "images" / f"{image_id}.png")
        full_truth = read_mask(data / "masks" / structure / f"{image_id}.png", expected_shape=image.shape)
        out_size = None if size is None else (size, size)
        truth = full_truth if out_size is None else resize(full_truth.astype(np.float32), out_size, order=1,
                                                           anti_aliasing=True) > 0.5  # fmt: skip
        t = time.perf_counter()
        emb = model.embed(image)
        enc_ms.append(1000 * (time.perf_counter() - t))
        cx, cy = centroid_prompt(full_truth)  # clicks live in the original image's pixels
        clicks = np.concatenate([[[cx, cy]], grid_points(full_truth, grid)]).astype(np.float32)
        points = torch.from_numpy(clicks)[:, None, :]
        labels = torch.ones(len(clicks), 1, dtype=torch.long)
        best_of_three = np.zeros(3)
        for choice in MASK_OUTPUTS:
            model.mask_output = choice
            with torch.no_grad():
                if choice == "best":  # decoder time: one click, the default output, at full image size
                    t = time.perf_counter()
                    model.predict(emb, points[:1], labels[:1], output_size=out_size)
                    dec_ms.append(1000 * (time.perf_counter() - t))
                pred = model.predict(emb, points, labels, output_size=out_size)
            masks = (pred.logits[:, 0] > 0).numpy()
            conf = pred.confidence.numpy()
            scores = np.array([dice(m, truth) for m in masks])
            rec = per_choice[str(choice)]
            rec["centroid"].append(scores[0])
            rec["area_ratio"].append(float(masks[0].sum() / truth.sum()))
            # the spread is over the grid clicks; tiny lungs with < 2 grid points fall back to grid + centroid
            grid_scores = scores[1:] if len(scores) > 2 else scores
            rec["spread"].append(float(grid_scores.max() - grid_scores.min()))
            rec["dice_all"].extend(scores.tolist())
            rec["conf_all"].extend(conf.tolist())
            if len(scores) >= 3:
                rec["r_image"].append(pearson_r(conf, scores))
            if choice in (0, 1, 2):
                best_of_three[int(choice)] = scores[0]
        oracle.append(float(best_of_three.max()))
    summary = {}
    for choice, rec in per_choice.items():
        r_img = np.asarray(rec["r_image"], float)
        summary[choice] = {
            "centroid_dice": _summary(rec["centroid"]),
            "centroid_area_ratio_median": float(np.median(rec["area_ratio"])),
            "spread_median": float(np.median(rec["spread"])),
            "spread_share_gt_0.2": float(np.mean(np.asarray(rec["spread"]) > 0.2)),
            "pearson_r_pooled": pearson_r(rec["conf_all"], rec["dice_all"]),
            "pearson_r_per_image_median": float(np.nanmedian(r_img)) if np.isfinite(r_img).any() else None,
            "n_clicks": len(rec["dice_all"]),
        }
    return {
        "summary": summary,
        "oracle_best_of_three_centroid_dice": _summary(oracle),
        "encoder_ms_median": float(np.median(enc_ms[1:] if len(enc_ms) > 1 else enc_ms)),
        "decoder_ms_median": float(np.median(dec_ms[1:] if len(dec_ms) > 1 else dec_ms)),
        "per_image": {
            image_id: {
                c: {"centroid_dice": per_choice[c]["centroid"][i], "spread": per_choice[c]["spread"][i]}
                for c in per_choice
            }  # fmt: skip
            for i, image_id in enumerate(ids)
        },
    }


def _table(result: dict) -> str:
    head = f"{'mask_output':>11} | {'mean':>5} {'median':>6} {'p10':>5} | {'area':>5} | {'spread':>6} {'>0.2':>5} | "
    head += f"{'r pool':>6} {'r img':>6}"
    lines = ["centroid-click Dice | median pred/true area | spread over grid clicks | r(IoU head, Dice)", head]
    for choice, s in result["summary"].items():
        c = s["centroid_dice"]
        r_img = s["pearson_r_per_image_median"]
        lines.append(
            f"{choice:>11} | {c['mean']:.3f} {c['median']:6.3f} {c['p10']:.3f} | {s['centroid_area_ratio_median']:5.2f}"
            f" | {s['spread_median']:6.3f} {s['spread_share_gt_0.2']:5.2f} | {s['pearson_r_pooled']:6.3f} "
            f"{r_img if r_img is None else round(r_img, 3)!s:>6}"
        )
    o = result["oracle_best_of_three_centroid_dice"]
    lines.append(f"oracle best of 0/1/2 at the centroid: mean {o['mean']:.3f} median {o['median']:.3f}")
    lines.append(
        f"encoder {result['encoder_ms_median']:.1f} ms, decoder {result['decoder_ms_median']:.1f} ms per image "
        f"(median, {result['threads']} thread(s)); {result['n_images']} images"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=WEIGHTS_PATH)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--structure", default="left_lung")
    ap.add_argument("--grid", type=int, default=64, help="spacing of the click grid inside the mask, in pixels")
    ap.add_argument("--size", type=int, default=512, help="Dice frame side in px (0: the image's own size)")
    ap.add_argument("--limit", type=int, help="evaluate an evenly spaced subset of this many images")
    ap.add_argument(
        "--split", type=Path,
        help="a split file (`sampot data split`): evaluate only the ids of --parts of it, so that "
        "a choice made here (the default mask output) is never made on images the book or `sampot run` evaluates",
    )  # fmt: skip
    ap.add_argument("--parts", nargs="+", default=["train", "val"], help="the split's parts to use (with --split)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if not (args.data / "images").is_dir():
        raise SampotError(f"{args.data} has no images/ folder; pass --data pointing at jsrt_scr.")
    torch.set_num_threads(args.threads)
    model = SamModel(build_sam_nano(args.checkpoint), name="sam_nano")
    ids = _ids(args.data, args.limit)
    if args.split is not None:
        parts = json.loads(args.split.read_text())["splits"]
        keep = {i for part in args.parts for i in parts[part]}
        ids = [i for i in ids if i in keep]
    result = evaluate(model, args.data, ids, args.grid, args.structure, args.size or None)
    result.update(checkpoint=str(args.checkpoint), data=str(args.data), structure=args.structure, grid=args.grid,
                  dice_size=args.size or "original",
                  threads=args.threads, n_images=len(ids), ids=ids,
                  split=str(args.split) if args.split else None, parts=args.parts if args.split else None)  # fmt: skip
    print(_table(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
