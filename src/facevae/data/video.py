"""Video I/O with PyAV: probe a file, stream its frames upright as RGB, write a video atomically.

Frames are always streamed (one decoded frame in memory at a time) so an hour-long video costs
no more memory than a short one. Rotation metadata (the container's display matrix, which PyAV
exposes per frame as `VideoFrame.rotation`) is applied, so phone videos come out upright.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from facevae.core.atomic import atomic_path
from facevae.core.errors import FaceVAEError

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts"}
)

# Container format for each output suffix: the writer's temp file has no telling suffix.
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".avi": "avi", ".mkv": "matroska"}

# A stream that decodes to fewer frames than its container promises has lost its tail; a few
# frames of slack allow for edit lists and decoder delay, which legitimately drop some.
TRUNCATION_SLACK_FRAMES = 3

TRUNCATION_SLACK_SHARE = 0.02

# Colorspaces OpenCV's yuv420p -> RGB (BT.601, limited range) converts exactly as swscale would:
# 2 = unspecified (swscale assumes BT.601), 5 = BT.470BG, 6 = SMPTE 170M.
BT601_COLORSPACES = frozenset({2, 5, 6})

LIMITED_OR_UNSPECIFIED_RANGE = frozenset({0, 1})


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    codec: str
    fps: float
    frame_count: int  # exact when the container stores it (mp4, mov), else duration x fps
    width: int  # upright, i.e. after rotation metadata is applied
    height: int
    rotation: int  # counter-clockwise degrees applied to decoded frames (0, 90, 180, 270)
    duration_s: float
    has_audio: bool


def unreadable(path: Path, reason: object) -> FaceVAEError:
    return FaceVAEError(f"not a readable video: {reason}", path)


def open_video(path: str | Path) -> av.container.InputContainer:
    """Open `path` for reading; any failure is a FaceVAEError naming the file."""
    container = _open_media(Path(path))
    if not container.streams.video:
        container.close()
        raise unreadable(path, "it has no video stream")
    return container


def _open_media(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise FaceVAEError("no such file", path)
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise unreadable(path, _ffmpeg_reason(exc)) from exc


def probe(path: str | Path) -> VideoInfo:
    """Describe a video. Decodes its first frame, so a file that cannot be decoded fails here."""
    path = Path(path)
    with open_video(path) as container:
        stream = container.streams.video[0]
        first = _first_frame(path, container, stream)
        rotation = upright_quarter_turns(first.rotation) * 90
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        fps = _stream_fps(stream)
        duration = _duration_s(container, stream)
        frame_count = stream.frames or int(round(duration * fps))
        return VideoInfo(
            path=path,
            codec=stream.codec_context.name,
            fps=fps,
            frame_count=frame_count,
            width=width,
            height=height,
            rotation=rotation,
            duration_s=duration,
            has_audio=bool(container.streams.audio),
        )


def iter_frames(path: str | Path, threads: bool = True) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, time_s, rgb) for every frame, upright, as HxWx3 uint8, one at a time.

    index is 0-based in decode output order; time_s counts from the stream's first frame.
    A file that cannot be decoded, or whose stream ends well short of the frame count its
    container declares (a truncated download), raises FaceVAEError naming the file.
    """
    path = Path(path)
    with open_video(path) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        fps = _stream_fps(stream)
        to_rgb = RgbConverter()
        start_pts = None
        index = -1
        try:
            for frame in container.decode(stream):
                index += 1
                if start_pts is None and frame.pts is not None:
                    start_pts = frame.pts
                yield index, _frame_time(frame, start_pts, index, fps), to_rgb(frame)
        except av.error.FFmpegError as exc:
            raise unreadable(path, f"decoding failed after {index + 1} frames ({_ffmpeg_reason(exc)})") from exc
        _check_complete(path, decoded=index + 1, declared=stream.frames)


class RgbConverter:
    """Decoded frame -> upright RGB array. One per stream: `frame.to_ndarray` would build a new
    swscale context for every frame (~1 ms each), and OpenCV converts BT.601 yuv420p, the usual
    case, about 3x faster still."""

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if _opencv_converts(frame):
            rgb = cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
        else:
            rgb = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        turns = upright_quarter_turns(frame.rotation)
        # np.rot90 turns counter-clockwise, the direction `VideoFrame.rotation` is measured in.
        return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _opencv_converts(frame: av.VideoFrame) -> bool:
    return (
        frame.format.name == "yuv420p"
        and frame.width % 2 == 0
        and frame.height % 2 == 0
        and frame.colorspace in BT601_COLORSPACES
        and frame.color_range in LIMITED_OR_UNSPECIFIED_RANGE
    )


def upright_quarter_turns(rotation_deg: float) -> int:
    """Counter-clockwise quarter turns (0-3) that bring a frame upright; the display matrix's
    angle is rounded to the nearest quarter turn (nothing else occurs in practice)."""
    return int(round(rotation_deg / 90.0)) % 4


def _first_frame(path: Path, container, stream) -> av.VideoFrame:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError as exc:
        raise unreadable(path, _ffmpeg_reason(exc)) from exc
    raise unreadable(path, "its video stream holds no frames")


def _check_complete(path: Path, decoded: int, declared: int) -> None:
    if decoded == 0:
        raise unreadable(path, "its video stream holds no frames")
    slack = max(TRUNCATION_SLACK_FRAMES, TRUNCATION_SLACK_SHARE * declared)
    if declared and declared - decoded > slack:
        raise unreadable(path, f"truncated: decoded {decoded} of the {declared} frames its header declares")


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


