"""Moving the `champion` alias: a new model version takes it only when it measures better, or when
the champion was measured on other evaluation drivers or against another target (its numbers are
not comparable)."""

from __future__ import annotations

import hashlib
import math
import tempfile
from pathlib import Path
from typing import Any

from facevae.core.locks import file_lock

MODEL_PREFIX = "facevae-"  # registered models are named facevae-<actor>

CHAMPION = "champion"

EVAL_DRIVERS = "facevae.eval_drivers"  # run tag: the drivers its eval_* metrics were measured on

EVAL_TARGET = "facevae.eval_target"  # run tag: the checks and bar its eval_target_score was measured against


def is_better(new: float, old: float | None, lower_is_better: bool) -> bool:
    if old is None or math.isnan(old):
        return not math.isnan(new)
    if math.isnan(new):
        return False
    return new < old if lower_is_better else new > old


def outranks(new: list[float], old: list[float | None], lower_is_better: list[bool]) -> bool:
    """Lexicographic: better on the first metric, or equal on it and better on the next, and so on.
    A metric the champion lacks decides nothing after the first (the first is checked by the caller)."""
    for value, reference, lower in zip(new, old, lower_is_better):
        if reference is None or math.isnan(reference) or math.isnan(value):
            return False
        if value != reference:
            return is_better(value, reference, lower)
    return False


Ranking = list[tuple[str, bool]]  # (metric, lower is better): the champion metric, then its tie-breaks


def decide_champion(client, name: str, version: str, ranking: Ranking, values: list[float],
                    benchmark: dict[str, str]) -> dict[str, Any]:
    """Compare `version` with the current champion on `ranking` (each metric logged as eval_<metric>)
    and move the alias.

    The first metric decides; on a tie the next one does (the target's share of checks passed is
    coarse: two versions often tie on it). `benchmark` holds the run tags that say what the numbers
    were measured on (EVAL_DRIVERS: the driver clips; EVAL_TARGET: the target, when it ranks); a
    champion whose tags differ or are missing, or without the first metric (logged before that
    metric existed), is not comparable, and the candidate replaces it (unless its own value is NaN).
    """
    from mlflow.exceptions import MlflowException

    metric, lower_is_better = ranking[0]
    try:
        current = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        current = None
    old_values: list[float | None] = [None] * len(ranking)
    old_benchmark = dict(benchmark)
    if current is not None and current != version:
        champion_run = client.get_model_version(name, current).run_id
        data = client.get_run(champion_run).data if champion_run else None
        old_values = [data.metrics.get(f"eval_{m}") if data else None for m, _ in ranking]
        old_benchmark = {tag: data.tags.get(tag) if data else None for tag in benchmark}
    differs = [tag for tag, value in benchmark.items() if old_benchmark.get(tag) != value]
    comparable = not differs and (current is None or current == version or old_values[0] is not None)
    if current is None or current == version:
        takes_over = current is None
    elif not comparable:
        takes_over = not math.isnan(values[0])
    else:
        takes_over = outranks(values, old_values, [lower for _, lower in ranking])
    if takes_over:
        client.set_registered_model_alias(name, CHAMPION, version)
    decision = {
        "metric": metric,
        "lower_is_better": lower_is_better,
        "candidate_version": version,
        "candidate_value": values[0],
        "champion_version": version if takes_over or current is None else current,
        "previous_champion_version": current,
        "previous_champion_value": old_values[0],
        "promoted": takes_over,
        "comparable": comparable,
    }
    if len(ranking) > 1:
        decision["tiebreak"] = [{"metric": m, "candidate_value": v, "previous_champion_value": o}
                                for (m, _), v, o in zip(ranking[1:], values[1:], old_values[1:])]
    if EVAL_DRIVERS in differs:
        decision["reason"] = f"the champion was evaluated on other drivers ({old_benchmark[EVAL_DRIVERS] or 'not recorded'})"
    elif old_values[0] is None and current not in (None, version):
        decision["reason"] = f"the champion has no eval_{metric} (evaluated before that metric existed)"
    elif differs:
        recorded = old_benchmark[differs[0]]
        decision["reason"] = (f"the champion was measured against another target ({recorded})" if recorded
                              else "the champion's target was not recorded (evaluated before it was)")
    return decision


def log_evaluation(run_record: dict[str, Any], headline: dict[str, float], ranking: Ranking,
                   benchmark: dict[str, str]) -> dict[str, Any] | None:
    """Log the headline numbers and the benchmark tags (EVAL_DRIVERS: the driver file names, sorted,
    comma-separated; EVAL_TARGET: the target) to the model's MLflow run and decide the champion on
    `ranking` (metric, then tie-breaks).

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
    for tag, value in benchmark.items():
        client.set_tag(run_id, tag, value)
    ranking = list(dict(ranking).items())  # a tie-break equal to the metric adds nothing
    name, version = run_record.get("registered_model"), run_record.get("version")
    if not name or not version or not ranking or any(m not in headline for m, _ in ranking):
        return None
    with file_lock(champion_lock_path(uri)):  # two evaluations at once: the second decides against the first's result
        decision = decide_champion(client, name, str(version), ranking, [float(headline[m]) for m, _ in ranking],
                                   benchmark)
    client.set_tag(run_id, "facevae.champion_decision", str(decision))
    return decision


def champion_lock_path(uri: str) -> Path:
    """The lock that makes decide_champion's read-compare-move one step between processes: beside a
    SQLite store's file, else one per tracking URI in the temp folder (so evaluations on one machine
    are serialised; ones on other machines sharing a server are not: docs/decisions/042-kill-soaks.md)."""
    if uri.startswith("sqlite:///") and uri[len("sqlite:///"):] not in ("", ":memory:"):
        return Path(uri[len("sqlite:///"):] + ".champion.lock")
    return Path(tempfile.gettempdir()) / f"facevae-champion-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


def log_report_files(run_record: dict[str, Any], files: list[Path]) -> None:
    from mlflow.tracking import MlflowClient

    if run_record.get("run_id") and run_record.get("tracking_uri"):
        client = MlflowClient(run_record["tracking_uri"])
        for path in files:
            client.log_artifact(run_record["run_id"], str(path), artifact_path="evaluation")
