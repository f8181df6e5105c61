"""The champion rule on a real MLflow registry (sqlite store in tmp_path)."""

import threading
import time

import pytest

from facevae.tracking.registry import (
    CHAMPION,
    EVAL_DRIVERS,
    EVAL_TARGET,
    log_evaluation,
)

MODEL = "facevae-astro"
TUNING = "single_face.mp4"
BOTH = "carphone.mp4,single_face.mp4"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """An MlflowClient, and a function that registers a new version of MODEL with its own run."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("facevae-astro", artifact_location=(tmp_path / "artifacts").as_uri())
    client.create_registered_model(MODEL)

    def new_version() -> dict:
        run_id = client.create_run(experiment).info.run_id
        version = client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id)
        return {"run_id": run_id, "tracking_uri": uri, "registered_model": MODEL, "version": str(version.version)}

    return client, new_version


def evaluate(record: dict, expression_r: float, drivers: str) -> dict:
    return log_evaluation(record, {"expression_r": expression_r}, [("expression_r", False)], {EVAL_DRIVERS: drivers})


def evaluate_on_target(record: dict, target_score: float, expression_r: float, drivers: str = BOTH,
                       target: str = "r>=0.85") -> dict:
    """The default rule: the target's share of checks passed, ties broken by expression r."""
    headline = {"target_score": target_score, "expression_r": expression_r}
    return log_evaluation(record, headline, [("target_score", False), ("expression_r", False)],
                          {EVAL_DRIVERS: drivers, EVAL_TARGET: target})


def champion(client) -> str:
    return str(client.get_model_version_by_alias(MODEL, CHAMPION).version)


def test_on_the_same_drivers_only_a_better_version_takes_over(registry):
    client, new_version = registry
    first = new_version()
    assert evaluate(first, 0.8, BOTH)["promoted"]
    assert client.get_run(first["run_id"]).data.tags[EVAL_DRIVERS] == BOTH
    worse = evaluate(new_version(), 0.7, BOTH)
    assert not worse["promoted"] and worse["comparable"] and "reason" not in worse
    assert worse["previous_champion_value"] == 0.8 and champion(client) == "1"
    better = evaluate(new_version(), 0.9, BOTH)
    assert better["promoted"] and better["comparable"] and champion(client) == "3"


def test_a_champion_evaluated_on_other_drivers_is_replaced(registry):
    client, new_version = registry
    evaluate(new_version(), 0.95, TUNING)  # version 1: the tuning footage alone
    failed = evaluate(new_version(), float("nan"), BOTH)  # nothing measured: no reason to take over
    assert not failed["promoted"] and failed["comparable"] is False and champion(client) == "1"
    decision = evaluate(new_version(), 0.5, BOTH)  # lower, but on other drivers
    assert decision["promoted"] and decision["comparable"] is False
    assert decision["reason"] == f"the champion was evaluated on other drivers ({TUNING})"
    assert champion(client) == "3"
    assert "'comparable': False" in client.get_run(client.get_model_version(MODEL, "3").run_id).data.tags[
        "facevae.champion_decision"]


def test_a_champion_without_recorded_drivers_is_replaced(registry):
    client, new_version = registry
    old = new_version()  # evaluated before the drivers were recorded: a metric, no tag
    client.log_metric(old["run_id"], "eval_expression_r", 0.95)
    client.set_registered_model_alias(MODEL, CHAMPION, old["version"])
    decision = evaluate(new_version(), 0.5, BOTH)
    assert decision["promoted"] and not decision["comparable"] and "not recorded" in decision["reason"]
    assert champion(client) == "2"


def test_the_target_decides_and_expression_r_breaks_a_tie(registry):
    client, new_version = registry
    evaluate_on_target(new_version(), 0.5, 0.70)  # version 1
    sharper = evaluate_on_target(new_version(), 2 / 3, 0.65)  # more checks passed, lower r
    assert sharper["promoted"] and champion(client) == "2"
    worse = evaluate_on_target(new_version(), 0.5, 0.90)  # higher r cannot make up for a failed check
    assert not worse["promoted"] and champion(client) == "2"
    tie = evaluate_on_target(new_version(), 2 / 3, 0.65)  # equal on both: the champion stays
    assert not tie["promoted"] and champion(client) == "2"
    broken = evaluate_on_target(new_version(), 2 / 3, 0.66)
    assert broken["promoted"] and champion(client) == "5"
    assert broken["tiebreak"] == [{"metric": "expression_r", "candidate_value": 0.66, "previous_champion_value": 0.65}]


def test_a_champion_measured_before_the_target_existed_is_replaced(registry):
    client, new_version = registry
    assert evaluate(new_version(), 0.95, BOTH)["promoted"]  # version 1: expression r alone
    decision = evaluate_on_target(new_version(), 1 / 3, 0.60)
    assert decision["promoted"] and not decision["comparable"]
    assert decision["reason"] == "the champion has no eval_target_score (evaluated before that metric existed)"
    assert champion(client) == "2"
    nothing = evaluate_on_target(new_version(), float("nan"), 0.99)  # no clip measured: keeps the champion
    assert not nothing["promoted"] and champion(client) == "2"


def test_a_champion_measured_against_another_target_is_replaced(registry):
    client, new_version = registry
    evaluate_on_target(new_version(), 6 / 6, 0.88, target="six checks")  # version 1
    assert client.get_run(client.get_model_version(MODEL, "1").run_id).data.tags[EVAL_TARGET] == "six checks"
    same = evaluate_on_target(new_version(), 6 / 7, 0.90, target="six checks")
    assert not same["promoted"] and same["comparable"] and champion(client) == "1"
    stricter = evaluate_on_target(new_version(), 6 / 7, 0.88, target="seven checks")  # fewer passed: of more
    assert stricter["promoted"] and not stricter["comparable"] and champion(client) == "3"
    assert stricter["reason"] == "the champion was measured against another target (six checks)"
    back = evaluate_on_target(new_version(), 5 / 7, 0.95, target="seven checks")
    assert not back["promoted"] and back["comparable"] and champion(client) == "3"


def test_two_evaluations_at_once_leave_the_champion_on_the_better_version(registry, monkeypatch):
    """Both read the old champion before either moves the alias (the read is slowed to make sure, the
    worse one's most): without the lock the worse one moved the alias last (bench/soak.py, 2 of 6 races)."""
    from mlflow.tracking import MlflowClient

    client, new_version = registry
    evaluate(new_version(), 0.5, BOTH)
    better, worse = new_version(), new_version()
    read = MlflowClient.get_model_version_by_alias
    delay = {better["version"]: 0.2, worse["version"]: 0.6}

    def slow_read(self, name, alias):
        version = read(self, name, alias)
        time.sleep(delay.get(getattr(threading.current_thread(), "version", None), 0))
        return version

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", slow_read)

    def run(record: dict, value: float) -> None:
        threading.current_thread().version = record["version"]
        evaluate(record, value, BOTH)

    threads = [threading.Thread(target=run, args=args) for args in ((better, 0.9), (worse, 0.7))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", read)
    assert champion(client) == better["version"]
