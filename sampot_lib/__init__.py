"""sampot: task-driven prompt evolution (SAMPOT) for promptable segmentation models."""

from sampot_lib.errors import SampotError

__version__ = "0.1.0"
__all__ = ["SampotError", "__version__"]
