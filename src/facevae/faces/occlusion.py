"""Occlusion score: does the image around the mouth landmarks look like the actor's mouth?

dlib places all 68 landmarks even when a hand covers the mouth; the image around those
landmarks then shows fingers, not lips. Per crop, a small patch around each outer-lip landmark
(48-59) is compared with the median patch of that landmark over all of the actor's crops
(robust while under half the crops are occluded): the score is the mean of 1 - normalised
correlation (0 = looks like the actor's lips, up to 2). Patches follow the landmarks, so an open
mouth, a smile or pursed lips move with them and stay close to the median; colours are kept
(lips are redder than fingers) and each patch's mean is removed (lighting).

Along each video the flags are grown by hysteresis: a frame above `high` starts a run, and its
neighbours stay in it while they score above `low` (a hand sliding onto or off the mouth covers
less of it, so it scores lower, but it is the same occlusion). A frame above `low` with no
frame above `high` next to it is never flagged, so clean clips are judged by `high` alone.

A flagged frame is dropped, or kept with the lower face masked out of the training loss
(`lower_face_mask`): a hand over the mouth also covers nose and chin, while the eyes and brows,
which carry the frowns and closed eyes of those frames, stay visible.

Cost: a few milliseconds per thousand crops (numpy only, no weights). Measured on the pexels
clip (bench/occlusion.py): eye-only occlusion is not scored, only the lower face.
"""

from __future__ import annotations

import numpy as np

from facevae.faces.landmarks import OUTER_LIP

# the outer lip contour (OUTER_LIP): inner lip points (60-67) change too much with the open mouth

RADIUS = 2  # patch half-size in crop pixels (a 64 px crop: 5x5 patches)

MAX_REFERENCE = 4000  # crops the median patch is taken over (evenly spaced), for long videos


def mouth_patches(crops: np.ndarray, landmarks: np.ndarray, radius: int = RADIUS) -> np.ndarray:
    """(N, S, S, 3) uint8 crops and (N, 68, 2) crop-pixel landmarks -> (N, len(OUTER_LIP), D) unit
    patches (mean removed, L2-normalised; NaN landmarks give zero patches)."""
    n, size = len(crops), crops.shape[1]
    points = np.nan_to_num(np.asarray(landmarks, dtype=np.float32)[:, OUTER_LIP], nan=size / 2)
    offsets = np.arange(-radius, radius + 1)
    xs = np.clip(np.rint(points[..., 0])[..., None, None] + offsets[None, None, None, :], 0, size - 1).astype(np.intp)
    ys = np.clip(np.rint(points[..., 1])[..., None, None] + offsets[None, None, :, None], 0, size - 1).astype(np.intp)
    patches = crops[np.arange(n)[:, None, None, None], ys, xs].astype(np.float32).reshape(n, len(OUTER_LIP), -1)
    patches -= patches.mean(-1, keepdims=True)
    patches /= np.linalg.norm(patches, axis=-1, keepdims=True) + 1e-6
    return patches


def mouth_reference(patches: np.ndarray) -> np.ndarray:
    """(L, D) the per-landmark median of (N, L, D) unit patches, renormalised: one person's lips."""
    step = max(1, len(patches) // MAX_REFERENCE)
    reference = np.median(patches[::step], axis=0)
    return reference / (np.linalg.norm(reference, axis=-1, keepdims=True) + 1e-6)


def occlusion_scores(patches: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """(N, L, D) unit patches of one person -> (N,) scores in [0, 2]: mean 1 - correlation with the
    per-landmark `reference` (default: their own median patch, `mouth_reference`)."""
    if len(patches) == 0:
        return np.zeros(0, dtype=np.float32)
    reference = mouth_reference(patches) if reference is None else reference
    return (1.0 - (patches * reference).sum(-1)).mean(-1).astype(np.float32)


def hysteresis(scores: np.ndarray, high: float, low: float) -> np.ndarray:
    """Flags of one video's frames (in time order): runs of scores above `low` that contain a
    score above `high`. NaN (no crop) ends a run."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    above_low = scores > min(low, high)
    flags = np.zeros(len(scores), dtype=bool)
    start = 0
    for end in range(len(scores) + 1):
        if end == len(scores) or not above_low[end]:
            if end > start and (scores[start:end] > high).any():
                flags[start:end] = True
            start = end + 1
    return flags


def lower_face_mask(landmarks: np.ndarray, size: int, margin: float = 0.1) -> np.ndarray:
    """(N, 68, 2) crop-pixel landmarks -> (N, S, S) uint8 loss masks: 0 below a line `margin`
    eye-to-mouth distances under the lower eyelids (level: crops are aligned), 1 above it."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    lower_lids = lm[:, [40, 41, 46, 47], 1].max(1)
    eye_to_mouth = lm[:, 48:68, 1].mean(1) - lm[:, 36:48, 1].mean(1)
    line = np.nan_to_num(lower_lids + margin * eye_to_mouth, nan=size * 0.4)  # no landmarks: below 40% of the crop
    rows = np.arange(size, dtype=np.float64)
    keep = rows[None, :] < line[:, None]
    return np.repeat(keep[:, :, None], size, axis=2).astype(np.uint8)


def occluded_frames(crops: np.ndarray, landmarks: np.ndarray, high: float, low: float,
                    reference: np.ndarray | None = None) -> np.ndarray:
    """(N,) flags of one clip's face frames (time order), scored against `reference` (mouth_reference
    of the person's lips; default: the clip's own median mouth): how a driver clip's covered frames
    are found."""
    return hysteresis(occlusion_scores(mouth_patches(crops, landmarks), reference), high, low)
