"""Face detection, landmarks, identity descriptors and alignment, as swappable parts.

The parts (after faceswap's extract plugins): a `Detector` finds face boxes, a
`LandmarkPredictor` fits dlib's 68 landmarks in a box, a `FaceEncoder` turns a face into dlib's
128-d identity descriptor, and `FaceAligner` combines them into aligned crops. The actor's
frames and, later, a driver's face go through the same `FaceAligner.align_landmarks`, so a
stranger's face is aligned exactly as the actor's were.

Alignment (the OpenFace / faceswap idea): a least-squares similarity transform (Umeyama) maps
the rigid landmarks (eye corners and nose, which expressions barely move) onto a canonical
mean face; the crop is then `coverage` template units wide, centred between eyes and mouth.
Template units: eye centre at (0, 0), mouth centre at (0, 1), i.e. one unit = eye-to-mouth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facevae.faces.detect import (
    Detector,
    HogDetector,
    LandmarkPredictor,
    landmark_box,
    make_detector,
    to_grey,
)
from facevae.faces.landmarks import (
    EAR_LEVEL_OUTLINE,
    NOSE_TIP,
    RIGID_POINTS,
    SUBJECT_LEFT_EYE,
    SUBJECT_RIGHT_EYE,
)

# Mean of dlib's 68 landmarks over ~160 frontal-ish faces (the sample clips and images), after
# generalized Procrustes on the rigid points, in template units (see module docstring).
# fmt: off
TEMPLATE_68 = np.array([
    # 0-16 jaw
    (-1.030, +0.072),
    (-1.034, +0.345),
    (-1.011, +0.618),
    (-0.962, +0.890),
    (-0.866, +1.149),
    (-0.710, +1.379),
    (-0.505, +1.566),
    (-0.264, +1.701),
    (+0.007, +1.742),
    (+0.279, +1.702),
    (+0.514, +1.563),
    (+0.708, +1.373),
    (+0.865, +1.147),
    (+0.965, +0.892),
    (+1.018, +0.622),
    (+1.042, +0.348),
    (+1.037, +0.075),
    # 17-21 right brow (image left)
    (-0.870, -0.226),
    (-0.748, -0.366),
    (-0.560, -0.424),
    (-0.363, -0.406),
    (-0.180, -0.328),
    # 22-26 left brow
    (+0.174, -0.324),
    (+0.366, -0.397),
    (+0.568, -0.405),
    (+0.755, -0.339),
    (+0.877, -0.196),
    # 27-30 nose bridge
    (-0.001, -0.069),
    (-0.001, +0.101),
    (-0.001, +0.265),
    (-0.001, +0.438),
    # 31-35 nose base
    (-0.225, +0.584),
    (-0.117, +0.621),
    (-0.002, +0.655),
    (+0.113, +0.623),
    (+0.221, +0.592),
    # 36-41 eye (image left)
    (-0.666, +0.002),
    (-0.547, -0.059),
    (-0.410, -0.061),
    (-0.279, +0.012),
    (-0.413, +0.031),
    (-0.549, +0.034),
    # 42-47 eye (image right)
    (+0.279, +0.020),
    (+0.411, -0.048),
    (+0.546, -0.043),
    (+0.666, +0.020),
    (+0.549, +0.049),
    (+0.412, +0.043),
    # 48-59 outer lip
    (-0.457, +0.944),
    (-0.294, +0.854),
    (-0.122, +0.822),
    (-0.000, +0.850),
    (+0.120, +0.827),
    (+0.297, +0.865),
    (+0.460, +0.957),
    (+0.305, +1.140),
    (+0.132, +1.220),
    (+0.000, +1.229),
    (-0.132, +1.213),
    (-0.302, +1.129),
    # 60-67 inner lip
    (-0.397, +0.951),
    (-0.123, +0.931),
    (-0.001, +0.944),
    (+0.121, +0.935),
    (+0.398, +0.962),
    (+0.124, +1.074),
    (-0.001, +1.085),
    (-0.128, +1.067),
])
# fmt: on

CROP_CENTRE = np.array([0.0, 0.5])  # template units: midway between eye centre and mouth centre

FACE_PX_PER_EYE_DISTANCE = 2.5  # a face is about 2.5 eye distances wide

MAX_OVERSAMPLE = 4

# ---- alignment ------------------------------------------------------------------------------


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift; no reflection) src -> dst."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    scale = float((s * sign).sum() / src_c.var(axis=0).sum())
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def template_to_crop(crop_size: int, coverage: float) -> np.ndarray:
    """2x3 matrix from template units to crop pixels."""
    px_per_unit = crop_size / coverage
    offset = crop_size / 2 - px_per_unit * CROP_CENTRE
    return np.array([[px_per_unit, 0.0, offset[0]], [0.0, px_per_unit, offset[1]]])


def template_in_crop(crop_size: int, coverage: float) -> np.ndarray:
    """(68, 2): where a perfectly average face's landmarks land in the crop."""
    return transform_points(template_to_crop(crop_size, coverage), TEMPLATE_68)


def alignment_matrix(landmarks: np.ndarray, crop_size: int, coverage: float) -> np.ndarray:
    """2x3 matrix from source pixels to crop pixels for a face with these 68 landmarks."""
    to_template = umeyama(landmarks[RIGID_POINTS], TEMPLATE_68[RIGID_POINTS])
    to_crop = template_to_crop(crop_size, coverage)
    matrix = to_crop[:, :2] @ to_template
    matrix[:, 2] += to_crop[:, 2]
    return matrix


