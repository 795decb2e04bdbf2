"""The API's public names document their parameters in Google style, as napoleon reads it.

Checked: every callable in ``sampot_lib.__all__`` and every member the book's API page (``book/api.md``) shows, read
from its ``.. automodule::`` directives (a bare ``:members:``: the module's public functions and classes defined in
it), so that a member added to the page is checked with no change here. For each (a class: its constructor, through
the class docstring) and every public method of those classes, the names under ``Args:`` are the signature's
parameters, in order (a record without ``Args:`` lists them under ``Attributes:``), and a callable that returns
something has a ``Returns:`` (or ``Yields:``) section. A parameter renamed or added without its line in the
docstring fails here.

Properties are attributes, not calls: they are not checked (a one-line docstring says what they hold). A protocol
class is never constructed, so its constructor is not checked either (its ``Attributes:`` name what an
implementation has); its methods are.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sampot_lib

#: napoleon's section headers, by what they document
ARGS = ("Args", "Arguments", "Parameters", "Params")
ATTRIBUTES = ("Attributes",)
RETURNS = ("Returns", "Return", "Yields", "Yield")
SECTIONS = (*ARGS, *ATTRIBUTES, *RETURNS, "Keyword Args", "Keyword Arguments", "Other Parameters", "Raises",
            "Warns", "Example", "Examples", "Note", "Notes", "See Also", "Warning", "Warnings", "References", "Todo",
            "Methods")  # fmt: skip
_HEADER = re.compile(r"^(" + "|".join(re.escape(s) for s in SECTIONS) + r"):\s*$")
#: ``name:``, ``name (type):``, ``*args:`` or ``**kwargs:`` at the start of an entry
_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:(?:\s|$)")
#: names not held to the convention, and why
EXEMPT = {
    "__version__": "a string, not a callable",
    "SampotError": "an exception: its one argument is the message",
}


def sections(doc: str) -> dict[str, list[str]]:
    """A docstring's sections: header -> the body's lines, dedented to the section's own indent (blank lines kept)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip():
            if current is not None:
                out[current].append("")
            continue
        if not line.startswith((" ", "\t")):  # a header, or prose that ends the section
            match = _HEADER.match(line)
            current = match.group(1) if match else None
            if current is not None:
                out.setdefault(current, [])
            continue
        if current is not None:
            out[current].append(line)
    for name, lines in out.items():
        indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
        out[name] = [x[indent:] for x in lines]
    return out


def entries(body: list[str]) -> list[str]:
    """The names of a section's entries: its lines at the section's own indent (deeper ones continue an entry)."""
    names = []
    for line in body:
        if line and not line[0].isspace():
            match = _ENTRY.match(line)
            names.append(match.group(1) if match else f"<not an entry: {line.strip()!r}>")
    return names


def documented(doc: str, headers: tuple[str, ...]) -> list[str] | None:
    """The entry names under the first of ``headers`` the docstring has, or None without any of them."""
    found = sections(doc)
    for header in headers:
        if header in found:
            return entries(found[header])
    return None


def parameters(obj: Callable[..., Any]) -> list[str]:
    """The signature's parameter names (``*args``, ``**kwargs`` with their stars), without self and cls."""
    names = []
    for p in inspect.signature(obj).parameters.values():
        if p.name in ("self", "cls"):
            continue
        stars = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(stars + p.name)
    return names


def _returns_something(obj: Callable[..., Any]) -> bool:
    annotation = inspect.signature(obj).return_annotation
    return annotation not in (inspect.Signature.empty, None, type(None), "None")


