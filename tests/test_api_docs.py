"""The book's API page renders every docstring it shows without a Sphinx warning (autodoc and napoleon, the book's
settings), checked in seconds by scripts/check_api_docs.py (`make api-check`) rather than by the whole book."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _check():
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    spec = importlib.util.spec_from_file_location("check_api_docs", ROOT / "scripts" / "check_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_page_builds_without_a_warning(capsys):
    assert _check().main([]) == 0, capsys.readouterr().err


def test_a_docstring_that_renders_garbled_fails_the_check(monkeypatch, capsys):
    from sampot_lib.method.prompts import Safeguards

    garbled = "Limits.\n\n    trust_radius: a fraction of\n        the longer side.\n    min_overlap: an IoU.\n"
    monkeypatch.setattr(Safeguards, "__doc__", garbled)
    assert _check().main([]) != 0
    assert "Safeguards" in capsys.readouterr().err
