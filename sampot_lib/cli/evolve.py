"""``sampot evolve`` (one prompt on one image) and ``sampot heatmap`` (the Dice of a grid of clicks), with what they
share with the other commands: the model and the safeguards read from the options."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from sampot_lib.cli.options import mask_elsewhere, mask_folder_structure, plain, shipped_settings
from sampot_lib.cli.output_checks import EVOLVE_OUTPUTS
from sampot_lib.data.io import check_image_side, looks_inverted, read_mask, read_user_image, write_png
from sampot_lib.defaults import SHARPNESS, STRUCTURE
from sampot_lib.errors import SampotError, SampotWarning
from sampot_lib.experiment.records import json_text
from sampot_lib.files import sha256_file, write_text
from sampot_lib.method.evolve import EvolutionResult, evolve_prompt
from sampot_lib.method.heatmap import dice_heatmap, grid_points
from sampot_lib.method.prompts import Prompt, Safeguards
from sampot_lib.method.regressor import load_regressor
from sampot_lib.method.regressor_origin import check_regressor, unmeasured_notes
from sampot_lib.method.selection import DoNoHarm
from sampot_lib.method.shipped import ShippedRegressor, resolve_regressor
from sampot_lib.models import load_model
from sampot_lib.models.base import PromptableModel
from sampot_lib.models.registry import checkpoint_identity
from sampot_lib.report.evolution_view import overlay, trajectory_html


def safeguards_of(args: argparse.Namespace) -> Safeguards:
    """The safeguards the evolution options give (--no-safeguards, --trust-radius, --min-overlap, --max-area-ratio)."""
    if args.no_safeguards:
        return Safeguards.off()
    return Safeguards(trust_radius=args.trust_radius, min_overlap=args.min_overlap, max_area_ratio=args.max_area_ratio)


def model_of(args: argparse.Namespace) -> PromptableModel:
    """The model the model options name, on --device (and --backend where the command has one)."""
    backend = getattr(args, "backend", "torch")
    return load_model(args.model, args.checkpoint, args.device, mask_output=args.mask_output, backend=backend)


def regressor_expected(
    args: argparse.Namespace, model: PromptableModel, prompt: str, sharpness: float
) -> dict[str, object]:
    """What a one-image command's regressor must fit (:func:`check_regressor`'s ``expected``): the model, its weights,
    its mask output, the prompt kind, the sharpness, the structure (``--structure``, else the folder of a --mask in
    ``masks/<structure>/``), and, with a --mask, this image and mask, which it must not have been trained on."""
    expected: dict[str, object] = {"model": args.model, "checkpoint": checkpoint_identity(args.model, args.checkpoint),
                                   "mask_output": getattr(model, "mask_output", None), "prompt": prompt,
                                   "sharpness": sharpness}  # fmt: skip
    expected["structure"] = _structure(args)
    if args.mask:
        image_id = Path(args.image).stem
        expected["test_masks"] = {image_id: sha256_file(args.mask)}
        expected["test_images"] = {image_id: sha256_file(args.image)}
    return expected


def _structure(args: argparse.Namespace) -> str | None:
    """The structure a one-image command segments: ``--structure``, else the folder of a --mask in
    ``masks/<structure>/``, else None (not known)."""
    return getattr(args, "structure", None) or mask_folder_structure(args.mask)


def _foreign_notes(reg_meta: dict, expected: dict[str, object], allow: bool, one_image: bool = False) -> list[str]:
    """check_regressor's notes, printed one a line; ``allow``: a mismatch or a leak is a note, not a refusal;
    ``one_image``: a refusal advises evolving the image without its mask."""
    notes = check_regressor(reg_meta, expected, allow_foreign=allow, one_image=one_image)
    for note in notes:
        print(f"sampot: warning: {note}", file=sys.stderr)
    return notes


def _user_prompt(args: argparse.Namespace) -> Prompt:
    """The prompt given on the command line: --box X0 Y0 X1 Y1 and/or --click X Y (repeatable)."""
    clicks = tuple((float(x), float(y)) for x, y in (args.click or []))
    box = tuple(float(v) for v in args.box) if args.box else None
    if box is None and not clicks:
        raise SampotError("give the user's prompt: --click X Y (one or more) and/or --box X0 Y0 X1 Y1.")
    return Prompt(points=clicks, labels=(1,) * len(clicks), box=box)  # type: ignore[arg-type]


def _warn_odd_input(prompt: Prompt | None, mask: np.ndarray | None, mask_path: str | None) -> None:
    """Warnings (not errors) for input that works but is probably a mistake: an inverted mask, a click in the
    background of the given mask. ``prompt=None``: only the mask is looked at."""
    if mask is None:
        return
    if looks_inverted(mask):
        warnings.warn(
            f"mask {mask_path} covers {mask.mean():.0%} of the image and nearly all its border: is it inverted "
            "(structure black, background white)? The Dice it gives is then of the background.",
            SampotWarning, stacklevel=2,
        )  # fmt: skip
    if prompt is None:
        return
    for (x, y), label in zip(prompt.points, prompt.labels, strict=True):
        if label == 1 and not mask[int(round(y)), int(round(x))]:
            warnings.warn(
                f"click ({x:g}, {y:g}) lies in the background of the mask {mask_path}: the model segments what is "
                "under the click, probably not the structure. Click inside the structure.",
                SampotWarning, stacklevel=2,
            )  # fmt: skip


def _warn_prompt_kind(model: object, name: str, kind: str, fix: str) -> None:
    """A warning when the model's record says it answers other prompt kinds well (LiteMedSAM: boxes)."""
    kinds = getattr(model, "prompt_kinds", ())
    if kinds and kind not in kinds:
        warnings.warn(f"model {name!r} answers {', '.join(kinds)} prompts well, not a {kind}; its masks may be poor "
                      f"(LiteMedSAM is a box model: {fix}).", SampotWarning, stacklevel=2)  # fmt: skip