def problems(obj: Callable[..., Any], name: str) -> list[str]:
    """What ``obj``'s docstring gets wrong (an empty list when nothing): each mismatch between its ``Args:``
    entries and the signature, a missing ``Returns:``."""
    doc = obj.__doc__
    if not doc or not doc.strip():
        return [f"{name}: no docstring"]
    found: list[str] = []
    if not inspect.cleandoc(doc).splitlines()[0].strip():
        found.append(f"{name}: the docstring's first line is empty; begin with a one-line summary")
    is_class = inspect.isclass(obj)
    if is_class and getattr(obj, "_is_protocol", False):
        return found  # a protocol's signature is typing.Protocol's (*args, **kwargs), not a constructor of its own
    want = parameters(obj)
    have = documented(doc, ARGS + ATTRIBUTES if is_class else ARGS)
    if have is None and want:
        where = "Args: or Attributes:" if is_class else "Args:"
        found.append(f"{name}: no {where} section for its parameters {want}")
    elif have is not None:
        # *args and **kwargs may be written with or without their stars
        bare_have, bare_want = [n.lstrip("*") for n in have], [n.lstrip("*") for n in want]
        if bare_have != bare_want:
            missing = [n for n in want if n.lstrip("*") not in bare_have]
            extra = [n for n in have if n.lstrip("*") not in bare_want]
            why = [f"undocumented {missing}"] * bool(missing) + [f"not parameters {extra}"] * bool(extra)
            found.append(f"{name}: documents {have}, the signature has {want} ({'; '.join(why) or 'another order'})")
    if not inspect.isclass(obj) and _returns_something(obj) and documented(doc, RETURNS) is None:
        found.append(f"{name}: returns {inspect.signature(obj).return_annotation}, but has no Returns: section")
    return found


def public_methods(cls: type) -> list[tuple[str, Callable[..., Any]]]:
    """The methods a user calls: defined by the class itself, not private nor dunder (``__call__`` excepted), not
    properties."""
    out = []
    for attr, raw in vars(cls).items():
        if attr.startswith("_") and attr != "__call__":
            continue
        if isinstance(raw, (classmethod, staticmethod)) or inspect.isfunction(raw):
            out.append((attr, getattr(cls, attr)))
    return out


NAMES = sorted(n for n in sampot_lib.__all__ if n not in EXEMPT)


@pytest.mark.parametrize("name", NAMES)
def test_a_public_name_documents_its_parameters(name):
    obj = getattr(sampot_lib, name)
    assert callable(obj), f"{name} is in __all__ but not callable; add it to EXEMPT with the reason"
    assert problems(obj, name) == []


@pytest.mark.parametrize("name", [n for n in NAMES if n[0].isupper()])
def test_a_public_class_documents_its_methods_parameters(name):
    cls = getattr(sampot_lib, name)
    found = [p for attr, method in public_methods(cls) for p in problems(method, f"{name}.{attr}")]
    assert found == []


def test_the_exempt_names_are_in_all():
    assert set(EXEMPT) <= set(sampot_lib.__all__)


# -- the book's API page ----------------------------------------------------------------------------------------------

API_PAGE = Path(__file__).parents[1] / "book" / "api.md"
#: ``.. automodule:: name`` and the option lines indented under it
_AUTOMODULE = re.compile(r"^\.\. automodule::[ \t]*(\S+)[ \t]*\n((?:[ \t]+:.*\n?)*)", re.MULTILINE)
_MEMBERS = re.compile(r"^[ \t]+:members:(.*)$", re.MULTILINE)


def page_members(text: str) -> list[tuple[str, str]]:
    """(module, name) of every member an API page's automodule directives show, in the page's order.

    ``:members: a, b`` shows those names; a bare ``:members:`` every public function and class the module defines
    itself (what autodoc shows: imported names and names starting with ``_`` left out).
    """
    out = []
    for match in _AUTOMODULE.finditer(text):
        module_name, options = match.group(1), match.group(2)
        members = _MEMBERS.search(options)
        if members is None:
            continue
        names = [n.strip() for n in members.group(1).split(",") if n.strip()]
        if not names:
            module = importlib.import_module(module_name)
            names = [
                n for n, obj in vars(module).items()
                if not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                and obj.__module__ == module_name
            ]  # fmt: skip
        out += [(module_name, n) for n in names]
    return out


PAGE = page_members(API_PAGE.read_text(encoding="utf-8"))
#: callables of the page, "module.name"; a constant on the page (documented by a ``#:`` comment) is not one
PAGE_CALLABLES = [f"{m}.{n}" for m, n in PAGE if callable(getattr(importlib.import_module(m), n))]


