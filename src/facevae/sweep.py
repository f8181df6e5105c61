"""Hyperparameter sweeps: Optuna TPE over params.yaml's `sweep.space`, one short training per trial.

A study lives in persistent storage (sweep.storage: a SQLite file by default, any SQLAlchemy URL),
so a killed sweep resumes with the same command (`--study` names it) and several processes, here
(`--workers K`) or on other machines, share one study. `--trials N` is the study's total of
finished trials (complete + pruned + failed); every worker claims a trial *after* asking Optuna
for it, by its position among the study's trials, so K workers finish exactly N between them.

Each trial reports its val loss every epoch to the pruner and ends complete, pruned or failed,
with the reason in the trial's `outcome` user attribute; a failing trial (NaN loss, out of
memory, a bad combination) never ends the study. A trial whose worker died stops sending
heartbeats; after sweep.grace_s it is failed and retried with the same parameters.

MLflow: one parent run per study in experiment facevae-<actor>, each trial a nested child run
(parameters, per-epoch curves, state); the best trial's model is registered as a version of
facevae-<actor>, like a training run. Reports go to <out_dir>/<actor>/sweep/.
"""

from __future__ import annotations

import gc
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import optuna
import sqlalchemy.orm
import yaml
from optuna.trial import FrozenTrial, Trial, TrialState

from facevae.config import (
    DERIVED_TUNABLES,
    EPOCH_OBJECTIVES,
    OBJECTIVES,
    Params,
    SweepConfig,
    Tunable,
    flatten,
    validate_params,
)
from facevae.errors import FaceVAEError

TRIAL_ERRORS = (FaceVAEError, RuntimeError, ValueError)  # a trial that raises these fails; the study goes on
WIDTH = "model.width_multiplier"
WIDTH_TARGETS = ("model.enc_channels", "model.dec_channels", "model.dec_hidden")
POLL_S = 2.0  # how often a worker with nothing to claim looks again
PARENT_RUN_ATTR = "mlflow_parent_run"
REGISTERED_ATTR = "registered_model"

Log = Callable[[str], None]


def quiet(_: str) -> None:
    pass


# ---- names and storage --------------------------------------------------------------------------


def default_study_name(actor: str) -> str:
    return f"facevae-{actor}"


def directions(objectives: list[str]) -> list[str]:
    return [OBJECTIVES[name] for name in objectives]


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def masked_url(url: str) -> str:
    """The storage URL without its password, for logs and reports."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: say nothing about it
        return "<storage>"


def open_storage(url: str, cfg: SweepConfig) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats: a trial silent for the grace period is failed and retried."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several workers write to one file
    with optuna_warnings_off():
        try:
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=cfg.heartbeat_s,
                grace_period=cfg.grace_s or 2 * cfg.heartbeat_s,
                heartbeat_stale_trial_callback=retry_callback(cfg),
            )
        except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or an unreachable server
            raise FaceVAEError(f"cannot open the Optuna storage {masked_url(url)}: {exc.__class__.__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def retry_callback(cfg: SweepConfig) -> Callable[[optuna.Study, FrozenTrial], None]:
    with optuna_warnings_off():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=cfg.max_retry)


@contextmanager
def optuna_warnings_off() -> Iterator[None]:
    """Optuna flags heartbeats, retries and ask() under heartbeats as experimental: we know."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def build_sampler(cfg: SweepConfig, seed: int) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.sampler_startup_trials)


def trial_seed(cfg: SweepConfig, number: int) -> int:
    """Each trial samples with its own seed: reproducible, and two workers never draw alike."""
    return int(np.random.SeedSequence([cfg.seed % 2**32, number]).generate_state(1)[0])


def build_pruner(cfg: SweepConfig, multi: bool) -> optuna.pruners.BasePruner:
    if multi or cfg.pruner == "none":  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, cfg.pruner_warmup_epochs), max_resource=cfg.epochs)
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.pruner_startup_trials, n_warmup_steps=cfg.pruner_warmup_epochs
    )


