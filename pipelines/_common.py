"""Shared by the stage scripts: parse `--actor`, load params.yaml once, report errors in one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from facevae.core.atomic import atomic_path
from facevae.core.config import Params, load_params
from facevae.core.errors import FaceVAEError


def stage_main(description: str, body: Callable[[Params, str], None], needs_actor: bool = True) -> None:
    parser = argparse.ArgumentParser(description=description)
    if needs_actor:
        parser.add_argument("--actor", required=True, help="actor name, as listed in params.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    try:
        body(load_params(args.params), getattr(args, "actor", ""))
    except FaceVAEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
