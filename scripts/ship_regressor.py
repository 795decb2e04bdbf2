"""Make a shipped regressor from a finished run: its file, its record in the registry and its model card.

    python scripts/ship_regressor.py RUN_SEED_DIR --name NAME [--data DATA] [--level 0.9]

RUN_SEED_DIR is a run's seed folder (``regressor.pt``, ``splits.json`` or its parent's, and ``summary.json`` or
``config.json``). With the run's model, the script scores the model's own masks (the simulated user prompts and the
model prompts of the run's training set: band and outside clicks, or boxes jittered from 0.05 to 0.3) on the
VALIDATION split and takes the split-conformal half-width of the residuals at the nominal level; then it measures
r, MAE and the interval's coverage on the TEST split, which chooses nothing. The do-no-harm margin is chosen on the
validation curves of every seed of the run pooled (``seed_<k>/summary.json``'s ``rule_validation``, when two or more
seeds have one), else the run's own, else on evolutions of the validation images with ``sampot evolve``'s defaults.
It writes ``sampot_lib/method/regressors/NAME.pt`` (the run's weights with a ``shipped`` entry in their record),
``NAME.md`` (the model card, every number from this script's output) and the record in ``registry.json``; a record
of the same name is replaced.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sampot_lib import __version__
from sampot_lib.data.folder import FolderDataset
from sampot_lib.data.splits import load_splits
from sampot_lib.defaults import BOX_JITTER, CONFORMAL_LEVEL, LR, N_OUTSIDE, STEPS, UNCHANGED_TOL
from sampot_lib.errors import SampotError
from sampot_lib.experiment.pooled_rule import pooled_margin, seed_folders
from sampot_lib.experiment.provenance import data_identity, mask_hashes
from sampot_lib.experiment.records import read_json, write_json
from sampot_lib.experiment.setup import apply_process_settings
from sampot_lib.files import sha256_file, write_text
from sampot_lib.method.evolve import evolve_prompt, measure_prompt, truth_gain
from sampot_lib.method.prompts import Prompt, Safeguards
from sampot_lib.method.regressor import load_regressor, save_regressor, score_mask
from sampot_lib.method.regressor_training import predict_dice
from sampot_lib.method.scoring import RegressorScorer
from sampot_lib.method.selection import DoNoHarm, choose_margin, rule_gains
from sampot_lib.method.shipped import (
    REGISTRY_FILE,
    REGRESSORS_DIR,
    ShippedRegressor,
    conformal_half_width,
    coverage,
    shipped_regressors,
)
from sampot_lib.method.synth import user_prompt_for
from sampot_lib.method.training_set import model_prompts_for, regressor_samples
from sampot_lib.models import load_model
from sampot_lib.models.base import PromptableModel

#: The largest file the package ships.
MAX_BYTES = 2 * 1024 * 1024
TERMS = ("Trained on JSRT (Japanese Society of Radiological Technology) chest X-rays with SCR (van Ginneken et al. "
         "2006) masks, both released for research and education only: use this regressor for research; it is not "
         "a medical device. sampot's code is MIT-licensed.")  # fmt: skip

_LUNG = (
    "SCR's lung fields leave out the lung behind the heart (the region the heart's shadow covers). The "
    "regressor learned that convention: on masks that include the lung behind the heart, its score disagrees "
    "with your Dice."
)
_CLAVICLE = (
    "SCR's clavicle masks cover the part of the bone that lies over the lung field, not its outer end towards "
    "the shoulder. The regressor learned that outline: on a mask of the whole bone, its score disagrees with "
    "your Dice."
)
#: What each structure's SCR outline includes, for the card's "Label convention": the regressor learned it.
LABEL_CONVENTIONS = {
    "left_lung": _LUNG,
    "right_lung": _LUNG,
    "heart": "SCR's heart is the heart's whole projection, its low-contrast lower border included; SCR's lung fields "
    "stop where it begins. The regressor learned that outline: on a heart mask drawn to another convention, its "
    "score disagrees with your Dice.",
    "left_clavicle": _CLAVICLE,
    "right_clavicle": _CLAVICLE,
}
OTHER_CONVENTION = (
    "The regressor learned the outlines of its training masks: on masks drawn to another convention, "
    "its score disagrees with your Dice."
)


def run_settings(run: Path) -> dict[str, Any]:
    """The run's settings: ``config.json``, else ``summary.json``'s ``config``."""
    if (run / "config.json").is_file():
        return read_json(run / "config.json", "run settings")
    if (run / "summary.json").is_file():
        return read_json(run / "summary.json", "run summary")["config"]
    raise SampotError(f"{run} has neither config.json nor summary.json: give a run's seed folder.")


def run_splits(run: Path) -> dict[str, list[str]]:
    """The run's split: its ``splits.json``, else its parent's."""
    for path in (run / "splits.json", run.parent / "splits.json"):
        if path.is_file():
            return load_splits(path)
    raise SampotError(f"{run} has no splits.json (nor has its parent): give a run's seed folder.")


#: Simulated users per image whose box prompts calibrate and test the users' intervals: one per image leaves 57
#: validation residuals, whose conformal quantile moves the coverage by about 4 points from one split to another.
#: Their seeds are the run's plus multiples of USER_SEED_STEP (the first is the run's own user). The first click user
#: clicks the centroid (the run's own user), the others anywhere in the structure's inner part (``inside_click``).
USERS_PER_IMAGE = 5
USER_SEED_STEP = 1000


def simulated_user(cfg: dict[str, Any], image_id: str, truth: np.ndarray, j: int) -> Prompt:
    """The prompt of user ``j`` (0 .. USERS_PER_IMAGE - 1) of one image: user 0 is the run's own."""
    seed = cfg["seed"] + USER_SEED_STEP * j
    return user_prompt_for(seed, cfg["prompt"], cfg["box_jitter"], image_id, truth, anywhere_inside=j > 0)