def warp_face(rgb: np.ndarray, matrix: np.ndarray, crop_size: int) -> np.ndarray:
    """Crop by `matrix`. Big faces are warped at a multiple of the size then area-averaged down,
    since warpAffine's bilinear sampling would alias when shrinking a lot."""
    crop_px_per_source_px = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    oversample = int(min(MAX_OVERSAMPLE, max(1, round(1 / crop_px_per_source_px))))
    size = crop_size * oversample
    big = cv2.warpAffine(rgb, matrix * oversample, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if oversample == 1:
        return big
    return cv2.resize(big, (crop_size, crop_size), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class AlignedFace:
    crop: np.ndarray  # (S, S, 3) uint8 RGB
    matrix: np.ndarray  # (2, 3) source pixels -> crop pixels
    landmarks: np.ndarray  # (68, 2) in crop pixels
    source_landmarks: np.ndarray  # (68, 2) in source pixels
    box: np.ndarray  # (4,) the box the landmarks were fitted in, source pixels
    det_score: float  # detector score; NaN when the box came from tracking
    roll_deg: float  # in-plane rotation of the eye line, + = clockwise on screen
    yaw: float  # nose offset along the eye line / half eye distance: 0 frontal, about +-1 profile
    face_px: float  # face width estimate in source pixels (eye distance x 2.5)
    sharpness: float  # variance of the Laplacian of the grey crop


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks[SUBJECT_RIGHT_EYE].mean(axis=0), landmarks[SUBJECT_LEFT_EYE].mean(axis=0)


def pose_measures(source_landmarks: np.ndarray) -> tuple[float, float, float]:
    """(roll_deg, yaw, face_px) from landmarks in source pixels."""
    left, right = eye_centres(source_landmarks)
    eye_line = right - left
    eye_distance = max(float(np.hypot(*eye_line)), 1e-6)
    roll_deg = math.degrees(math.atan2(eye_line[1], eye_line[0]))
    nose_offset = float((source_landmarks[NOSE_TIP] - (left + right) / 2) @ eye_line) / eye_distance
    return roll_deg, nose_offset / (eye_distance / 2), eye_distance * FACE_PX_PER_EYE_DISTANCE


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(N, 68, 2) landmarks (any pixels) -> (N, 2) head turn and tilt proxies: the nose tip's offset from
    the midpoint of the face outline's ear-level points, along the line between them (yaw: about 0
    frontal) and across it (pitch), in units of that line's length. The outline there and the nose
    tip are rigid to the skull: a smile, an open mouth or a squint barely moves them (the eye centres
    would). NaN rows stay NaN."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    right, left = lm[:, EAR_LEVEL_OUTLINE[0]], lm[:, EAR_LEVEL_OUTLINE[1]]
    across = left - right
    width = np.linalg.norm(across, axis=1, keepdims=True)
    along = across / np.maximum(width, 1e-9)
    down = np.stack([-along[:, 1], along[:, 0]], axis=1)
    nose = lm[:, NOSE_TIP] - (right + left) / 2
    return np.stack([(nose * along).sum(1), (nose * down).sum(1)], axis=1) / np.maximum(width, 1e-9)


def sharpness(crop: np.ndarray) -> float:
    return float(cv2.Laplacian(to_grey(crop), cv2.CV_32F).var())


class FaceAligner:
    """Detect, fit landmarks and align: the one path every face (actor or driver) goes through."""

    def __init__(
        self,
        crop_size: int = 64,
        coverage: float = 2.2,
        detector: Detector | None = None,
        predictor: LandmarkPredictor | None = None,
    ):
        self.crop_size = crop_size
        self.coverage = coverage
        self.detector = detector if detector is not None else HogDetector()
        self.predictor = predictor if predictor is not None else LandmarkPredictor()

    @classmethod
    def from_config(cls, cfg) -> "FaceAligner":
        """From an ExtractConfig: detector kind, detect_width, upsample, crop_size, coverage."""
        detector = make_detector(cfg.detector, cfg.detect_width, cfg.upsample)
        return cls(crop_size=cfg.crop_size, coverage=cfg.coverage, detector=detector)

    def align(self, rgb: np.ndarray) -> list[AlignedFace]:
        """Every face in an RGB image, largest first."""
        grey = to_grey(rgb)
        faces = [
            self.align_landmarks(rgb, self.landmarks(grey, d.box), box=d.box, det_score=d.score)
            for d in self.detector.detect(rgb)
        ]
        return sorted(faces, key=lambda face: -face.face_px)

    def align_one(self, rgb: np.ndarray) -> AlignedFace | None:
        """The largest face in an RGB image, or None."""
        faces = self.align(rgb)
        return faces[0] if faces else None

    def landmarks(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self.predictor.predict(grey, box)

    def align_landmarks(
        self, rgb: np.ndarray, landmarks: np.ndarray, box: np.ndarray | None = None, det_score: float = math.nan
    ) -> AlignedFace:
        matrix = alignment_matrix(landmarks, self.crop_size, self.coverage)
        crop = warp_face(rgb, matrix, self.crop_size)
        roll_deg, yaw, face_px = pose_measures(landmarks)
        return AlignedFace(
            crop=crop,
            matrix=matrix,
            landmarks=transform_points(matrix, landmarks),
            source_landmarks=landmarks,
            box=landmark_box(landmarks) if box is None else np.asarray(box, dtype=np.float64),
            det_score=det_score,
            roll_deg=roll_deg,
            yaw=yaw,
            face_px=face_px,
            sharpness=sharpness(crop),
        )
