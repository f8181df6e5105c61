"""Model resolution (files, folders, MLflow URIs, actor names), crop geometry, the ActorModel wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facevae.apps.walk import latent_path
from facevae.cli import app
from facevae.core.config import ExtractConfig, validate_params
from facevae.core.errors import FaceVAEError
from facevae.faces.crop import CropGeometry
from facevae.tracking.models import load_actor_model, model_uri
from facevae.transfer.actor import ActorModel, model_crop, requested_crop


@pytest.fixture(scope="module")
def params(tiny):
    return validate_params({"mlflow": {"tracking_uri": tiny.tracking_uri}})


def with_crop(tiny, tmp_path, size, coverage):
    """A copy of the tiny model whose file records a crop geometry."""
    payload = torch.load(tiny.model_path, weights_only=True)
    payload["crop"] = {"size": size, "coverage": coverage}
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    return path


def test_every_way_of_naming_a_model_loads_the_same_network(tiny, params, model, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    faces = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    expected = model.encode(faces)
    names = [
        str(tiny.model_path),
        str(tiny.model_path.parent),
        "pexels",  # models:/facevae-pexels@champion
        "models:/facevae-pexels@champion",
        "models:/facevae-pexels/1",
        f"runs:/{tiny.run_id}/model",
    ]
    for name in names:
        loaded = load_actor_model(name, params)
        assert loaded.actor == "pexels" and loaded.crop == CropGeometry(64, 2.2)
        np.testing.assert_allclose(loaded.encode(faces), expected, rtol=1e-5, atol=1e-5)
    assert model_uri("pexels") == "models:/facevae-pexels@champion"
    assert model_uri(str(tiny.model_path)) is None


def test_unknown_model_uri_lists_the_registered_models(params):
    for name in ("feat", "models:/facevae-pexels@nope", "models:/facevae-pexels/9", "runs:/0123abc/model"):
        with pytest.raises(FaceVAEError) as err:
            load_actor_model(name, params)
        message = str(err.value)
        assert "\n" not in message
        assert "registered models: models:/facevae-pexels@champion (v1), models:/facevae-pexels/1" in message


def test_missing_store_or_file_is_a_clear_error_and_creates_nothing(tmp_path):
    store = tmp_path / "nowhere" / "mlflow.db"
    params = validate_params({"mlflow": {"tracking_uri": f"sqlite:///{store}"}})
    with pytest.raises(FaceVAEError, match="does not exist"):
        load_actor_model("pexels", params)
    assert not store.parent.exists()
    with pytest.raises(FaceVAEError, match="no such model file"):
        load_actor_model(str(tmp_path / "missing.pt"), params)
    (tmp_path / "notes.pt").write_text("not a model")
    with pytest.raises(FaceVAEError, match="not a facevae model file"):
        load_actor_model(str(tmp_path / "notes.pt"), params)


def test_crop_geometry_comes_from_the_model_file_else_params():
    extract = ExtractConfig(crop_size=64, coverage=2.2)
    assert model_crop({"crop": {"size": 64, "coverage": 1.6}}, extract) == (CropGeometry(64, 1.6), True)
    assert model_crop({}, extract) == (CropGeometry(64, 2.2), False)
    assert requested_crop(["train.epochs=3", "extract.crop_size=128", "extract.coverage=1.6"]) == {
        "crop_size": 128,
        "coverage": 1.6,
    }


def test_recorded_crop_geometry_is_used_and_checked(tiny, tmp_path):
    path = with_crop(tiny, tmp_path, 64, 1.6)
    model = ActorModel.from_file(path, ExtractConfig())  # params say 2.2: the file wins
    assert model.crop == CropGeometry(64, 1.6)
    with pytest.raises(FaceVAEError, match="trained on 64 px crops at coverage 1.6, but extract.crop_size=128"):
        ActorModel.from_file(path, ExtractConfig(), requested={"crop_size": 128})
    with pytest.raises(FaceVAEError, match="extract.coverage=2.2 was asked"):
        ActorModel.from_file(path, ExtractConfig(), requested={"coverage": 2.2})
    with pytest.raises(FaceVAEError, match="takes 64 px faces but its crop geometry is 32 px"):
        ActorModel.from_file(with_crop(tiny, tmp_path, 32, 1.6), ExtractConfig())


def test_model_records_its_crop_geometry_and_params_do_not_override_it(tiny):
    model = ActorModel.from_file(tiny.model_path, ExtractConfig(crop_size=128, coverage=1.5))
    assert (model.crop.size, model.crop.coverage) == (64, ExtractConfig().coverage)


def test_legacy_model_at_another_crop_size_than_params_is_refused(tiny, tmp_path):
    import torch

    payload = torch.load(tiny.model_path, weights_only=True)
    del payload["crop"]  # written before model files recorded their geometry
    legacy = tmp_path / "model.pt"
    torch.save(payload, legacy)
    with pytest.raises(FaceVAEError, match="takes 64 px faces but extract.crop_size is 128"):
        ActorModel.from_file(legacy, ExtractConfig(crop_size=128))


def test_encode_decode_reconstruct_sample(model):
    faces = np.random.default_rng(1).integers(0, 256, (70, 64, 64, 3), dtype=np.uint8)  # > one batch
    mu = model.encode(faces)
    assert mu.shape == (70, model.latent_dim) and mu.dtype == np.float32
    decoded = model.decode(mu)
    assert decoded.shape == faces.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(model.reconstruct(faces), decoded)
    np.testing.assert_allclose(model.encode(faces[5]), mu[5:6], rtol=1e-5, atol=1e-5)  # batch size changes nothing
    samples = model.sample(6, seed=3)
    assert samples.shape == (6, 64, 64, 3)
    np.testing.assert_array_equal(samples, model.sample(6, seed=3))
    assert not np.array_equal(samples, model.sample(6, seed=4))


def test_wrong_faces_are_refused_in_one_line(model):
    with pytest.raises(FaceVAEError, match="takes 64x64x3 aligned faces .* got 128x128x3"):
        model.encode(np.zeros((2, 128, 128, 3), np.uint8))
    with pytest.raises(FaceVAEError, match="uint8"):
        model.reconstruct(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(FaceVAEError, match=r"latent codes must be \(N, 30\)"):
        model.decode(np.zeros((2, 7)))


def test_latent_paths_join_the_ends():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=30), rng.normal(size=30)
    for mode in ("linear", "slerp"):
        path = latent_path(a, b, 9, mode)
        assert path.shape == (9, 30)
        np.testing.assert_allclose(path[0], a, atol=1e-5)
        np.testing.assert_allclose(path[-1], b, atol=1e-5)
    slerp = latent_path(a, b, 9, "slerp")
    norms = np.linalg.norm(slerp, axis=1)
    np.testing.assert_allclose(norms, np.linspace(np.linalg.norm(a), np.linalg.norm(b), 9), rtol=1e-5)
    linear_mid = np.linalg.norm(latent_path(a, b, 9, "linear")[4])
    assert linear_mid < norms[4]  # a straight line cuts towards the origin, slerp does not
    with pytest.raises(FaceVAEError):
        latent_path(a, b, 9, "zigzag")


def test_cli_refuses_a_crop_size_the_model_was_not_trained_at(tiny, tmp_path):
    out = tmp_path / "s.png"
    result = CliRunner().invoke(
        app, ["sample", "--model", str(tiny.model_path), "--output", str(out), "--set", "extract.crop_size=128"]
    )
    assert result.exit_code == 1 and "the model was trained on 64 px crops" in result.output
    assert not out.exists()
