"""Sweeps, after the trials: the best trial(s), registration, best_params.yaml, trials.csv and plots."""

from __future__ import annotations

import json
import logging
import math
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from facevae.core.atomic import write_text
from facevae.core.config import OBJECTIVES, validate_params
from facevae.sweep.budget import retried_numbers
from facevae.sweep.space import resolved_params
from facevae.sweep.storage import optuna_warnings_off
from facevae.sweep.trial import SweepJob, one_line, trial_dir
from facevae.tracking.records import TrainResult
from facevae.tracking.runs import (
    RunTracker,
    configure_tracking,
    environment_kept,
    read_run_file,
    registered_model_name,
)

REGISTERED_ATTR = "registered_model"

logger = logging.getLogger(__name__)


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


def register_best(study: optuna.Study, best: FrozenTrial, job: SweepJob) -> dict[str, Any] | None:
    """Log the best trial's model to its own MLflow run and register it, once per best trial."""

    cfg = job.params.mlflow
    done = study.user_attrs.get(REGISTERED_ATTR) or {}
    if not cfg.enabled or done.get("trial") == best.number:
        return done or None
    out = trial_dir(job, best.number)
    record = read_run_file(out)
    if not (out / "model.pt").is_file() or not record.get("run_id"):
        logger.info(f"best trial {best.number} ran on {best.user_attrs.get('host', 'another machine')}: "
            f"its model is not in {out}, so it is registered by a sweep run there")
        return done or None

    version = log_trial_model(out, record["run_id"], job)
    name = registered_model_name(job.actor) if cfg.register_model else None
    registered = {"trial": best.number, "run_id": record["run_id"], "name": name, "version": version}
    study.set_user_attr(REGISTERED_ATTR, registered)
    return registered


def log_trial_model(out: Path, run_id: str, job: SweepJob) -> str | None:
    import mlflow

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
        f"     (add --set train.epochs={job.params.sweep.epochs} --set train.decoder_epochs=0 to reproduce the trial), or merge these sections into params.yaml.",
    ]
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(sections, sort_keys=False, default_flow_style=None)
    return text



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


def write_plots(study: optuna.Study, objectives: list[str], out: Path) -> list[Path]:
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
            logger.info(f"no {name} plot: {one_line(exc)}")
    return files
