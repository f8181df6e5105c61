"""The compute cost of one image through the VAE, counted by torch on the real graph (bench and MLflow)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from facevae.core.config import ModelConfig
from facevae.model.losses import vae_loss
from facevae.model.vae import VAE


def flops_per_image(cfg: ModelConfig) -> dict[str, float]:
    """FLOPs (multiply-add = 2) of one image, counted by torch on the real graph: forward and train step."""
    model = VAE(cfg).train()
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)
    with FlopCounterMode(display=False) as forward_counter:
        out = model(x)
    with FlopCounterMode(display=False) as backward_counter:
        vae_loss(out, x, cfg).total.backward()
    forward = forward_counter.get_total_flops() / 2
    return {"forward": forward, "train": forward + backward_counter.get_total_flops() / 2}
