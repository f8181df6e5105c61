"""Moving the `champion` alias: a new model version takes it only when it measures better, or when
the champion was measured on other evaluation drivers (its numbers are not comparable)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

CHAMPION = "champion"
EVAL_DRIVERS = "facevae.eval_drivers"  # run tag: the drivers its eval_* metrics were measured on


def is_better(new: float, old: float | None, lower_is_better: bool) -> bool:
    if old is None or math.isnan(old):
        return not math.isnan(new)
    if math.isnan(new):
        return False
    return new < old if lower_is_better else new > old


def decide_champion(
    client, name: str, version: str, metric: str, value: float, lower_is_better: bool, benchmark: str
) -> dict[str, Any]:
    """Compare `version` with the current champion on `metric` (logged as eval_<metric>) and move the alias.

    `benchmark` names the evaluation drivers; a champion evaluated on other drivers (its run's
    EVAL_DRIVERS tag differs or is missing) is not comparable, and the candidate replaces it
    (unless its own value is NaN).
    """
    from mlflow.exceptions import MlflowException

    try:
        current = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        current = None
    old_value, old_benchmark = None, benchmark
    if current is not None and current != version:
        champion_run = client.get_model_version(name, current).run_id
        data = client.get_run(champion_run).data if champion_run else None
        old_value = data.metrics.get(f"eval_{metric}") if data else None
        old_benchmark = data.tags.get(EVAL_DRIVERS) if data else None
    comparable = old_benchmark == benchmark
    reference = old_value if comparable else None  # not comparable: any measured value takes over
    takes_over = current != version and (current is None or is_better(value, reference, lower_is_better))
    if takes_over:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = {
        "metric": metric,
        "lower_is_better": lower_is_better,
        "candidate_version": version,
        "candidate_value": value,
        "champion_version": version if takes_over or current is None else current,
        "previous_champion_version": current,
        "previous_champion_value": old_value,
        "promoted": takes_over,
        "comparable": comparable,
    }
    if not comparable:
        decision["reason"] = f"the champion was evaluated on other drivers ({old_benchmark or 'not recorded'})"
    return decision


def log_evaluation(run_record: dict[str, Any], headline: dict[str, float], champion_metric: str,
                   lower_is_better: bool, benchmark: str) -> dict[str, Any] | None:
    """Log the headline numbers and the benchmark (the driver file names, sorted, comma-separated)
    to the model's MLflow run and decide the champion.

    Returns the decision, or None when the model has no MLflow run or registered version.
    """
    from mlflow.tracking import MlflowClient

    run_id, uri = run_record.get("run_id"), run_record.get("tracking_uri")
    if not run_id or not uri:
        return None
    client = MlflowClient(uri, registry_uri=uri)  # the run's own registry, not one set earlier in this process
    for key, value in headline.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            client.log_metric(run_id, f"eval_{key}", float(value))
    client.set_tag(run_id, EVAL_DRIVERS, benchmark)
    name, version = run_record.get("registered_model"), run_record.get("version")
    if not name or not version or champion_metric not in headline:
        return None
    decision = decide_champion(client, name, str(version), champion_metric, headline[champion_metric],
                               lower_is_better, benchmark)
    client.set_tag(run_id, "facevae.champion_decision", str(decision))
    return decision


def log_report_files(run_record: dict[str, Any], files: list[Path]) -> None:
    from mlflow.tracking import MlflowClient

    if run_record.get("run_id") and run_record.get("tracking_uri"):
        client = MlflowClient(run_record["tracking_uri"])
        for path in files:
            client.log_artifact(run_record["run_id"], str(path), artifact_path="evaluation")
