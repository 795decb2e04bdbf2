"""``python -m sampot_lib``: the ``sampot`` command, for an environment whose scripts folder is not on the PATH."""

from __future__ import annotations

import sys

from sampot_lib.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
