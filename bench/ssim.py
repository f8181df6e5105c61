"""The SSIM loss term: the 11x11 Gaussian as one 2-D depthwise conv per moment (baseline, the form
used up to 91c2776) against facevae.model.losses.ssim_map (five moments stacked, the Gaussian applied as two matrix
products with the reflect padding folded in). Forward + backward on a training-sized batch, then
whole training steps (model, loss, Adam; params.yaml's model) with each form, interleaved, same run.

    python bench/ssim.py [--batch 64] [--repeats 30] [--threads 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import facevae.model.losses
from facevae.core.config import load_params
from facevae.model.losses import (
    SSIM_C1,
    SSIM_C2,
    SSIM_RADIUS,
    SSIM_SIGMA,
    ssim_map,
    vae_loss,
)
from facevae.training.loop import build_optimizer, build_training_model, resolve_device


def ssim_map_2d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=x.dtype)
    g = torch.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    channels = x.shape[1]
    window = (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()

    def blur(t):
        return F.conv2d(F.pad(t, [SSIM_RADIUS] * 4, mode="reflect"), window, groups=channels)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))


def seconds_per_batch(fn, x, y, repeats: int) -> float:
    for _ in range(3):  # warm-up
        fn(x, y).sum().backward()
    best = float("inf")
    for _ in range(3):  # best of three blocks: the machine's other work only ever adds time
        started = time.perf_counter()
        for _ in range(repeats):
            fn(x, y).sum().backward()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def training_step_seconds(ssim_forms: dict, batch: int, repeats: int) -> dict[str, float]:
    """Best-of-blocks seconds per training step with each SSIM form, the forms taking turns."""
    params = load_params(Path("params.yaml"), [])
    device = resolve_device(params.train.device)
    torch.manual_seed(0)
    x = torch.rand(batch, 3, params.model.image_size, params.model.image_size, device=device)
    model = build_training_model(params.model, device)
    optimizer = build_optimizer(model, params.train, device)

    def step():
        loss = vae_loss(model(x), x, params.model)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()

    best = {name: float("inf") for name in ssim_forms}
    try:
        for block in range(4):
            for name, form in ssim_forms.items():
                facevae.model.losses.ssim_map = form  # vae_loss looks the function up at call time
                for _ in range(2 if block == 0 else 0):  # warm-up
                    step()
                started = time.perf_counter()
                for _ in range(repeats):
                    step()
                best[name] = min(best[name], (time.perf_counter() - started) / repeats)
    finally:
        facevae.model.losses.ssim_map = ssim_map
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 64, 64, requires_grad=True)
    y = torch.rand(args.batch, 3, 64, 64)
    diff = (ssim_map(x, y) - ssim_map_2d(x, y)).abs().max().item()
    base = seconds_per_batch(ssim_map_2d, x, y, args.repeats)
    ours = seconds_per_batch(ssim_map, x, y, args.repeats)
    print(f"batch {args.batch}x3x64x64, forward + backward, torch threads {torch.get_num_threads()}")
    print(f"baseline (2-D 11x11 window, one conv per moment): {base * 1e3:.1f} ms per batch")
    print(f"ours (stacked moments, blur as two matmuls):       {ours * 1e3:.1f} ms per batch")
    print(f"max |difference| {diff:.2e}; speed-up {base / ours:.2f}x")
    steps = training_step_seconds({"baseline": ssim_map_2d, "ours": ssim_map}, args.batch, max(args.repeats // 3, 3))
    print(f"training step (params.yaml model, batch {args.batch}): baseline {steps['baseline'] * 1e3:.1f} ms, "
          f"ours {steps['ours'] * 1e3:.1f} ms; {steps['baseline'] / steps['ours']:.2f}x, "
          f"{args.batch / steps['baseline']:.1f} -> {args.batch / steps['ours']:.1f} images/s")


if __name__ == "__main__":
    main()