def open_study(job: "SweepJob", storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study, or load it (resume, another worker); its objectives must match."""
    cfg = job.params.sweep
    study = optuna.create_study(
        storage=storage,
        study_name=job.study_name,
        directions=directions(job.objectives),
        sampler=build_sampler(cfg, cfg.seed),
        pruner=build_pruner(cfg, job.multi),
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("objectives")
    if recorded is None:
        study.set_user_attr("objectives", job.objectives)
        study.set_user_attr("actor", job.actor)
    elif recorded != job.objectives:
        raise FaceVAEError(
            f"study {job.study_name} optimises {', '.join(recorded)}, not {', '.join(job.objectives)}: "
            "pass another --study name (or drop/add --multi)"
        )
    return study


# ---- the search space ---------------------------------------------------------------------------


def choice_label(value: Any) -> Any:
    """Optuna's categorical choices must be scalars: lists (e.g. kernel sizes) travel as JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def choice_value(label: Any, tunable: Tunable) -> Any:
    for choice in tunable.choices or []:
        if choice_label(choice) == label:
            return choice
    return label


def suggest(trial: Trial, space: dict[str, Tunable]) -> dict[str, Any]:
    """One value per tunable (a retried trial gets its original values back)."""
    values = {}
    for key, tunable in space.items():
        if tunable.kind == "categorical":
            label = trial.suggest_categorical(key, [choice_label(c) for c in tunable.choices])
            values[key] = choice_value(label, tunable)
        elif tunable.kind == "int":
            values[key] = trial.suggest_int(key, int(tunable.low), int(tunable.high), log=tunable.log)
        else:
            values[key] = trial.suggest_float(key, float(tunable.low), float(tunable.high), log=tunable.log)
    return values


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *sections, name = key.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
    node[name] = value


def scale_widths(model: dict[str, Any], multiplier: float) -> None:
    """model.width_multiplier: every channel count and the decoder's hidden size, at least 1."""
    model["enc_channels"] = [max(1, round(c * multiplier)) for c in model["enc_channels"]]
    model["dec_channels"] = [max(1, round(c * multiplier)) for c in model["dec_channels"]]
    model["dec_hidden"] = max(1, round(model["dec_hidden"] * multiplier))


def resolved_params(base: Params, values: dict[str, Any]) -> Params:
    """`base` with the tuned `values` applied (derived tunables expanded), validated."""
    raw = base.model_dump(mode="json")
    for key, value in values.items():
        if key not in DERIVED_TUNABLES:
            set_dotted(raw, key, value)
    if WIDTH in values:
        scale_widths(raw["model"], float(values[WIDTH]))
    return validate_params(raw, source="sweep.space")


def trial_params(base: Params, values: dict[str, Any], epochs: int, threads: int) -> Params:
    """What one trial trains: the tuned values, sweep.epochs epochs, face grids only at the end."""
    params = resolved_params(base, values)
    params.train.epochs = epochs
    params.train.log_images_every = epochs
    if threads and not params.train.num_threads:
        params.train.num_threads = threads
    return params


def tuned_keys(space: dict[str, Tunable]) -> list[str]:
    """The parameters a sweep sets: the space's keys, derived tunables replaced by what they change."""
    keys: list[str] = []
    for key in space:
        keys.extend(WIDTH_TARGETS if key == WIDTH else [key])
    return list(dict.fromkeys(keys))


def tuned_values(params: Params, space: dict[str, Tunable]) -> dict[str, Any]:
    flat = flatten(params)
    return {key: flat[key] for key in tuned_keys(space)}


def check_space(base: Params) -> None:
    """Every bound and choice of the space must give a valid model, before any trial runs."""
    from facevae.model import check_config

    for key, tunable in base.sweep.space.items():
        candidates = tunable.choices if tunable.kind == "categorical" else [tunable.low, tunable.high]
        for value in candidates:
            try:
                check_config(resolved_params(base, {key: value}).model)
            except FaceVAEError as exc:
                raise FaceVAEError(f"sweep.space {key} = {value!r} gives no valid model: {exc}") from None


def baseline_values(base: Params, space: dict[str, Tunable]) -> dict[str, Any]:
    """The current config as Optuna parameters (keys whose value the space cannot express are left out)."""
    flat = flatten(base)
    values = {}
    for key, tunable in space.items():
        value = 1.0 if key == WIDTH else flat[key]
        if tunable.kind == "categorical":
            if choice_label(value) in [choice_label(c) for c in tunable.choices]:
                values[key] = choice_label(value)
        elif tunable.low <= value <= tunable.high:
            values[key] = value
    return values


# ---- one trial ----------------------------------------------------------------------------------


@dataclass
class SweepJob:
    """Everything a worker process needs (picklable)."""

    data: Path
    actor: str
    params: Params  # base config: params.yaml with --set applied
    study_name: str
    storage_url: str
    budget: int  # the study's total of finished trials
    multi: bool
    objectives: list[str]
    trials_dir: Path  # this study's trial folders
    parent_run_id: str | None = None
    threads: int = 0  # torch threads per trial (0: train.num_threads / torch default)
    timeout: float | None = None
    drivers: list[Path] = field(default_factory=list)
    verbose: bool = True


def epoch_value(row: dict[str, float], name: str) -> float:
    if name == "val_neg_elbo":
        return row["val_recon"] + row["val_kl"]
    return row[name]


class PruningMonitor:
    """Reports the first objective every epoch; raises TrialPruned when the pruner says so."""

    def __init__(self, trial: Trial, objective: str, prune: bool):
        self.trial, self.objective, self.prune = trial, objective, prune

    def __call__(self, report) -> None:
        if not self.prune:
            return
        value = epoch_value(report.row, self.objective)
        self.trial.report(value, report.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at epoch {report.epoch}/{report.epochs}: {self.objective} {value:.2f}"
            )


def trial_dir(job: SweepJob, number: int) -> Path:
    return job.trials_dir / f"trial-{number:04d}"


def run_objective(trial: Trial, job: SweepJob, probe: "TransferProbe | None") -> list[float]:
    """Train one trial; its objective values (raises TrialPruned, or the training's error)."""
    from facevae.tracking import RunOptions
    from facevae.train import train

    cfg = job.params.sweep
    out = trial_dir(job, trial.number)
    shutil.rmtree(out, ignore_errors=True)  # leftovers of an older study of the same name
    params = trial_params(job.params, suggest(trial, cfg.space), cfg.epochs, job.threads)
    trial.set_user_attr("tuned", tuned_values(params, cfg.space))
    monitor = PruningMonitor(trial, job.objectives[0], prune=not job.multi)
    options = RunOptions(
        parent_run_id=job.parent_run_id, run_name=f"trial-{trial.number:04d}", log_model=False,
        tags={"sweep.study": job.study_name, "sweep.trial": str(trial.number), "sweep.state": "running"},
    )
    result = train(job.data, job.actor, params, out, progress=False, on_epoch=monitor, run_options=options)
    values = {name: epoch_value(result.history[-1], name) for name in EPOCH_OBJECTIVES}
    if probe is not None:
        scores = probe.score(result.model_path)
        trial.set_user_attr("transfer", scores)
        values.update(scores)
    return [values[name] for name in job.objectives]


@dataclass
class Outcome:
    state: TrialState
    values: list[float] | None
    reason: str
    seconds: float


def run_one_trial(trial: Trial, job: SweepJob, probe: "TransferProbe | None") -> Outcome:
    """Run the objective; pruning and trial errors become the outcome, anything else propagates."""
    started = time.monotonic()
    try:
        values = run_objective(trial, job, probe)
        state, reason = TrialState.COMPLETE, "complete"
        if not all(math.isfinite(v) for v in values):
            state, values, reason = TrialState.FAIL, None, f"failed: non-finite objective {values}"
    except optuna.TrialPruned as exc:
        state, values, reason = TrialState.PRUNED, None, str(exc)
    except TRIAL_ERRORS as exc:
        state, values, reason = TrialState.FAIL, None, f"failed: {exc.__class__.__name__}: {one_line(exc)}"
        release_memory()
    return Outcome(state, values, reason, time.monotonic() - started)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else exc.__class__.__name__


def release_memory() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # an out-of-memory trial must not starve the next one


def finish_trial(study: optuna.Study, trial: Trial, outcome: Outcome, job: SweepJob) -> None:
    trial.set_user_attr("outcome", outcome.reason)
    trial.set_user_attr("seconds", round(outcome.seconds, 1))
    trial.set_user_attr("host", os.uname().nodename)
    study.tell(trial, outcome.values, state=outcome.state)
    tag_trial_run(job, trial.number, outcome)
    tidy_trial_dir(trial_dir(job, trial.number), outcome.state)


def tidy_trial_dir(out: Path, state: TrialState) -> None:
    """Keep a complete trial's model and history; a pruned or failed trial leaves nothing behind."""
    if state == TrialState.COMPLETE:
        (out / "checkpoint.pt").unlink(missing_ok=True)
    else:
        shutil.rmtree(out, ignore_errors=True)


MLFLOW_STATUS = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}


