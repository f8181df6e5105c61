"""Pictures the inference commands write: side-by-side frames, upscaled faces, GIFs.

A reconstruct frame is the driver's aligned face and the actor's face next to each other, on a
border:

    +--------------------------------+
    |  +----------+    +----------+  |
    |  |  driver  |    |  actor   |  |
    |  +----------+    +----------+  |
    +--------------------------------+

Both panels are `panel` pixels square (the model's crop size times the upscale factor). The
driver panel is warped straight from the source frame at that size (sharp); the actor's face is
the 64 px decoder output, enlarged with bicubic interpolation (a VAE's output has no detail to
recover, so anything fancier only sharpens its blur).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facevae.core.atomic import atomic_path
from facevae.core.errors import FaceVAEError
from facevae.faces.align import warp_face

NEUTRAL = 128  # grey of a panel with nothing to show yet (before the first face)

BORDER_VALUE = 24  # near-black frame around and between the panels

MAX_UPSCALE = 16


def check_upscale(factor: int) -> int:
    if not 1 <= factor <= MAX_UPSCALE:
        raise FaceVAEError(f"upscale must be between 1 and {MAX_UPSCALE}, got {factor}")
    return int(factor)


def border_px(panel: int) -> int:
    """Border width for a panel size: about 1/16 of it, even (yuv420p wants even frame sizes)."""
    return max(2, 2 * round(panel / 32))


def enlarge(face: np.ndarray, size: int) -> np.ndarray:
    """One uint8 (S, S, 3) face -> (size, size, 3), bicubic (area when shrinking)."""
    if face.shape[0] == size and face.shape[1] == size:
        return face
    interpolation = cv2.INTER_CUBIC if size > face.shape[0] else cv2.INTER_AREA
    return cv2.resize(face, (size, size), interpolation=interpolation)


def enlarge_batch(faces: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) -> (N, size, size, 3)."""
    if len(faces) == 0 or faces.shape[1] == size:
        return faces
    return np.stack([enlarge(face, size) for face in faces])


def driver_panel(rgb: np.ndarray, matrix: np.ndarray, crop_size: int, panel: int) -> np.ndarray:
    """The driver's aligned face rendered at `panel` px straight from its frame (the same
    alignment as the model's `crop_size` crop, only sampled more finely)."""
    if panel == crop_size:
        return warp_face(rgb, matrix, crop_size)
    return warp_face(rgb, np.asarray(matrix, dtype=np.float64) * (panel / crop_size), panel)


class SideBySide:
    """Composes (driver, actor) panel pairs into frames of one fixed size."""

    def __init__(self, panel: int):
        self.panel = panel
        self.border = border_px(panel)
        b, p = self.border, panel
        self.height, self.width = p + 2 * b, 2 * p + 3 * b
        self._canvas = np.full((self.height, self.width, 3), BORDER_VALUE, dtype=np.uint8)
        self._left = (slice(b, b + p), slice(b, b + p))
        self._right = (slice(b, b + p), slice(2 * b + p, 2 * b + 2 * p))

    def compose(self, driver: np.ndarray, actor: np.ndarray) -> np.ndarray:
        frame = self._canvas.copy()
        frame[self._left] = driver
        frame[self._right] = actor
        return frame

    def blank(self) -> np.ndarray:
        """The frame shown before the first face: both panels neutral grey."""
        grey = np.full((self.panel, self.panel, 3), NEUTRAL, dtype=np.uint8)
        return self.compose(grey, grey)


def neutral_face(size: int) -> np.ndarray:
    return np.full((size, size, 3), NEUTRAL, dtype=np.uint8)


def save_gif(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """An endlessly looping GIF, written atomically. Each frame gets its own adaptive palette."""
    if not frames:
        raise FaceVAEError("no frames to write", path)
    path = Path(path)
    images = [Image.fromarray(frame) for frame in frames]
    duration = max(20, int(round(1000 / fps)))  # browsers clamp faster GIFs to 10 fps anyway
    with atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration,
            loop=0, disposal=1, optimize=False,
        )  # fmt: skip
    return path
