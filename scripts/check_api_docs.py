"""Build the book's API page (book/api.md) alone with Sphinx, with the book's autodoc and napoleon settings, and fail
on any warning: a docstring that renders garbled ("Unexpected indentation"), a member that does not exist, a broken
cross-reference. Seconds, where the whole book takes minutes: ``make api-check``.

Usage: python scripts/check_api_docs.py [--keep DIR] (DIR keeps the HTML for a look).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The book's Sphinx settings for autodoc (_config.yml's ``sphinx`` section) that change how a docstring renders.
CONF = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
add_module_names = False
exclude_patterns = []
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="write the HTML page there (default: a check only, nothing kept)")
    args = parser.parse_args(argv)
    from sphinx.cmd.build import build_main

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        shutil.copy(ROOT / "book" / "api.md", src / "index.md")
        (src / "conf.py").write_text(CONF)
        out = args.keep or Path(tmp) / "out"
        builder = "html" if args.keep else "dummy"
        rc = build_main(["-b", builder, "-W", "--keep-going", "-q", "-d", str(Path(tmp) / "doctrees"), str(src),
                         str(out)])  # fmt: skip
    if rc:
        print("API page: Sphinx warned (see above); fix the docstrings it names.", file=sys.stderr)
    else:
        print("API page: built without a warning.")
    return rc


if __name__ == "__main__":
    sys.exit(main())
