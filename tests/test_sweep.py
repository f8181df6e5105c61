"""Sweeps on a tiny real-image dataset: tiny models, 2 epochs a trial, a private SQLite study per test."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from typer.testing import CliRunner

import facevae.sweep as sweep_module
import facevae.sweep.trial as trial_module
from facevae.cli import app
from facevae.core.config import load_params, validate_params
from facevae.core.errors import FaceVAEError
from facevae.sweep import (
    census,
    claim_trial,
    open_storage,
    resolved_params,
    run_sweep,
    study_for,
)
from tests.facedata import QUICK_TRAIN

TINY_MODEL = {"enc_channels": [4, 8, 8, 8], "dec_channels": [8, 8, 4], "dec_hidden": 16, "latent_dim": 4,
              "decoder": "deconv"}  # the resize decoder needs dec_hidden * width a multiple of 16
SPACE = {
    "model.latent_dim": {"low": 2, "high": 6},
    "model.width_multiplier": {"choices": [0.5, 1.0]},
    "model.dec_kernels": {"choices": [[5, 5, 6, 6], [4, 6, 7, 8]]},
    "train.lr": {"low": 1e-3, "high": 1e-2, "log": True},
    "train.augment.hflip": {"choices": [True, False]},
}
FIXED_OUT_OF_RANGE = "ignore:Fixed parameter"  # enqueued trials with a deliberately bad lr


def sweep_raw(root: Path, mlflow: bool = False, **sweep) -> dict:
    return {
        "model": TINY_MODEL,
        "train": {**QUICK_TRAIN, "num_threads": 1},
        "mlflow": {"enabled": mlflow, "tracking_uri": f"sqlite:///{root}/mlflow.db",
                   "artifact_location": str(root / "artifacts")},
        "sweep": {
            "epochs": 2, "storage": f"sqlite:///{root}/optuna.db", "trials_dir": str(root / "trials"),
            "out_dir": str(root / "reports"), "space": SPACE, "sampler_startup_trials": 2,
            "pruner": "none", "heartbeat_s": 1, "grace_s": 2, **sweep,
        },
    }


def sweep_params(root: Path, mlflow: bool = False, **sweep):
    return validate_params(sweep_raw(root, mlflow, **sweep))


def finished(study: optuna.Study) -> list:
    return [t for t in study.get_trials() if t.state.is_finished()]


# ---- config and search space --------------------------------------------------------------------


def test_params_yaml_space_is_valid_and_resolves_widths():
    params = load_params()
    assert params.sweep.space["model.latent_dim"].kind == "int"
    assert params.sweep.space["train.lr"].kind == "float"
    assert params.sweep.space["model.dec_kernels"].kind == "categorical"
    resolved = resolved_params(params, {"model.width_multiplier": 0.5, "model.dec_kernels": [4, 6, 7, 8]})
    assert resolved.model.enc_channels == [16, 32, 64, 128] and resolved.model.dec_hidden == 512
    assert resolved.model.dec_kernels == [4, 6, 7, 8]


@pytest.mark.parametrize("space, message", [
    ({"model.nope": {"low": 1, "high": 2}}, "model.nope is not a model.* or train.* parameter"),
    ({"train.epochs": {"low": 1, "high": 2}}, "train.epochs cannot be tuned"),
    ({"train.lr": {"low": 1.0}}, "needs low and high"),
    ({"train.lr": {"low": 0.0, "high": 1.0, "log": True}}, "log range needs low > 0"),
])
def test_bad_space_is_a_user_error(tmp_path, space, message):
    with pytest.raises(FaceVAEError, match=message):
        validate_params({"sweep": {"space": space}})


def test_a_choice_that_gives_no_model_fails_before_any_trial(tmp_path, faces_h5):
    space = {"model.dec_kernels": {"choices": [[5, 5, 6, 6], [4, 4, 4, 4]]}}
    with pytest.raises(FaceVAEError, match=r"model.dec_kernels = \[4, 4, 4, 4\] gives no valid model"):
        run_sweep(faces_h5, "astro", sweep_params(tmp_path, space=space), 1)


def test_multi_needs_a_driver_for_the_actor(tmp_path, faces_h5):
    with pytest.raises(FaceVAEError, match="evaluate.drivers.astro"):
        run_sweep(faces_h5, "astro", sweep_params(tmp_path), 1, multi=True)


def test_held_out_drivers_never_reach_a_sweep(tmp_path, faces_h5):
    from facevae.sweep import tuning_drivers

    raw = sweep_raw(tmp_path)
    raw["evaluate"] = {"drivers": {"astro": ["a.mp4", "b.mp4"]}, "held_out": ["b.mp4"]}
    assert tuning_drivers(validate_params(raw).evaluate, "astro") == [Path("a.mp4")]
    raw["evaluate"]["held_out"] = ["a.mp4", "b.mp4"]
    with pytest.raises(FaceVAEError, match="held_out"):
        run_sweep(faces_h5, "astro", validate_params(raw), 1, multi=True)


# ---- trials, persistence, reports ---------------------------------------------------------------


def test_trials_complete_persist_and_report(tmp_path, faces_h5):
    result = run_sweep(faces_h5, "astro", sweep_params(tmp_path), 3)
    assert result.census.finished == 3 and result.census.complete == 3
    stored = optuna.load_study(study_name="facevae-astro", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state for t in stored.trials] == [TrialState.COMPLETE] * 3
    baseline = stored.trials[0]  # the params config itself, for a fair comparison
    assert baseline.user_attrs["baseline"] and baseline.params["model.width_multiplier"] == 1.0
    assert baseline.user_attrs["tuned"]["model.enc_channels"] == TINY_MODEL["enc_channels"]
    assert len({json.dumps(t.params, sort_keys=True) for t in stored.trials}) == 3
    out = tmp_path / "reports" / "astro" / "sweep"
    names = {p.name for p in result.files}
    assert {"best_params.yaml", "summary.json", "trials.csv", "optimization_history.html",
            "optimization_history.png", "intermediate_values.html", "intermediate_values.png"} <= names
    assert all((out / n).stat().st_size > 0 for n in names)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["complete"] == 3 and summary["best"]["number"] == result.best.number
    # keep_models=best: only the best trial keeps its model.pt; no checkpoints are left
    models = sorted(p.parent.name for p in (tmp_path / "trials").rglob("model.pt"))
    assert models == [f"trial-{result.best.number:04d}"]
    assert not list((tmp_path / "trials").rglob("checkpoint.pt"))


def test_best_params_round_trip_into_load_params_and_train(tmp_path, faces_h5):
    params = sweep_params(tmp_path)
    result = run_sweep(faces_h5, "astro", params, 2)
    best_file = result.out_dir / "best_params.yaml"
    document = yaml.safe_load(best_file.read_text())
    assert set(document) == {"model", "train"}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(sweep_raw(tmp_path)))
    merged = load_params(params_file, override_files=[best_file])
    tuned = result.best.user_attrs["tuned"]
    for key, value in tuned.items():
        section, _, name = key.partition(".")
        node = getattr(merged, section)
        for part in name.split("."):
            node = getattr(node, part)
        assert node == value, key
    assert merged.sweep == params.sweep  # sections the file does not name stay as they were
    alone = load_params(best_file)  # `facevae train --params best_params.yaml` works too
    assert alone.model == merged.model
    run = CliRunner().invoke(app, [
        "train", "--data", str(faces_h5), "--actor", "astro", "--out", str(tmp_path / "retrained"),
        "--params", str(params_file), "--params-override", str(best_file),
        "--set", "train.epochs=1", "--set", "mlflow.enabled=false", "--no-progress",
    ])
    assert run.exit_code == 0, run.output
    config = json.loads((tmp_path / "retrained" / "config.json").read_text())
    assert config["params"]["model"] == merged.model.model_dump(mode="json")


@pytest.mark.filterwarnings(FIXED_OUT_OF_RANGE)
def test_a_nan_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path, faces_h5):
    params = sweep_params(tmp_path, baseline_trial=False)
    study_for(params, "astro").enqueue_trial({"train.lr": 1000.0})  # diverges to NaN in epoch 1
    result = run_sweep(faces_h5, "astro", params, 3)
    trials = study_for(params, "astro").get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert "loss became nan" in trials[0].user_attrs["outcome"]
    assert result.census.failed == 1 and result.census.finished == 3
    assert not trial_dir_exists(tmp_path, 0)


def trial_dir_exists(root: Path, number: int) -> bool:
    return (root / "trials" / "facevae-astro" / f"trial-{number:04d}").exists()


@pytest.mark.filterwarnings(FIXED_OUT_OF_RANGE)
def test_the_pruner_stops_a_hopeless_trial(tmp_path, faces_h5):
    params = sweep_params(tmp_path, pruner="median", pruner_startup_trials=1, pruner_warmup_epochs=0,
                          baseline_trial=False)
    study = study_for(params, "astro")
    study.enqueue_trial({"train.lr": 5e-3, "model.latent_dim": 4, "model.width_multiplier": 1.0})
    study.enqueue_trial({"train.lr": 1e-7, "model.latent_dim": 4, "model.width_multiplier": 1.0})  # learns nothing
    result = run_sweep(faces_h5, "astro", params, 2)
    hopeless = study_for(params, "astro").trials[1]
    assert hopeless.state == TrialState.PRUNED
    assert re.match(r"pruned at epoch [12]/2: val_neg_elbo \d+", hopeless.user_attrs["outcome"])
    assert result.census.pruned == 1 and result.best.number == 0


def test_a_stale_running_trial_is_retried_and_finished_ones_are_kept(tmp_path, faces_h5):
    """A worker killed mid-trial leaves it RUNNING with an old heartbeat: the resumed sweep fails it,
    runs it again with the same parameters, and tops the study up to the budget."""
    params = sweep_params(tmp_path)
    first = run_sweep(faces_h5, "astro", params, 2)
    before = {t.number: t.values for t in finished(study_for(params, "astro"))}
    storage = open_storage(params.sweep.storage, params.sweep)
    study = optuna.load_study(study_name="facevae-astro", storage=storage)
    orphan = claim_trial(study, storage, budget=3)  # as a worker does, then it "dies"
    orphan.suggest_float("train.lr", 1e-3, 1e-2, log=True)
    time.sleep(params.sweep.grace_s + 1.5)
    result = run_sweep(faces_h5, "astro", params, 3)
    trials = study_for(params, "astro").get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == orphan.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.params["train.lr"] == trials[orphan.number].params["train.lr"]
    assert {n: trials[n].values for n in before} == before and first.census.finished == 2
    assert result.census.finished == 3 and result.census.retried == 1 and result.census.running == 0


def test_a_trial_asked_but_never_heartbeaten_is_retried(tmp_path, faces_h5):
    """A worker killed between study.ask() and its first heartbeat leaves a RUNNING trial with no
    heartbeat row, which Optuna never calls stale: the resumed sweep must still fail and retry it
    (it used to wait for it forever)."""
    params = sweep_params(tmp_path)
    run_sweep(faces_h5, "astro", params, 1)
    storage = open_storage(params.sweep.storage, params.sweep)
    study = optuna.load_study(study_name="facevae-astro", storage=storage)
    with sweep_module.optuna_warnings_off():
        orphan = study.ask()  # the worker "dies" here, before record_heartbeat
    assert not sweep_module.has_heartbeat(storage, orphan._trial_id)
    time.sleep(params.sweep.grace_s + 1.5)
    result = run_sweep(faces_h5, "astro", params, 2, timeout=120)
    trials = study_for(params, "astro").get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert any(t.system_attrs.get("failed_trial") == orphan.number for t in trials)
    assert result.census.finished == 2 and result.census.running == 0


def test_an_interrupted_trial_is_queued_again(tmp_path, faces_h5, monkeypatch):
    """Ctrl-C / SIGTERM mid-trial: the trial is failed with its reason and a retry is queued."""
    params = sweep_params(tmp_path)
    real = sweep_module.run_objective

    def interrupt_second(trial, job, probe):
        if trial.number == 1:
            raise KeyboardInterrupt
        return real(trial, job, probe)

    monkeypatch.setattr(trial_module, "run_objective", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(faces_h5, "astro", params, 3)
    trials = study_for(params, "astro").get_trials()
    assert trials[1].state == TrialState.FAIL and "interrupted" in trials[1].user_attrs["outcome"]
    assert trials[2].state == TrialState.WAITING and trials[2].system_attrs["failed_trial"] == 1
    monkeypatch.setattr(trial_module, "run_objective", real)
    result = run_sweep(faces_h5, "astro", params, 3)
    assert result.census.finished == 3 and result.census.complete == 3 and result.census.retried == 1


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_sigterm_inside_a_storage_commit_waits_for_the_commit(tmp_path):
    """The signal is sent in the middle of a real Optuna write, between its INSERT and its commit (a
    moment that once broke the session and crashed the sweep): the write lands, then
    KeyboardInterrupt follows, and the storage still works for giving the trial up."""
    import sqlalchemy

    from facevae.sweep.interrupt import sigterm_as_interrupt

    params = sweep_params(tmp_path)
    storage = open_storage(params.sweep.storage, params.sweep)
    study = optuna.create_study(study_name="astro", storage=storage)
    trial = study.ask()

    sent = []

    def signal_myself(connection, cursor, statement, *args):
        if statement.startswith("INSERT INTO trial_params") and not sent:
            sent.append(statement)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler runs here, before the commit

    sqlalchemy.event.listen(storage.engine, "after_cursor_execute", signal_myself)
    with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt, match="signal 15"):
        trial.suggest_float("train.lr", 1e-3, 1e-2)
    assert sent and storage.get_trial(trial._trial_id).params.keys() == {"train.lr"}
    study.tell(trial, state=TrialState.FAIL)
    assert storage.get_trial(trial._trial_id).state == TrialState.FAIL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_full_budget_gives_the_extra_trial_back(tmp_path, faces_h5):
    params = sweep_params(tmp_path)
    run_sweep(faces_h5, "astro", params, 1)
    storage = open_storage(params.sweep.storage, params.sweep)
    study = optuna.load_study(study_name="facevae-astro", storage=storage)
    assert claim_trial(study, storage, budget=1) is None  # another worker filled the budget first
    counts = census(study.get_trials())
    assert counts.finished == 1 and counts.running == 0 and counts.waiting == 0  # the empty one is not counted
    result = run_sweep(faces_h5, "astro", params, 2)  # a larger budget reuses it
    assert result.census.finished == 2 and len(study.get_trials()) == 2


def test_two_workers_finish_exactly_the_budget(tmp_path, faces_h5):
    params = sweep_params(tmp_path)
    result = run_sweep(faces_h5, "astro", params, 3, workers=2)
    trials = study_for(params, "astro").get_trials()
    done = [t for t in trials if t.state.is_finished()]
    assert len(done) == 3 and result.census.finished == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 3  # no duplicated configs
    assert len({t.user_attrs["host"] for t in done}) == 1


# ---- MLflow -------------------------------------------------------------------------------------


@pytest.mark.filterwarnings(FIXED_OUT_OF_RANGE)
def test_mlflow_parent_run_nested_trials_and_best_model_registered(tmp_path, faces_h5, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = sweep_params(tmp_path, mlflow=True, pruner="median", pruner_startup_trials=1, pruner_warmup_epochs=0)
    study_for(params, "astro").enqueue_trial({"train.lr": 5e-3})
    study_for(params, "astro").enqueue_trial({"train.lr": 1e-7})  # pruned
    study_for(params, "astro").enqueue_trial({"train.lr": 1000.0})  # NaN: failed
    result = run_sweep(faces_h5, "astro", params, 3)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["sweep.study"] == "facevae-astro" and parent.data.metrics["trials_pruned"] == 1
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_trial = {int(r.data.tags["sweep.trial"]): r for r in children}
    assert sorted(by_trial) == [0, 1, 2]
    assert [(by_trial[n].data.tags["sweep.state"], by_trial[n].info.status) for n in range(3)] == [
        ("complete", "FINISHED"), ("pruned", "KILLED"), ("fail", "FAILED")]
    assert by_trial[0].data.params["train.lr"] == "0.005"
    assert [m.step for m in client.get_metric_history(by_trial[0].info.run_id, "val_loss")] == [1, 2]
    versions = client.search_model_versions("name='facevae-astro'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", by_trial[0].info.run_id)]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert {"sweep/best_params.yaml", "sweep/summary.json", "sweep/param_importances.png"} <= artifacts
    again = run_sweep(faces_h5, "astro", params, 3)  # a rerun reuses the parent, registers nothing new
    assert again.parent_run_id == result.parent_run_id
    assert len(client.search_model_versions("name='facevae-astro'")) == 1


# ---- slower: real processes ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_killed_sweep_process_resumes_without_losing_trials(tmp_path, faces_h5, kill):
    """SIGKILL leaves the running trial to its heartbeat (failed and retried after grace_s);
    SIGTERM fails and requeues it at once. Either way the rerun tops the study up to the budget."""
    params_file = tmp_path / "params.yaml"
    raw = sweep_raw(tmp_path, sampler_startup_trials=10)
    raw["sweep"]["epochs"] = 3
    params_file.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "facevae.cli", "sweep", "--actor", "astro", "--trials", "6",
               "--data", str(faces_h5), "--params", str(params_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    params = load_params(params_file)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(finished(study_for(params, "astro"))) < 2:
        time.sleep(0.2)
    os.killpg(process.pid, kill)  # mid-sweep
    output, _ = process.communicate(timeout=60)
    assert process.returncode == (-signal.SIGKILL if kill == signal.SIGKILL else 130), output
    kept = {t.number: t.values for t in finished(study_for(params, "astro"))}
    assert len(kept) >= 2
    rerun = subprocess.run(command + ["--study", "facevae-astro"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = study_for(params, "astro")
    assert census(study.get_trials()).finished == 6
    assert {n: study.trials[n].values for n in kept} == kept
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert "study facevae-astro" in rerun.stdout and "best trial" in rerun.stdout


@pytest.mark.slow
def test_multi_objective_sweep_gives_a_pareto_front(tmp_path, faces_h5):
    from tests.media import astronaut_frames, write_clip

    driver = write_clip(tmp_path / "driver.mp4", astronaut_frames(8))
    raw = sweep_raw(tmp_path, identity_frames=2)
    raw["evaluate"] = {"drivers": {"astro": [str(driver)]}}
    result = run_sweep(faces_h5, "astro", validate_params(raw), 2, multi=True)
    assert result.objectives == ["val_neg_elbo", "expression_r"]
    assert result.census.complete == 2 and result.pareto
    assert all(-1.0 <= t.values[1] <= 1.0 for t in result.pareto)
    assert "expression_r" in result.pareto[0].user_attrs["transfer"]
    assert {"pareto_front.html", "pareto_front.png"} <= {p.name for p in result.files}
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert summary["pareto_front"][0]["values"].keys() == {"val_neg_elbo", "expression_r"}
    with pytest.raises(FaceVAEError, match="optimises val_neg_elbo, expression_r"):
        run_sweep(faces_h5, "astro", validate_params(raw), 3)  # the same study, single-objective


def test_optuna_is_the_major_the_worker_was_written_for():
    """The sweep worker reads trial ids and heartbeats through Optuna 5's private API
    (Trial._trial_id, optuna.storages._rdb.models.TrialHeartbeatModel), so pyproject pins optuna<6.
    On the next major this fails first: check those two, then widen the pin."""
    from optuna.storages._rdb.models import TrialHeartbeatModel

    assert int(optuna.__version__.split(".")[0]) == 5
    assert callable(TrialHeartbeatModel.where_trial_id)
    assert "_trial_id" in optuna.trial.Trial.__init__.__code__.co_names or hasattr(optuna.trial.Trial, "_trial_id")
