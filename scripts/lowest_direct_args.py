"""uv's arguments for `make lowest-direct`: hold torch and torchvision at the installed versions, re-resolve every
other direct dependency of pyproject.toml (its dependencies and every extra).

    python scripts/lowest_direct_args.py OVERRIDES_FILE   # (Python 3.11+) writes OVERRIDES_FILE, prints the arguments

torch and torchvision are installed by pip first (a machine's pip may take them from its own disk; uv would download
a CUDA build). ``--override`` keeps them; ``--upgrade-package NAME`` stops uv from keeping what pip brought along
with them (numpy, pillow, filelock) just because it is installed, so that --resolution lowest-direct applies to it.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version
from pathlib import Path

import tomllib

HELD = ("torch", "torchvision")


def direct_names(pyproject: Path) -> list[str]:
    """Every distribution that pyproject.toml names directly, but the project itself and the held ones."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    requirements = [*project["dependencies"], *(r for extra in extras for r in extra)]
    names = {re.match(r"[A-Za-z0-9._-]+", r)[0].lower().replace("_", "-") for r in requirements}
    return sorted(names - {project["name"], *HELD})


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    overrides = Path(argv[0])
    overrides.write_text("".join(f"{name}=={version(name)}\n" for name in HELD))
    root = Path(__file__).resolve().parent.parent
    print(f"--override {overrides}", *(f"--upgrade-package {name}" for name in direct_names(root / "pyproject.toml")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
