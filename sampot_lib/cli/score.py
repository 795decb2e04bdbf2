"""``sampot score`` (the predicted Dice of any mask, or of a data set's masks, with its interval) and ``sampot
regressors`` (the shipped regressors and their numbers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.io import read_image, read_mask
from sampot_lib.experiment.records import write_csv
from sampot_lib.method.regressor import score_mask
from sampot_lib.method.regressor_origin import check_regressor
from sampot_lib.method.shipped import ShippedRegressor, default_prompt_kind, resolve_regressor, shipped_regressors


def _row(predicted: float, shipped: ShippedRegressor | None) -> dict[str, Any]:
    row: dict[str, Any] = {"dice_predicted": round(predicted, 5)}
    if shipped is not None:
        low, high = shipped.interval(predicted, of="binary")
        row |= {"interval_low": round(low, 5), "interval_high": round(high, 5), "interval_level": shipped.level}
    return row


def cmd_score(args: argparse.Namespace) -> int:
    kind = args.prompt or default_prompt_kind(args.model)
    source = Path(args.source)
    if source.is_dir():  # every mask is checked (size, binary, not empty) before any is scored
        dataset = FolderDataset(source, structures=[args.structure])
        items = [(i, dataset.image_path(i), dataset.mask_path(i, args.structure)) for i in dataset.ids]
    else:
        read_mask(args.mask_file, expected_shape=read_image(source).shape[:2])
        items = [(source.stem, source, Path(args.mask_file))]
    regressor, meta, shipped = resolve_regressor(args.regressor, args.model, kind, args.structure, device=args.device)
    for note in check_regressor(meta, {"model": args.model, "structure": args.structure, "prompt": kind},
                                allow_foreign=args.allow_foreign_regressor):  # fmt: skip
        print(f"sampot: warning: {note}", file=sys.stderr)
    name = shipped.name if shipped is not None else str(args.regressor)
    rows = []
    for image_id, image_path, mask_path in items:
        image = read_image(image_path)
        mask = read_mask(mask_path, expected_shape=image.shape[:2])
        rows.append({"image_id": image_id, "mask": str(mask_path)} | _row(score_mask(regressor, image, mask), shipped))
    if args.out is not None:
        write_csv(args.out, rows)
    if len(rows) == 1 and not source.is_dir():
        r = rows[0]
        band = (f" ({r['interval_low']:.3f} to {r['interval_high']:.3f}, {r['interval_level']:.0%} interval on "
                "JSRT's test split; calibrate it for other data)" if shipped is not None else "")  # fmt: skip
        print(f"{r['mask']}: predicted Dice {r['dice_predicted']:.3f}{band} by regressor {name}")
    else:
        mean = sum(r["dice_predicted"] for r in rows) / len(rows)
        low = min(rows, key=lambda r: r["dice_predicted"])
        print(f"{len(rows)} masks of {args.structure}: mean predicted Dice {mean:.3f}, lowest {low['image_id']} "
              f"{low['dice_predicted']:.3f} (regressor {name})")  # fmt: skip
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def cmd_regressors(args: argparse.Namespace) -> int:
    records = shipped_regressors()
    if not records:
        print("no regressor ships with this sampot; train one with `sampot train-regressor` or `sampot run`.")
        return 0
    for record in records.values():
        print(record.summary())
        print(f"    model card: {record.card_path}")
    return 0
