"""SIGTERM and Ctrl-C during a sweep: the running trial ends as if interrupted, never half-written.

The handler raises KeyboardInterrupt, so a trial stops mid-epoch, is recorded failed and queued
again. Raised inside an Optuna storage call, though, it lands in SQLAlchemy's commit: Optuna turns
it into a StorageInternalError, the session is left broken, and the trial cannot be given up
cleanly. So every method of a storage opened here (`guard_storage`) is a critical section: a
signal that arrives inside one is held and raised as soon as the call returns.
"""

from __future__ import annotations

import functools
import inspect
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_depth = 0  # storage calls of the main thread now running (signals only interrupt the main thread)
_held: int | None = None  # a signal that arrived inside one of them


def raise_interrupt(signum, frame) -> None:
    """SIGTERM/SIGINT as KeyboardInterrupt, once (a second signal must not cut the cleanup short);
    held until the storage call running now, if any, has returned."""
    global _held
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _depth:
        _held = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


def critical(method: Callable) -> Callable:
    """`method` with signals held while it runs in the main thread (see `raise_interrupt`)."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        global _depth, _held
        if threading.current_thread() is not threading.main_thread():
            return method(*args, **kwargs)
        _depth += 1
        try:
            return method(*args, **kwargs)
        finally:
            _depth -= 1
            if not _depth and _held is not None:
                signum, _held = _held, None
                raise KeyboardInterrupt(f"signal {signum}")

    return call


def guard_storage(storage):
    """Make every method of this storage instance a critical section. The instance keeps its class,
    so Optuna still wraps it in its cache, whose calls to the backend go through these methods."""
    for klass in type(storage).__mro__:
        for name, value in vars(klass).items():
            if inspect.isfunction(value) and not name.startswith("__") and name not in vars(storage):
                setattr(storage, name, critical(getattr(storage, name)))
    return storage


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM and Ctrl-C end the running trial (failed, queued again), held out of storage calls;
    then the previous handlers are back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
