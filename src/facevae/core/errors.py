"""The one exception type users see: a clear, single-line message naming the file and problem."""

from __future__ import annotations

from pathlib import Path


class FaceVAEError(Exception):
    """A problem with the user's input or environment, reported as one line and exit code 1."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)
