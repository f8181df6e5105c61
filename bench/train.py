"""Training speed: our loop vs. a plain eager PyTorch loop of the same network, in one run.

    python bench/train.py [DATA.h5] [--epochs 4] [--images 400] [--params params.yaml] [--set key=value ...]

DATA defaults to data/hdf5/pexels.h5; when it does not exist, --images real 64x64 face crops
(the astronaut, shifted) are written in the project's HDF5 layout to a temp folder instead.

Plain: torch DataLoader over a Dataset that reads one sample at a time from the HDF5 file
(random mirror per sample), NCHW fp32, stock nn.ConvTranspose2d, torch.optim.Adam defaults.
The HDF5 file's chunks hold 256 gzip'd crops, so each per-sample read inflates a whole chunk:
the same plain loop over data preloaded in memory is printed too, to separate the two effects.
Ours: facevae.training.loop.run_training as `facevae train` runs it (in-memory uint8 split, batched
mirror, channels_last, matrix/phase forms of the slow transposed convs, fused Adam), including
its per-epoch validation and checkpoint, which are not counted in images/s. The decoder phase
(`train.decoder_epochs`, with its discriminator) is left out: the plain loop has none.

Both: model.* and train.batch_size/lr/seed/device from params, the first epoch is warm-up,
images/s is the median over the remaining epochs of training-phase time. The peak is the best
2048x2048 fp32 torch.mm on the training device, timed before, between and after the loops (the
machine may be shared). Targets on a 2-core CPU: ours >= 1.3x plain, >= 60% of matmul peak.
On a GPU (`--set train.device=cuda`) the plain loop runs there too, in fp32 (ours in
train.precision): the ratio then measures the data path and mixed precision together.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from facevae.core.config import load_params
from facevae.model.flops import flops_per_image
from facevae.model.losses import vae_loss
from facevae.model.vae import VAE, Deconv
from facevae.training.loop import resolve_device, run_training

from benchdata import bench_dataset, training_bench_parser  # bench/, the script's own folder, is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PerSampleHDF5(torch.utils.data.Dataset):
    """The textbook Dataset: one h5py read per item, opened lazily (one handle per worker)."""

    def __init__(self, path: Path):
        self.path, self.h5 = path, None
        with h5py.File(path, "r") as h5:
            self.index = np.flatnonzero(h5["split"][:] == 0)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.h5 is None:
            self.h5 = h5py.File(self.path, "r")
        image = torch.from_numpy(self.h5["images"][self.index[i]]).permute(2, 0, 1).float() / 255.0
        return image.flip(-1) if random.random() < 0.5 else image


def plain_model(params) -> VAE:
    """The same network with stock transposed convs (our Deconv only reroutes their forward)."""
    model = VAE(params.model)
    for module in model.modules():
        if isinstance(module, Deconv):
            module.__class__ = nn.ConvTranspose2d
    return model


class InMemory(torch.utils.data.Dataset):
    """The same per-item Dataset over a preloaded uint8 array: isolates the HDF5 reads' share."""

    def __init__(self, path: Path):
        from facevae.data.dataset import read_split

        self.images = torch.from_numpy(read_split(path, "train")).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i].float() / 255.0
        return image.flip(-1) if random.random() < 0.5 else image


def plain_images_per_s(
    data: Path, params, device: torch.device, epochs: int, workers: int, in_memory: bool = False
) -> float:
    torch.manual_seed(params.train.seed)
    model = plain_model(params).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=params.train.lr, eps=params.train.adam_eps)
    dataset = InMemory(data) if in_memory else PerSampleHDF5(data)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=params.train.batch_size, shuffle=True, num_workers=0 if in_memory else workers
    )
    speeds = []
    for _ in range(epochs):
        seen, started = 0, time.perf_counter()
        for x in loader:
            x = x.to(device)
            loss = vae_loss(model(x), x, params.model).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(x)
        sync(device)
        speeds.append(seen / (time.perf_counter() - started))
    return statistics.median(speeds[1:] or speeds)


def our_images_per_s(data: Path, params, epochs: int) -> float:
    params.train.epochs = epochs
    params.train.decoder_epochs = 0  # the plain loop has no decoder phase: compare the VAE epochs alone
    params.mlflow.enabled = False
    with tempfile.TemporaryDirectory() as out:
        result = run_training(data, "bench", params, Path(out), progress=False)
    speeds = [row["images_per_s"] for row in result.history]
    return statistics.median(speeds[1:] or speeds)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def main() -> None:
    parser = training_bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loop; the first is warm-up")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain loop")
    args = parser.parse_args()

    params = load_params(args.params, args.overrides)
    device = resolve_device(params.train.device)
    if params.train.num_threads:
        torch.set_num_threads(params.train.num_threads)
    with tempfile.TemporaryDirectory() as tmp:
        data, data_name = bench_dataset(args.data, args.images, tmp)
        with h5py.File(data, "r") as h5:
            n_train = int((h5["split"][:] == 0).sum())
        peaks = [matmul_gflops(device)]  # measured between the loops too: the machine is shared, keep the best
        plain = plain_images_per_s(data, params, device, args.epochs, args.workers)
        peaks.append(matmul_gflops(device))
        plain_memory = plain_images_per_s(data, params, device, args.epochs, args.workers, in_memory=True)
        peaks.append(matmul_gflops(device))
        ours = our_images_per_s(data, params.model_copy(deep=True), args.epochs)
        peaks.append(matmul_gflops(device))
    peak = max(peaks)
    # the network's FLOPs (and the per-pixel loss): the SSIM term's count depends on how its blur is
    # computed (an 11x11 conv counts 121 multiply-adds a pixel, the matmul form 128, a separable one
    # 22), so it is left out of the share of peak; its time still counts, in images/s
    gflop = flops_per_image(params.model.model_copy(update={"ssim_weight": 0.0}))["train"] / 1e9

    print(f"data: {data_name}, {n_train} train images, "
          f"batch {params.train.batch_size}, {args.epochs} epochs per loop (first = warm-up), "
          f"device {device_name(device)}, {torch.get_num_threads()} threads, "
          f"precision {params.train.precision} (plain loop fp32)")
    print(f"matmul peak (2048^2 fp32 mm on {device.type}): {peak:.1f} GFLOP/s (best of {', '.join(f'{p:.0f}' for p in peaks)})")
    print(f"model: {gflop:.3f} GFLOP per training image (forward + backward; the SSIM term's arithmetic not counted)")
    print(f"plain loop: {plain:.1f} images/s  ({gflop * plain:.1f} GFLOP/s, {gflop * plain / peak:.0%} of peak)")
    print(f"  (same plain loop, data preloaded in memory: {plain_memory:.1f} images/s, "
          f"{gflop * plain_memory / peak:.0%} of peak; ours is {ours / plain_memory:.2f}x that)")
    print(f"our loop:   {ours:.1f} images/s  ({gflop * ours:.1f} GFLOP/s, {gflop * ours / peak:.0%} of peak)")
    print(f"speed-up: {ours / plain:.2f}x (target >= 1.3x); our share of matmul peak {gflop * ours / peak:.0%} (target >= 60%)")


if __name__ == "__main__":
    main()
