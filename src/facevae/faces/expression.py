"""Expression features from dlib's 68 landmarks, normalised by inter-ocular distance.

Features are measured in a frame rotated so the eyes are level, so head roll does not leak
into them (roll is reported on its own). Indices follow the iBUG 300-W 68-point scheme.
"""

from __future__ import annotations

import numpy as np

from facevae.faces.landmarks import (
    BROWS,
    EYELID_PAIRS,
    INNER_LIP_PAIRS,
    MOUTH_CORNERS,
    SUBJECT_LEFT_EYE,
    SUBJECT_RIGHT_EYE,
)

FEATURES = ("mouth_open", "mouth_width", "eye_open", "brow_height", "head_roll")

EXPRESSION_FEATURES = FEATURES[:4]

FLAT = 1e-9  # a series with less spread than this does not move (float noise aside)


def expression_features(landmarks: np.ndarray) -> np.ndarray:
    """(N, 68, 2) landmarks -> (N, 5) features in FEATURES order; NaN rows stay NaN."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    level, roll = eyes_level(lm, lm[:, SUBJECT_RIGHT_EYE].mean(1), lm[:, SUBJECT_LEFT_EYE].mean(1))

    def mean_gap(pairs):
        return np.mean([np.linalg.norm(level[:, a] - level[:, b], axis=1) for a, b in pairs], axis=0)

    mouth_open = mean_gap(INNER_LIP_PAIRS)
    mouth_width = mean_gap((MOUTH_CORNERS,))
    eye_open = mean_gap(EYELID_PAIRS)
    brow_height = -level[:, BROWS, 1].mean(1)  # image y grows downwards; eyes are at y=0
    return np.stack([mouth_open, mouth_width, eye_open, brow_height, np.degrees(roll)], axis=1)


def eyes_level(points: np.ndarray, right_eye: np.ndarray, left_eye: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, 2) points centred between the eyes, rotated so the eyes are level and scaled to
    inter-ocular distances; and the head roll (radians). Any landmark scheme: the eyes are given."""
    eye_vec = left_eye - right_eye
    roll = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    centred = points - ((right_eye + left_eye) / 2)[:, None]
    cos, sin = np.cos(-roll)[:, None], np.sin(-roll)[:, None]
    x, y = centred[..., 0], centred[..., 1]
    level = np.stack([cos * x - sin * y, sin * x + cos * y], axis=-1)
    return level / np.linalg.norm(eye_vec, axis=1)[:, None, None], roll


def pearson_r(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two series over their common finite entries (NaN when undefined)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < FLAT or np.std(b[ok]) < FLAT:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def mean_r(rs) -> float:
    """The mean of per-feature rs, an undefined one counting as 0: an output that does not move
    has no correlation to speak of (the evaluation's expression r; the audit's too)."""
    return float(np.mean(np.nan_to_num(np.asarray(rs, dtype=np.float64), nan=0.0)))


def gain(driver: np.ndarray, output: np.ndarray) -> float:
    """std(output) / std(driver): below 1 the actor under-acts the driver, above 1 over-acts."""
    ok = np.isfinite(driver) & np.isfinite(output)
    spread = np.std(driver[ok]) if ok.any() else 0.0
    return float(np.std(output[ok]) / spread) if spread > FLAT else float("nan")
