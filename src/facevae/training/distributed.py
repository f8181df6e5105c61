"""Data-parallel training under torchrun: the process group, the DDP wrapper and the collectives.

`torchrun --nproc-per-node N -m facevae.train ...` (or `facevae train --nproc N`) starts N copies
of `facevae train`; each finds RANK/WORLD_SIZE/LOCAL_RANK in its environment, joins a gloo (CPU)
or NCCL (CUDA) group, trains on its share of every global batch of train.batch_size images, and
averages gradients with DistributedDataParallel. Rank 0 alone writes files and talks to MLflow.
Without torchrun (WORLD_SIZE unset or 1) every helper here is a no-op and nothing changes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch import distributed as dist

from facevae.core.errors import FaceVAEError

TIMEOUT = timedelta(minutes=30)  # a rank waits this long at a collective (rank 0 registering a model, say)


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun set it; 1 outside torchrun."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise FaceVAEError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) inside an initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return distributed_rank_world()[0] == 0


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun each process takes CUDA device LOCAL_RANK; CPU stays CPU."""
    if launched_world_size() == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise FaceVAEError(f"train.device {device} names one GPU, but each of several processes needs its own: use cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank >= torch.cuda.device_count():
        raise FaceVAEError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", local_rank)


@contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join torchrun's group for the duration (gloo on CPU, NCCL on CUDA); nothing outside torchrun
    or when the caller already joined one."""
    if launched_world_size() == 1 or dist.is_initialized():
        yield
        return
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_batch_size(batch_size: int, world: int) -> int:
    """train.batch_size is the global batch: each of `world` processes takes an equal share."""
    if batch_size % world:
        raise FaceVAEError(f"train.batch_size {batch_size} does not split evenly over {world} processes")
    return batch_size // world


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` wrapped in DistributedDataParallel in a group of several, else `module` itself."""
    if distributed_rank_world()[1] == 1:
        return module
    return nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def sum_over_ranks(values: Tensor) -> Tensor:
    """The element-wise sum of `values` over all ranks (itself with one process)."""
    if distributed_rank_world()[1] > 1:
        values = values.clone()
        dist.all_reduce(values)
    return values


def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank: after an epoch each rank's
    own last batch has moved its copy, and validation should see one model."""
    if distributed_rank_world()[1] > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (pickled); `value` itself with one process."""
    if distributed_rank_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Every rank waits here until all arrive (so that none reads a file rank 0 is still writing)."""
    if distributed_rank_world()[1] > 1:
        dist.barrier()
