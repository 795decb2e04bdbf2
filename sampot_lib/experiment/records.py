"""The CSV and JSON records of a run: rows as CSV, strict JSON (never NaN), and readers whose errors name the file."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sampot_lib.errors import SampotError
from sampot_lib.files import write_text


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as CSV, atomically.

    Args:
        path: The file.
        rows: Dicts with the same keys (the first row's give the columns); none: an empty file.
    """
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV written by :func:`write_csv`.

    Args:
        path: The file.

    Returns:
        One dict per row, numbers parsed back to float.

    Raises:
        SampotError: The file is missing or not a readable CSV file, naming it.
    """

    def parse(v: str) -> Any:
        try:
            return float(v)
        except ValueError:
            return v

    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]
    except FileNotFoundError:
        raise SampotError(f"{path}: no such file; run the stage that writes it first.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SampotError(f"{path}: not a readable CSV file ({exc}).") from exc


def finite_json(obj: Any, nonfinite: str = "refuse", where: str = "JSON") -> tuple[Any, list[str]]:
    """``obj`` with every NaN or infinite float replaced by None, and the paths of those values ("a.b[3]").

    ``nonfinite="refuse"`` raises SampotError naming them instead (JSON has no NaN; Python's ``json`` would write a
    bare ``NaN`` that other readers reject).
    """
    found: list[str] = []

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(x, float):
            if not math.isfinite(x):
                found.append(path or "(top)")
                return None
            return float(x)
        return x

    clean = walk(obj, "")
    if found and nonfinite == "refuse":
        raise SampotError(f"{where}: refusing to write NaN or Infinity (at {listed(found)}); a setting made the "
                          "numbers diverge (a step size too large?).")  # fmt: skip
    return clean, found


def listed(items: list[str]) -> str:
    """The first five of ``items``, comma-separated, and how many more: a list a one-line message can hold."""
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def json_text(obj: Any, *, indent: int | None = 1, nonfinite: str = "refuse", where: str = "JSON") -> str:
    """``obj`` as strict JSON text ending in a newline: never NaN or Infinity. ``nonfinite="refuse"`` raises
    SampotError naming them; ``"null"`` writes null in their place and warns naming them (:func:`finite_json`)."""
    return _strict_json(obj, indent, nonfinite, where)[0]


def _strict_json(obj: Any, indent: int | None, nonfinite: str, where: str) -> tuple[str, list[str]]:
    clean, found = finite_json(obj, nonfinite, where=where)
    if found:
        warnings.warn(f"{where}: {len(found)} value(s) were NaN or infinite and are written as null "
                      f"({listed(found)}).", stacklevel=4)  # fmt: skip
    return json.dumps(clean, indent=indent, allow_nan=False) + "\n", found


def write_json(path: str | Path, obj: Any, *, indent: int | None = 1, nonfinite: str = "refuse") -> list[str]:
    """Write an object as strict JSON (see :func:`json_text`), atomically.

    Args:
        path: The file.
        obj: The object.
        indent: JSON's indent; None: one line.
        nonfinite: ``"refuse"``: raise on a NaN or infinite value; ``"null"``: write null in its place and warn.

    Returns:
        The paths of the values written as null ("a.b[3]").

    Raises:
        SampotError: A NaN or infinite value with ``nonfinite="refuse"``, naming where.
    """
    text, found = _strict_json(obj, indent, nonfinite, str(path))
    write_text(path, text)
    return found


def read_json(path: str | Path, what: str = "file") -> Any:
    """Read a JSON file.

    Args:
        path: The file.
        what: What the file is, for the error.

    Returns:
        The parsed JSON.

    Raises:
        SampotError: A missing, unreadable or damaged file, naming it.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SampotError(f"{path}: no such {what}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SampotError(f"{path}: the {what} is damaged or not JSON ({type(exc).__name__}: {exc}).") from exc
