"""The VAE's loss: reconstruction (BCE or MSE, optional SSIM and gradient-difference terms, loss masks)
plus beta * KL."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from facevae.core.config import ModelConfig
from facevae.core.errors import FaceVAEError
from facevae.model.vae import VAEOutput


@dataclass
class VAELoss:
    total: Tensor  # recon + beta * kl, batch mean of per-image sums
    recon: Tensor
    kl: Tensor


def vae_loss(out: VAEOutput, target: Tensor, cfg: ModelConfig, weight: Tensor | None = None) -> VAELoss:
    """Per-image summed reconstruction + beta * KL(N(mu, sigma^2) || N(0, I)), both batch means.

    `weight` (N, 1, H, W), 0/1: pixels at 0 (an occluder's region) are left out of the sum."""
    logits, target = out.logits.float(), target.float()
    if cfg.recon_loss == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per_pixel = (torch.sigmoid(logits) - target).square()
    if weight is not None:
        per_pixel = per_pixel * weight.float()
    recon = per_pixel.flatten(1).sum(1).mean()
    if cfg.ssim_weight > 0:
        dissimilar = 1.0 - ssim_map(torch.sigmoid(logits), target)
        if weight is not None:
            dissimilar = dissimilar * weight.float()
        recon = recon + cfg.ssim_weight * dissimilar.flatten(1).sum(1).mean()
    if cfg.gdl_weight > 0:
        recon = recon + cfg.gdl_weight * gradient_difference(torch.sigmoid(logits), target, weight).mean()
    mu, logvar = out.mu.float(), out.logvar.float()
    kl = (0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)).sum(1).mean()
    return VAELoss(recon + cfg.beta * kl, recon, kl)


def gradient_difference(x: Tensor, y: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per image, the summed |difference| of the horizontal and vertical pixel differences of two
    NCHW images (the gradient difference loss of Mathieu et al. 2016): it pays for every edge the
    reconstruction smooths away, where a per-pixel loss is content with the blurred mean.
    `weight` (N, 1, H, W), 0/1: a pair of neighbours counts only where both are weighted in."""
    total = x.new_zeros(x.shape[0])
    for dim in (-1, -2):
        n = x.shape[dim]
        dx = x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)
        dy = y.narrow(dim, 1, n - 1) - y.narrow(dim, 0, n - 1)
        diff = (dx - dy).abs()
        if weight is not None:
            diff = diff * (weight.narrow(dim, 1, n - 1) * weight.narrow(dim, 0, n - 1)).float()
        total = total + diff.flatten(1).sum(1)
    return total


def ssim_map(x: Tensor, y: Tensor) -> Tensor:
    """Per-pixel SSIM (Wang et al. 2004) of two NCHW images in [0, 1], per channel, same size
    (reflect-padded): a term that rewards edges and texture where a per-pixel loss rewards blur."""
    # The five local moments stacked, the Gaussian window applied as two matrix products (rows,
    # then columns, the reflect padding folded into the matrices): on CPU the 11x11 depthwise
    # convs it replaces, and their backward, cost more than the whole model's convs (bench/ssim.py).
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    mx, my, xx, yy, xy = ssim_blur(maps).chunk(5, dim=1)
    return ssim_from_moments(mx, my, xx, yy, xy)


def ssim_blur(maps: Tensor) -> Tensor:
    """The SSIM window over the last two dimensions (reflect-padded), as two matrix products."""
    rows, cols = gaussian_blur_matrix(maps.shape[-2], maps), gaussian_blur_matrix(maps.shape[-1], maps)
    return torch.matmul(rows, torch.matmul(maps, cols.T))


def ssim_from_moments(mx: Tensor, my: Tensor, xx: Tensor, yy: Tensor, xy: Tensor) -> Tensor:
    """Per-pixel SSIM from the blurred x, y, x^2, y^2 and x*y (each broadcastable to the others)."""
    vx, vy, cxy = xx - mx * mx, yy - my * my, xy - mx * my
    return ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))


def gaussian_blur_matrix(n: int, like: Tensor) -> Tensor:
    """(n, n) matrix B with B @ v = v blurred by the SSIM window, reflect-padded at both ends."""
    if n <= SSIM_RADIUS:
        raise FaceVAEError(f"SSIM needs images larger than {SSIM_RADIUS} px on each side, got {n}")
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, device=like.device)
    weights = torch.exp(-(offsets.double() ** 2) / (2 * SSIM_SIGMA**2))
    weights = weights / weights.sum()
    rows = torch.arange(n, device=like.device)[:, None].expand(-1, len(offsets))
    cols = (rows + offsets).abs()
    cols = torch.where(cols > n - 1, 2 * (n - 1) - cols, cols)
    matrix = torch.zeros(n, n, dtype=torch.float64, device=like.device)
    matrix.index_put_((rows, cols), weights.expand(n, -1), accumulate=True)
    return matrix.to(like.dtype)


SSIM_SIGMA, SSIM_RADIUS = 1.5, 5  # the usual 11x11 Gaussian window


SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # for images in [0, 1]