def tag_trial_run(job: SweepJob, number: int, outcome: Outcome) -> None:
    """The trial's MLflow run gets its state, reason and objective values (it may not exist: MLflow off)."""
    from facevae.tracking import read_run_file

    record = read_run_file(trial_dir(job, number))
    if not job.params.mlflow.enabled or not record.get("run_id"):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(record["tracking_uri"])
    run_id = record["run_id"]
    try:
        client.set_tag(run_id, "sweep.state", outcome.state.name.lower())
        client.set_tag(run_id, "sweep.outcome", outcome.reason[:5000])
        for name, value in zip(job.objectives, outcome.values or []):
            client.log_metric(run_id, f"objective_{name}", value)
        client.set_terminated(run_id, MLFLOW_STATUS[outcome.state])
    except MlflowException as exc:  # the trial itself is recorded in the study; MLflow is a view of it
        print(f"trial {number}: could not tag its MLflow run: {one_line(exc)}", file=sys.stderr)


# ---- expression transfer (--multi) --------------------------------------------------------------


class TransferProbe:
    """expression_r of a trial's model on the actor's driver clips, measured as the evaluate stage does,
    but only for the driving mode it reports and with few identity checks. The clips are aligned once."""

    def __init__(self, data: Path, drivers: list[Path], params: Params):
        self.data, self.drivers, self.params = Path(data), [Path(p) for p in drivers], params
        self.clips: list | None = None

    def prepare(self, actor) -> None:
        from facevae.dataset import read_split
        from facevae.evaluate import OutputFaceReader, actor_reference, load_clip

        self.clips = [load_clip(path, self.params.extract, actor, self.params.evaluate.max_frames) for path in self.drivers]
        self.reader = OutputFaceReader(actor.crop.size, actor.crop.coverage, self.params.extract.identity_threshold)
        frames = self.params.sweep.identity_frames
        self.centroid, self.sharpness = actor_reference(self.reader, read_split(self.data, "train"), frames)

    def translator(self, actor):
        """The driving mode the evaluation stage's headline uses (transfer.mode when the model has it)."""
        from facevae.transfer import translators

        available = translators(actor, self.params.transfer)
        return available.get(self.params.transfer.mode) or available.get("seed") or actor.reconstruct

    def score(self, model_path: Path) -> dict[str, float]:
        from facevae.evaluate import evaluate_transfer
        from facevae.inference import ActorModel

        actor = ActorModel.from_file(model_path, self.params.extract)
        if self.clips is None:
            self.prepare(actor)
        translate, frames = self.translator(actor), self.params.sweep.identity_frames
        scores = [
            evaluate_transfer(translate, clip, self.reader, self.centroid, self.sharpness, frames).scores
            for clip in self.clips
        ]
        keys = ("expression_r", "expression_gain", "identity_pass", "sharpness")
        return {key: float(np.nanmean([s[key] for s in scores])) for key in keys}


