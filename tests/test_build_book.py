"""The book build script's pure parts: parameters from the environment, and widget stripping (fast)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)


def test_parameters_from_env_types_and_targets():
    common, own = build_book.parameters_from_env(
        {"DATA": "/d", "MAX_IMAGES": "6", "LR": "2.5", "MASK_OUTPUT": "2", "HEATMAP_IMAGES": "1", "EPOCHS": ""}
    )
    assert common == {"data": "/d", "max_images": 6, "lr": 2.5, "mask_output": 2}
    assert own == {"02_prompt_sensitivity": {"heatmap_images": 1}}
    assert build_book.parameters_from_env({"MASK_OUTPUT": "best"})[0] == {"mask_output": "best"}


@pytest.mark.parametrize("name", build_book.NOTEBOOKS)
def test_every_notebook_declares_the_parameters_the_build_passes(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.md")
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name} needs exactly one parameters cell"
    declared = {line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line}
    passed = {p for p, _ in build_book.COMMON.values()}
    passed |= {p for nb_name, p, _ in build_book.ONLY.values() if nb_name == name}
    assert passed <= declared, f"{name} lacks parameters {passed - declared}"


def test_strip_widget_state_drops_widgets_keeps_other_outputs(tmp_path):
    nb = {
        "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {}}},
        "cells": [
            {"cell_type": "code", "outputs": [
                {"output_type": "display_data",
                 "data": {"application/vnd.jupyter.widget-view+json": {}, "text/plain": "bar 100%"}},
                {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {}}},
                {"output_type": "stream", "text": "hello"},
            ]},
            {"cell_type": "markdown", "source": "x"},
        ],
    }  # fmt: skip
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    build_book._strip_widget_state(path)
    out = json.loads(path.read_text())
    assert "widgets" not in out["metadata"]
    assert out["cells"][0]["outputs"] == [{"output_type": "stream", "text": "hello"}]
