"""Baselines that any expression-transfer model must beat, evaluated on the same clips.

Both map a driver's aligned crop to an actor image without a neural network:
- nearest neighbour: the actor's training crop closest in pixels to the driver crop;
- PCA: project the driver crop onto the actor's principal components (same latent size as the
  VAE) and reconstruct, the linear cousin of the VAE.
"""

from __future__ import annotations

import numpy as np


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
