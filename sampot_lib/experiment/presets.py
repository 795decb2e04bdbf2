"""Named sets of settings (:data:`~sampot_lib.defaults.PRESETS`) made into configs, and what a config changes of the
paper's setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sampot_lib.defaults import LR_DECAY_FACTOR, LR_DECAY_PATIENCE, PRESETS, SAFEGUARDS_OFF
from sampot_lib.errors import SampotError
from sampot_lib.experiment.config import STAGE_SETTINGS, ExperimentConfig

#: Preset values that are our reading where the paper is silent.
_READINGS = {"n_synthetic", "steps", "sharpness"}
#: What the paper used that a preset cannot set for you (the user picks the model and the data).
PAPER_CONTEXT = {"model": "vit_b"}


def _resolve(name: str, values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if out.get("safeguards") == "off":
        out["safeguards"] = dict(SAFEGUARDS_OFF)
    return out


def preset_values(name: str) -> dict[str, Any]:
    """The settings of a preset.

    Args:
        name: The preset's name (a key of :data:`~sampot_lib.defaults.PRESETS`).

    Returns:
        {setting: value}, the safeguards made a dict.

    Raises:
        SampotError: An unknown preset.
    """
    if name not in PRESETS:
        raise SampotError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}.")
    return _resolve(name, PRESETS[name])


def apply_preset(name: str, **overrides: Any) -> ExperimentConfig:
    """An :class:`ExperimentConfig` with a preset's settings, then the overrides.

    An override wins over the preset; :func:`differs_from_paper` then lists it.

    Args:
        name: The preset's name (a key of :data:`~sampot_lib.defaults.PRESETS`).
        **overrides: :class:`ExperimentConfig`'s fields (``data`` and ``out`` at least).

    Returns:
        The config, its ``preset`` set to ``name``.

    Raises:
        SampotError: An unknown preset, or a value :class:`ExperimentConfig` refuses.
    """
    values = preset_values(name) | overrides | {"preset": name}
    return ExperimentConfig(**values)


def differs_from_paper(config: ExperimentConfig, stages: tuple[str, ...] | None = None) -> list[str]:
    """The settings of a config that differ from the paper's.

    The book prints this beside its comparison table, so a run that is not the paper's setting says so.

    Args:
        config: The config.
        stages: Only the settings these stages' results depend on (:data:`STAGE_SETTINGS`; ``("train",)`` for
            ``sampot train-regressor``, whose safeguards and evolution settings are never used); None: all.

    Returns:
        One readable line each, e.g. ``"epochs: 5 (paper: 200)"``.
    """
    paper = preset_values("paper") | PAPER_CONTEXT
    lines = []
    for key, want in paper.items():
        have = getattr(config, key)
        if key == "safeguards":
            off = {k: v for k, v in have.items() if v is not None and k in ("trust_radius", "min_overlap",
                                                                           "max_area_ratio")}  # fmt: skip
            if off:
                shown = ", ".join(f"{k} {v:g}" for k, v in off.items())
                lines.append(f"safeguards: on ({shown}) (paper: off)")
            continue
        if key == "max_images" and have is not None:
            lines.append(f"max_images: {have} per split (paper: all images)")
        elif have != want and key in _READINGS:
            lines.append(f"{key}: {_fmt(have)} (paper preset: {_fmt(want)}; the paper gives no value)")
        elif have != want:
            lines.append(f"{key}: {_fmt(have)} (paper: {_fmt(want)})")
    if config.regressor_patience:
        lines.append(f"regressor_patience: {config.regressor_patience} epochs without a lower validation loss end "
                     "training (paper: all epochs; --regressor-patience 0 trains them all)")  # fmt: skip
    if config.regressor_schedule != "constant":
        lines.append(f"regressor_schedule: {config.regressor_schedule} (learning rate times {LR_DECAY_FACTOR} after "
                     f"{LR_DECAY_PATIENCE + 1} epochs without a lower validation loss) (paper: one rate)")  # fmt: skip
    if config.regressor_precision != "float32":
        lines.append(f"regressor_precision: {config.regressor_precision} forward passes in training (paper: float32)")
    if config.patience and config.patience < config.steps:
        lines.append(f"patience: {config.patience} steps without a rise end evolution (paper: every step; "
                     "--patience 0 takes them all)")  # fmt: skip
    if config.split_file is not None:
        lines.append(f"split: from {Path(config.split_file).name} (paper: its own 41 / 28 / 53 subjects)")
    if config.regressor is not None:
        lines.append(f"regressor: trained elsewhere ({Path(config.regressor).name}) (paper: trained on this split)")
    if stages is None:
        return lines
    used = {key for stage in stages for key in STAGE_SETTINGS[stage]}
    return [line for line in lines if {"split": "split_file"}.get(line.split(":")[0], line.split(":")[0]) in used]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return " / ".join(_fmt(x) for x in v)
    return str(v)
