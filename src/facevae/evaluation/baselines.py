"""Baselines that any expression-transfer model must beat, evaluated on the same clips.

Both map a driver's aligned crop to an actor image without a neural network:
- nearest neighbour: the actor's training crop closest in pixels to the driver crop;
- PCA: project the driver crop onto the actor's principal components (same latent size as the
  VAE) and reconstruct, the linear cousin of the VAE.

And one diagnostic, `ExpressionMatch` (the `coverage` row): what the actor's own footage holds
for a driver's expressions, so a weak score can be put on the model or on the footage.
"""

from __future__ import annotations

import numpy as np

from facevae.faces.expression import EXPRESSION_FEATURES, expression_features
from facevae.transfer.fit import neutral_index
from facevae.transfer.footage import nearest_indices


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def _to_uint8(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.clip(flat * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(-1, *shape)


class NearestNeighbour:
    def __init__(self, actor_images: np.ndarray):
        self.images = np.asarray(actor_images)
        self.flat = _flat(actor_images)
        self.sq_norms = (self.flat ** 2).sum(1)

    def __call__(self, driver_crops: np.ndarray, batch: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(driver_crops), batch):
            q = _flat(driver_crops[start:start + batch])
            dist = self.sq_norms[None] - 2 * q @ self.flat.T  # |q|^2 is the same for every candidate
            out.append(self.images[dist.argmin(1)])
        return np.concatenate(out) if out else self.images[:0]


class PCABaseline:
    def __init__(self, actor_images: np.ndarray, n_components: int):
        flat = _flat(actor_images)
        self.shape = actor_images.shape[1:]
        self.mean = flat.mean(0)
        _, _, vt = np.linalg.svd(flat - self.mean, full_matrices=False)
        self.components = vt[: min(n_components, len(vt))]

    def __call__(self, driver_crops: np.ndarray) -> np.ndarray:
        codes = (_flat(driver_crops) - self.mean) @ self.components.T
        return _to_uint8(codes @ self.components + self.mean, self.shape)


WITHIN_PERCENTILES = (1.0, 99.0)  # her range of each feature: her own rarest 1% at either end left out


class FootageExpressions:
    """Her expressions: the four scored features (facevae.faces.expression) of her training frames as
    offsets from her neutral frame (closest to the median landmark shape), and a driver's expressions
    moved onto her face the same way (offsets from the driver's neutral, chosen in its first
    `neutral_window` faces as the driving modes choose it).

    A driver frame's expression lies *within her footage* when each of the four features, so moved,
    falls within her range of it (her training frames' 1st to 99th percentile): her footage holds
    that mouth opening, that mouth width, that eye opening and that brow height."""

    def __init__(self, actor_landmarks: np.ndarray, neutral_window: int = 64):
        features = expression_features(actor_landmarks)[:, : len(EXPRESSION_FEATURES)]
        self.rows = np.flatnonzero(np.isfinite(features).all(1))  # her frames with landmarks
        self.features = features[self.rows]
        self.neutral = self.features[neutral_index(np.asarray(actor_landmarks)[self.rows])]
        self.scale = np.maximum(self.features.std(0), 1e-6)
        self.low, self.high = np.percentile(self.features, WITHIN_PERCENTILES, axis=0)
        self.neutral_window = neutral_window

    def driven(self, landmarks: np.ndarray) -> np.ndarray:
        """(N, 4) the driver's expressions on her face: her neutral + (driver - driver's neutral); NaN
        where the driver's frame has no landmarks."""
        driver = expression_features(landmarks)[:, : len(EXPRESSION_FEATURES)]
        window = landmarks[: self.neutral_window or len(landmarks)]
        return self.neutral + driver - driver[neutral_index(window)]

    def within(self, landmarks: np.ndarray) -> np.ndarray:
        """(N,) bool: the driver's expression lies within her footage (see the class)."""
        target = self.driven(landmarks)
        return np.all((target >= self.low) & (target <= self.high), axis=1)


class ExpressionMatch:
    """For each driver frame, the actor's own training crop whose expression is closest
    (FootageExpressions.driven, in units of her spread of each feature).

    It reads the metric's own features, so it is a diagnostic, not a way to drive: a low score
    says the actor never makes the driver's faces (no model trained on that footage can), a mode
    far below it says the model loses what the footage has."""

    def __init__(self, actor_images: np.ndarray, footage: FootageExpressions):
        # (not `footage`: a translator's `footage` is its driving session's, facevae.transfer.footage.Footage)
        self.images, self.expressions = np.asarray(actor_images)[footage.rows], footage

    def translate_clip(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        footage = self.expressions
        target = footage.driven(landmarks)
        target = np.where(np.isfinite(target), target, footage.neutral)  # no landmarks: the neutral face
        return self.images[nearest_indices(target / footage.scale, footage.features / footage.scale, 1)[:, 0]]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        raise TypeError("ExpressionMatch needs the driver's landmarks: call translate_clip")
