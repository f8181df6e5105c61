"""dlib's face descriptor network (dlib_face_recognition_resnet_model_v1) run by torch, batched.

dlib-bin is built without BLAS, so its own forward pass takes about 60 ms a face on one CPU core;
the same network in torch takes a few ms and batches. The weights are read straight from dlib's
model file (its serialisation: compact integers, raw little-endian float32 tensors), and the chips
are still cut by dlib (`get_face_chip`, as `compute_face_descriptor` cuts them), so descriptors
match dlib's to float rounding (tests/test_faces.py compares them on real faces).

The network (dlib's dnn_face_recognition_ex.cpp): a 7x7 stride-2 conv, a 3x3 stride-2 max pool,
then residual blocks of two 3x3 convs with affine (frozen batch norm) layers: 3 x 32 channels,
4 x 64, 3 x 128, 3 x 256, 1 x 256, each level after the first starting with a stride-2 block whose
shortcut is a 2x2 average pool; a global average pool and a 256 -> 128 linear map without bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facevae.core.errors import FaceVAEError

CHIP_SIZE = 150  # px: the network's input (input_rgb_image_sized<150>)

CHIP_PADDING = 0.25  # as compute_face_descriptor cuts its chips

DESCRIPTOR_SIZE = 128

LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))  # channels, blocks, starts with a stride-2 block


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray  # (out,)
    stride: int
    padding: int


@dataclass
class Affine:
    gamma: np.ndarray
    beta: np.ndarray


class DlibFile:
    """A reader over dlib's serialisation of the network."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.buf = self.path.read_bytes()

    def int_at(self, pos: int) -> tuple[int, int]:
        """dlib's compact integer: a byte with the length (low 4 bits) and sign (0x80), then the
        magnitude's bytes, little-endian."""
        head = self.buf[pos]
        size = head & 0x0F
        value = int.from_bytes(self.buf[pos + 1 : pos + 1 + size], "little")
        return (-value if head & 0x80 else value), pos + 1 + size

    def ints_at(self, pos: int, count: int) -> tuple[list[int], int]:
        values = []
        for _ in range(count):
            value, pos = self.int_at(pos)
            values.append(value)
        return values, pos

    def float_at(self, pos: int) -> tuple[float, int]:
        """dlib's portable float: a compact-integer mantissa and exponent."""
        (mantissa, exponent), pos = self.ints_at(pos, 2)
        return float(np.ldexp(float(mantissa), exponent)), pos

    def tensor_at(self, pos: int) -> tuple[np.ndarray, int]:
        """A tensor: version, its four dimensions, then raw float32."""
        (_version, *dims), pos = self.ints_at(pos, 5)
        count = int(np.prod(dims))
        if pos + 4 * count > len(self.buf):
            raise FaceVAEError("dlib model file is truncated", self.path)
        values = np.frombuffer(self.buf, "<f4", count, pos).reshape(dims).astype(np.float32)
        return values, pos + 4 * count

    def find_all(self, layer: str) -> list[int]:
        """Positions just after each serialised layer name (a compact length, then the name)."""
        key = bytes([0x01, len(layer)]) + layer.encode()
        positions, start = [], self.buf.find(key)
        while start >= 0:
            positions.append(start + len(key))
            start = self.buf.find(key, start + 1)
        return positions


@dataclass
class DescriptorWeights:
    """Every parameter of the network, in input-to-output order."""

    channel_means: np.ndarray  # (3,) RGB, subtracted before dividing by 256
    convs: list[Conv]
    affines: list[Affine]
    linear: np.ndarray  # (256, 128): descriptor = features @ linear

    @classmethod
    def from_dlib_file(cls, path: Path) -> "DescriptorWeights":
        file = DlibFile(path)
        convs = [read_conv(file, pos) for pos in file.find_all("con_4")]
        affines = [read_affine(file, pos) for pos in file.find_all("affine_")]
        (fc_pos,) = file.find_all("fc_2") or [None]
        (input_pos,) = file.find_all("input_rgb_image_sized") or [None]
        expected = 1 + 2 * sum(blocks for _, blocks, _ in LEVELS)
        if fc_pos is None or input_pos is None or len(convs) != expected or len(affines) != expected:
            raise FaceVAEError(f"not dlib's face descriptor network ({len(convs)} convolutions, {expected} expected)", path)
        _outputs_inputs, pos = file.ints_at(fc_pos, 2)
        linear, _ = file.tensor_at(pos)
        means, pos = [], input_pos
        for _ in range(3):
            mean, pos = file.float_at(pos)
            means.append(mean)
        return cls(np.array(means, np.float32), convs, affines, linear.reshape(linear.shape[0], linear.shape[1]))


def read_conv(file: DlibFile, pos: int) -> Conv:
    params, pos = file.tensor_at(pos)
    (filters, rows, cols, stride_y, stride_x, pad_y, pad_x), _ = file.ints_at(pos, 7)
    inputs = (params.size - filters) // (filters * rows * cols)
    flat = params.ravel()
    weight = flat[: filters * inputs * rows * cols].reshape(filters, inputs, rows, cols)
    if stride_y != stride_x or pad_y != pad_x:
        raise FaceVAEError("unexpected anisotropic convolution in dlib's face descriptor network", file.path)
    return Conv(weight, flat[filters * inputs * rows * cols :], stride_y, pad_y)


def read_affine(file: DlibFile, pos: int) -> Affine:
    params, _ = file.tensor_at(pos)
    gamma, beta = np.split(params.ravel(), 2)
    return Affine(gamma, beta)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum as if the smaller tensor were zero-padded (channels, rows and
    columns, from the top-left) to the larger one's size."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]
    if list(a.shape) == shape and list(b.shape) == shape:
        return a + b
    out = a.new_zeros(shape)
    out[:, : a.shape[1], : a.shape[2], : a.shape[3]] += a
    out[:, : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


class FaceDescriptorNet:
    """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) descriptors, as dlib computes them (CPU, inference only)."""

    def __init__(self, weights: DescriptorWeights):
        self.means = torch.from_numpy(weights.channel_means).view(1, 3, 1, 1)
        self.convs = [(torch.from_numpy(c.weight), torch.from_numpy(c.bias), c.stride, c.padding) for c in weights.convs]
        self.affines = [(torch.from_numpy(a.gamma).view(1, -1, 1, 1), torch.from_numpy(a.beta).view(1, -1, 1, 1))
                        for a in weights.affines]
        self.linear = torch.from_numpy(weights.linear)

    def conv_affine(self, x: torch.Tensor, i: int) -> torch.Tensor:
        weight, bias, stride, padding = self.convs[i]
        gamma, beta = self.affines[i]
        return F.conv2d(x, weight, bias, stride, padding) * gamma + beta

    @torch.no_grad()
    def __call__(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.permute(0, 3, 1, 2).float() - self.means) / 256.0
        x = F.max_pool2d(F.relu(self.conv_affine(x, 0)), 3, 2)
        layer = 1
        for _channels, blocks, starts_down in LEVELS:
            for block in range(blocks):
                down = starts_down and block == 0
                y = F.relu(self.conv_affine(x, layer))
                y = self.conv_affine(y, layer + 1)
                x = F.relu(add_padded(y, F.avg_pool2d(x, 2, 2)) if down else y + x)
                layer += 2
        return x.mean(dim=(2, 3)) @ self.linear
