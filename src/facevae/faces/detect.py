"""dlib face detection, landmarks and identity descriptors, with the weights shipped by the
`face_recognition_models` package (found without importing it: it needs pkg_resources)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import dlib
import numpy as np
import torch

from facevae.core.errors import FaceVAEError
from facevae.faces.descriptor import CHIP_PADDING, CHIP_SIZE, DESCRIPTOR_SIZE, DescriptorWeights, FaceDescriptorNet

LANDMARKS_MODEL = "shape_predictor_68_face_landmarks.dat"

ENCODER_MODEL = "dlib_face_recognition_resnet_model_v1.dat"

CNN_DETECTOR_MODEL = "mmod_human_face_detector.dat"

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
    """dlib's ResNet face descriptor: 128-d, same person when closer than about 0.6. dlib cuts the
    aligned chips; the network runs in torch (facevae.faces.descriptor: dlib's weights, its numbers,
    about 10x faster on CPU and batched)."""

    def __init__(self) -> None:
        self._net = FaceDescriptorNet(DescriptorWeights.from_dlib_file(model_path(ENCODER_MODEL)))

    def chip(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The (150, 150, 3) aligned face dlib's compute_face_descriptor would feed its network."""
        return np.asarray(dlib.get_face_chip(rgb, face_shape(landmarks), size=CHIP_SIZE, padding=CHIP_PADDING))

    def encode(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.encode_many([rgb], [landmarks])[0]

    def encode_many(self, images, landmarks, batch: int = 64) -> np.ndarray:
        """(N, 128) float32 descriptors of N faces, each an RGB image with its (68, 2) landmarks."""
        out = [np.zeros((0, DESCRIPTOR_SIZE), np.float32)]
        for start in range(0, len(images), batch):
            chips = [self.chip(im, lm) for im, lm in zip(images[start : start + batch], landmarks[start : start + batch])]
            out.append(self._net(torch.from_numpy(np.stack(chips))).numpy())
        return np.concatenate(out)


def face_shape(landmarks: np.ndarray) -> dlib.full_object_detection:
    """(68, 2) landmarks as the dlib shape its face chips and descriptors take."""
    points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
    return dlib.full_object_detection(box_to_rect(landmark_box(landmarks)), points)


def landmark_box(landmarks: np.ndarray) -> np.ndarray:
    return np.concatenate([landmarks.min(axis=0), landmarks.max(axis=0)])
