"""Sphinx extension for an offline book that loads without a console error.

- Math is written as MathML at build time (latex2mathml), so pages need no MathJax from a CDN; browsers draw MathML
  Core natively (Chromium since 109, Firefox, Safari).
- sphinx-thebe 0.3 adds its config script once per read phase, and Jupyter Book runs that phase twice: the second
  copy re-declares ``const THEBE_JS_URL`` and throws. Each script is kept once.
- pydata-sphinx-theme's page context variable ``default_mode`` is empty under Jupyter Book, which its script
  reports as a console error; "auto" (follow the system) is the theme's own default.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from latex2mathml.converter import convert


def _inline(self: Any, node: nodes.Element) -> None:
    self.body.append(f'<span class="math notranslate">{convert(node.astext())}</span>')
    raise nodes.SkipNode


def _block(self: Any, node: nodes.Element) -> None:
    ids = node.get("ids") or []
    anchor = f' id="{ids[0]}"' if ids else ""
    number = f'<span class="eqno">({node["number"]})</span>' if node.get("number") else ""
    self.body.append(f'<div class="math notranslate"{anchor}>{convert(node.astext(), display="block")}{number}</div>')
    raise nodes.SkipNode


def _page_context(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    if not context.get("default_mode"):
        context["default_mode"] = "auto"
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        # Inline scripts come with filename None or "" depending on who added them.
        key = (str(getattr(js, "filename", js) or ""), repr(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def setup(app: Any) -> dict[str, Any]:
    app.add_html_math_renderer("mathml", (_inline, None), (_block, None))
    # After the other extensions have added their scripts (no handler before it returns a template name).
    app.connect("html-page-context", _page_context, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
