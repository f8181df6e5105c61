"""A driver's faces, found and aligned as extraction aligns the actor's: a video's frames through
`track_video` (detection now and then, landmark tracking in between), a photo through
`FaceAligner.align`, both with the model's own crop geometry. When several faces are in view the one
followed so far is kept, else the largest."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.data.dataset import IMAGE_SUFFIXES
from facevae.data.video import VIDEO_SUFFIXES, probe
from facevae.extract.extractor import track_video
from facevae.faces.align import AlignedFace, FaceAligner
from facevae.faces.crop import CropGeometry
from facevae.faces.tracker import FaceTracker, Track

# ---- finding driver faces -------------------------------------------------------------------


@dataclass
class DriverFrame:
    index: int
    time: float
    rgb: np.ndarray
    face: AlignedFace | None  # the driver's face in this frame (model geometry), None if none
    detected: bool  # full detection ran on this frame (else landmarks were tracked)


@dataclass
class DriverFaces:
    """A driver's faces, one row per frame (a photo is one frame)."""

    crops: np.ndarray  # uint8 (N, S, S, 3) aligned as the model's crops; zeros where no face
    landmarks: np.ndarray  # float32 (N, 68, 2) in crop pixels; NaN where no face
    found: np.ndarray  # bool (N,)
    fps: float  # frames per second of the video (0.0 for a photo)
    frame_count: int  # N, every decoded frame
    matrices: np.ndarray | None = None  # float32 (N, 2, 3) source px -> crop px; NaN where no face
    source: Path | None = None

    @property
    def face_frames(self) -> np.ndarray:
        """Indices of the frames with a face."""
        return np.flatnonzero(self.found)

    @property
    def face_crops(self) -> np.ndarray:
        """Only the frames with a face: uint8 (found.sum(), S, S, 3)."""
        return self.crops[self.found]

    @property
    def face_landmarks(self) -> np.ndarray:
        """Only the frames with a face: float32 (found.sum(), 68, 2), crop pixels."""
        return self.landmarks[self.found]


def aligner_for(extract_cfg: ExtractConfig, crop: CropGeometry) -> FaceAligner:
    """The extraction aligner (detector, landmarks) cutting crops at the model's geometry."""
    return FaceAligner.from_config(crop.extract_config(extract_cfg))


def pick_face(found: list[tuple[Track, AlignedFace]], followed: int | None) -> tuple[Track | None, AlignedFace | None]:
    """The face followed so far when it is still there, else the largest one."""
    if not found:
        return None, None
    for track, face in found:
        if track.id == followed:
            return track, face
    return max(found, key=lambda pair: pair[1].face_px)


def iter_video_faces(
    path: str | Path, extract_cfg: ExtractConfig, crop: CropGeometry, aligner: FaceAligner | None = None
) -> Iterator[DriverFrame]:
    """Every frame of a driver's video with its face (or None), tracked as extraction tracks."""
    cfg = crop.extract_config(extract_cfg)
    aligner = aligner or FaceAligner.from_config(cfg)
    check_aligner(aligner, crop)
    tracker = FaceTracker(aligner, cfg)
    followed: int | None = None
    for index, time_s, rgb, found, detected in track_video(Path(path), tracker):
        track, face = pick_face(found, followed)
        if track is not None:
            followed = track.id
        yield DriverFrame(index, time_s, rgb, face, detected)


def check_aligner(aligner: FaceAligner, crop: CropGeometry) -> None:
    if aligner.crop_size != crop.size or not math.isclose(aligner.coverage, crop.coverage, rel_tol=1e-9):
        raise ValueError(
            f"aligner cuts {aligner.crop_size} px at {aligner.coverage}, the model needs {crop.describe()}"
        )


def read_image(path: str | Path) -> np.ndarray:
    """An image file as upright (EXIF orientation applied) uint8 RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FaceVAEError("no such file", path)
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise FaceVAEError(f"not a readable image ({exc.__class__.__name__})", path) from None


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def align_driver(
    path: str | Path,
    extract_cfg: ExtractConfig,
    crop: CropGeometry,
    aligner: FaceAligner | None = None,
    progress: bool = False,
    max_frames: int = 0,
) -> DriverFaces:
    """All of a driver's faces (a video, or a photo as one frame), aligned with `crop`; with
    `max_frames`, those of the video's first `max_frames` frames only (decoding stops there).

    Holds every crop in memory (12 KB a frame at 64 px); stream with `iter_video_faces` for
    very long videos."""
    path = Path(path)
    aligner = aligner or aligner_for(extract_cfg, crop)
    size = crop.size
    if is_image(path):
        faces = [aligner.align_one(read_image(path))]
        fps, frame_count = 0.0, 1
    else:
        info = probe(path)
        faces = []
        total = min(info.frame_count, max_frames) if max_frames else info.frame_count
        with tqdm(total=total, desc=path.name, unit="frame", disable=not progress) as bar:
            frames = iter_video_faces(path, extract_cfg, crop, aligner)
            for frame in islice(frames, max_frames or None):
                faces.append(frame.face)
                bar.update()
            frames.close()
        fps, frame_count = info.fps, len(faces)
    n = len(faces)
    crops = np.zeros((n, size, size, 3), dtype=np.uint8)
    landmarks = np.full((n, 68, 2), np.nan, dtype=np.float32)
    matrices = np.full((n, 2, 3), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    for i, face in enumerate(faces):
        if face is not None:
            crops[i], landmarks[i], matrices[i], found[i] = face.crop, face.landmarks, face.matrix, True
    return DriverFaces(crops, landmarks, found, fps, frame_count, matrices, path)
