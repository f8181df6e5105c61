"""`facevae live` as a real subprocess on a free local port, for the live tests and the bench."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import av

ADDRESS = re.compile(r"open (http://\S+/)")


@dataclass
class LiveServer:
    process: subprocess.Popen
    url: str  # http://127.0.0.1:PORT/

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] + "ws"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.read()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> str:
        """Stop it; its stderr."""
        self.process.terminate()
        try:
            _, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


def start_live(args: list[str], env: dict[str, str] | None = None, timeout: float = 120.0) -> LiveServer:
    """`facevae live --port 0 ARGS`, waiting for its address line."""
    command = [sys.executable, "-m", "facevae.cli", "live", "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**(env or os.environ), "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        match = ADDRESS.search(line)
        if match:
            return LiveServer(process, match.group(1))
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError(f"facevae live did not start: {process.communicate()[1]}")


def write_y4m(frames: list, path: Path, fps: int) -> Path:
    """A raw YUV4MPEG2 clip (what Chromium's fake camera reads), written with PyAV."""
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
