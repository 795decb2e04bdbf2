"""``sampot train-regressor``, ``sampot run`` (the whole experiment) and ``sampot calibrate`` (a regressor from
elsewhere measured on, and fine-tuned to, a few labelled images), and the ExperimentConfig their options give."""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

from sampot_lib.cli.evolve import safeguards_of
from sampot_lib.cli.options import plain, typed
from sampot_lib.errors import SampotError
from sampot_lib.experiment.calibration import run_calibration
from sampot_lib.experiment.config import ExperimentConfig, same_path
from sampot_lib.experiment.presets import differs_from_paper, preset_values
from sampot_lib.experiment.records import read_csv
from sampot_lib.experiment.runfolder import RunFolder
from sampot_lib.experiment.runner import results_made_otherwise, run_experiment
from sampot_lib.experiment.stages import train_regressor_stage
from sampot_lib.files import write_text
from sampot_lib.models.registry import OTHER_MODELS, model_meta
from sampot_lib.report.run_page import run_summary_html


def _prompt_kind(args: argparse.Namespace) -> str:
    """--prompt, or the kind the model's record says it answers well (a box for LiteMedSAM, else a click); a click
    for a box-only model is allowed with a warning."""
    known = args.model in OTHER_MODELS or args.checkpoint is None
    kinds = model_meta(args.model).get("prompt_kinds", []) if known else []
    if args.prompt is None:
        return "click" if not kinds or "click" in kinds else "box"
    if kinds and args.prompt not in kinds:
        warnings.warn(f"model {args.model!r} answers {', '.join(kinds)} prompts well, not a {args.prompt}; its masks "
                      "may be poor.", stacklevel=1)  # fmt: skip
    return args.prompt


def _config(args: argparse.Namespace) -> ExperimentConfig:
    """The ExperimentConfig of ``train-regressor`` / ``run``: the options, over the preset's values if --preset is
    given (an option the user typed wins over the preset; ``differs_from_paper`` lists it)."""
    keys = ["structure", "model", "checkpoint", "mask_output", "device", "split_file", "seed", "max_images",
            "regressor_size", "epochs", "regressor_patience", "regressor_schedule", "regressor_precision",
            "rank_weight", "box_jitter", "workers", "scheduler", "dashboard"]  # fmt: skip
    if args.command == "run":
        keys += ["steps", "patience", "min_gain", "lr", "sharpness", "optimizer", "seeds", "regressor", "scorers",
                 "margin", "extra_jitters", "allow_foreign_regressor"]  # fmt: skip
    values = {k: plain(getattr(args, k)) for k in keys if hasattr(args, k) and getattr(args, k) is not None}
    values["prompt"] = _prompt_kind(args)
    values |= {"data": str(args.data), "out": str(args.out)}
    guards_typed = args.command == "run" and (
        args.no_safeguards or any(typed(args, k) for k in ("trust_radius", "min_overlap", "max_area_ratio"))
    )
    if args.command == "run":
        values["safeguards"] = asdict(safeguards_of(args))
    if getattr(args, "preset", None):
        for key, value in preset_values(args.preset).items():
            if key == "safeguards":
                if args.command == "run" and not guards_typed:
                    values[key] = value
            elif not typed(args, key):
                values[key] = value
        values["preset"] = args.preset
    if typed(args, "box_jitter") and values["prompt"] != "box":  # the config cannot tell a typed value from its default
        raise SampotError(f"--box-jitter jitters the user's box, but the prompt is a {values['prompt']}: give "
                          "--prompt box, or leave --box-jitter out.")  # fmt: skip
    return ExperimentConfig(**values)


def _warn_unused_split(data: str | Path, split_file: str | None, out: str | Path, seed: int, what: str) -> None:
    """One warning when the data set holds a ``splits.json`` (where `sampot data split DIR` writes) that this command,
    given no --split-file, does not use: it makes its own split, and a split made by hand would be lost unseen."""
    lying = Path(data) / "splits.json"
    if split_file or not lying.is_file() or same_path(lying, Path(out) / "splits.json"):  # --out DIR: its own file
        return
    print(f"sampot: warning: {lying} (a split file in the data set) is not used: this {what} makes its own split "
          f"with seed {seed}; pass --split-file {lying} to use it.", file=sys.stderr)  # fmt: skip


def cmd_train_regressor(args: argparse.Namespace) -> int:
    config = _config(args)
    _refuse_replacing(config, args, ("train",))
    _warn_unused_split(config.data, config.split_file, config.out, config.seed, "run")
    _, history = train_regressor_stage(config, resume=args.resume, force=args.force)
    best = min(history, key=lambda h: h["val_mse"])
    print(f"best epoch {int(best['epoch'])}: val MSE {best['val_mse']:.5f}; wrote {Path(args.out) / 'regressor.pt'}")
    _print_paper_differences(config, ("train",))
    return 0