# ---- counting trials against the budget ---------------------------------------------------------


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Trials that were failed for a silent worker (or an interrupt) and run again under a new number."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def is_placeholder(trial: FrozenTrial) -> bool:
    """A trial a worker asked for but gave back (the budget was full): queued, with nothing fixed."""
    return trial.state == TrialState.WAITING and not trial.params and "fixed_params" not in trial.system_attrs


@dataclass
class Census:
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    waiting: int = 0
    retried: int = 0

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    def describe(self) -> str:
        extra = "".join(
            f", {n} {what}" for n, what in ((self.running, "running"), (self.waiting, "queued"),
                                           (self.retried, "retried after their worker stopped")) if n
        )
        return f"{self.finished} trials: {self.complete} complete, {self.pruned} pruned, {self.failed} failed{extra}"


def census(trials: list[FrozenTrial]) -> Census:
    retried = retried_numbers(trials)
    counts = Census(retried=len(retried))
    for t in trials:
        if t.number in retried or is_placeholder(t):
            continue
        if t.state == TrialState.COMPLETE:
            counts.complete += 1
        elif t.state == TrialState.PRUNED:
            counts.pruned += 1
        elif t.state == TrialState.FAIL:
            counts.failed += 1
        elif t.state == TrialState.RUNNING:
            counts.running += 1
        else:
            counts.waiting += 1
    return counts


def place_in_budget(trials: list[FrozenTrial], number: int) -> int:
    """How many running or finished trials (retried ones not counted) come before trial `number`."""
    retried = retried_numbers(trials)
    return sum(
        1 for t in trials
        if t.number < number and t.number not in retried and (t.state.is_finished() or t.state == TrialState.RUNNING)
    )


def all_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False)


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