def _duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _frame_time(frame: av.VideoFrame, start_pts: int | None, index: int, fps: float) -> float:
    if frame.pts is None or frame.time_base is None or start_pts is None:
        return index / fps
    return float((frame.pts - start_pts) * frame.time_base)


def _ffmpeg_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.rstrip(".")

# ---- writing --------------------------------------------------------------------------------


def pick_video_codec() -> str:
    """libx264 when this FFmpeg build has it (smaller, plays everywhere), else mpeg4."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class VideoWriter:
    """Write RGB frames to a video file atomically: nothing appears at `path` unless it completes.

        with VideoWriter("out.mp4", fps=25, audio_from="driver.mov") as writer:
            for rgb in frames:
                writer.write(rgb)

    Frames must all have the first frame's size (odd sizes are padded by one pixel, as yuv420p
    needs even ones). `audio_from` copies that file's first audio stream, unchanged, alongside.
    """

    def __init__(self, path: str | Path, fps: float, audio_from: str | Path | None = None, crf: int = 18):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in OUTPUT_FORMATS:
            raise FaceVAEError(f"cannot write this kind of video; use one of {sorted(OUTPUT_FORMATS)}", self.path)
        if fps <= 0:
            raise FaceVAEError(f"frame rate must be positive, got {fps}", self.path)
        self.format = OUTPUT_FORMATS[suffix]
        self.rate = Fraction(fps).limit_denominator(1001)
        self.audio_from = None if audio_from is None else Path(audio_from)
        self.crf = crf
        self.frames_written = 0
        self._exit_stack = ExitStack()
        self._container = None
        self._video = None
        self._audio: _AudioCopy | None = None

    def __enter__(self) -> "VideoWriter":
        try:
            tmp = self._exit_stack.enter_context(atomic_path(self.path))
            self._container = self._exit_stack.enter_context(av.open(str(tmp), "w", format=self.format))
            if self.audio_from is not None:
                self._audio = self._exit_stack.enter_context(_AudioCopy(self.audio_from, self._container))
        except BaseException:
            self._exit_stack.close()
            raise
        return self

    def write(self, rgb: np.ndarray) -> None:
        rgb = _even_sized(np.asarray(rgb, dtype=np.uint8))
        if self._video is None:
            self._video = self._add_video_stream(width=rgb.shape[1], height=rgb.shape[0])
        elif (rgb.shape[1], rgb.shape[0]) != (self._video.width, self._video.height):
            raise FaceVAEError(
                f"frame {self.frames_written} is {rgb.shape[1]}x{rgb.shape[0]}, "
                f"the video is {self._video.width}x{self._video.height}",
                self.path,
            )
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames_written
        self._mux(self._video.encode(frame))
        self.frames_written += 1
        if self._audio is not None:
            self._audio.copy_until(self.frames_written / self.rate)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        except av.error.FFmpegError as err:
            self._exit_stack.__exit__(type(err), err, err.__traceback__)
            raise FaceVAEError(f"could not write the video ({_ffmpeg_reason(err)})", self.path) from err
        except BaseException as err:
            self._exit_stack.__exit__(type(err), err, err.__traceback__)
            raise
        self._exit_stack.__exit__(exc_type, exc, tb)

    def _finish(self) -> None:
        if self._video is None:
            raise FaceVAEError("no frames were written", self.path)
        self._mux(self._video.encode(None))
        if self._audio is not None:
            self._audio.copy_until(None)

    def _add_video_stream(self, width: int, height: int):
        codec = pick_video_codec()
        options = {"crf": str(self.crf), "preset": "medium"} if codec == "libx264" else {}
        stream = self._container.add_stream(codec, rate=self.rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = 1 / self.rate
        if codec == "mpeg4":  # no crf: half a bit per pixel looks clean at these sizes
            stream.bit_rate = max(200_000, int(0.5 * width * height * float(self.rate)))
        return stream

    def _mux(self, packets) -> None:
        for packet in packets:
            self._container.mux(packet)


class _AudioCopy:
    """Copies the audio packets of a source file into an output container, interleaved by time."""

    def __init__(self, source: Path, output):
        self._input = _open_media(source)
        self._in_stream = self._input.streams.audio[0] if self._input.streams.audio else None
        self._out_stream = output.add_stream_from_template(self._in_stream) if self._in_stream else None
        self._output = output
        self._packets = self._input.demux(self._in_stream) if self._in_stream else iter(())
        self._pending = None

    def __enter__(self) -> "_AudioCopy":
        return self

    def __exit__(self, *exc) -> None:
        self._input.close()

    def copy_until(self, time_s: Fraction | None) -> None:
        """Mux source audio packets up to `time_s` (all remaining ones when None)."""
        if self._in_stream is None:
            return
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            if packet.dts is None:  # the demuxer's end-of-stream flush packet
                continue
            if time_s is not None and packet.pts is not None and packet.pts * packet.time_base > time_s:
                self._pending = packet
                return
            packet.stream = self._out_stream
            self._output.mux(packet)


def _even_sized(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB frame, got shape {rgb.shape}")
    pad_y, pad_x = rgb.shape[0] % 2, rgb.shape[1] % 2
    if pad_y or pad_x:
        rgb = np.pad(rgb, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
    return rgb
