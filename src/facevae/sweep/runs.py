"""Sweeps: the study's MLflow parent run, and closing the child runs of trials whose worker died."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

import optuna
from optuna.trial import TrialState

from facevae.core.config import flatten
from facevae.sweep.storage import masked_url
from facevae.sweep.trial import SweepJob
from facevae.tracking.runs import (
    configure_tracking,
    ensure_experiment,
    environment_kept,
    git_tags,
)

PARENT_RUN_ATTR = "mlflow_parent_run"


# ---- MLflow: the parent run ---------------------------------------------------------------------


@contextmanager
def parent_run(study: optuna.Study, job: SweepJob) -> Iterator[str | None]:
    """The study's MLflow parent run (reopened on resume), active while the sweep runs."""
    if not job.params.mlflow.enabled:
        yield None
        return
    import mlflow

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
