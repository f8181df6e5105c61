"""Image and latent metrics for evaluation: pixel error, PSNR, SSIM, KL per latent dimension."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

ACTIVE_DIM_KL = 0.01  # nats: a latent dimension with less mean KL than this carries no information


def to_float(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float64) / 255.0


def reconstruction_metrics(originals: np.ndarray, reconstructions: np.ndarray) -> dict[str, float]:
    """MSE (on 0..1 pixels), PSNR (dB) and SSIM, averaged over images (uint8 NHWC inputs)."""
    a, b = to_float(originals), to_float(reconstructions)
    mse_per_image = ((a - b) ** 2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(1.0 / np.maximum(mse_per_image, 1e-12))
    ssim = [structural_similarity(x, y, channel_axis=-1, data_range=1.0) for x, y in zip(a, b)]
    return {"mse": float(mse_per_image.mean()), "psnr": float(psnr.mean()), "ssim": float(np.mean(ssim))}


def kl_per_dimension(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean KL(q(z|x) || N(0,1)) of each latent dimension over a set of images."""
    return (0.5 * (np.exp(logvar) + mu ** 2 - 1.0 - logvar)).mean(axis=0)


def active_dimensions(kl_dims: np.ndarray, threshold: float = ACTIVE_DIM_KL) -> int:
    return int((kl_dims > threshold).sum())


def laplacian_sharpness(images: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each grey image (uint8 NHWC) — higher is sharper."""
    grey = np.asarray(images, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    lap = (-4 * grey[:, 1:-1, 1:-1] + grey[:, :-2, 1:-1] + grey[:, 2:, 1:-1]
           + grey[:, 1:-1, :-2] + grey[:, 1:-1, 2:])
    return lap.var(axis=(1, 2))