def _print_paper_differences(config: ExperimentConfig, stages: tuple[str, ...] | None = None) -> None:
    """With --preset, the settings of ``stages`` (None: all) that differ from the paper's (what --preset promises)."""
    if config.preset:
        diff = differs_from_paper(config, stages)
        print("settings that differ from the paper: " + ("; ".join(diff) if diff else "none"))


def _pm(mean: dict, sd: dict, key: str, fmt: str) -> str:
    """The "mean ± sd" of one headline number (sd left out when undefined)."""
    if mean.get(key) is None:
        return "n/a"
    m = format(mean[key], fmt)
    return m if sd.get(key) is None else f"{m} ± {format(sd[key], fmt.replace('+', ''))}"


def _refuse_replacing(config: ExperimentConfig, args: argparse.Namespace, stages: tuple[str, ...]) -> None:
    """SampotError unless --force, when ``args.out`` holds results of ``stages`` made with other settings."""
    clash = [] if args.force else results_made_otherwise(config, stages)
    if clash:
        more = f" and {len(clash) - 3} more" if len(clash) > 3 else ""
        raise SampotError(
            f"{args.out} holds results made with other settings: {'; '.join(clash[:3])}{more}. Give this run "
            "another --out, or add --force to replace them."
        )


def write_run_page(out: Path, structure: str) -> Path | None:
    """``out/summary.html``: the run's evolved against initial Dice (every seed's ``evolution.csv``) and its table;
    None when the run evolved nothing."""
    files = [out / "evolution.csv"] if (out / "evolution.csv").is_file() else sorted(out.glob("seed_*/evolution.csv"))
    rows = [row for f in files for row in read_csv(f)]
    if not rows:
        return None
    return write_text(out / "summary.html", run_summary_html(rows, structure, f"sampot run: {structure}, {out.name}"))


def cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    _refuse_replacing(config, args, ("train", "evaluate", "evolve"))
    _warn_unused_split(config.data, config.split_file, config.out, config.seed, "run")
    summary = run_experiment(config, resume=args.resume, force=args.force)
    several = "mean" in summary  # several seeds: mean ± sample sd over seeds
    mean = summary["mean"] if several else {k: v for k, v in summary.items() if isinstance(v, dict)}
    sd = summary["sd"] if several else {}
    first = next(iter(summary["per_seed"].values())) if several else summary
    if several:
        print(f"{len(summary['seeds'])} seeds ({', '.join(map(str, summary['seeds']))}): mean ± sd over seeds")
    r, rs = mean.get("regressor") or {}, sd.get("regressor") or {}
    user = "centroid clicks" if config.prompt == "click" else f"user's boxes (J = {config.box_jitter:g})"
    print(f"regressor r: {user} {_pm(r, rs, 'r_regressor_initial', '.3f')}, all the model's masks "
          f"{_pm(r, rs, 'r_regressor_model', '.3f')}, synthetic masks {_pm(r, rs, 'r_regressor_synthetic', '.3f')}; "
          f"model's IoU head: {user} {_pm(r, rs, 'r_confidence_initial', '.3f')}, all its masks "
          f"{_pm(r, rs, 'r_confidence_model', '.3f')}")  # fmt: skip
    labels = {"on": "regressor, safeguards on", "off": "regressor, safeguards off"}
    for group, m in mean.items():
        if group == "regressor" or "mean_gain" not in m:
            continue
        s = sd.get(group) or {}
        label = labels.get(group, group.replace("jitter_", "regressor, box jitter ") if group.startswith("jitter_")
                            else f"{group}, safeguards on")  # fmt: skip
        print(f"{label}: {_pm(m, s, 'improved', '.1f' if several else '.0f')} of {m['n']:.0f} improved, "
              f"{_pm(m, s, 'worse', '.1f' if several else '.0f')} worse, "
              f"{_pm(m, s, 'catastrophes', '.1f' if several else '.0f')} catastrophes; mean Dice "
              f"{_pm(m, s, 'mean_dice_initial', '.3f')} -> {_pm(m, s, 'mean_dice_evolved', '.3f')}, gain "
              f"{_pm(m, s, 'mean_gain', '+.4f')}")  # fmt: skip
    foreign, origin = first.get("regressor_foreign", []), first.get("regressor_origin", {})
    if config.regressor is not None:
        n_train, n_val = origin.get("n_train_ids", "?"), origin.get("n_val_ids", "?")
        print(f"regressor: {config.regressor}, trained on {origin.get('data', 'an unrecorded data set')} "
              f"({n_train} + {n_val} images), applied to {config.data}")  # fmt: skip
        if origin.get("calibrated_on"):  # a file from `sampot calibrate`
            cal = origin["calibrated_on"]
            print(f"  calibrated on {cal.get('data')} ({cal.get('n_labelled')} labelled images, none tested on)")
        for note in foreign:
            print(f"  note: {note}")
    _print_paper_differences(config)
    page = write_run_page(Path(args.out), config.structure)
    if page is not None:
        print(f"summary page: {page}")
    print(f"results in {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure a regressor trained elsewhere on N labelled images of a new data set, fine-tune it on most of them,
    check it on the rest (:func:`sampot_lib.experiment.calibration.run_calibration`)."""
    tuning = {k: v for k, v in (("epochs", args.epochs), ("tune_lr", args.tune_lr)) if v is not None}
    _warn_unused_split(args.data, args.split_file, args.out, args.seed, "calibration")
    report = run_calibration(
        args.data, args.regressor, args.out, args.labelled, seed=args.seed, structure=args.structure,
        model=args.model, checkpoint=args.checkpoint, mask_output=args.mask_output, prompt=args.prompt,
        sharpness=args.sharpness, box_jitter=args.box_jitter, steps=args.steps, patience=plain(args.patience),
        min_gain=args.min_gain, lr=args.lr, optimizer=args.optimizer, safeguards=safeguards_of(args),
        split_file=args.split_file, device=args.device, force=args.force, **tuning,
    )  # fmt: skip
    for note in report["regressor_notes"]:
        print(f"sampot: warning: {note}", file=sys.stderr)
    b, cb, ca = report["before"], report["check_before"], report["check_after"]

    def r(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    print(f"labelled images of {args.data}: {len(report['fine_tune_ids'])} to fine-tune on, "
          f"{len(report['check_ids'])} held out to check ({', '.join(report['check_ids'])})")  # fmt: skip
    e = b["evolution"]
    print(f"before calibration, {b['n_images']} labelled images: r {r(b['r_all'])} (the model's masks "
          f"{r(b['r_model'])}), mean abs. error {b['mae']:.3f}; evolution improved {e['improved']}, worse "
          f"{e['worse']} of {e['n']}, mean Dice gain {e['mean_gain']:+.4f}")  # fmt: skip
    print(f"held-out, before -> after: r {r(cb['r_all'])} -> {r(ca['r_all'])} (the model's masks "
          f"{r(cb['r_model'])} -> {r(ca['r_model'])}), mean abs. error {cb['mae']:.3f} -> {ca['mae']:.3f}; "
          f"evolution mean gain {cb['evolution']['mean_gain']:+.4f} -> "
          f"{ca['evolution']['mean_gain']:+.4f}")  # fmt: skip
    print(f"recommendation: {report['recommendation']}")
    out = Path(args.out)
    print(f"wrote {out / 'regressor_calibrated.pt'} and {out / 'calibration.json'}; evolve with it (its labelled "
          f"images are never tested on): {_run_with_calibrated(args, out, report)}")  # fmt: skip
    return 0


def _run_with_calibrated(args: argparse.Namespace, out: Path, report: dict) -> str:
    """The `sampot run` that evolves the test part of the calibration's split with the calibrated regressor, with the
    calibration's settings. A folder that holds a run's results would refuse it (its results were made with the
    folder's own regressor), so the run then goes to a folder of its own, on the same split file."""
    calibrated, settings = out / "regressor_calibrated.pt", report["settings"]
    folder = RunFolder(out)
    made = any((folder.entry(s) or {}).get("status") == "done" for s in ("train", "evaluate", "evolve", "aggregate"))
    target = out.parent / f"{out.name}_calibrated" if made else out
    split_file = args.split_file or (str(out / "splits.json") if made else None)
    split = ["--split-file", split_file] if split_file else []
    words = ["sampot", "run", str(args.data), "--out", str(target), *split, "--seed", str(args.seed),
             "--regressor", str(calibrated), "--structure", settings["structure"], "--model", settings["model"],
             "--prompt", settings["prompt"], "--sharpness", f"{settings['sharpness']:g}",
             "--steps", str(settings["steps"])]  # fmt: skip
    words += ["--regressor-size", str(report["regressor_size"])]
    for flag, value in (("--checkpoint", args.checkpoint), ("--mask-output", args.mask_output)):
        if value is not None:
            words += [flag, str(value)]
    if settings["prompt"] == "box" and settings.get("box_jitter") is not None:
        words += ["--box-jitter", str(settings["box_jitter"])]
    return shlex.join(words)
