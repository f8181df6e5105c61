"""One live driver, frame by frame: a camera (or file) frame in, the actor's face out.

The same face finding as `facevae reconstruct` (a `FaceTracker`: detection now and then, landmark
tracking between; the face followed so far, else the largest) and the same `DriveSession`, fed one
face at a time instead of in chunks. The driver's neutral face and colour statistics come from the
session's first `transfer.neutral_window` faces, as for a clip; `set_neutral` takes them again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facevae.core.config import ExtractConfig, TransferConfig
from facevae.extract.drivers import aligner_for, pick_face
from facevae.faces.align import FaceAligner
from facevae.faces.tracker import FaceTracker
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import DriveSession

NEUTRAL_GREY = 128


@dataclass
class LiveFrame:
    """What one frame gave: the actor's face to show and what the page should say about it."""

    actor: np.ndarray  # uint8 (S, S, 3): this frame's face, or the last one held
    state: str  # "driving" | "neutral" (collecting the driver's neutral face) | "no-face"
    faces: int  # faces in view
    neutral_progress: float = 1.0  # share of the neutral window collected
    beyond: bool = False  # the driven face lies beyond the actor's footage (her own val frames' range)
    footage_distance: float | None = None
    detected: bool = False  # full detection ran on this frame


class LiveDriver:
    """Frames of one person in time order -> the actor's faces. Not thread-safe: one per connection."""

    def __init__(self, model: ActorModel, extract_cfg: ExtractConfig, transfer_cfg: TransferConfig, mode: str,
                 aligner: FaceAligner | None = None):
        self.model, self.transfer_cfg, self.mode = model, transfer_cfg, mode
        self.extract_cfg = model.crop.extract_config(extract_cfg)
        self.aligner = aligner or aligner_for(extract_cfg, model.crop)
        self.tracker = FaceTracker(self.aligner, self.extract_cfg)
        self.index = 0
        self.followed: int | None = None
        self.last = self.resting_face()
        self.set_neutral()

    def resting_face(self) -> np.ndarray:
        """What shows before the first face: the actor's own neutral frame (grey for old model files)."""
        assets = getattr(self.model, "transfer", None)
        if assets is not None:
            return np.asarray(assets.neutral_crop, dtype=np.uint8)
        size = self.model.image_size
        return np.full((size, size, 3), NEUTRAL_GREY, dtype=np.uint8)

    def set_neutral(self) -> None:
        """Start a new session: the next `neutral_window` faces become the driver's neutral."""
        self.session = DriveSession(self.model, self.transfer_cfg, self.mode, keep_history=False)
        self.pending_crops: list[np.ndarray] = []
        self.pending_landmarks: list[np.ndarray] = []

    @property
    def window(self) -> int:
        return self.session.warmup

    def __call__(self, rgb: np.ndarray) -> LiveFrame:
        found, detected = self.tracker.step(self.index, rgb)
        self.index += 1
        track, face = pick_face(found, self.followed)
        if face is None:
            self.followed = None
            return LiveFrame(self.last, "no-face", 0, self.neutral_progress(), detected=detected)
        self.followed = track.id
        if not self.session.started and len(self.pending_crops) < self.window - 1:
            self.pending_crops.append(face.crop)
            self.pending_landmarks.append(face.landmarks)
            return LiveFrame(self.last, "neutral", len(found), self.neutral_progress(), detected=detected)
        crops = np.stack([*self.pending_crops, face.crop])
        landmarks = np.stack([*self.pending_landmarks, face.landmarks])
        self.pending_crops, self.pending_landmarks = [], []
        self.last = self.session(crops, landmarks)[-1]
        distance, beyond = self.footage_check()
        return LiveFrame(self.last, "driving", len(found), 1.0, beyond, distance, detected)

    def neutral_progress(self) -> float:
        if self.session.started or self.window <= 1:
            return 1.0
        return len(self.pending_crops) / self.window

    def footage_check(self) -> tuple[float | None, bool]:
        """The latest face's distance from the actor's footage, and whether the driver asked for a face
        beyond her range (with transfer.snap_ramp it is then held near her closest faces)."""
        limit = self.session.range_limit
        if limit is None or not self.session.distances:
            return None, False
        asked = self.session.requested or self.session.distances
        return float(self.session.distances[-1][-1]), bool(asked[-1][-1] > limit)
