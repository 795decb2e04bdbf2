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
    passed = {p for p, _ in build_book.COMMON.values()} - build_book.NOT_FOR.get(name, set())
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


def _theme_options(config_file: Path) -> dict:
    """The sphinx-book-theme options jupyter-book makes of a config file (it raises on a repository button without
    an address, as a build would)."""
    from jupyter_book.config import get_final_config

    sphinx, _ = get_final_config(user_yaml=config_file, cli_config={"latex_individualpages": False}, sourcedir=ROOT,
                                 raise_on_invalid=True)  # fmt: skip
    return sphinx["html_theme_options"]


def test_no_repository_address_means_no_launch_or_repository_button(tmp_path):
    assert "TODO" not in (ROOT / "_config.yml").read_text()
    opts = _theme_options(build_book.book_config({}, tmp_path / "c.yml"))
    providers = ("binderhub_url", "jupyterhub_url", "colab_url", "thebe", "jupyterlite_url")
    # jupyter-book fills in empty launch settings (no provider: the theme adds no launch button) and its own
    # repository as the address, which no button shows while the repository button is off.
    assert not any(opts.get("launch_buttons", {}).get(k) for k in providers), opts.get("launch_buttons")
    assert not opts.get("use_repository_button")


def test_the_repository_address_is_one_setting_that_adds_the_buttons(tmp_path):
    url = "https://github.com/someone/sampot"
    opts = _theme_options(build_book.book_config({build_book.REPO_ENV: url + "/"}, tmp_path / "c.yml"))
    assert opts["repository_url"] == url and opts["use_repository_button"] is True
    assert opts["launch_buttons"]["binderhub_url"] and opts["launch_buttons"]["colab_url"]


@pytest.mark.parametrize("bad", ["github.com/someone/sampot", "https://example.org/someone/sampot",
                                 "https://github.com/someone", "TODO(lead)"])  # fmt: skip
def test_a_repository_address_the_buttons_cannot_use_stops_the_build(tmp_path, bad):
    with pytest.raises(SystemExit, match=build_book.REPO_ENV):
        build_book.book_config({build_book.REPO_ENV: bad}, tmp_path / "c.yml")
    assert not (tmp_path / "c.yml").exists()


def test_parameter_cells_print_paths_relative_to_the_repository(tmp_path, monkeypatch):
    """Run.describe() names the data folder relative to the repository root, wherever the kernel runs."""
    from types import SimpleNamespace

    from sampot_lib.experiment.setup import Run

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    config = SimpleNamespace(data=str(tmp_path / "_build" / "data" / "phantom"), structure="left_lung",
                             model="sam_nano", checkpoint=None)  # fmt: skip
    text = Run(config, SimpleNamespace(ids=["a", "b"]), {"train": ["a"], "test": ["b"]}).describe()
    assert "data: _build/data/phantom: phantom (2 images, left_lung)" in text and str(tmp_path) not in text
    outside = Run(SimpleNamespace(**{**vars(config), "data": str(tmp_path.parent / "shared" / "jsrt")}),
                  SimpleNamespace(ids=["a"]), {}).describe()  # fmt: skip
    assert "data: ../shared/jsrt:" in outside


def test_the_litemedsam_chapter_runs_beside_the_others_unless_one_lane_is_asked():
    every = list(build_book.NOTEBOOKS)
    lanes = build_book.plan_lanes(every, 2)
    beside = ["07_litemedsam", "09_full_size"]  # own folders (or none): the rest share one run folder
    assert lanes == [[n for n in every if n not in beside], beside]
    assert build_book.plan_lanes(every, 1) == [every]
    assert build_book.plan_lanes(["05_results", "02_prompt_sensitivity"], 2) == [["02_prompt_sensitivity",
                                                                                  "05_results"]]  # fmt: skip


def test_a_bad_lane_count_stops_the_build_before_any_work(monkeypatch, capsys):
    monkeypatch.setenv("BOOK_LANES", "3")
    monkeypatch.setattr(build_book, "ensure_phantoms", lambda *a: pytest.fail("work started"))
    with pytest.raises(SystemExit, match="BOOK_LANES='3': use 1"):
        build_book.main(["--skip-notebooks"])


@pytest.mark.parametrize(
    "var, value, message",
    [
        ("PHANTOM_SIZE", "10", "PHANTOM_SIZE='10': it must be a whole number in [64, 8000], got 10."),
        ("PHANTOM_N", "0", "PHANTOM_N='0': it must be a whole number >= 1, got 0."),
        ("DATA", "/no/such/set", "DATA='/no/such/set': no such file or folder; give a folder-format data set"),
        ("DATA", "{tmp}", "no images/ folder there"),
        ("MODEL", "vit_x", "MODEL='vit_x': no such model; known: vit_b"),
        ("LR", "1e999", "LR='1e999': parameter 'lr' must be a finite number > 0, got inf."),
        ("MAX_IMAGES", "2", "MAX_IMAGES='2': parameter 'max_images' must be at least 3"),
        ("CHECKPOINT", "{tmp}/none.pth", "no such file or folder; give a checkpoint file"),
        # a chapter's own value, checked before any chapter starts as the common ones are
        (
            "BOX_STRUCTURES",
            "bogus",
            "BOX_STRUCTURES='bogus': its first structure must be one the data set has: left_lung",
        ),
        ("BOX_STRUCTURES", "heart left_lung", "its first structure must be one the data set has"),  # phantoms: lungs
        ("BOX_IMAGES", "2", "BOX_IMAGES='2': parameter 'max_images' must be at least 3"),
        ("BOX_EPOCHS", "0", "BOX_EPOCHS='0': parameter 'epochs' must be"),
        (
            "BOX_EXTRA_JITTERS",
            "0.1 2",
            "BOX_EXTRA_JITTERS='0.1 2': parameter 'extra_jitters' must hold fractions in [0, 1]",
        ),
        ("SEEDS", "1 1", "SEEDS='1 1': parameter 'seeds' lists a seed twice"),
        ("BOX_SEEDS", "-1", "BOX_SEEDS='-1': parameter 'seeds': each seed must be a whole number in [0,"),
        ("HEATMAP_IMAGES", "0", "HEATMAP_IMAGES='0': it must be a whole number >= 1, got 0."),
        ("COMPARE_IMAGES", "-1", "COMPARE_IMAGES='-1': it must be a whole number >= 0, got -1."),
    ],
)
def test_a_value_no_chapter_can_use_stops_the_build_before_any_work(monkeypatch, tmp_path, var, value, message):
    notebook = ROOT / "notebooks" / "02_prompt_sensitivity.ipynb"
    kept = notebook.read_bytes() if notebook.is_file() else None
    monkeypatch.setenv("BOOK_LANES", "1")
    monkeypatch.setenv(var, value.format(tmp=tmp_path))
    monkeypatch.setattr(build_book, "ensure_phantoms", lambda *a: pytest.fail("work started"))
    monkeypatch.setattr(build_book, "run_notebook", lambda *a: pytest.fail("a notebook started"))
    with pytest.raises(SystemExit) as stop:
        build_book.main(["--notebooks-only"])
    assert message.format(tmp=tmp_path) in str(stop.value)
    assert (notebook.read_bytes() if notebook.is_file() else None) == kept  # no chapter deleted
