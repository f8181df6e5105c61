"""Follow faces through a video: full detection now and then, cheap landmark tracking between.

Used by extraction (the actor's videos) and meant for inference on a driver's video, so both
see faces the same way. Per frame, `FaceTracker.step` returns every face followed, as
`AlignedFace`s from the same `FaceAligner.align_landmarks` a single image goes through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facevae.core.config import ExtractConfig
from facevae.faces.align import AlignedFace, FaceAligner, eye_centres
from facevae.faces.detect import box_iou, to_grey
from facevae.faces.landmarks import RIGID_POINTS

THUMBNAIL_SIZE = (32, 18)  # grey thumbnail compared between frames to spot scene cuts

MIN_MATCH_IOU = 0.3  # a detection continues a track when their boxes overlap this much

DUPLICATE_IOU = 0.5  # two tracks this overlapped follow the same face: one of them ends

MAX_MISSED_DETECTIONS = 1  # a track the detector missed once more than this ends

MAX_SHIFT_PER_FRAME = 0.5  # in eye distances; a bigger jump of the landmarks means drift

MAX_SCALE_CHANGE = 1.25  # per frame; a bigger change of the eye distance means drift


@dataclass
class Track:
    id: int
    landmarks: np.ndarray  # latest, source pixels
    box_shape: np.ndarray  # detector box (cx, cy, w, h) relative to the rigid landmarks, in eye distances
    grey_crop: np.ndarray  # latest aligned crop, grey float32, for the similarity check
    missed: int = 0  # detections in a row that did not find this face
    last_sample: int = -(10**9)  # frame of the latest identity descriptor (kept by extraction)


class FaceTracker:
    """Follows every face through one video.

    Full detection runs on the first frame, every `redetect_every` frames, after a scene cut,
    whenever no face is being followed, and whenever following one looks wrong (landmarks jump
    or the aligned crop stops resembling the previous one). In between, the 68 landmarks are
    re-fitted in a box derived from the previous frame's landmarks: ~0.6 ms instead of ~13.
    """

    def __init__(self, aligner: FaceAligner, cfg: ExtractConfig):
        self.aligner = aligner
        self.cfg = cfg
        self.tracks: list[Track] = []
        self._next_id = 0
        self._last_detection = -(10**9)
        self._thumbnail: np.ndarray | None = None

    def step(self, index: int, rgb: np.ndarray) -> tuple[list[tuple[Track, AlignedFace]], bool]:
        """Faces in this frame with their tracks, and whether full detection ran."""
        grey = to_grey(rgb)
        if self._scene_cut(grey):
            self.tracks = []
        if self.tracks and index - self._last_detection < self.cfg.redetect_every:
            followed = [(track, self._follow(track, rgb, grey)) for track in self.tracks]
            if all(face is not None for _, face in followed):
                for track, face in followed:
                    self._update(track, face)
                return followed, False
        return self._detect(index, rgb, grey), True

    def _scene_cut(self, grey: np.ndarray) -> bool:
        thumbnail = cv2.resize(grey, THUMBNAIL_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)
        previous, self._thumbnail = self._thumbnail, thumbnail
        return previous is not None and float(np.abs(thumbnail - previous).mean()) > self.cfg.scene_cut

    def _follow(self, track: Track, rgb: np.ndarray, grey: np.ndarray) -> AlignedFace | None:
        box = box_from_landmarks(track.landmarks, track.box_shape)
        face = self.aligner.align_landmarks(rgb, self.aligner.landmarks(grey, box), box=box)
        if not plausible_motion(track.landmarks, face.source_landmarks):
            return None
        if crop_similarity(grey_crop(face), track.grey_crop) < self.cfg.track_min_similarity:
            return None
        return face

    def _detect(self, index: int, rgb: np.ndarray, grey: np.ndarray) -> list[tuple[Track, AlignedFace]]:
        self._last_detection = index
        detections = self.aligner.detector.detect(rgb)
        predicted = [box_from_landmarks(t.landmarks, t.box_shape) for t in self.tracks]
        matches = greedy_match(predicted, [d.box for d in detections], MIN_MATCH_IOU)
        found: list[tuple[Track, AlignedFace]] = []
        for d_index, detection in enumerate(detections):
            landmarks = self.aligner.landmarks(grey, detection.box)
            face = self.aligner.align_landmarks(rgb, landmarks, box=detection.box, det_score=detection.score)
            track = self.tracks[matches[d_index]] if d_index in matches else None
            # A detection where a different face used to be (no cut in between) starts a new track
            # (and ends the old one), so identity samples never leak from one person to another.
            if track is None or crop_similarity(grey_crop(face), track.grey_crop) < self.cfg.track_min_similarity:
                track = self._new_track(face)
            track.box_shape = box_shape(detection.box, landmarks)
            track.missed = 0
            self._update(track, face)
            found.append((track, face))
        matched = {id(self.tracks[t_index]) for t_index in matches.values()}
        found += self._follow_missed(rgb, grey, matched)
        self.tracks = drop_duplicates([track for track, _ in found])
        kept = {id(track) for track in self.tracks}
        return [(track, face) for track, face in found if id(track) in kept]

    def _follow_missed(self, rgb, grey, matched: set[int]) -> list[tuple[Track, AlignedFace]]:
        """Tracks the detector missed this time (turned heads, HOG's blind spots) live on while
        their landmarks still follow a face, for at most MAX_MISSED_DETECTIONS detections."""
        found = []
        for track in self.tracks:
            if id(track) in matched or track.missed >= MAX_MISSED_DETECTIONS:
                continue
            face = self._follow(track, rgb, grey)
            if face is not None:
                track.missed += 1
                self._update(track, face)
                found.append((track, face))
        return found

    def _new_track(self, face: AlignedFace) -> Track:
        track = Track(self._next_id, face.source_landmarks, np.zeros(4), grey_crop(face))
        self._next_id += 1
        return track

    @staticmethod
    def _update(track: Track, face: AlignedFace) -> None:
        track.landmarks = face.source_landmarks
        track.grey_crop = grey_crop(face)


def rigid_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre of the rigid landmarks, eye distance): where a face is and how big, unaffected by
    the mouth and brows."""
    left, right = eye_centres(landmarks)
    return landmarks[RIGID_POINTS].mean(axis=0), max(float(np.hypot(*(right - left))), 1.0)


def box_shape(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    centre, scale = rigid_frame(landmarks)
    box_centre = (box[:2] + box[2:]) / 2
    return np.concatenate([(box_centre - centre) / scale, (box[2:] - box[:2]) / scale])


def box_from_landmarks(landmarks: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The box the detector would likely draw around a face with these landmarks."""
    centre, scale = rigid_frame(landmarks)
    box_centre = centre + shape[:2] * scale
    half = shape[2:] * scale / 2
    return np.concatenate([box_centre - half, box_centre + half])


def plausible_motion(previous: np.ndarray, current: np.ndarray) -> bool:
    (c0, s0), (c1, s1) = rigid_frame(previous), rigid_frame(current)
    shift = float(np.hypot(*(c1 - c0))) / s0
    return shift <= MAX_SHIFT_PER_FRAME and 1 / MAX_SCALE_CHANGE <= s1 / s0 <= MAX_SCALE_CHANGE


def grey_crop(face: AlignedFace) -> np.ndarray:
    return to_grey(face.crop).astype(np.float32)


def crop_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalized cross-correlation of two grey crops: 1 identical, ~0 unrelated."""
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / norm if norm > 0 else 0.0


def greedy_match(boxes_a: list[np.ndarray], boxes_b: list[np.ndarray], min_iou: float) -> dict[int, int]:
    """{index in b: index in a}, pairing the most overlapping boxes first."""
    pairs = sorted(((box_iou(a, b), i, j) for i, a in enumerate(boxes_a) for j, b in enumerate(boxes_b)), reverse=True)
    matches: dict[int, int] = {}
    used_a: set[int] = set()
    for iou, i, j in pairs:
        if iou >= min_iou and i not in used_a and j not in matches:
            matches[j] = i
            used_a.add(i)
    return matches


def drop_duplicates(tracks: list[Track]) -> list[Track]:
    """When two tracks have converged on one face, keep the one the detector just confirmed,
    else the older one."""
    kept: list[Track] = []
    for track in sorted(tracks, key=lambda t: (t.missed > 0, t.id)):
        box = box_from_landmarks(track.landmarks, track.box_shape)
        if all(box_iou(box, box_from_landmarks(k.landmarks, k.box_shape)) < DUPLICATE_IOU for k in kept):
            kept.append(track)
    return kept
