"""``sampot score`` (the predicted Dice of any mask, or of a data set's masks, with its interval) and ``sampot
regressors`` (the shipped regressors and their numbers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sampot_lib.cli.options import mask_elsewhere, shipped_settings
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.io import looks_inverted, read_image, read_mask, read_user_image
from sampot_lib.experiment.records import listed, write_csv
from sampot_lib.files import sha256_file
from sampot_lib.method.regressor import score_mask
from sampot_lib.method.regressor_origin import (
    CALIBRATION_IMAGES,
    calibration_seen,
    check_regressor,
    same_ids_note,
    split_calibration_seen,
    trained_on,
)
from sampot_lib.method.shipped import ShippedRegressor, default_prompt_kind, resolve_regressor, shipped_regressors

#: How ``sampot score`` is told which prompt kind made the masks it scores.
SCORE_PROMPT_OPTIONS = {"box": "--prompt box", "click": "--prompt click"}


def _row(predicted: float, shipped: ShippedRegressor | None) -> dict[str, Any]:
    row: dict[str, Any] = {"dice_predicted": round(predicted, 5)}
    if shipped is not None:
        low, high = shipped.interval(predicted, of="binary")
        row |= {"interval_low": round(low, 5), "interval_high": round(high, 5), "interval_level": shipped.level}
    return row


def seen_in_training(
    meta: dict[str, Any], items: list[tuple[str, Path, Path]], calibration: bool = False
) -> list[tuple[str, str]]:
    """The ``items`` (id, image file, mask file) the regressor was trained or validated on
    (:func:`~sampot_lib.method.regressor_origin.trained_on`), or with ``calibration`` those it was calibrated on:
    [(id, id it was seen as)]; the files are hashed only when its record lists some."""
    keys = ("calibration_masks",) if calibration else ("train_masks", "val_masks")
    if not any(meta.get(k) for k in keys):
        return []
    masks = {image_id: sha256_file(mask) for image_id, _, mask in items}
    images = {image_id: sha256_file(image) for image_id, image, _ in items}
    return calibration_seen(meta, images, masks) if calibration else trained_on(meta, masks, images)


def cmd_score(args: argparse.Namespace) -> int:
    shipped_settings(args, prompt_option="prompt")
    kind = args.prompt or default_prompt_kind(args.model)
    source = Path(args.source)
    for note in mask_elsewhere(source, None if source.is_dir() else args.mask_file, args.structure):
        print(f"sampot: warning: {note}", file=sys.stderr)
    if source.is_dir():  # every mask is checked (size, binary, not empty) before any is scored
        dataset = FolderDataset(source, structures=[args.structure], training=False)  # a full mask still scores
        items = [(i, dataset.image_path(i), dataset.mask_path(i, args.structure)) for i in dataset.ids]
    else:
        read_mask(args.mask_file, expected_shape=read_user_image(source).shape[:2])
        items = [(source.stem, source, Path(args.mask_file))]
    regressor, meta, shipped = resolve_regressor(args.regressor, args.model, kind, args.structure, device=args.device,
                                                 prompt_options=SCORE_PROMPT_OPTIONS)  # fmt: skip
    for note in check_regressor(meta, {"model": args.model, "structure": args.structure, "prompt": kind},
                                allow_foreign=args.allow_foreign_regressor):  # fmt: skip
        print(f"sampot: warning: {note}", file=sys.stderr)

    def which(found: list[tuple[str, str]]) -> str:
        several = len(items) > 1
        return f"{len(found)} of the {len(items)} masks scored were" if several else "the mask scored was"

    seen = seen_in_training(meta, items)
    if seen:  # a score, not a test: warned, not refused
        print(f"sampot: warning: {which(seen)} among the regressor's training or validation images "
              f"({listed([i for i, _ in seen])}): it learned their Dice, so its "
              f"score{' and interval are' if shipped is not None else ' is'} optimistic there.",
              file=sys.stderr)  # fmt: skip
    calibrated = seen_in_training(meta, items, calibration=True)
    learned, checked = split_calibration_seen(meta, calibrated)
    if learned:
        print(f"sampot: warning: {which(learned)} among {CALIBRATION_IMAGES} ({listed([i for i, _ in learned])}): "
              "it learned their Dice, so its score is optimistic there.", file=sys.stderr)  # fmt: skip
    if checked:
        print(f"sampot: warning: {which(checked)} among the images held out to check the regressor's calibration "
              f"({listed([i for i, _ in checked])}): it did not learn their Dice, but the calibration was judged on "
              "them, so they are no fresh test of it.", file=sys.stderr)  # fmt: skip
    same_ids = same_ids_note(meta, [i for i, _, _ in items], matched=[i for i, _ in seen + calibrated])
    if same_ids:
        print(f"sampot: warning: {same_ids}", file=sys.stderr)
    name = shipped.name if shipped is not None else str(args.regressor)
    rows, inverted = [], []
    for image_id, image_path, mask_path in items:
        image = read_image(image_path)
        mask = read_mask(mask_path, expected_shape=image.shape[:2])
        if looks_inverted(mask):
            inverted.append(image_id if source.is_dir() else str(mask_path))  # one file: named by its path
        rows.append({"image_id": image_id, "mask": str(mask_path)} | _row(score_mask(regressor, image, mask), shipped))
    if inverted:
        several = len(items) > 1
        which = f"{len(inverted)} of the {len(items)} masks cover" if several else "the mask covers"
        print(f"sampot: warning: {which} most of the image and nearly all its border ({listed(inverted)}): "
              f"{'are they' if several else 'is it'} inverted (structure black, background white)? The score is then "
              "of the background.", file=sys.stderr)  # fmt: skip
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
