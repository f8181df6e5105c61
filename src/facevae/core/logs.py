"""Logging: library modules log to `logging.getLogger(__name__)` and never configure logging; the
`facevae` command (-v / --quiet) and the DVC stage scripts call `configure` once."""

from __future__ import annotations

import logging
import sys

QUIET, NORMAL, VERBOSE = -1, 0, 1
LEVELS = {QUIET: logging.WARNING, NORMAL: logging.INFO, VERBOSE: logging.DEBUG}


def configure(verbosity: int = NORMAL, prefix: str = "") -> None:
    """facevae's messages to stderr: warnings only (QUIET), progress lines (NORMAL) or debug
    details with the logger's name (VERBOSE); `prefix` starts each line (a sweep worker's id)."""
    handler = logging.StreamHandler(sys.stderr)
    detail = "%(levelname)s %(name)s: " if verbosity >= VERBOSE else ""
    handler.setFormatter(logging.Formatter(f"{prefix}{detail}%(message)s"))
    logger = logging.getLogger("facevae")
    logger.handlers[:] = [handler]
    logger.setLevel(LEVELS[max(QUIET, min(VERBOSE, verbosity))])
    logger.propagate = False
