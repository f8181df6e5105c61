"""forked_map: results in order, errors re-raised in the parent, shared state without pickling."""

import os

import numpy as np
import pytest

from facevae.core.errors import FaceVAEError
from facevae.core.parallel import forked_map, worker_count

SHARED = np.arange(1000)  # a worker reads it from the parent's memory


def pid_and_sum(i: int) -> tuple[int, int]:
    return os.getpid(), int(SHARED[: i + 1].sum())


def test_results_come_in_order_from_two_processes():
    results = list(forked_map(pid_and_sum, list(range(40)), workers=2))
    assert [s for _, s in results] == [int(SHARED[: i + 1].sum()) for i in range(40)]
    assert os.getpid() not in {pid for pid, _ in results}


def test_one_worker_runs_in_this_process_and_closures_work():
    offset = 7
    assert list(forked_map(lambda i: (os.getpid(), i + offset), [1, 2], workers=1)) == [(os.getpid(), 8), (os.getpid(), 9)]
    assert worker_count(0, 3) == min(3, os.cpu_count() or 1) and worker_count(5, 2) == 2 and worker_count(1, 0) == 1


def test_an_error_in_a_worker_reaches_the_parent_with_its_message():
    def fail_on_three(i: int) -> int:
        if i == 3:
            raise FaceVAEError("no face found in the driver clip", f"clip{i}.mp4")
        return i

    with pytest.raises(FaceVAEError, match="clip3.mp4: no face found"):
        list(forked_map(fail_on_three, list(range(6)), workers=2))
