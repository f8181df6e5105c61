"""Sweeps: a worker (claim, heartbeat, run, finish trials), stale trials, worker processes and signals."""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterator

import optuna
import sqlalchemy.orm
from optuna.trial import Trial, TrialState

from facevae.core.config import SweepConfig
from facevae.core.errors import FaceVAEError
from facevae.core.logs import NORMAL, QUIET
from facevae.core.logs import configure as configure_logging
from facevae.sweep.budget import all_trials, census, place_in_budget
from facevae.sweep.interrupt import raise_interrupt
from facevae.sweep.storage import (
    build_sampler,
    open_storage,
    open_study,
    optuna_warnings_off,
    retry_callback,
    trial_seed,
)
from facevae.sweep.trial import (
    Outcome,
    SweepJob,
    TransferProbe,
    finish_trial,
    run_one_trial,
    tag_trial_run,
)

POLL_S = 2.0  # how often a worker with nothing to claim looks again

logger = logging.getLogger(__name__)


# ---- a worker -----------------------------------------------------------------------------------


@contextmanager
def heartbeat(storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> Iterator[None]:
    """Tell the storage every `interval` seconds that this trial's worker is alive."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.RDBStorage, cfg: SweepConfig) -> None:
    with optuna_warnings_off():
        optuna.storages.fail_stale_trials(study)
    fail_trials_without_heartbeat(study, storage, cfg)


def fail_trials_without_heartbeat(study: optuna.Study, storage: optuna.storages.RDBStorage, cfg: SweepConfig) -> None:
    """A worker killed between ask() and its first heartbeat leaves a RUNNING trial that Optuna never
    calls stale (it skips trials with no heartbeat row), so a resume would wait for it forever.
    Once it is older than the grace period, fail and retry it as Optuna does a stale one.
    Age is judged by the trial's start time, written by the asking worker's clock."""
    grace = timedelta(seconds=cfg.grace_s or 2 * cfg.heartbeat_s)
    now = datetime.now()
    for trial in all_trials(study):
        if trial.state != TrialState.RUNNING or trial.datetime_start is None or now - trial.datetime_start <= grace:
            continue
        if has_heartbeat(storage, trial._trial_id):
            continue
        try:
            failed = storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except RuntimeError:  # another worker finished or failed it first
            continue
        if failed:
            retry_callback(cfg)(study, storage.get_trial(trial._trial_id))


def has_heartbeat(storage: optuna.storages.RDBStorage, trial_id: int) -> bool:
    # Optuna has no public query for this; its heartbeat table is the one fail_stale_trials reads.
    from optuna.storages._rdb.models import TrialHeartbeatModel

    with sqlalchemy.orm.Session(storage.engine) as session:
        return TrialHeartbeatModel.where_trial_id(trial_id, session) is not None


def claim_trial(study: optuna.Study, storage: optuna.storages.RDBStorage, budget: int) -> Trial | None:
    """Ask for a trial and keep it only if it is within the budget; else give it back (queued, empty)."""
    with optuna_warnings_off():
        trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    if place_in_budget(all_trials(study), trial.number) < budget:
        return trial
    storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
    return None


def give_up_interrupted(study: optuna.Study, storage, trial: Trial, job: SweepJob) -> None:
    """Ctrl-C or SIGTERM mid-trial: record it failed and queue a retry, so a resume runs it again."""
    outcome = Outcome(TrialState.FAIL, None, "failed: interrupted (SIGINT/SIGTERM); queued again for the next run", 0.0)
    trial.set_user_attr("outcome", outcome.reason)
    study.tell(trial, state=TrialState.FAIL)
    retry_callback(job.params.sweep)(study, storage.get_trial(trial._trial_id))
    tag_trial_run(job, trial.number, outcome)


@dataclass
class WorkerStats:
    ran: int = 0
    by_state: dict[str, int] = field(default_factory=dict)


def run_worker(job: SweepJob) -> WorkerStats:
    """Claim and run trials until the study has `job.budget` finished trials (or time is up)."""
    cfg = job.params.sweep
    storage = open_storage(job.storage_url, cfg)
    study = open_study(job, storage)
    probe = TransferProbe(job.data, job.drivers, job.params) if "expression_r" in job.objectives else None
    deadline = None if job.timeout is None else time.monotonic() + job.timeout
    stats = WorkerStats()
    while deadline is None or time.monotonic() < deadline:
        fail_stale_trials(study, storage, cfg)
        counts = census(all_trials(study))
        if counts.finished >= job.budget:
            break
        if counts.finished + counts.running >= job.budget:
            time.sleep(POLL_S)  # the last trials run elsewhere (or a dead worker's await their grace period)
            continue
        trial = claim_trial(study, storage, job.budget)
        if trial is None:
            time.sleep(POLL_S)
            continue
        study.sampler = build_sampler(cfg, trial_seed(cfg, trial.number))
        with heartbeat(storage, trial._trial_id, cfg.heartbeat_s):
            try:
                outcome = run_one_trial(trial, job, probe)
            except KeyboardInterrupt:
                give_up_interrupted(study, storage, trial, job)
                raise
        finish_trial(study, trial, outcome, job)
        stats.ran += 1
        stats.by_state[outcome.state.name] = stats.by_state.get(outcome.state.name, 0) + 1
        logger.info(describe_outcome(trial.number, outcome, job.objectives))
    return stats


def describe_outcome(number: int, outcome: Outcome, objectives: list[str]) -> str:
    if outcome.state == TrialState.COMPLETE:
        detail = ", ".join(f"{name} {value:.4g}" for name, value in zip(objectives, outcome.values or []))
    else:
        detail = outcome.reason
    return f"trial {number}: {outcome.state.name.lower()} ({detail}) in {outcome.seconds:.0f} s"


def worker_process(job: SweepJob, index: int) -> None:  # pragma: no cover - runs in a child process
    """Entry point of `--workers K` processes: SIGTERM ends the trial as cleanly as Ctrl-C."""
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGINT, raise_interrupt)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configure_logging(NORMAL if job.verbose else QUIET, prefix=f"[worker {index}] ")
    try:
        run_worker(job)
    except KeyboardInterrupt:
        sys.exit(130)
    except FaceVAEError as exc:
        logger.error(f"error: {exc}")
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        sys.exit(1)


def run_workers(job: SweepJob, workers: int) -> None:
    """Run `workers` processes on the study and wait for them; Ctrl-C/SIGTERM stops them all."""
    if workers == 1:
        run_worker(job)
        return
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_process, args=(job, i), daemon=False) for i in range(workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        stop_processes(processes)
        raise
    failed = [i for i, p in enumerate(processes) if p.exitcode not in (0, None)]
    if failed:
        codes = ", ".join(f"worker {i} exit {processes[i].exitcode}" for i in failed)
        logger.warning(f"some workers stopped early ({codes}); the study keeps what they finished")


def stop_processes(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=60)