def cmd_evolve(args: argparse.Namespace) -> int:
    if args.backend == "onnx" and args.optimizer == "adam":  # before any work: ONNX gives no gradients
        raise SampotError("--backend onnx gives no gradients, which adam needs: add --optimizer cmaes or random.")
    image = read_user_image(args.image)
    check_image_side(image, args.image)  # before the click and the mask are measured against it
    gt = read_mask(args.mask, expected_shape=image.shape) if args.mask else None
    prompt = _user_prompt(args)
    prompt.check(image.shape[:2])
    _warn_odd_input(prompt, gt, args.mask)
    kind = "box" if prompt.box is not None else "click"
    shipped_settings(args)
    structure = _structure(args)
    for note in mask_elsewhere(args.image, args.mask, getattr(args, "structure", None)):
        print(f"sampot: warning: {note}", file=sys.stderr)
    regressor, reg_meta, shipped = resolve_regressor(
        args.regressor, args.model, kind, structure or STRUCTURE, device=args.device
    )
    model = model_of(args)
    _warn_prompt_kind(model, args.model, prompt.kind, "give --box X0 Y0 X1 Y1")
    expected = regressor_expected(args, model, kind, args.sharpness)
    notes = _foreign_notes(reg_meta, expected, args.allow_foreign_regressor, one_image=True)
    if gt is None:  # nothing is measured, so not refused; but its scores there are not those of a new image
        for note in unmeasured_notes(reg_meta, {Path(args.image).stem: sha256_file(args.image)}):
            print(f"sampot: warning: {note}", file=sys.stderr)
    rule = _rule(args, reg_meta, shipped)
    if shipped is not None:
        print(f"regressor: {shipped.name} (shipped; trained on {shipped.training_data.get('name', '?')}; its model "
              f"card: {shipped.card_path})")  # fmt: skip
    with warnings.catch_warnings():  # the notes above said it, once
        warnings.filterwarnings("ignore", message="foreign regressor", category=SampotWarning)
        result = evolve_prompt(
            model, regressor, image, prompt, steps=args.steps, patience=plain(args.patience), min_gain=args.min_gain,
            lr=args.lr, sharpness=args.sharpness, optimizer=args.optimizer, safeguards=safeguards_of(args), gt_mask=gt,
            seed=args.seed or 0, progress=True, do_no_harm=rule if rule is not None else False,
        )  # fmt: skip
    out, stem = Path(args.out), Path(args.image).stem
    record = {"image": str(args.image)} | dice_record(result, shipped) | result.to_dict(seconds=True)
    if shipped is not None:
        record["regressor"] = {"shipped": shipped.name, "sha256": shipped.sha256}
    if args.allow_foreign_regressor:
        record["regressor_foreign"] = notes
    # a NaN is refused here, before any file is written
    record_text = json_text(record, where=str(out / f"{stem}_evolution.json"))
    picture = overlay(image, result.initial_mask, result.best_mask, result.prompt, result.best_prompt)
    write_png(out / f"{stem}_mask.png", result.best_mask)
    write_png(out / f"{stem}_initial_mask.png", result.initial_mask)
    write_png(out / f"{stem}_overlay.png", picture)
    title = f"{stem}: predicted Dice {record['dice_predicted_initial']:.3f} -> {record['dice_predicted_final']:.3f}"
    write_text(out / f"{stem}_evolution.html", trajectory_html(result, picture, title))
    write_text(out / f"{stem}_evolution.json", record_text)
    b, i = result.best, result.initial
    fmt = ", ".join
    print(f"evolved {prompt.kind}: ({fmt(f'{v:.1f}' for v in b.coords)}) from ({fmt(f'{v:.1f}' for v in i.coords)}) "
          f"at step {b.step}")  # fmt: skip
    print(f"regressor score: {i.score:.3f} -> {b.score:.3f}")
    if shipped is not None:
        lo, hi = record["dice_predicted_final_interval"]
        print(f"predicted Dice of the result: {b.score:.3f} ({lo:.3f} to {hi:.3f}, its {shipped.level:.0%} interval on "
              "JSRT's test split; calibrate it for other data: sampot calibrate)")  # fmt: skip
    if "rule" in result.settings:
        print(f"do-no-harm: {result.settings['rule']['reason']}")
    if gt is not None:
        print(f"Dice: {i.dice:.3f} -> {b.dice:.3f}")
    written = [str(out / f"{stem}_{name}") for name in EVOLVE_OUTPUTS]
    print(f"wrote {', '.join(written[:-1])} and {written[-1]}")
    return 0


