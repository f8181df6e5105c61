"""The VAE of the 2017 seed post, in PyTorch, with every sweepable knob taken from ModelConfig.

Default config = the seed exactly at 64x64:
  encoder  4x4 stride-2 SAME convs 32-64-128-256 (BN + ReLU) -> 4x4x256 -> linear mu, linear logvar
  decoder  linear to 1024 (no activation, as in the seed) -> 1x1x1024 ->
           ConvTranspose 5,5,6,6 stride 2 VALID: 1 -> 5 -> 13 -> 30 -> 64, channels 128-64-32-3,
           BN + ReLU between, sigmoid out.
Images are float in [0, 1], NCHW. `logvar` is the seed's `stddev_log_sq` (log sigma^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facevae.core.config import ModelConfig
from facevae.core.errors import FaceVAEError

STRIDE = 2


@dataclass
class VAEOutput:
    logits: Tensor  # decoder output before the sigmoid (BCE-with-logits needs these)
    mu: Tensor
    logvar: Tensor

    @property
    def recon(self) -> Tensor:
        return torch.sigmoid(self.logits)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow SAME padding: output = ceil(size / stride). Returns (before, after, output)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def encoder_sizes(cfg: ModelConfig) -> list[int]:
    """Spatial size after each encoder conv, e.g. 64 -> [32, 16, 8, 4]."""
    sizes, size = [], cfg.image_size
    for _ in cfg.enc_channels:
        size = same_padding(size, cfg.enc_kernel, STRIDE)[2]
        sizes.append(size)
    return sizes


def decoder_sizes(cfg: ModelConfig) -> list[int]:
    """Spatial size after each VALID transposed conv, e.g. kernels 5,5,6,6 -> [5, 13, 30, 64]."""
    sizes, size = [], 1
    for kernel in cfg.dec_kernels:
        size = (size - 1) * STRIDE + kernel
        sizes.append(size)
    return sizes


def resize_start(cfg: ModelConfig) -> int:
    """Side of the resize decoder's first feature map: each of its layers doubles it."""
    return cfg.image_size // 2 ** len(cfg.dec_kernels)


def check_config(cfg: ModelConfig) -> None:
    """The decoder must land exactly on the image size: say which knobs to change if it does not."""
    if not cfg.enc_channels:
        raise FaceVAEError("model.enc_channels needs at least one layer")
    if cfg.decoder == "resize":
        start, layers = resize_start(cfg), len(cfg.dec_kernels)
        if start < 1 or start * 2**layers != cfg.image_size or cfg.dec_hidden % (start * start):
            raise FaceVAEError(
                f"model.decoder resize doubles the side {layers} times (one per dec_kernels entry): model.image_size "
                f"{cfg.image_size} must be a multiple of {2**layers} and model.dec_hidden ({cfg.dec_hidden}) of "
                f"the first map's area ({max(start, 1)}x{max(start, 1)})"
            )
        return
    out = decoder_sizes(cfg)[-1]
    if out != cfg.image_size:
        chain = " -> ".join(str(s) for s in [1, *decoder_sizes(cfg)])
        raise FaceVAEError(
            f"model.dec_kernels {cfg.dec_kernels} decode to {out}x{out} ({chain}), but model.image_size is "
            f"{cfg.image_size}: each stride-2 VALID layer maps s to 2*(s-1)+kernel"
        )


