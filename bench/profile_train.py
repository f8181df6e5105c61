"""Where a training step's time goes: torch.profiler over our VAE step and our decoder-phase step.

    python bench/profile_train.py [DATA.h5] [--steps 20] [--params params.yaml] [--set key=value ...]

Each step is the library's own (facevae.training.loop.train_epoch over `--steps` batches, after
one warm-up epoch); the profiler's self time of every operator is summed by kind. "not in an
operator" is the wall time the profiler saw no operator running: Python, the autograd engine's
bookkeeping, allocation. The matmul peak is measured as in bench/train.py, to put the
convolutions' own throughput beside it.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from facevae.core.config import Params, load_params
from facevae.training.loop import (
    Adversary,
    Augmenter,
    build_optimizer,
    build_training_model,
    enter_decoder_phase,
    epoch_order,
    load_split_tensor,
    resolve_device,
    train_epoch,
)

from benchdata import bench_dataset, training_bench_parser  # bench/, the script's own folder, is on sys.path

ROOT = Path(__file__).resolve().parents[1]

KINDS = [  # first match wins
    ("convolution", r"conv|mkldnn_convolution"),
    ("matmul (linear, SSIM blur)", r"addmm|^aten::mm$|^aten::bmm$|matmul|linear"),
    ("batch norm", r"batch_norm"),
    ("optimizer", r"adam|_foreach|_fused"),
    ("upsample", r"upsample"),
    ("loss, activations, other elementwise", r"."),
]


def kind_of(name: str) -> str:
    return next(kind for kind, pattern in KINDS if re.search(pattern, name, re.I))


def profiled_epoch(params: Params, data: Path, device: torch.device, steps: int, decoder_only: bool) -> tuple[dict, float, int]:
    torch.manual_seed(0)
    model = build_training_model(params.model, device)
    optimizer = build_optimizer(model, params.train, device)
    adversary = None
    if decoder_only:
        enter_decoder_phase(model, optimizer, params.train.decoder_lr, first_epoch=True)
        params.train.adversarial_warmup = 0
        adversary = Adversary(params.train, device, None)
    images = load_split_tensor(data, "train", params.model, device)
    augment = Augmenter(params.train.augment)
    order = epoch_order(len(images), 0, 0)
    n = min(len(order), steps * params.train.batch_size)
    epoch = params.train.epochs if decoder_only else 0

    def run(indices):
        augment.start_epoch(0)
        train_epoch(model, optimizer, torch.amp.GradScaler(device.type, enabled=False), images, indices,
                    params.train.batch_size, augment, params.model, None, epoch, None, None,
                    decoder_only, adversary)

    run(order)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        run(order[:n])
        wall = time.perf_counter() - started
    by_kind: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e6
    return dict(by_kind), wall, n


def report(title: str, by_kind: dict[str, float], wall: float, n: int) -> None:
    threads = torch.get_num_threads()
    print(f"{title}: {n} images in {wall:.2f} s = {n / wall:.1f} images/s, {wall / n * 64 * 1000:.0f} ms per 64 images")
    in_ops = sum(by_kind.values())
    for kind, seconds in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:38s} {seconds / wall:6.1%}")
    print(f"  {'not in an operator':38s} {max(wall - in_ops, 0) / wall:6.1%}  ({threads} threads; op self times are per thread pool, not per core)")


def main() -> None:
    parser = training_bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="batches profiled per step kind")
    args = parser.parse_args()
    params = load_params(args.params, args.overrides)
    device = resolve_device(params.train.device)
    with tempfile.TemporaryDirectory() as tmp:
        data, _ = bench_dataset(args.data, args.images, tmp)
        for title, decoder_only in (("VAE step", False), ("decoder-phase step (discriminator on)", True)):
            report(title, *profiled_epoch(params.model_copy(deep=True), data, device, args.steps, decoder_only))


if __name__ == "__main__":
    main()
