"""Sweeps: one trial (train, report to the pruner, record the outcome) and the expression-transfer probe."""

from __future__ import annotations

import gc
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import Trial, TrialState

from facevae.core.config import EPOCH_OBJECTIVES, Params
from facevae.core.errors import FaceVAEError
from facevae.data.dataset import read_split
from facevae.evaluation.scoring import (
    OutputFaceReader,
    actor_reference,
    evaluate_transfer,
)
from facevae.evaluation.stage import load_clip
from facevae.sweep.space import suggest, trial_params, tuned_values
from facevae.tracking.runs import RunOptions, read_run_file
from facevae.training.run import train
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import translators

TRIAL_ERRORS = (FaceVAEError, RuntimeError, ValueError)  # a trial that raises these fails; the study goes on

logger = logging.getLogger(__name__)


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
        logger.warning(f"trial {number}: could not tag its MLflow run: {one_line(exc)}")


# ---- expression transfer (--multi) --------------------------------------------------------------


class TransferProbe:
    """expression_r of a trial's model on the actor's driver clips, measured as the evaluate stage does,
    but only for the driving mode it reports and with few identity checks. The clips are aligned once."""

    def __init__(self, data: Path, drivers: list[Path], params: Params):
        self.data, self.drivers, self.params = Path(data), [Path(p) for p in drivers], params
        self.clips: list | None = None

    def prepare(self, actor) -> None:

        self.clips = [load_clip(path, self.params.extract, actor, self.params.evaluate.max_frames) for path in self.drivers]
        self.reader = OutputFaceReader(actor.crop.size, actor.crop.coverage, self.params.extract.identity_threshold)
        frames = self.params.sweep.identity_frames
        self.centroid, self.sharpness = actor_reference(self.reader, read_split(self.data, "train"), frames)

    def translator(self, actor):
        """The driving mode the evaluation stage's headline uses (transfer.mode when the model has it)."""

        available = translators(actor, self.params.transfer)
        return available.get(self.params.transfer.mode) or available.get("seed") or actor.reconstruct

    def score(self, model_path: Path) -> dict[str, float]:

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
