"""The command line as the docs show it: every ``sampot ...`` line of the README and the book parses with the real
parser, every argument says what it is and what happens without it, and help answers without importing torch."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import re
import shlex
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from sampot_lib import __version__
from sampot_lib.cli.main import _APPLY_PROCESS_SETTINGS, EPILOG, Lazy, build_parser, main
from sampot_lib.defaults import TUNE_EPOCHS, TUNE_LR
from sampot_lib.models.registry import model_names

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md")), *sorted((ROOT / "notebooks").glob("*.md"))]
PLACEHOLDER = re.compile(r"[A-Z][A-Z_]*")  # NAME, DIR, DATA: a value the reader fills in


def doc_commands() -> list[tuple[str, str, bool]]:
    """(where, command line, complete) of every ``sampot ...`` in the docs: the lines of code blocks (complete,
    unless elided with ``...``; a trailing backslash joins the next line) and inline code spans (maybe a command's
    name alone, in prose)."""
    found: list[tuple[str, str, bool]] = []
    for path in DOCS:
        text = path.read_text()
        lines = text.splitlines()
        in_block, i = False, 0
        while i < len(lines):
            if lines[i].lstrip().startswith("```"):
                in_block = not in_block
            elif in_block and (m := re.match(r"\s*(?:\$ )?(sampot(?: .*)?)$", lines[i])):
                line, start = m.group(1), i
                while line.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line.rstrip()[:-1] + " " + lines[i].strip()
                found.append((f"{path.name}:{start + 1}", line, "..." not in shlex.split(line, comments=True)))
            i += 1
        for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
            span = " ".join(m.group(1).split())
            if span.startswith("sampot "):
                found.append((f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}", span, False))
    return found


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def _all_parsers(parser: argparse.ArgumentParser, name: str = "sampot"):
    yield name, parser
    sub = _subparsers(parser)
    for word, child in sub.choices.items() if sub else ():
        yield from _all_parsers(child, f"{name} {word}")


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    complete = [line for _, line, whole in COMMANDS if whole]
    assert len(complete) >= 15 and len(COMMANDS) >= 30  # the extraction itself works
    assert "sampot data check path/to/your/set" in {" ".join(shlex.split(c, comments=True)) for c in complete}
    assert any("--seeds 0 1 2" in c for c in complete)  # a line continued with a backslash is joined


@pytest.mark.parametrize(("where", "line", "complete"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_every_sampot_line_in_the_docs_parses(where, line, complete):
    tokens = [t for t in shlex.split(line, comments=True)[1:] if t != "..."]
    parser = build_parser()
    leaf, i = parser, 0
    while (sub := _subparsers(leaf)) is not None and i < len(tokens) and not tokens[i].startswith("-"):
        assert tokens[i] in sub.choices, f"{where}: `{line}`: no command {tokens[i]!r}"
        leaf, i = sub.choices[tokens[i]], i + 1
    positionals = [a for a in leaf._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    for k, action in enumerate(positionals):  # a placeholder where a choice goes: its first choice
        j = i + k
        if j < len(tokens) and action.choices and PLACEHOLDER.fullmatch(tokens[j]):
            tokens[j] = sorted(action.choices)[0]
    for token in tokens:
        if token.startswith("--"):
            known = leaf._option_string_actions.keys() | parser._option_string_actions.keys()
            assert token in known, f"{where}: `{line}`: {leaf.prog} has no option {token}"
    err = io.StringIO()
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            parser.parse_args(tokens)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return
        message = err.getvalue()
        assert not complete and "the following arguments are required" in message, f"{where}: `{line}`: {message}"


def test_every_argument_has_help_that_says_its_default():
    problems = []
    for where, p in _all_parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            name = "/".join(a.option_strings) or a.dest
            if not a.help:
                problems.append(f"{where} {name}: no help")
            elif a.option_strings and not a.required and "default" not in a.help:
                problems.append(f"{where} {name}: says not what happens without it")
        if "default: None" in p.format_help():
            problems.append(f"{where}: prints 'default: None'")
    assert not problems, "\n".join(problems)


def test_help_names_every_model_and_the_calibration_defaults():
    models = model_names()
    assert all(name in EPILOG for name in models), models
    parser = build_parser()
    for where, p in _all_parsers(parser):
        if "--model" in p._option_string_actions:
            assert all(name in p._option_string_actions["--model"].help for name in models), where
    calibrate = dict(_all_parsers(parser))["sampot calibrate"]._option_string_actions
    assert f"(default: {TUNE_EPOCHS})" in calibrate["--epochs"].help
    assert float(re.search(r"\(default: ([^)]+)\)", calibrate["--tune-lr"].help).group(1)) == TUNE_LR
    assert "the regressor's model" in calibrate["--model"].help


def test_every_command_resolves_to_a_function():
    for where, p in _all_parsers(build_parser()):
        if _subparsers(p) is None:
            func = p.get_default("func")
            assert callable(func.resolve() if isinstance(func, Lazy) else func), where
    assert callable(_APPLY_PROCESS_SETTINGS.resolve())
    lazy = Lazy("sampot_lib.cli.evolve:cmd_evolve")
    assert pickle.loads(pickle.dumps(lazy)) == lazy


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"sampot {__version__}\n"


def test_help_version_and_argument_errors_import_no_torch(tmp_path):
    """torch takes seconds to import: help, the version and a mistyped value (argparse's or check_args') answer
    without it."""
    code = (
        "import sys\nfrom sampot_lib.cli.main import main\ncodes = []\n"
        "for argv in (['--help'], ['--version'], ['run', '--help'], ['data', 'split', '--help'],\n"
        "             ['run', 'D', '--out', 'O', '--steps', 'ten'], ['nope'],\n"
        "             ['run', 'D', '--out', 'O', '--epochs', '0'], ['data', 'phantom', '--n', '0', '--out', 'X']):\n"
        "    try:\n        codes.append(main(argv))\n    except SystemExit as exc:\n        codes.append(exc.code)\n"
        "print(codes, sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])\n"
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0, 2, 2, 2, 2] []", done.stdout[-500:]
    assert "--epochs" in done.stderr and "--n" in done.stderr  # the two values check_args refused