def _rule(args: argparse.Namespace, meta: dict, shipped: ShippedRegressor | None) -> DoNoHarm | None:
    """The do-no-harm rule of ``sampot evolve``: on by default with the shipped regressor's margin and blend weight,
    or ``--margin M`` (with the file's blend weight); none with ``--no-do-no-harm`` or for a file without a margin."""
    if args.no_do_no_harm:
        return None
    weight = shipped.blend_weight if shipped is not None else meta.get("blend_weight")
    if args.margin is not None:
        return DoNoHarm(args.margin, weight)
    return DoNoHarm(shipped.margin, weight) if shipped is not None else None


def dice_record(result: EvolutionResult, shipped: ShippedRegressor | None = None) -> dict:
    """The evolution's headline numbers: the predicted Dice (the regressor's score) of the user's prompt and of the
    winner, their intervals when the regressor is shipped, and the true Dice of both when the truth was given."""
    i, b = result.initial, result.best
    out: dict = {"dice_predicted_initial": i.score, "dice_predicted_final": b.score}
    if shipped is not None:
        out |= {
            "dice_predicted_initial_interval": list(shipped.interval(i.score, of="user")),
            "dice_predicted_final_interval": list(shipped.interval(b.score, of="evolved")),
            "interval_level": shipped.level,
        }
    if i.dice is not None and b.dice is not None:
        out |= {"dice_true_initial": i.dice, "dice_true_final": b.dice}
    return out


def cmd_heatmap(args: argparse.Namespace) -> int:
    image = read_user_image(args.image)
    check_image_side(image, args.image)  # before the mask is measured against it
    mask = read_mask(args.mask, expected_shape=image.shape)
    _warn_odd_input(None, mask, args.mask)  # no clicks: the heat-map makes its own
    if len(grid_points(mask, args.step)) == 0:  # before the model is loaded
        raise SampotError(f"no grid point of --step {args.step} falls inside the mask {args.mask}; use a smaller step.")
    for note in mask_elsewhere(args.image, args.mask, getattr(args, "structure", None)):
        print(f"sampot: warning: {note}", file=sys.stderr)
    shipped_settings(args)
    model = model_of(args)
    _warn_prompt_kind(
        model, args.model, "click", "its heat-map of clicks shows little; evolve a box with `sampot evolve`"
    )
    regressor = None
    if args.regressor:
        regressor, reg_meta = load_regressor(args.regressor, device=args.device)
        _foreign_notes(reg_meta, regressor_expected(args, model, "click", SHARPNESS), args.allow_foreign_regressor)
    hm = dice_heatmap(model, image, mask, step=args.step, regressor=regressor, sharpness=SHARPNESS)

    def cell(v: float, fmt: str = ".5f") -> str:  # a blank cell, not "nan": the regressor column without one
        return format(v, fmt) if math.isfinite(v) else ""

    lines = ["x,y,dice,confidence,regressor"]
    lines += [
        ",".join([cell(x, ".1f"), cell(y, ".1f"), cell(d), cell(c), cell(s)])
        for (x, y), d, c, s in zip(hm.points, hm.dice, hm.confidence, hm.score, strict=True)
    ]
    write_text(args.out, "\n".join(lines) + "\n")
    print(f"{len(hm.dice)} clicks: Dice {hm.dice.min():.3f} .. {hm.dice.max():.3f} (spread {hm.spread:.3f})")
    print(f"wrote {args.out}")
    return 0
