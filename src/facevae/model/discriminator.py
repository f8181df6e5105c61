"""The decoder phase's adversary: a PatchGAN discriminator with spectral norm, the hinge loss and
VQGAN's adaptive weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facevae.model.vae import VAE


class PatchDiscriminator(nn.Module):
    """Real or decoded? One logit per overlapping patch (PatchGAN, Isola et al. 2017): three 4x4
    stride-2 convs and a 3x3 one, 64x64 in, 8x8 patches out. Spectral norm on every conv keeps it
    Lipschitz, so the decoder gets useful gradients from its first epochs (Miyato et al. 2018).
    Only the decoder phase uses it (train.adversarial_weight); model.pt does not carry it."""

    def __init__(self, channels: tuple[int, ...] = (64, 128, 256)):
        super().__init__()
        norm = nn.utils.parametrizations.spectral_norm
        layers: list[nn.Module] = []
        c_in = 3
        for c_out in channels:
            layers += [norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers.append(norm(nn.Conv2d(c_in, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1.0 - real_logits.float()).mean() + F.relu(1.0 + fake_logits.float()).mean()


def adaptive_adversarial_weight(recon: Tensor, adversarial: Tensor, last_weight: Tensor, factor: float) -> Tensor:
    """factor * |d recon / d w| / |d adversarial / d w| at the decoder's last layer (Esser et al.
    2021, VQGAN): the adversarial term pulls as hard as the reconstruction does whatever their
    scales, so `factor` means the same for any loss or image size. A constant (no gradient)."""
    g_recon = torch.autograd.grad(recon, last_weight, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adversarial, last_weight, retain_graph=True)[0]
    return ((g_recon.norm() / (g_adv.norm() + 1e-4)).clamp(max=1e4) * factor).detach()


def last_decoder_weight(model: VAE) -> Tensor:
    return [m for m in model.decoder.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1].weight
