"""Tasks for tests/experiment/test_parallel.py that a Dask worker process imports (kept apart from the test module,
whose imports would make every new worker load torch and the pipeline)."""

from __future__ import annotations

import os


def fails_on_b(image_id: str, scale: int) -> int:
    if image_id == "b":
        raise ValueError("b is broken")
    return scale * ord(image_id)


def dies_once(image_id: str, marker: str) -> str:
    """Kills its worker process the first time it runs image "c" (``marker``: a file that says it did)."""
    if image_id == "c" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # the worker process dies mid-task
    return image_id.upper()


def warns(image_id: str) -> str:
    """Warns, as a model or a reader may on a worker, then returns its id."""
    import warnings

    warnings.warn(f"something odd about {image_id}", UserWarning, stacklevel=1)
    return image_id