def run_worker(job: SweepJob, log: Log = quiet) -> WorkerStats:
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
        log(describe_outcome(trial.number, outcome, job.objectives))
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
    prefix = f"[worker {index}] "
    try:
        run_worker(job, log=lambda line: print(prefix + line, flush=True) if job.verbose else None)
    except KeyboardInterrupt:
        sys.exit(130)
    except FaceVAEError as exc:
        print(f"{prefix}error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        sys.exit(1)


def raise_interrupt(signum, frame) -> None:
    """SIGTERM/SIGINT as KeyboardInterrupt, once: a second signal must not cut the cleanup short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the running trial as Ctrl-C does (failed, queued again), then the previous handler is back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_interrupt), signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


def run_workers(job: SweepJob, workers: int, log: Log) -> None:
    """Run `workers` processes on the study and wait for them; Ctrl-C/SIGTERM stops them all."""
    if workers == 1:
        run_worker(job, log)
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
        log(f"some workers stopped early ({codes}); the study keeps what they finished")


def stop_processes(processes: list) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=60)


# ---- MLflow: the parent run ---------------------------------------------------------------------


@contextmanager
def parent_run(study: optuna.Study, job: SweepJob) -> Iterator[str | None]:
    """The study's MLflow parent run (reopened on resume), active while the sweep runs."""
    if not job.params.mlflow.enabled:
        yield None
        return
    import mlflow

    from facevae.tracking import configure_tracking, ensure_experiment, environment_kept

    with environment_kept():
        uri = configure_tracking(job.params.mlflow)
        experiment_id = ensure_experiment(job.actor, job.params.mlflow, uri)
        run_id = existing_parent_run(study, uri)
        new = run_id is None
        with mlflow.start_run(
            run_id=run_id, experiment_id=None if run_id else experiment_id,
            run_name=None if run_id else f"sweep {job.study_name}",
        ) as run:
            if new:
                study.set_user_attr(PARENT_RUN_ATTR, {"run_id": run.info.run_id, "tracking_uri": uri})
                log_sweep_setup(job)
            yield run.info.run_id


def existing_parent_run(study: optuna.Study, uri: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    record = study.user_attrs.get(PARENT_RUN_ATTR) or {}
    if record.get("tracking_uri") != uri or not record.get("run_id"):
        return None
    try:
        run = MlflowClient(uri).get_run(record["run_id"])
    except MlflowException:
        return None
    return run.info.run_id if run.info.lifecycle_stage == "active" else None


def log_sweep_setup(job: SweepJob) -> None:
    import mlflow

    from facevae.tracking import git_tags

    cfg = job.params.sweep
    flat = {f"sweep.{k}": v for k, v in flatten(cfg).items() if k != "space"}
    flat.update({
        "sweep.space": json.dumps({k: v.model_dump(exclude_none=True) for k, v in cfg.space.items()}),
        "sweep.objectives": ",".join(job.objectives),
        "sweep.storage": masked_url(job.storage_url),
        "data.path": str(job.data),
    })
    mlflow.log_params({k: str(v)[:6000] for k, v in flat.items()})
    mlflow.set_tags({"actor": job.actor, "sweep.study": job.study_name, "sweep.role": "parent", **git_tags()})


def close_orphan_trial_runs(study: optuna.Study, job: SweepJob, parent_run_id: str | None) -> int:
    """Child runs of trials whose worker died are still RUNNING in MLflow: mark them KILLED."""
    if parent_run_id is None:
        return 0
    from mlflow.tracking import MlflowClient

    uri = job.params.mlflow.resolved_tracking_uri()
    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
    )
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    closed = 0
    for run in runs:
        number = run.data.tags.get("sweep.trial")
        if number is not None and states.get(int(number)) not in (TrialState.RUNNING, None):
            client.set_tag(run.info.run_id, "sweep.state", "fail")
            client.set_tag(run.info.run_id, "sweep.outcome", "failed: its worker stopped (killed or lost)")
            client.set_terminated(run.info.run_id, "KILLED")
            closed += 1
    return closed


# ---- after the trials: best trial, registration, reports ----------------------------------------


def best_trials(study: optuna.Study, objectives: list[str]) -> list[FrozenTrial]:
    """Single objective: [the best trial]. Multi: the Pareto front, best on the first objective first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    if len(objectives) == 1:
        return [study.best_trial]
    sign = 1 if OBJECTIVES[objectives[0]] == "minimize" else -1
    return sorted(study.best_trials, key=lambda t: sign * t.values[0])


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("baseline"):
            return trial
    return None


def register_best(study: optuna.Study, best: FrozenTrial, job: SweepJob, log: Log) -> dict[str, Any] | None:
    """Log the best trial's model to its own MLflow run and register it, once per best trial."""
    from facevae.tracking import read_run_file

    cfg = job.params.mlflow
    done = study.user_attrs.get(REGISTERED_ATTR) or {}
    if not cfg.enabled or done.get("trial") == best.number:
        return done or None
    out = trial_dir(job, best.number)
    record = read_run_file(out)
    if not (out / "model.pt").is_file() or not record.get("run_id"):
        log(f"best trial {best.number} ran on {best.user_attrs.get('host', 'another machine')}: "
            f"its model is not in {out}, so it is registered by a sweep run there")
        return done or None
    from facevae.tracking import registered_model_name

    version = log_trial_model(out, record["run_id"], job)
    name = registered_model_name(job.actor) if cfg.register_model else None
    registered = {"trial": best.number, "run_id": record["run_id"], "name": name, "version": version}
    study.set_user_attr(REGISTERED_ATTR, registered)
    return registered


def log_trial_model(out: Path, run_id: str, job: SweepJob) -> str | None:
    import mlflow

    from facevae.tracking import RunTracker, configure_tracking, environment_kept
    from facevae.train import TrainResult

    params = validate_params(json.loads((out / "config.json").read_text())["params"])
    result = TrainResult(out, out / "model.pt", json.loads((out / "metrics.json").read_text()), [])
    with environment_kept():
        uri = configure_tracking(job.params.mlflow)
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            RunTracker(run_id, uri, job.actor, params, job.data, out).log_final_model(result)
    return result.model_version


def prune_models(study: optuna.Study, keep: list[FrozenTrial], job: SweepJob) -> None:
    """keep_models=best: model.pt only for the best (or Pareto) trials; histories stay."""
    if job.params.sweep.keep_models == "all":
        return
    kept = {t.number for t in keep}
    for trial in study.get_trials(deepcopy=False):
        out = trial_dir(job, trial.number)
        if trial.state == TrialState.COMPLETE and trial.number not in kept:
            (out / "model.pt").unlink(missing_ok=True)
        elif trial.state.is_finished() and trial.state != TrialState.COMPLETE:
            shutil.rmtree(out, ignore_errors=True)  # e.g. a killed trial's leftovers


def best_params_document(best: FrozenTrial, job: SweepJob, study: optuna.Study, path: Path) -> str:
    """best_params.yaml: the model and train sections with the best trial's values (train.epochs as in
    params.yaml), plus a header saying where they come from and how to use them."""
    tuned = best.user_attrs.get("tuned") or {}
    params = resolved_params(job.params, tuned)
    sections = {name: params.model_dump(mode="json")[name] for name in ("model", "train")}
    values = ", ".join(f"{n} {v:.4g}" for n, v in zip(job.objectives, best.values))
    baseline = baseline_trial(study)
    against = ""
    if baseline is not None and baseline.state == TrialState.COMPLETE:
        against = "; baseline trial {}: {}".format(
            baseline.number, ", ".join(f"{n} {v:.4g}" for n, v in zip(job.objectives, baseline.values))
        )
    header = [
        f"Best trial {best.number} of sweep {job.study_name}: {values} after {job.params.sweep.epochs} epochs{against}.",
        "Tuned: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in tuned.items()),
        f"Use: facevae train --data {job.data} --actor {job.actor} --params-override {path}",
        f"     (add --set train.epochs={job.params.sweep.epochs} to reproduce the trial), or merge these sections into params.yaml.",
    ]
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(sections, sort_keys=False, default_flow_style=None)
    return text


def write_text(path: Path, text: str) -> Path:
    from facevae.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def trial_rows(study: optuna.Study, objectives: list[str]) -> list[dict[str, Any]]:
    retried = retried_numbers(study.get_trials(deepcopy=False))
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": t.number, "state": t.state.name.lower()}
        if t.number in retried:
            row["state"] += " (retried)"
        for i, name in enumerate(objectives):
            row[name] = t.values[i] if t.values else None
        row["epochs"] = max(t.intermediate_values, default=None)
        row["seconds"] = t.user_attrs.get("seconds")
        row["outcome"] = t.user_attrs.get("outcome", "worker stopped (no heartbeat)" if t.state == TrialState.FAIL else "")
        row.update({k: json.dumps(v) if isinstance(v, list) else v for k, v in (t.user_attrs.get("tuned") or {}).items()})
        rows.append(row)
    return rows


def write_trials_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pandas as pd

    return write_text(path, pd.DataFrame(rows).to_csv(index=False))


# ---- plots --------------------------------------------------------------------------------------


def plot_specs(study: optuna.Study, objectives: list[str]) -> dict[str, tuple[Callable, Callable, dict]]:
    """name -> (plotly function, matplotlib function, keyword arguments)."""
    import optuna.visualization as pv
    import optuna.visualization.matplotlib as pm

    first = {"target": lambda t: t.values[0], "target_name": objectives[0]} if len(objectives) > 1 else {
        "target_name": objectives[0]}
    specs = {
        "optimization_history": (pv.plot_optimization_history, pm.plot_optimization_history, first),
        "param_importances": (pv.plot_param_importances, pm.plot_param_importances, first),
    }
    if len(objectives) == 1:
        specs["intermediate_values"] = (pv.plot_intermediate_values, pm.plot_intermediate_values, {})
    else:
        specs["pareto_front"] = (pv.plot_pareto_front, pm.plot_pareto_front, {"target_names": objectives})
    return specs


def curve_limits(study: optuna.Study) -> tuple[float, float] | None:
    """y range of the per-epoch curves without the trials that diverged (one at 1e10 flattens the rest)."""
    values = [v for t in study.get_trials(deepcopy=False) for v in t.intermediate_values.values() if math.isfinite(v)]
    if len(values) < 5:
        return None
    low, typical, high = min(values), float(np.quantile(values, 0.9)), max(values)
    if high - low <= 2 * (typical - low):
        return None
    margin = 0.05 * (typical - low)
    return low - margin, typical + margin


def write_plots(study: optuna.Study, objectives: list[str], out: Path, log: Log) -> list[Path]:
    """Each plot as interactive HTML (plotly) and PNG (matplotlib: no browser needed for images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, (plotly_plot, mpl_plot, kwargs) in plot_specs(study, objectives).items():
        try:
            with optuna_warnings_off(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                limits = curve_limits(study) if name == "intermediate_values" else None
                figure = plotly_plot(study, **kwargs)
                if limits:
                    figure.update_yaxes(range=list(limits))
                figure.write_html(out / f"{name}.html", include_plotlyjs="cdn")
                axes = mpl_plot(study, **kwargs)
                axes = axes.flat[0] if isinstance(axes, np.ndarray) else axes
                if limits:
                    axes.set_ylim(*limits)
                    axes.set_title(axes.get_title() + " (diverged trials off the top)")
                image = axes.figure
                image.savefig(out / f"{name}.png", dpi=110, bbox_inches="tight")
                plt.close(image)
            files += [out / f"{name}.html", out / f"{name}.png"]
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError) as exc:  # too few trials for this plot
            log(f"no {name} plot: {one_line(exc)}")
    return files


# ---- the sweep ----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    study_name: str
    storage: str  # without password
    census: Census
    objectives: list[str]
    best: FrozenTrial | None
    pareto: list[FrozenTrial]
    baseline: FrozenTrial | None
    registered: dict[str, Any] | None
    out_dir: Path
    files: list[Path]
    parent_run_id: str | None
    summary: dict[str, Any]


def tuning_drivers(cfg, actor: str) -> list[Path]:
    """evaluate.drivers[actor] without the held-out clips: a sweep must not tune on those."""
    held_out = {Path(p) for p in cfg.held_out}
    return [Path(p) for p in cfg.drivers.get(actor, []) if Path(p) not in held_out]


def make_job(
    data: Path, actor: str, params: Params, trials: int | None, study: str | None, storage: str | None,
    workers: int, multi: bool, timeout: float | None, verbose: bool,
) -> SweepJob:
    cfg = params.sweep
    study_name = study or cfg.study or default_study_name(actor)
    objectives = list(cfg.multi_objectives if multi else cfg.objectives)
    drivers = tuning_drivers(params.evaluate, actor) if "expression_r" in objectives else []
    if "expression_r" in objectives and not drivers:
        raise FaceVAEError(f"--multi scores expression transfer on evaluate.drivers.{actor} less evaluate.held_out, "
                           "which leaves no clip")
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    return SweepJob(
        data=Path(data), actor=actor, params=params, study_name=study_name,
        storage_url=storage or cfg.storage, budget=trials or cfg.trials, multi=multi, objectives=objectives,
        trials_dir=Path(cfg.trials_dir) / safe_name(study_name), threads=threads, timeout=timeout,
        drivers=drivers, verbose=verbose,
    )


def study_for(
    params: Params, actor: str, study: str | None = None, storage: str | None = None, multi: bool = False
) -> optuna.Study:
    """The sweep's Optuna study (created when missing), e.g. to enqueue a trial or read results."""
    job = make_job(Path("-"), actor, params, None, study, storage, 1, multi, None, verbose=False)
    return open_study(job, open_storage(job.storage_url, params.sweep))


def check_job(job: SweepJob, workers: int) -> None:
    if not job.data.is_file():
        raise FaceVAEError("dataset not found; run `facevae build` (or `dvc repro`) first", job.data)
    if workers < 1:
        raise FaceVAEError("--workers must be at least 1")
    for driver in job.drivers:
        if not Path(driver).exists():
            raise FaceVAEError("driver clip not found (evaluate.drivers)", driver)
    check_space(job.params)


def enqueue_baseline(study: optuna.Study, job: SweepJob) -> None:
    """A new study's first trial: the current config, the comparison every other trial is up against."""
    if job.params.sweep.baseline_trial and not study.get_trials(deepcopy=False):
        study.enqueue_trial(baseline_values(job.params, job.params.sweep.space), user_attrs={"baseline": True})


def run_sweep(
    data: Path,
    actor: str,
    params: Params,
    trials: int | None = None,
    *,
    study: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    multi: bool = False,
    timeout: float | None = None,
    out_dir: Path | None = None,
    log: Log = quiet,
) -> SweepResult:
    """Run (or resume, or join) a sweep until the study has `trials` finished trials; then report.

    Returns the counts, the best trial(s), the registered model version and the files written to
    `out_dir` (default <sweep.out_dir>/<actor>/sweep)."""
    job = make_job(data, actor, params, trials, study, storage, workers, multi, timeout, verbose=log is not quiet)
    check_job(job, workers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_obj = open_study(job, open_storage(job.storage_url, params.sweep))
    enqueue_baseline(study_obj, job)
    log(f"study {job.study_name} in {masked_url(job.storage_url)}: {census(study_obj.get_trials()).describe()}; "
        f"running up to {job.budget} with {workers} worker(s)")
    with parent_run(study_obj, job) as parent_run_id:
        job.parent_run_id = parent_run_id
        run_workers(job, workers, log)
        return finalize(study_obj, job, out_dir or Path(params.sweep.out_dir) / actor / "sweep", log)


def finalize(study: optuna.Study, job: SweepJob, out: Path, log: Log) -> SweepResult:
    """Best trial, registration, best_params.yaml, summary.json, trials.csv, plots; all logged to the parent run."""
    out.mkdir(parents=True, exist_ok=True)
    close_orphan_trial_runs(study, job, job.parent_run_id)
    counts = census(study.get_trials(deepcopy=False))
    front = best_trials(study, job.objectives)
    best = front[0] if front else None
    registered = register_best(study, best, job, log) if best is not None else None
    prune_models(study, front, job)
    files = [write_trials_csv(out / "trials.csv", trial_rows(study, job.objectives))]
    if best is not None:
        path = out / "best_params.yaml"
        files.append(write_text(path, best_params_document(best, job, study, path)))
    files += write_plots(study, job.objectives, out, log)
    summary = sweep_summary(study, job, counts, front, registered)
    files.append(write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n"))
    log_sweep_results(job, summary, files)
    return SweepResult(
        job.study_name, masked_url(job.storage_url), counts, job.objectives, best, front,
        baseline_trial(study), registered, out, files, job.parent_run_id, summary,
    )


def trial_summary(trial: FrozenTrial | None, objectives: list[str]) -> dict[str, Any] | None:
    if trial is None:
        return None
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "values": dict(zip(objectives, trial.values)) if trial.values else None,
        "outcome": trial.user_attrs.get("outcome"),
        "tuned": trial.user_attrs.get("tuned"),
        "transfer": trial.user_attrs.get("transfer"),
    }


def sweep_summary(
    study: optuna.Study, job: SweepJob, counts: Census, front: list[FrozenTrial], registered: dict | None
) -> dict[str, Any]:
    return {
        "study": job.study_name,
        "storage": masked_url(job.storage_url),
        "actor": job.actor,
        "data": str(job.data),
        "objectives": {name: OBJECTIVES[name] for name in job.objectives},
        "epochs_per_trial": job.params.sweep.epochs,
        "budget": job.budget,
        "counts": {**counts.__dict__, "finished": counts.finished},
        "best": trial_summary(front[0] if front else None, job.objectives),
        "baseline": trial_summary(baseline_trial(study), job.objectives),
        "pareto_front": [trial_summary(t, job.objectives) for t in front] if job.multi else None,
        "registered_model": registered,
        "mlflow_parent_run": job.parent_run_id,
    }


def log_sweep_results(job: SweepJob, summary: dict[str, Any], files: list[Path]) -> None:
    if job.parent_run_id is None:
        return
    import mlflow

    counts = summary["counts"]
    step = counts["finished"]
    metrics = {f"trials_{k}": v for k, v in counts.items()}
    for name in ("best", "baseline"):
        values = (summary[name] or {}).get("values") or {}
        metrics.update({f"{name}_{k}": v for k, v in values.items()})
    if (summary["best"] or {}).get("number") is not None:
        metrics["best_trial"] = summary["best"]["number"]
    mlflow.log_metrics(metrics, step=step)
    for path in files:
        mlflow.log_artifact(str(path), artifact_path="sweep")
