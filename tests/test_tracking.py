import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facevae.core.config import MlflowConfig, flatten, validate_params
from facevae.core.errors import FaceVAEError
from facevae.core.images import make_grid, save_png, stack_rows
from facevae.model.files import load_model
from facevae.tracking.pyfunc import as_face_batch, reconstruct_uint8
from facevae.tracking.registry import EVAL_DRIVERS, log_evaluation
from facevae.tracking.runs import RESTARTED_AS, artifact_root, configure_tracking, read_run_file, tracked_run
from facevae.training.run import train
from tests.facedata import QUICK_TRAIN, face_crops, write_face_dataset


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Two tracked trainings of actor `astro` into a private sqlite store: versions 1 and 2."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("tracking")
    data = write_face_dataset(root / "astro.h5", n_train=32, n_val=8)
    uri = f"sqlite:///{root}/mlflow.db"
    params = validate_params({
        "train": {**QUICK_TRAIN, "epochs": 2, "log_images_every": 1},
        "mlflow": {"tracking_uri": uri, "artifact_location": str(root / "artifacts")},
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        first = train(data, "astro", params, root / "run1", progress=False)
        second = train(data, "astro", params, root / "run2", progress=False)
        leaked = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    client = MlflowClient(uri)
    aliases_after_training = dict(client.get_registered_model("facevae-astro").aliases)
    decisions = [log_evaluation(read_run_file(root / run), {"expression_r": r}, [("expression_r", False)],
                                {EVAL_DRIVERS: "clip.mp4"}) for run, r in (("run1", 0.6), ("run2", 0.5))]
    return {
        "root": root, "uri": uri, "data": data, "params": params, "runs": [first, second],
        "client": client, "leaked": leaked, "aliases_after_training": aliases_after_training,
        "decisions": decisions,
    }


def test_training_leaves_the_mlflow_environment_alone(tracked):
    assert tracked["leaked"] == {"MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None}


def test_run_logs_params_lineage_and_epoch_metrics(tracked):
    run = tracked["client"].get_run(tracked["runs"][0].run_id)
    logged = run.data.params
    assert set(flatten(tracked["params"])) <= set(logged)
    assert logged["train.epochs"] == "2" and logged["model.enc_channels"] == "[32, 64, 128, 256]"
    assert len(logged["data.md5"]) == 32 and logged["data.rows_train"] == "32" and logged["data.rows_val"] == "8"
    assert run.data.tags["actor"] == "astro"
    for key in ("train_loss", "val_loss", "train_recon", "train_kl", "val_recon", "val_kl", "lr", "images_per_s"):
        assert [m.step for m in tracked["client"].get_metric_history(run.info.run_id, key)] == [1, 2]
    experiment = tracked["client"].get_experiment(run.info.experiment_id)
    assert experiment.name == "facevae-astro"
    assert experiment.artifact_location.startswith((tracked["root"] / "artifacts").as_uri())


def test_face_grids_are_logged_as_pngs(tracked):
    from mlflow.artifacts import download_artifacts

    run_id = tracked["runs"][0].run_id
    names = {f.path for f in tracked["client"].list_artifacts(run_id, "images")}
    for epoch in (1, 2):
        for kind in ("reconstructions", "prior_samples", "latent_walk"):
            assert f"images/epoch{epoch:04d}_{kind}.png" in names
    local = download_artifacts(run_id=run_id, artifact_path="images/epoch0002_reconstructions.png",
                               tracking_uri=tracked["uri"])
    width, height = Image.open(local).size
    assert (width, height) == (2 * (8 * 66 + 2), 2 * (2 * 66 + 2))  # 8 faces over 8 reconstructions, zoom 2


def test_each_run_registers_a_version_and_only_an_evaluation_names_the_champion(tracked):
    first, second = tracked["runs"]
    assert (first.model_version, second.model_version) == ("1", "2")
    assert tracked["aliases_after_training"] == {}  # no version is champion before it is evaluated
    record = read_run_file(tracked["root"] / "run1")
    assert record["run_id"] == first.run_id and record["version"] == "1" and "aliases" not in record
    assert [d["promoted"] for d in tracked["decisions"]] == [True, False]  # v2 scored lower: v1 stays
    champion = tracked["client"].get_model_version_by_alias("facevae-astro", "champion")
    assert str(champion.version) == "1" and champion.run_id == first.run_id


def test_champion_loads_in_a_fresh_process_and_reconstructs(tracked, tmp_path):
    faces = face_crops(5)
    np.save(tmp_path / "faces.npy", faces)
    script = textwrap.dedent(
        """
        import sys, numpy as np, mlflow
        model = mlflow.pyfunc.load_model("models:/facevae-astro@champion")
        out = model.predict(np.load(sys.argv[1]))
        np.save(sys.argv[2], out)
        import facevae
        print(facevae.__file__)
        """
    )
    env = {"MLFLOW_TRACKING_URI": tracked["uri"], "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "faces.npy"), str(tmp_path / "out.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "/code/facevae/__init__.py" in done.stdout  # the network came from the model's own code copy
    served = np.load(tmp_path / "out.npy")
    assert served.dtype == np.uint8 and served.shape == faces.shape
    expected = reconstruct_uint8(load_model(tracked["runs"][0].model_path), faces)
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


def test_pyfunc_input_forms():
    faces = face_crops(3)
    assert as_face_batch(faces, 64) is faces
    import pandas as pd

    frame = pd.DataFrame({"faces": list(faces)})
    assert np.array_equal(as_face_batch(frame, 64), faces)
    assert as_face_batch(faces.reshape(3, -1), 64).shape == (3, 64, 64, 3)
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        as_face_batch(faces[:, :32], 64)


def test_file_store_is_refused_with_a_hint(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(FaceVAEError, match="sqlite:///mlruns/mlflow.db"):
        configure_tracking(MlflowConfig(tracking_uri="mlruns"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/mlruns")
    with pytest.raises(FaceVAEError, match="plain file store"):
        configure_tracking(MlflowConfig())


def test_artifacts_stay_with_the_store(tmp_path):
    cfg = MlflowConfig(artifact_location="mlruns/artifacts")
    assert artifact_root(cfg, cfg.tracking_uri) == Path("mlruns/artifacts")
    elsewhere = f"sqlite:///{tmp_path}/team.db"  # e.g. from MLFLOW_TRACKING_URI
    assert artifact_root(cfg, elsewhere) == tmp_path / "artifacts"
    assert artifact_root(cfg, "http://mlflow.example:5000") is None


def test_grids(tmp_path):
    faces = face_crops(5, size=16)
    grid = make_grid(faces, ncols=3, pad=2)
    assert grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid[2:18, 20:36], faces[1])
    assert (grid[20:36, 38:54] == 255).all()  # the empty sixth cell
    both = make_grid(stack_rows(faces, faces[:, ::-1]), ncols=5)
    assert both.shape == (2 * 18 + 2, 5 * 18 + 2, 3)
    floats = make_grid(faces.transpose(0, 3, 1, 2) / 255.0, ncols=5)  # float NCHW in [0, 1] is accepted too
    assert np.array_equal(floats, make_grid(faces, ncols=5))
    path = save_png(grid, tmp_path / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path)), grid)


def test_resume_without_a_checkpoint_closes_the_killed_attempts_run(tmp_path, monkeypatch):
    """A kill -9 after the run opened but before the first checkpoint left the run RUNNING for ever
    (bench/soak.py); --resume then starts over in a new run and marks the old one KILLED."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    data = write_face_dataset(tmp_path / "astro.h5", n_train=8, n_val=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = validate_params({"mlflow": {"tracking_uri": uri, "artifact_location": str(tmp_path / "artifacts")}})
    with tracked_run(data, "astro", params, tmp_path / "out"):
        killed = read_run_file(tmp_path / "out")["run_id"]
        client = MlflowClient(uri)
        # what a kill leaves: the run never ended
    client.update_run(killed, "RUNNING")
    with tracked_run(data, "astro", params, tmp_path / "out", resume=True) as tracker:
        assert tracker.run_id != killed
    old = client.get_run(killed)
    assert old.info.status == "KILLED" and old.data.tags[RESTARTED_AS] == tracker.run_id
    assert client.get_run(tracker.run_id).info.status == "FINISHED"


def test_resume_of_a_finished_run_registers_no_second_version(tmp_path, monkeypatch):
    """A kill after the model was logged (or a --resume of a finished folder) trained no epoch on
    resume, yet logged and registered the same model again (bench/soak.py: 6 runs with 2 versions)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    data = write_face_dataset(tmp_path / "astro.h5", n_train=16, n_val=4)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    params = validate_params({"train": {**QUICK_TRAIN, "epochs": 1},
                              "mlflow": {"tracking_uri": uri, "artifact_location": str(tmp_path / "artifacts")}})
    first = train(data, "astro", params, tmp_path / "out", progress=False)
    again = train(data, "astro", params, tmp_path / "out", resume=True, progress=False)
    assert (again.run_id, again.model_version) == (first.run_id, first.model_version) == (first.run_id, "1")
    assert len(MlflowClient(uri).search_model_versions("name='facevae-astro'")) == 1
    assert read_run_file(tmp_path / "out")["version"] == "1"