def _page_object(qualified: str) -> Any:
    module, name = qualified.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("qualified", PAGE_CALLABLES)
def test_a_page_member_documents_its_parameters(qualified):
    assert problems(_page_object(qualified), qualified) == []


@pytest.mark.parametrize("qualified", [q for q in PAGE_CALLABLES if inspect.isclass(_page_object(q))])
def test_a_page_class_documents_its_methods_parameters(qualified):
    cls = _page_object(qualified)
    found = [p for attr, method in public_methods(cls) for p in problems(method, f"{qualified}.{attr}")]
    assert found == []


def test_the_page_is_read_whole():
    modules = {m for m, _ in PAGE}
    assert len(modules) == API_PAGE.read_text(encoding="utf-8").count(".. automodule::")
    assert ("sampot_lib.method.evolve", "evolve_prompt") in PAGE
    # a bare :members: lists what the module defines, not what it imports
    scoring = {n for m, n in PAGE if m == "sampot_lib.method.scoring"}
    assert {"RegressorScorer", "soft_mask", "choose_blend_weight"} <= scoring
    assert not {"SegmentationRegressor", "to_input"} & scoring


def test_a_member_added_to_the_page_is_checked():
    page = """
```{eval-rst}
.. automodule:: sampot_lib.method.metrics
   :members: dice, iou

.. automodule:: sampot_lib.method.synth
   :members:
   :noindex:
```
"""
    found = page_members(page)
    assert found[:2] == [("sampot_lib.method.metrics", "dice"), ("sampot_lib.method.metrics", "iou")]
    assert ("sampot_lib.method.synth", "candidate_masks") in found
    assert ("sampot_lib.method.synth", "check_mask") not in found  # imported there, defined in sampot_lib.data.io


# -- the check itself: a docstring that lags its signature fails ----------------------------------------------------


def _documented(a: int, b: int = 0) -> int:
    """Add two numbers.

    A paragraph that mentions ``a`` and ``b`` inline: prose is not a section.

    Args:
        a: The first number, described on
            two lines.
        b (int): The second number.

    Returns:
        The sum.

    Raises:
        ValueError: Never.
    """
    return a + b


def test_the_parser_reads_args_and_returns():
    assert problems(_documented, "f") == []
    found = sections(_documented.__doc__)
    assert entries(found["Args"]) == ["a", "b"]
    assert entries(found["Raises"]) == ["ValueError"]


def test_a_renamed_or_added_parameter_fails():
    def renamed(a: int, c: int = 0) -> int:
        return a + c

    def added(a: int, b: int = 0, c: int = 0) -> int:
        return a + b + c

    for func in (renamed, added):
        func.__doc__ = _documented.__doc__
        found = problems(func, "f")
        assert len(found) == 1 and "undocumented ['c']" in found[0], found


def test_a_missing_returns_section_fails():
    def f(a: int, b: int = 0) -> int:
        """Add two numbers.

        Args:
            a: The first.
            b: The second.
        """
        return a + b

    assert problems(f, "f") == ["f: returns int, but has no Returns: section"]


def test_a_class_documents_its_constructor_under_args_or_attributes():
    class Record:
        """A record.

        Attributes:
            x: A number.
        """

        def __init__(self, x: int, y: int = 0) -> None:
            self.x, self.y = x, y

    assert "undocumented ['y']" in problems(Record, "Record")[0]


def test_star_args_may_be_written_with_or_without_stars():
    def f(*args: int, **kwargs: int) -> None:
        """Take anything.

        Args:
            *args: Numbers.
            kwargs: Named numbers.
        """

    assert problems(f, "f") == []


def test_a_protocol_is_held_to_its_methods_not_a_constructor():
    from typing import Protocol

    class Scores(Protocol):
        """Something that scores.

        Attributes:
            size: The side it scores.
        """

        size: int

        def __call__(self, x: int) -> int:
            """Score."""
            ...

    assert problems(Scores, "Scores") == []
    assert problems(Scores.__call__, "Scores.__call__") == [
        "Scores.__call__: no Args: section for its parameters ['x']",
        "Scores.__call__: returns int, but has no Returns: section",
    ]
