"""Shared by the stage scripts: parse `--actor`, load params.yaml once, report errors in one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from facevae.core.config import Params, load_params
from facevae.core.errors import FaceVAEError
from facevae.core.logs import configure as configure_logging


def stage_main(description: str, body: Callable[[Params, str], None], needs_actor: bool = True) -> None:
    parser = argparse.ArgumentParser(description=description)
    if needs_actor:
        parser.add_argument("--actor", required=True, help="actor name, as listed in params.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    configure_logging()
    try:
        body(load_params(args.params), getattr(args, "actor", ""))
    except FaceVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


