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

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np

from facevae.errors import FaceVAEError

LANDMARKS_MODEL = "shape_predictor_68_face_landmarks.dat"
ENCODER_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR_MODEL = "mmod_human_face_detector.dat"

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
RIGID_POINTS = np.r_[27:36, 36, 39, 42, 45]  # nose bridge and base, outer and inner eye corners
LEFT_EYE = slice(36, 42)  # the eye on the image's left (the subject's right eye)
RIGHT_EYE = slice(42, 48)
NOSE_TIP = 30
CROP_CENTRE = np.array([0.0, 0.5])  # template units: midway between eye centre and mouth centre
FACE_PX_PER_EYE_DISTANCE = 2.5  # a face is about 2.5 eye distances wide
MAX_OVERSAMPLE = 4


# ---- model files ----------------------------------------------------------------------------


def model_path(file_name: str) -> Path:
    """Path of a dlib model shipped by face_recognition_models, found without importing it
    (its __init__ imports pkg_resources, which modern setuptools no longer provides)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceVAEError("the face_recognition_models package is not installed (pip install face_recognition_models)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / file_name
    if not path.is_file():
        raise FaceVAEError("dlib model file is missing; reinstall face_recognition_models", path)
    return path


# ---- detection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in source pixels
    score: float


class Detector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Face boxes in an RGB (or grey) frame, in that frame's pixels."""
        ...


class HogDetector:
    """dlib's HOG + linear SVM frontal face detector, run on a frame downscaled to detect_width."""

    def __init__(self, detect_width: int = 320, upsample: int = 1):
        self.detect_width = detect_width
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        small, factor = downscale(rgb, self.detect_width)
        rects, scores, _ = self._detector.run(to_grey(small), self.upsample, 0.0)
        return [Detection(rect_to_box(r) / factor, float(s)) for r, s in zip(rects, scores)]


class CnnDetector:
    """dlib's MMOD CNN face detector: finds turned and small faces HOG misses, much slower on CPU."""

    def __init__(self, detect_width: int = 320, upsample: int = 1):
        self.detect_width = detect_width
        self.upsample = upsample
        self._detector = dlib.cnn_face_detection_model_v1(str(model_path(CNN_DETECTOR_MODEL)))

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        small, factor = downscale(rgb, self.detect_width)
        found = self._detector(small, self.upsample)
        return [Detection(rect_to_box(d.rect) / factor, float(d.confidence)) for d in found]


def make_detector(kind: str, detect_width: int, upsample: int) -> Detector:
    detectors = {"hog": HogDetector, "cnn": CnnDetector}
    if kind not in detectors:
        raise FaceVAEError(f"unknown face detector {kind!r}; choose one of {sorted(detectors)}")
    return detectors[kind](detect_width=detect_width, upsample=upsample)


def downscale(image: np.ndarray, width: int) -> tuple[np.ndarray, float]:
    """(image no wider than `width`, its scale factor relative to the input)."""
    if image.shape[1] <= width:
        return image, 1.0
    factor = width / image.shape[1]
    size = (width, max(1, int(round(image.shape[0] * factor))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


def to_grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def rect_to_box(rect: dlib.rectangle) -> np.ndarray:
    # dlib rectangles are inclusive of their right and bottom pixels
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)


def box_to_rect(box: np.ndarray) -> dlib.rectangle:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = min(a[2], b[2]) - max(a[0], b[0])
    inter_h = min(a[3], b[3]) - max(a[1], b[1])
    if inter_w <= 0 or inter_h <= 0:
        return 0.0
    inter = inter_w * inter_h
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))


# ---- landmarks and identity -----------------------------------------------------------------


class LandmarkPredictor:
    """dlib's 68-point shape predictor (iBUG 300-W layout), fitted inside a face box."""

    def __init__(self) -> None:
        self._predictor = dlib.shape_predictor(str(model_path(LANDMARKS_MODEL)))

    def predict(self, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) float landmarks, source pixels. `grey` as from `to_grey`, so every caller
        fits on identical pixels."""
        shape = self._predictor(grey, box_to_rect(box))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class FaceEncoder:
    """dlib's ResNet face descriptor: 128-d, same person when closer than about 0.6."""

    def __init__(self) -> None:
        self._model = dlib.face_recognition_model_v1(str(model_path(ENCODER_MODEL)))

    def encode(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        shape = dlib.full_object_detection(box_to_rect(landmark_box(landmarks)), points)
        return np.array(self._model.compute_face_descriptor(rgb, shape), dtype=np.float32)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    return np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)])


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
    return landmarks[LEFT_EYE].mean(axis=0), landmarks[RIGHT_EYE].mean(axis=0)


def pose_measures(source_landmarks: np.ndarray) -> tuple[float, float, float]:
    """(roll_deg, yaw, face_px) from landmarks in source pixels."""
    left, right = eye_centres(source_landmarks)
    eye_line = right - left
    eye_distance = max(float(np.hypot(*eye_line)), 1e-6)
    roll_deg = math.degrees(math.atan2(eye_line[1], eye_line[0]))
    nose_offset = float((source_landmarks[NOSE_TIP] - (left + right) / 2) @ eye_line) / eye_distance
    return roll_deg, nose_offset / (eye_distance / 2), eye_distance * FACE_PX_PER_EYE_DISTANCE


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
