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

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from facevae.core.config import OBJECTIVES, Params
from facevae.core.errors import FaceVAEError

# The package's modules, one per stage of a sweep; everything they define is importable from
# facevae.sweep as it was when this was one module. To patch a function for a test, patch it in the
# module that calls it (e.g. facevae.sweep.trial.run_objective), not here.
from facevae.sweep.budget import (
    Census,
    all_trials,
    census,
    is_placeholder,
    place_in_budget,
    retried_numbers,
)
from facevae.sweep.interrupt import (
    critical,
    guard_storage,
    raise_interrupt,
    sigterm_as_interrupt,
)
from facevae.sweep.results import (
    REGISTERED_ATTR,
    baseline_trial,
    best_params_document,
    best_trials,
    curve_limits,
    log_trial_model,
    plot_specs,
    prune_models,
    register_best,
    trial_rows,
    write_plots,
    write_text,
    write_trials_csv,
)
from facevae.sweep.runs import (
    PARENT_RUN_ATTR,
    close_orphan_trial_runs,
    existing_parent_run,
    log_sweep_setup,
    parent_run,
)
from facevae.sweep.space import (
    WIDTH,
    WIDTH_TARGETS,
    baseline_values,
    check_space,
    choice_label,
    choice_value,
    resolved_params,
    scale_widths,
    set_dotted,
    suggest,
    trial_params,
    tuned_keys,
    tuned_values,
)
from facevae.sweep.storage import (
    build_pruner,
    build_sampler,
    default_study_name,
    directions,
    masked_url,
    open_storage,
    open_study,
    optuna_warnings_off,
    retry_callback,
    safe_name,
    trial_seed,
)
from facevae.sweep.trial import (
    MLFLOW_STATUS,
    TRIAL_ERRORS,
    Outcome,
    PruningMonitor,
    SweepJob,
    TransferProbe,
    epoch_value,
    finish_trial,
    one_line,
    release_memory,
    run_objective,
    run_one_trial,
    tag_trial_run,
    tidy_trial_dir,
    trial_dir,
)
from facevae.sweep.worker import (
    POLL_S,
    WorkerStats,
    claim_trial,
    describe_outcome,
    fail_stale_trials,
    fail_trials_without_heartbeat,
    give_up_interrupted,
    has_heartbeat,
    heartbeat,
    run_worker,
    run_workers,
    stop_processes,
    worker_process,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MLFLOW_STATUS", "PARENT_RUN_ATTR", "POLL_S", "REGISTERED_ATTR", "TRIAL_ERRORS", "WIDTH", "WIDTH_TARGETS",
    "Census", "Outcome", "PruningMonitor", "SweepJob", "SweepResult", "TransferProbe", "WorkerStats",
    "all_trials", "baseline_trial", "baseline_values", "best_params_document", "best_trials", "build_pruner",
    "build_sampler", "census", "check_job", "check_space", "choice_label", "choice_value", "claim_trial",
    "close_orphan_trial_runs", "critical", "curve_limits", "default_study_name", "describe_outcome", "directions",
    "enqueue_baseline", "epoch_value", "existing_parent_run", "fail_stale_trials",
    "fail_trials_without_heartbeat", "finalize", "finish_trial", "give_up_interrupted", "guard_storage", "has_heartbeat",
    "heartbeat", "is_placeholder", "log_sweep_results", "log_sweep_setup", "log_trial_model", "make_job",
    "masked_url", "one_line", "open_storage", "open_study", "optuna_warnings_off", "parent_run",
    "place_in_budget", "plot_specs", "prune_models", "raise_interrupt", "register_best",
    "release_memory", "resolved_params", "retried_numbers", "retry_callback", "run_objective", "run_one_trial",
    "run_sweep", "run_worker", "run_workers", "safe_name", "scale_widths", "set_dotted", "sigterm_as_interrupt",
    "stop_processes", "study_for", "suggest", "sweep_summary", "tag_trial_run", "tidy_trial_dir", "trial_dir",
    "trial_params", "trial_rows", "trial_seed", "trial_summary", "tuned_keys", "tuned_values", "tuning_drivers",
    "worker_process", "write_plots", "write_text", "write_trials_csv",
]


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
) -> SweepResult:
    """Run (or resume, or join) a sweep until the study has `trials` finished trials; then report.

    Returns the counts, the best trial(s), the registered model version and the files written to
    `out_dir` (default <sweep.out_dir>/<actor>/sweep)."""
    job = make_job(data, actor, params, trials, study, storage, workers, multi, timeout, verbose=logger.isEnabledFor(logging.INFO))
    check_job(job, workers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_obj = open_study(job, open_storage(job.storage_url, params.sweep))
    enqueue_baseline(study_obj, job)
    logger.info(f"study {job.study_name} in {masked_url(job.storage_url)}: {census(study_obj.get_trials()).describe()}; "
                f"running up to {job.budget} with {workers} worker(s)")
    with parent_run(study_obj, job) as parent_run_id:
        job.parent_run_id = parent_run_id
        run_workers(job, workers)
        return finalize(study_obj, job, out_dir or Path(params.sweep.out_dir) / actor / "sweep")


def finalize(study: optuna.Study, job: SweepJob, out: Path) -> SweepResult:
    """Best trial, registration, best_params.yaml, summary.json, trials.csv, plots; all logged to the parent run."""
    out.mkdir(parents=True, exist_ok=True)
    close_orphan_trial_runs(study, job, job.parent_run_id)
    counts = census(study.get_trials(deepcopy=False))
    front = best_trials(study, job.objectives)
    best = front[0] if front else None
    registered = register_best(study, best, job) if best is not None else None
    prune_models(study, front, job)
    files = [write_trials_csv(out / "trials.csv", trial_rows(study, job.objectives))]
    if best is not None:
        path = out / "best_params.yaml"
        files.append(write_text(path, best_params_document(best, job, study, path)))
    files += write_plots(study, job.objectives, out)
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
