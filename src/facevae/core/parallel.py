"""Map a function over items in forked worker processes (Linux `fork`: the workers share what
the parent holds, models and arrays included, so nothing but the items' indices and the results is
pickled). Each worker runs torch on one thread: the parallelism is the processes'."""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_TASK: tuple[Callable, Sequence] | None = None  # what the forked workers run (set only while a pool runs)


def worker_count(workers: int, items: int) -> int:
    """`workers`, 0 = one per CPU core, never more than there are items."""
    return max(1, min(items, (os.cpu_count() or 1) if workers == 0 else workers))


def forked_map(function: Callable[[T], R], items: Sequence[T], workers: int = 0) -> Iterator[R]:
    """function(item) for each item, in order, lazily; in this process when one worker is enough
    or CUDA is initialised (it does not survive a fork)."""
    workers = worker_count(workers, len(items))
    if workers == 1 or torch.cuda.is_initialized():
        yield from (function(item) for item in items)
        return
    global _TASK
    _TASK = (function, items)
    try:
        with multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            yield from pool.imap(_run, range(len(items)), chunksize=1)
    finally:
        _TASK = None


def _run(index: int):
    assert _TASK is not None, "runs in forked_map's workers only"
    function, items = _TASK
    return function(items[index])