def model_masks(
    model: PromptableModel, regressor: Any, dataset: FolderDataset, ids: list[str], cfg: dict[str, Any],
    progress: bool = True,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The regressor's scores and the true Dice of the model's own masks of ``ids``: the run's model prompts (as its
    training set draws them) and each image's simulated users' prompts (:data:`USERS_PER_IMAGE` users, the first the
    one its evaluation and evolution give it). Returns {"predicted", "dice", "draw" (the user's number, -1 for a
    model prompt), "user" (bool: the first user's mask), "users" (bool: any user's), "image_id", "binary" (the score of
    a user's binary mask, as ``sampot score`` reads it; NaN for the model prompts)}."""
    data = regressor_samples(
        model, dataset, ids, cfg["structure"], regressor.input_size, cfg["sharpness"], 0, cfg["n_outside"],
        cfg["seed"], progress, model_prompts_for(cfg["prompt"], cfg["n_outside"]),
    )  # fmt: skip
    predicted, true = list(predict_dice(regressor, data)), list(data.dice)
    draw, image_ids, binary = [-1] * len(data), list(data.image_id), [float("nan")] * len(data)
    for image_id in ids:
        image, truth = dataset.image(image_id), dataset.mask(image_id, cfg["structure"])
        scorer, emb = RegressorScorer(regressor, image, cfg["sharpness"]), model.embed(image)
        for j in range(USERS_PER_IMAGE):
            prompt = simulated_user(cfg, image_id, truth, j)
            m = measure_prompt(model, emb, prompt, scorer, truth)
            predicted.append(m["score"])
            binary.append(score_mask(regressor, image, m["mask"]))  # as `sampot score` reads the binary mask
            true.append(m["dice"])
            draw.append(j)
            image_ids.append(image_id)
    drawn = np.array(draw)
    arrays = {"predicted": np.array(predicted, dtype=float), "dice": np.array(true, dtype=float), "draw": drawn}
    return arrays | {"user": drawn == 0, "users": drawn >= 0, "image_id": np.array(image_ids),
                     "binary": np.array(binary, dtype=float)}  # fmt: skip


def half_widths(val: dict[str, np.ndarray], level: float) -> tuple[float, dict[str, Any]]:
    """The split-conformal half-widths at ``level`` from :func:`model_masks` of the validation images: the model's soft
    masks (the model prompts and each image's first user, as the training set mixes them), and, where the users are
    enough for the level, the users' own prompts measured apart (soft as evolution's step 0 scores them, binary as
    ``sampot score`` reads them: the mix's interval need not fit them; on JSRT it over-covered the lungs' and heart's).
    Returns (the soft masks' half-width, {"half_width_user", "half_width_binary", "n_user", "n_binary",
    "users_per_image"} or {})."""
    mixed, users = val["draw"] <= 0, val["users"]
    half = conformal_half_width(val["predicted"][mixed] - val["dice"][mixed], level)
    if math.ceil(((n_users := int(users.sum())) + 1) * level) > n_users:
        return half, {}
    return half, {
        "half_width_user": conformal_half_width(val["predicted"][users] - val["dice"][users], level),
        "half_width_binary": conformal_half_width(val["binary"][users] - val["dice"][users], level),
        "n_user": n_users, "n_binary": n_users, "users_per_image": int(val["draw"].max()) + 1,
    }  # fmt: skip


def accuracy(predicted: np.ndarray, true: np.ndarray, half_width: float | None = None) -> dict[str, Any]:
    """n, Pearson r, MAE and (with a half-width) the interval's coverage of predicted against true Dice."""
    out: dict[str, Any] = {"n": int(len(true)), "r": float(np.corrcoef(predicted, true)[0, 1]),
                           "mae": float(np.mean(np.abs(predicted - true)))}  # fmt: skip
    if half_width is not None:
        out["coverage"] = coverage(predicted - true, half_width)
    return out


def evolve_split(
    model: PromptableModel, regressor: Any, dataset: FolderDataset, ids: list[str], cfg: dict[str, Any],
    weight: float | None, what: str, users: int = USERS_PER_IMAGE,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Each image's simulated users' prompts (``users`` per image, drawn as :func:`model_masks` draws them, the first
    the run's own) evolved with ``sampot evolve``'s defaults, one entry per (image, user) in that order: the do-no-harm
    rule's predicted gain (``predicted``), the true Dice gain (``gain``), the winner's score and true Dice (``score``,
    ``dice``: the best of many scores overrates its mask, which the interval on evolved masks must cover), and the
    user's number (``draw``)."""
    probe = DoNoHarm(0.0, weight)
    out: dict[str, list[float]] = {"predicted": [], "gain": [], "score": [], "dice": [], "draw": []}
    for i, image_id in enumerate(ids):
        image, truth = dataset.image(image_id), dataset.mask(image_id, cfg["structure"])
        for j in range(users):
            prompt = simulated_user(cfg, image_id, truth, j)
            res = evolve_prompt(model, regressor, image, prompt, steps=STEPS, lr=LR, sharpness=cfg["sharpness"],
                                safeguards=Safeguards())  # fmt: skip
            judged = truth_gain(res, truth)
            out["predicted"].append(probe.predicted_gain(res))
            out["gain"].append(judged["gain"])
            out["score"].append(res.best.score)
            out["dice"].append(judged["dice"])
            out["draw"].append(j)
        print(f"  evolving {what} image {i + 1}/{len(ids)}", end="\r", file=sys.stderr)
    return {k: np.array(v, dtype=float if k != "draw" else int) for k, v in out.items()}


def first_users(evolved: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The entries of :func:`evolve_split` of each image's first user: the prompt the run itself evolved."""
    keep = evolved["draw"] == 0
    return {k: v[keep] for k, v in evolved.items()}


def rule_on_test(predicted: np.ndarray, gains: np.ndarray, margin: float) -> dict[str, Any]:
    """The evolution's true Dice gains on test without and with the do-no-harm rule at ``margin``."""
    ruled = rule_gains(predicted, gains, margin)
    return {"n": int(len(gains)), "margin": margin, "moved": int((predicted > margin).sum()),
            "mean_gain_without_rule": float(gains.mean()), "worst_without_rule": float(gains.min()),
            "worse_without_rule": int((gains < -UNCHANGED_TOL).sum()), "mean_gain": float(ruled.mean()),
            "worst": float(ruled.min()), "improved": int((ruled > UNCHANGED_TOL).sum()),
            "worse": int((ruled < -UNCHANGED_TOL).sum())}  # fmt: skip


def evolution_numbers(run: Path) -> dict[str, Any]:
    """The run's evolution results on test (``summary.json``: the regressor's, and the rule's when it ran)."""
    if not (run / "summary.json").is_file():
        return {}
    summary = read_json(run / "summary.json", "run summary")
    keys = ("n", "improved", "unchanged", "worse", "mean_dice_initial", "mean_dice_evolved", "mean_gain",
            "worst_drop", "share_of_oracle_gain")  # fmt: skip
    out = {}
    for group in ("on", "do-no-harm"):
        if isinstance(summary.get(group), dict):
            out[group] = {k: summary[group][k] for k in keys if k in summary[group]}
    return out


def card_text(rec: ShippedRegressor) -> str:
    """The model card of a shipped regressor, every number from its record."""
    t, u, c, v = (rec.numbers[k] for k in ("test", "test_user", "conformal", "val"))
    ev = rec.numbers.get("evolution", {})
    jitter = rec.meta.get("box_jitter", BOX_JITTER)
    users = ("clicks at the structure's centroid and anywhere in its inner part" if rec.prompt_kind == "click" else
             f"boxes around the structure, each side moved by up to J = {jitter:g} of its size")  # fmt: skip
    lines = [
        f"# Model card: `{rec.name}`",
        "",
        f"A segmentation regressor: it predicts the Dice of a {rec.structure.replace('_', ' ')} mask of model "
        f"`{rec.model}` (from {rec.prompt_kind} prompts) on a chest X-ray, without ground truth. `sampot evolve`, "
        "`sampot app`, the widget and `evolve_prompt` use it by default for this model, prompt kind and structure; "
        "`sampot score` gives the predicted Dice of any mask with its interval.",
        "",
        "## Training data and terms",
        "",
        f"- {TERMS}",
        f"- Data set identity (hash of its training and validation masks): `{rec.training_data['data_identity']}`; "
        f"split hash `{rec.training_data['split_hash']}`; {len(rec.training_data['train_ids'])} training and "
        f"{len(rec.training_data['val_ids'])} validation images (their ids are in the registry: a run that tests on "
        "them is refused).",
        f"- File `{rec.filename}`: {rec.size:,} bytes, sha256 `{rec.sha256}`, input {rec.input_size} x "
        f"{rec.input_size}.",
        "",
        "## Label convention",
        "",
        LABEL_CONVENTIONS.get(rec.structure, OTHER_CONVENTION),
        "",
        "## Measured on JSRT's test split",
        "",
        f"Model `{rec.model}`, structure `{rec.structure}`: {t['n']} of the model's own masks of JSRT/SCR's test "
        f"images (simulated users' {users}, and the model prompts of the training set); the test split chose "
        f"nothing. Measured with sampot {rec.meta.get('sampot_version', '?')} at {rec.meta.get('torch_threads', '?')} "
        "torch thread(s).",
        "",
        "| masks | n | r with true Dice | MAE | interval coverage |",
        "|---|---|---|---|---|",
        f"| all of the model's | {t['n']} | {t['r']:.3f} | {t['mae']:.3f} | {t['coverage']:.1%} |",
        f"| the users' prompts | {u['n']} | {u['r']:.3f} | {u['mae']:.3f} | {u['coverage']:.1%} |",
        *(
            [
                f"| the users' prompts, binary masks as `sampot score` reads them | {b['n']} | {b['r']:.3f} | "
                f"{b['mae']:.3f} | {b['coverage']:.1%} |"
            ]
            if (b := rec.numbers.get("test_user_binary"))
            else []
        ),
        *(
            [
                f"| the users' prompts evolved with `sampot evolve`'s defaults, the winning masks | {e['n']} | "
                f"{e['r']:.3f} | {e['mae']:.3f} | {e['coverage']:.1%} |"
            ]
            if (e := rec.numbers.get("test_evolved"))
            else []
        ),
        "",
        f"Interval: predicted Dice ± {c['half_width']:.3f} (clipped to [0, 1]), split-conformal at a nominal "
        f"{c['level']:.0%} on {c['n']} validation masks (there r {v['r']:.3f}, MAE {v['mae']:.3f}), for the model's "
        "own masks as evolution scores them (the sigmoid of the logits). "
        + (
            f"A user's own prompt gets an interval of its own: `sampot evolve` gives its predicted Dice "
            f"± {c['half_width_user']:.3f}, split-conformal on {c['n_user']} simulated users' prompts of the "
            f"validation images ({c['users_per_image']} per image). "
            if "half_width_user" in c
            else ""
        )
        + (
            f"`sampot score` reads a binary mask, whose score can differ by a few hundredths: its interval is "
            f"± {c['half_width_binary']:.3f}, split-conformal on the binary masks of the {c['n_binary']} validation "
            "users' prompts. "
            if "half_width_binary" in c
            else "`sampot score` reads a binary mask, whose score can differ by a few hundredths. "
        )
        + (
            f"The winner of an evolution scores above its true Dice more often (the best of many scores): `sampot "
            f"evolve` gives its predicted Dice ± {c['half_width_evolved']:.3f}, split-conformal on the winners of the "
            f"{c['n_evolved']} validation users' prompts evolved with its defaults"
            + (f" ({c['evolved_users_per_image']} per image). " if "evolved_users_per_image" in c else ". ")
            if "half_width_evolved" in c
            else ""
        )
        + "Masks from other methods lie outside what was measured.",
        "",
        f"Do-no-harm rule on by default: the user's prompt is kept unless the predicted gain clears the margin "
        f"{rec.margin:g} ({rec.meta.get('margin_chosen_on', '')}).",
        "",
    ]
    d = rec.numbers.get("evolution_default")
    if d:
        lines.append(f"Evolution on the {d['n']} test images with {d['settings']}, and the do-no-harm rule at margin "
                     f"{d['margin']:g}: the evolved prompt was used on {d['moved']} of them; {d['improved']} improved, "
                     f"{d['worse']} got worse (by more than {UNCHANGED_TOL:g}); mean Dice gain {d['mean_gain']:+.3f}, "
                     f"worst {d['worst']:+.3f}. Without the rule: mean gain {d['mean_gain_without_rule']:+.3f}, "
                     f"{d['worse_without_rule']} worse, worst {d['worst_without_rule']:+.3f}.")  # fmt: skip
        lines.append("")
    for group, title in (("on", "the regressor's evolution"), ("do-no-harm", "with the do-no-harm rule")):
        if group in ev:
            e = ev[group]
            lines.append(f"Evolution on test, {title} (the run's settings): {e['improved']} of {e['n']} images "
                         f"improved, {e['worse']} worse; mean Dice {e['mean_dice_initial']:.3f} -> "
                         f"{e['mean_dice_evolved']:.3f}; worst change {e['worst_drop']:+.3f}"
                         + (f"; {e['share_of_oracle_gain']:.0%} of the oracle's gain." if isinstance(
                             e.get("share_of_oracle_gain"), float) else "."))  # fmt: skip
    lines += [
        "",
        "## On other hospitals' X-rays: calibrate",
        "",
        "Figures quoted in sampot's issue on shipping regressors (a held-out probe kept aside, not measured by this "
        "card's script): on X-rays from other hospitals, a regressor trained on JSRT (LiteMedSAM, left lung, "
        "J = 0.10, 30 test images) kept only r 0.50 with Dice on the model's masks (0.96 on JSRT) and made 13 of "
        "30 images worse; calibrated on 10 labelled images of the new set its mean gain rose from +0.026 to +0.038, "
        "but its worst image still lost 0.18. Expect the same of this one: its interval's coverage holds on JSRT, "
        "not on your data.",
        "",
        "With a few labelled images of your own, calibrate it (`sampot calibrate DATA --regressor "
        f"{rec.name} --labelled 10 --out runs/cal`) and use `runs/cal/regressor_calibrated.pt` instead.",
        "",
        "## Intended and out-of-scope use",
        "",
        f"- Intended: research on PA chest X-rays: ranking and refining `{rec.model}` masks of the "
        f"{rec.structure.replace('_', ' ')}, quality control of masks without ground truth, prompt evolution with "
        "the do-no-harm rule on.",
        "- Out of scope: diagnosis or any clinical decision; other structures, models or prompt kinds (refused unless "
        "asked for on purpose); lateral views, children, CT or other modalities; claims of accuracy on data other "
        "than JSRT without calibration.",
        "",
    ]
    return "\n".join(lines)


def ship(
    run: Path, name: str, data: str | None, level: float, progress: bool = True, into: Path = REGRESSORS_DIR
) -> ShippedRegressor:
    """Measure a run's regressor, copy it into ``into`` (the package's folder) and write its record and card there;
    returns the record."""
    if not (run / "regressor.pt").is_file():
        raise SampotError(f"{run} has no regressor.pt: its run has not finished training; run this script again "
                          "once it has.")  # fmt: skip
    regressor, meta = load_regressor(run / "regressor.pt")
    cfg = {"n_outside": N_OUTSIDE, "box_jitter": BOX_JITTER} | run_settings(run)
    cfg |= {"seed": int(meta.get("seed", cfg["seed"])), "sharpness": float(meta.get("sharpness", cfg["sharpness"])),
            "prompt": meta.get("prompt", cfg["prompt"]), "structure": meta["structure"]}  # fmt: skip
    splits = run_splits(run)
    dataset = FolderDataset(data or meta["data"], structures=[cfg["structure"]])
    seen = {p: mask_hashes(dataset, splits[p], cfg["structure"]) for p in ("train", "val")}
    if data_identity(seen["train"] | seen["val"]) != meta.get("data_identity"):
        raise SampotError(f"the masks of {dataset.root} are not those {run / 'regressor.pt'} learned from (data "
                          "identity differs): give --data, the run's data set.")  # fmt: skip
    model = load_model(meta["model"], mask_output=meta.get("mask_output"))
    print(f"validation: the model's masks of {len(splits['val'])} images", file=sys.stderr)
    val = model_masks(model, regressor, dataset, splits["val"], cfg, progress)
    half, apart = half_widths(val, level)
    print(f"test: the model's masks of {len(splits['test'])} images", file=sys.stderr)
    test = model_masks(model, regressor, dataset, splits["test"], cfg, progress)
    user, mixed_test = test["users"], test["draw"] <= 0
    mixed = val["draw"] <= 0
    summary = read_json(run / "summary.json", "run summary") if (run / "summary.json").is_file() else {}
    rule = summary.get("rule_validation") or {}
    weight = meta.get("blend_weight")
    defaults = f"sampot evolve's defaults: {STEPS} steps, lr {LR:g}, safeguards on"
    # the validation images evolved as `sampot evolve` does: the winners' own half-width, and the margin where the
    # run chose none
    val_evo = evolve_split(model, regressor, dataset, splits["val"], cfg, weight, "validation")
    if math.ceil((len(val_evo["score"]) + 1) * level) <= len(val_evo["score"]):
        apart |= {"half_width_evolved": conformal_half_width(val_evo["score"] - val_evo["dice"], level),
                  "n_evolved": len(val_evo["score"]), "evolved_users_per_image": USERS_PER_IMAGE}  # fmt: skip
    val_first = first_users(val_evo)  # the margin, like the run's rule, is chosen on each image's own user
    if len(seeds := seed_folders(run.parent)) >= 2 and run.resolve() in {s.resolve() for s in seeds}:
        pooled = pooled_margin(seeds)
        margin = {"margin": pooled["margin"], "chosen_on": f"the run's {pooled['chosen_on']}, pooled"}
    elif "margin" in rule:
        margin = {"margin": float(rule["margin"]), "chosen_on": f"the run's {rule.get('chosen_on', 'validation')}"}
    else:
        choice = choose_margin(val_first["predicted"], val_first["gain"])
        margin = {"margin": choice["margin"], "chosen_on": f"evolutions of {len(splits['val'])} validation images "
                  f"({defaults})"}  # fmt: skip
    evolved = evolve_split(model, regressor, dataset, splits["test"], cfg, weight, "test")
    test_first = first_users(evolved)
    test_evo = rule_on_test(test_first["predicted"], test_first["gain"], margin["margin"]) | {"settings": defaults}
    numbers = {
        "conformal": {"half_width": half, "level": level, "n": int(mixed.sum())} | apart,
        "val": accuracy(val["predicted"][mixed], val["dice"][mixed]),
        "test": accuracy(test["predicted"][mixed_test], test["dice"][mixed_test], half),
        "test_user": accuracy(test["predicted"][user], test["dice"][user], apart.get("half_width_user", half)),
        "test_user_binary": accuracy(test["binary"][user], test["dice"][user], apart.get("half_width_binary", half)),
        "test_evolved": accuracy(evolved["score"], evolved["dice"], apart.get("half_width_evolved", half)),
        "evolution": evolution_numbers(run),
        "evolution_default": test_evo,
    }
    into.mkdir(parents=True, exist_ok=True)
    path = into / f"{name}.pt"
    shipped = {"name": name, "half_width": half, "level": level, "margin": margin["margin"]}
    save_regressor(regressor, path, meta | {"shipped": shipped})
    if (nbytes := path.stat().st_size) > MAX_BYTES:
        path.unlink()
        raise SampotError(f"{name}.pt would have {nbytes:,} bytes; the package ships at most {MAX_BYTES:,}.")
    record = ShippedRegressor(
        name=name, model=meta["model"], prompt_kind=cfg["prompt"], structure=cfg["structure"],
        input_size=regressor.input_size, filename=path.name, sha256=sha256_file(path), size=path.stat().st_size,
        training_data={"name": "JSRT/SCR", "data_identity": meta["data_identity"], "split_hash": meta.get("split_hash"),
                       "train_ids": sorted(splits["train"]), "val_ids": sorted(splits["val"]), "terms": TERMS},
        numbers=numbers, margin=margin["margin"], blend_weight=weight, license=TERMS, card=f"{name}.md",
        meta={"margin_chosen_on": margin["chosen_on"], "run": str(run), "mask_output": meta.get("mask_output"),
              "sharpness": cfg["sharpness"], "box_jitter": cfg["box_jitter"], "torch_threads": torch.get_num_threads(),
              "sampot_version": __version__},
    )  # fmt: skip
    write_text(into / record.card, card_text(record))
    registry = into / REGISTRY_FILE.name
    records = (shipped_regressors(registry) if registry.is_file() else {}) | {name: record}
    write_json(into / REGISTRY_FILE.name, {"format": "sampot-shipped-regressors/1",
                                           "regressors": [records[k].to_dict() for k in sorted(records)]})  # fmt: skip
    return record


def rewrite_card(name: str, into: Path = REGRESSORS_DIR) -> ShippedRegressor:
    """Write a shipped regressor's record and card again, with its run's evolution results on test when the run's
    ``summary.json`` has them now (a run whose regressor was shipped before its evolution finished); nothing is
    measured."""
    registry = into / REGISTRY_FILE.name
    records = shipped_regressors(registry)
    if name not in records:
        raise SampotError(f"no shipped regressor named {name!r} in {into}: ship it first.")
    record = records[name]
    run = Path(record.meta.get("run", ""))
    if (run / "summary.json").is_file():
        record = replace(record, numbers=record.numbers | {"evolution": evolution_numbers(run)})
    records[name] = record
    write_json(registry, {"format": "sampot-shipped-regressors/1",
                          "regressors": [records[k].to_dict() for k in sorted(records)]})  # fmt: skip
    write_text(into / record.card, card_text(record))
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a finished run's seed folder (regressor.pt, splits.json, summary.json)")
    p.add_argument("--name", required=True, help="the shipped regressor's name, e.g. litemedsam_box_heart")
    p.add_argument("--data", help="the run's data set (default: the one its regressor records)")
    p.add_argument("--level", type=float, default=CONFORMAL_LEVEL, help="nominal coverage (default: %(default)s)")
    p.add_argument("--into", type=Path, default=REGRESSORS_DIR, help="the folder of the shipped regressors "
                   "(default: the package's)")  # fmt: skip
    p.add_argument("--card-only", action="store_true", help="only write NAME's record and card again, with its "
                   "run's evolution results if they are there now (nothing is measured)")  # fmt: skip
    args = p.parse_args(argv)
    apply_process_settings()  # $SAMPOT_THREADS and the allocator, as the CLI and the book set them
    try:
        if args.card_only:
            print(f"wrote {args.into / rewrite_card(args.name, args.into).card}")
            return 0
        record = ship(args.run, args.name, args.data, args.level, into=args.into)
    except SampotError as exc:
        print(f"ship_regressor: error: {exc}", file=sys.stderr)
        return 2
    print(record.summary())
    print(f"wrote {args.into / record.filename}, {args.into / record.card} and {args.into / REGISTRY_FILE.name}")
    print(f"add to book/use_on_your_xray.md: ```{{include}} ../sampot_lib/method/regressors/{record.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
