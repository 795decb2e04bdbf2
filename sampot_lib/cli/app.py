"""``sampot app``: the prompt widget served as a page of its own (its module imports the widget stack, which no
other command needs)."""

from __future__ import annotations

import argparse

from sampot_lib.cli.options import shipped_settings
from sampot_lib.ui.server import run_app


def cmd_app(args: argparse.Namespace) -> int:
    shipped_settings(args)  # a shipped --regressor's model, unless --model is given
    return run_app(
        args.source, args.regressor, host=args.host, port=args.port, max_sessions=args.max_sessions,
        idle_minutes=args.idle_minutes, model=args.model, checkpoint=args.checkpoint,
        mask_output=args.mask_output, device=args.device, structure=args.structure, steps=args.steps, lr=args.lr,
    )  # fmt: skip
