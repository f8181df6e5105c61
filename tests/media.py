"""Small real test media made on the fly: clips from scikit-image's sample pictures, written with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import skimage.data

CLIP_SIZE = 256
ASTRONAUT_ORIGIN = (14, 94)  # (y, x) of a 256 px window with the face (~100 px) near its centre


def astronaut_frames(count: int = 12, size: int = CLIP_SIZE) -> list[np.ndarray]:
    """The astronaut's face drifting by a few pixels from frame to frame, like a handheld shot."""
    image = skimage.data.astronaut()
    y0, x0 = ASTRONAUT_ORIGIN
    frames = []
    for i in range(count):
        dy, dx = int(round(3 * np.cos(i / 3))), int(round(4 * np.sin(i / 2)))
        frames.append(image[y0 + dy : y0 + dy + size, x0 + dx : x0 + dx + size].copy())
    return frames


def coffee_frames(count: int = 12, size: int = CLIP_SIZE) -> list[np.ndarray]:
    """A cup of coffee: no face anywhere."""
    image = skimage.data.coffee()
    return [image[40 + i : 40 + i + size, 100 + 2 * i : 100 + 2 * i + size].copy() for i in range(count)]


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    fps: int = 10,
    codec: str = "libx264",
    rotation: int = 0,
    faststart: bool = False,
    audio_seconds: float = 0.0,
) -> Path:
    """Encode RGB frames; `rotation` goes into the container's display matrix (counter-clockwise
    degrees, as phones record), `faststart` puts the index at the front, `audio_seconds` adds a tone."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        audio = container.add_stream("aac", rate=44100, layout="mono") if audio_seconds else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is not None:
            write_tone(container, audio, audio_seconds)
    return path


def write_tone(container, stream, seconds: float) -> None:
    rate, block = 44100, 1024
    samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32)
    for start in range(0, len(samples) - block + 1, block):
        frame = av.AudioFrame.from_ndarray(samples[None, start : start + block], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def truncate(source: Path, target: Path, keep: float) -> Path:
    """A copy of `source` cut to its first `keep` share of bytes, like an interrupted download."""
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target