def conv_block(c_in: int, c_out: int, size: int, kernel: int, batch_norm: bool) -> list[nn.Module]:
    before, after, _ = same_padding(size, kernel, STRIDE)
    layers: list[nn.Module] = []
    if before == after:
        conv = nn.Conv2d(c_in, c_out, kernel, STRIDE, padding=before, bias=not batch_norm)
    else:  # odd total padding: TF puts the extra pixel after, which Conv2d cannot express
        layers.append(nn.ZeroPad2d((before, after, before, after)))
        conv = nn.Conv2d(c_in, c_out, kernel, STRIDE, bias=not batch_norm)
    layers.append(conv)
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class Deconv(nn.ConvTranspose2d):
    """ConvTranspose2d (same parameters, same maths) routed to faster kernels for two CPU-slow shapes.

    oneDNN's transposed conv is slow on a 1x1 input (the seed's first decoder layer: it is exactly a
    matrix product) and with few output channels (the RGB layer: its four stride phases are one
    ordinary conv with 4x the outputs, then a pixel shuffle). Measured on a 2-core CPU: ~3x and ~1.3x.
    """

    def __init__(self, *args: Any, input_1x1: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.input_1x1 = input_1x1

    def _apply(self, fn, recurse: bool = True):
        # .to(memory_format=channels_last) would make the matrix form copy its 13 MB weight every step
        module = super()._apply(fn, recurse)
        if self.input_1x1:
            self.weight.data = self.weight.data.contiguous()
        return module

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        if output_size is None and self._is_plain():
            if x.shape[-2:] == (1, 1):
                return self._forward_1x1(x)
            if x.device.type == "cpu" and self.out_channels <= 4:
                return self._forward_phases(x)
        return super().forward(x, output_size)

    def _is_plain(self) -> bool:
        return (
            self.padding == (0, 0) and self.output_padding == (0, 0) and self.dilation == (1, 1)
            and self.groups == 1 and self.stride == (STRIDE, STRIDE) and self.kernel_size[0] == self.kernel_size[1]
        )

    def _forward_1x1(self, x: Tensor) -> Tensor:
        c_in, c_out, k, _ = self.weight.shape
        y = (x.flatten(1) @ self.weight.reshape(c_in, c_out * k * k)).view(-1, c_out, k, k)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def _forward_phases(self, x: Tensor) -> Tensor:
        k = self.kernel_size[0]
        height, width = ((size - 1) * STRIDE + k for size in x.shape[-2:])
        taps = (k + 1) // 2
        y = F.pixel_shuffle(F.conv2d(x, phase_weight(self.weight), padding=taps - 1), STRIDE)
        y = y[..., :height, :width]  # odd kernels were padded by one tap
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


def phase_weight(weight: Tensor) -> Tensor:
    """Stride-2 transposed-conv weight (in, out, k, k) -> conv weight (out*4, in, ceil(k/2), ceil(k/2)).

    Output pixel (2i+a, 2j+b) only sees kernel taps of parity (a, b): each parity is a small conv, and
    pixel_shuffle interleaves the four results. Odd kernels get a zero tap to make them even.
    """
    if weight.shape[-1] % 2:
        weight = F.pad(weight, (0, 1, 0, 1))
    c_in, c_out, k, _ = weight.shape
    taps = k // 2
    w = weight.flip(-1, -2).reshape(c_in, c_out, taps, 2, taps, 2).flip(3, 5)
    return w.permute(1, 3, 5, 0, 2, 4).reshape(c_out * 4, c_in, taps, taps)


def decoder_tail(c_out: int, batch_norm: bool, last: bool) -> list[nn.Module]:
    """BN (when on) + ReLU after a decoder layer; nothing after the RGB layer (it outputs logits)."""
    if last:
        return []
    return [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]


def deconv_block(c_in: int, c_out: int, kernel: int, batch_norm: bool, first: bool, last: bool) -> list[nn.Module]:
    use_bn = batch_norm and not last
    return [Deconv(c_in, c_out, kernel, STRIDE, bias=not use_bn, input_1x1=first), *decoder_tail(c_out, batch_norm, last)]


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 3, cfg.image_size
        for c_out, out_size in zip(cfg.enc_channels, encoder_sizes(cfg)):
            layers += conv_block(c_in, c_out, size, cfg.enc_kernel, cfg.batch_norm)
            c_in, size = c_out, out_size
        self.convs = nn.Sequential(*layers)
        features = c_in * size * size
        self.mu = nn.Linear(features, cfg.latent_dim)
        self.logvar = nn.Linear(features, cfg.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.convs(x).flatten(1)
        return self.mu(h), self.logvar(h)


def resize_block(c_in: int, c_out: int, batch_norm: bool, last: bool) -> list[nn.Module]:
    """Nearest 2x upsampling then a 3x3 conv: every output pixel gets the same number of
    contributions, so no checkerboard (Odena et al. 2016), unlike a stride-2 transposed conv."""
    use_bn = batch_norm and not last
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not use_bn)
    return [nn.Upsample(scale_factor=2, mode="nearest"), conv, *decoder_tail(c_out, batch_norm, last)]


class Decoder(nn.Module):
    """The seed's transposed convs from a 1x1 map (`deconv`), or `resize`: dec_hidden reshaped to
    a (dec_hidden / s^2) x s x s map, s = image_size / 2^layers, then upsample + conv layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.latent_dim, cfg.dec_hidden)
        self.start = resize_start(cfg) if cfg.decoder == "resize" else 1
        channels = [cfg.dec_hidden // self.start**2, *cfg.dec_channels, 3]
        layers: list[nn.Module] = []
        for i, kernel in enumerate(cfg.dec_kernels):
            last = i == len(cfg.dec_kernels) - 1
            if cfg.decoder == "resize":
                layers += resize_block(channels[i], channels[i + 1], cfg.batch_norm, last)
            else:
                layers += deconv_block(channels[i], channels[i + 1], kernel, cfg.batch_norm, i == 0, last)
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """Logits of the image (apply sigmoid for pixels in [0, 1])."""
        h = self.fc(z).unflatten(1, (-1, self.start, self.start))
        return self.deconvs(h)


class VAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_config(cfg)
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.noise_shard = (0, 1)  # (rank, world) in data-parallel training: see reparameterize

    def forward(self, x: Tensor) -> VAEOutput:
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar, *self.noise_shard) if self.training else mu
        return VAEOutput(self.decoder(z), mu, logvar)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Latent code used at inference: the mean mu (no sampling)."""
        return self.encoder(x)[0]

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Pixels in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


def reparameterize(mu: Tensor, logvar: Tensor, rank: int = 0, world: int = 1) -> Tensor:
    """The seed's z = mu + sigma * eps, sigma = sqrt(exp(stddev_log_sq)), eps ~ N(0, I).

    With `world` processes each holding rows rank, rank + world, ... of a global batch, each draws
    the whole global batch's eps and keeps its rows: the noise a one-process run would have drawn,
    and every process's generator stays in step (a resume restores one state on all)."""
    if world == 1:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn((len(mu) * world, *mu.shape[1:]), dtype=mu.dtype, device=mu.device)[rank::world]
    return mu + torch.exp(0.5 * logvar) * eps


def build_model(cfg: ModelConfig) -> VAE:
    return VAE(cfg)

# ---- uint8 faces in, uint8 faces out (ActorModel and the pyfunc) -----------------------------


def faces_to_tensor(faces: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, S, S, 3) RGB -> float (N, 3, S, S) in [0, 1] on `device`, channels_last in memory."""
    x = torch.from_numpy(np.ascontiguousarray(faces)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


def tensor_to_faces(images: Tensor) -> np.ndarray:
    """float (N, 3, S, S) in [0, 1] -> uint8 (N, S, S, 3) RGB on the CPU."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def reconstruct_faces(model: VAE, faces: np.ndarray, batch_size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) faces -> decode(mu(face)) as uint8 (N, S, S, 3), `batch_size` faces per
    forward pass, without autograd, on the model's device. The caller sets eval mode (and the
    weights' memory format, which can move the rounding of a few pixels)."""
    device = next(model.parameters()).device
    out = np.empty_like(faces)
    with torch.inference_mode():
        for start in range(0, len(faces), batch_size):
            chunk = faces[start : start + batch_size]
            out[start : start + len(chunk)] = tensor_to_faces(model.reconstruct(faces_to_tensor(chunk, device)))
    return out
