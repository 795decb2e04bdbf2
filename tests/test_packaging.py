"""The package as it is shipped: the wheel's contents, one version, the licence, the citation file, the changelog
and ``python -m sampot_lib``."""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import sampot_lib

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of what the build reads (pyproject, README, LICENSE, the package), so that the
    build writes nothing into the working tree; pip without build isolation uses this environment's setuptools."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "sampot_lib", src / "sampot_lib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list(out.glob("sampot-*.whl"))
    assert len(wheels) == 1, wheels
    print(f"wheel built in {time.perf_counter() - start:.1f} s")
    return wheels[0]


def test_the_wheel_holds_the_weights_the_app_files_the_types_and_the_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "sampot_lib/models/weights/sam_nano.pt",
        "sampot_lib/models/weights/sam_nano.md",
        "sampot_lib/ui/app_files/voila/templates/sampot/conf.json",
        "sampot_lib/ui/app_files/voila/templates/sampot/index.html.j2",
        "sampot_lib/py.typed",
        "sampot_lib/__main__.py",
    ):
        assert needed in names, needed
    shipped = json.loads((ROOT / "sampot_lib/method/regressors/registry.json").read_text())["regressors"]
    assert shipped and "sampot_lib/method/regressors/registry.json" in names
    for record in shipped:  # every shipped regressor and its model card
        for name in (record["filename"], record["card"]):
            assert f"sampot_lib/method/regressors/{name}" in names, name
    dist_info = f"sampot-{sampot_lib.__version__}.dist-info"
    assert any(re.fullmatch(rf"{re.escape(dist_info)}/(licenses/)?LICENSE", n) for n in names), sorted(names)
    assert not any(n.startswith(("tests/", "scripts/", "notebooks/", "book/")) for n in names)


def test_the_wheel_metadata_has_one_version_and_the_spdx_licence(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta = email.parser.Parser().parsestr(zf.read(f"sampot-{sampot_lib.__version__}.dist-info/METADATA").decode())
    assert meta["Version"] == sampot_lib.__version__
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n\nCopyright (c) 2026 the sampot authors\n")


def test_the_version_is_written_once():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sampot_lib.__version__"}
    text = "\n".join(p.read_text() for p in (ROOT / "sampot_lib").rglob("*.py"))
    assert len(re.findall(r"^__version__\s*=", text, re.M)) == 1


def test_the_changelog_names_this_version_and_what_is_unreleased():
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert versions[0] == "Unreleased" and versions[1] == sampot_lib.__version__


def test_citation_cff_is_valid_against_the_cff_1_2_0_schema():
    yaml = pytest.importorskip("yaml")
    jsonschema = pytest.importorskip("jsonschema")
    # The schema of the Citation File Format 1.2.0 (citation-file-format.github.io/1.2.0/schema.json, CC-BY-4.0),
    # as cffconvert 2.0.0 ships it. `cffconvert --validate` (which pins jsonschema<4, and so cannot join the
    # test environment) accepts the file too.
    schema = json.loads((Path(__file__).parent / "cff-1.2.0-schema.json").read_text())
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(cff)]
    assert not errors, errors
    assert cff["version"] == sampot_lib.__version__ and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert paper["title"] == "Task-driven Prompt Evolution for Foundation Models" and paper["year"] == 2023
    assert [a["family-names"] for a in paper["authors"]] == ["Sathish", "Venkataramani", "Shriram", "Sudhakar"]


def test_python_m_sampot_lib_is_the_sampot_command():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    shown = subprocess.run([sys.executable, "-m", "sampot_lib", "--help"], capture_output=True, text=True, env=env,
                           timeout=120)  # fmt: skip
    assert shown.returncode == 0 and shown.stdout.startswith("usage: sampot"), shown.stderr
    wrong = subprocess.run([sys.executable, "-m", "sampot_lib", "no-such-command"], capture_output=True, text=True,
                           env=env, timeout=120)  # fmt: skip
    assert wrong.returncode == 2 and "no-such-command" in wrong.stderr


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci if line.startswith("python3 -m venv .venv"))
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert any(command in block.splitlines() for block in blocks), command


def test_both_conda_environments_take_the_same_cpu_pytorch():
    def torch_lines(path: Path) -> list[str]:
        lines = [line.strip() for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        return [line for line in lines if re.match(r"- (pytorch|torchvision)", line)]

    root, binder = torch_lines(ROOT / "environment.yml"), torch_lines(ROOT / "binder" / "environment.yml")
    assert root == binder and any(line.startswith("- pytorch-cpu") for line in root), (root, binder)
