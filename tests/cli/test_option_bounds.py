"""A number option's refusal states the range that the code behind it enforces, and the values at the edge of that
range are taken: the command line reads each bound from where the library keeps it (no first check with another)."""

from __future__ import annotations

import contextlib
import io
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sampot_lib.cli.checks import check_args
from sampot_lib.cli.main import build_parser
from sampot_lib.defaults import MAX_REGRESSOR_SIZE, MAX_STEPS, MIN_LABELLED, MIN_MAX_IMAGES
from sampot_lib.errors import SAFEGUARD_RANGES, SampotError, check_safeguards, regressor_size

EVOLVE = ["evolve", "missing.png", "--click", "1", "1", "--out", "o"]
RUN = ["run", "missing", "--out", "o"]


def _verdict(argv: list[str], flag: str) -> str | None:
    """None if the command line takes ``flag``'s value (a later check may still refuse a missing file), else the
    message that refuses it."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(argv)
        check_args(args)
    except SystemExit:
        return err.getvalue()
    except SampotError as exc:
        return str(exc) if str(exc).startswith(flag) else None
    return None


@pytest.mark.parametrize(
    ("argv", "flag", "edges", "beyond", "stated"),
    [
        (EVOLVE, "--min-overlap", ["0", "1"], ["-0.01", "1.5"], "must be in [0, 1]"),
        (EVOLVE, "--max-area-ratio", ["1"], ["0.5", "0"], "must be >= 1"),
        (EVOLVE, "--trust-radius", ["1e-9"], ["0", "-1"], "> 0"),
        (EVOLVE, "--steps", ["0", str(MAX_STEPS)], ["-1", str(MAX_STEPS + 1)], f"in [0, {MAX_STEPS}]"),
        (["heatmap", "missing.png", "--mask", "m.png", "--out", "h.csv"], "--step", ["1"], ["0", "-1"], ">= 1"),
        (RUN, "--epochs", ["1"], ["0", "-1"], ">= 1"),
        (RUN, "--max-images", [str(MIN_MAX_IMAGES)], [str(MIN_MAX_IMAGES - 1), "-1"], f"at least {MIN_MAX_IMAGES}"),
        (RUN, "--regressor-size", ["32", str(MAX_REGRESSOR_SIZE)], ["16", "-5", str(MAX_REGRESSOR_SIZE + 16)],
         f"a multiple of 16 from 32 to {MAX_REGRESSOR_SIZE}"),
        (RUN, "--steps", [str(MAX_STEPS)], [str(MAX_STEPS + 1)], f"in [0, {MAX_STEPS}]"),
        (["app", "missing.png"], "--port", ["1", "65535"], ["0", "-1", "65536"], "in [1, 65535]"),
        (["calibrate", "missing", "--regressor", "r.pt", "--out", "o"], "--labelled", [str(MIN_LABELLED)],
         [str(MIN_LABELLED - 1), "-1"], f"at least {MIN_LABELLED}"),
    ],
)  # fmt: skip
def test_an_option_states_the_bound_it_enforces(argv, flag, edges, beyond, stated):
    for value in edges:
        assert _verdict([*argv, flag, value], flag) is None, value
    for value in beyond:
        message = _verdict([*argv, flag, value], flag)
        assert message is not None and stated in message, (value, message)


_AROUND_BOUNDS = [0.0, -0.0, 1.0, 5e-324, -5e-324, 1 - 1e-16, 1 + 2e-16, 0.5, 2.0, math.inf, -math.inf, math.nan]
_FLAG = {"trust_radius": "--trust-radius", "min_overlap": "--min-overlap", "max_area_ratio": "--max-area-ratio"}


@given(key=st.sampled_from(sorted(_FLAG)), x=st.floats() | st.sampled_from(_AROUND_BOUNDS))
def test_a_safeguard_option_takes_what_the_safeguards_take(key, x):
    try:
        check_safeguards({key: x})
        library_takes = True
    except SampotError:
        library_takes = False
    assert (_verdict([*EVOLVE, _FLAG[key], repr(x)], _FLAG[key]) is None) == library_takes, (key, x)
    assert set(SAFEGUARD_RANGES) >= set(_FLAG)


@given(n=st.integers(-100, 2 * MAX_REGRESSOR_SIZE))
def test_the_regressor_size_option_takes_what_the_run_takes(n):
    try:
        regressor_size(n, high=MAX_REGRESSOR_SIZE)
        library_takes = True
    except SampotError:
        library_takes = False
    assert (_verdict([*RUN, "--regressor-size", str(n)], "--regressor-size") is None) == library_takes, n
