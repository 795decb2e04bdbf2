"""sampot: task-driven prompt evolution (SAMPOT) for promptable segmentation models.

The main API is importable from the package top (``from sampot_lib import load_model, evolve_prompt, Prompt``);
each name is imported on first use (PEP 562), so ``import sampot_lib`` stays light (no torch until needed).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sampot_lib.errors import SampotError

#: The one place the version is written: pyproject.toml reads it from here at build time (setuptools'
#: ``dynamic = ["version"]``, read from this file's text, not by importing it), so the installed metadata, this
#: attribute and what run folders and regressor files record cannot differ, in a source tree on PYTHONPATH too.
__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    "load_model": "sampot_lib.models.registry",
    "evolve_prompt": "sampot_lib.method.evolve",
    "Prompt": "sampot_lib.method.prompts",
    "Safeguards": "sampot_lib.method.prompts",
    "RegressorScorer": "sampot_lib.method.scoring",
    "dice_heatmap": "sampot_lib.method.heatmap",
    "load_regressor": "sampot_lib.method.regressor",
    "fit_regressor": "sampot_lib.method.regressor_training",
    "score_mask": "sampot_lib.method.regressor",
    "load_shipped_regressor": "sampot_lib.method.shipped",
    "find_shipped": "sampot_lib.method.shipped",
    "run_experiment": "sampot_lib.experiment.runner",
    "ExperimentConfig": "sampot_lib.experiment.config",
    "FolderDataset": "sampot_lib.data.folder",
}

__all__ = [
    "ExperimentConfig",
    "FolderDataset",
    "Prompt",
    "RegressorScorer",
    "Safeguards",
    "SampotError",
    "__version__",
    "dice_heatmap",
    "evolve_prompt",
    "find_shipped",
    "fit_regressor",
    "load_model",
    "load_regressor",
    "load_shipped_regressor",
    "run_experiment",
    "score_mask",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from sampot_lib.data.folder import FolderDataset
    from sampot_lib.experiment.config import ExperimentConfig
    from sampot_lib.experiment.runner import run_experiment
    from sampot_lib.method.evolve import evolve_prompt
    from sampot_lib.method.heatmap import dice_heatmap
    from sampot_lib.method.prompts import Prompt, Safeguards
    from sampot_lib.method.regressor import load_regressor, score_mask
    from sampot_lib.method.regressor_training import fit_regressor
    from sampot_lib.method.scoring import RegressorScorer
    from sampot_lib.method.shipped import find_shipped, load_shipped_regressor
    from sampot_lib.models.registry import load_model


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'sampot_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
