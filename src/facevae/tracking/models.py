"""Where a model is: a local model.pt, a training folder, an MLflow model folder, a models:/ URI or an
actor name (its registered model's @champion).

    models:/facevae-pexels@champion   a registry alias (also models:/NAME/VERSION, models:/m-<id>)
    runs:/<run_id>/model              the model logged by a run
    models/pexels/model.pt            a model file (or its folder, or a downloaded MLflow model folder)
    pexels                            an actor name: models:/facevae-pexels@champion

MLflow URIs are resolved against `params.mlflow.resolved_tracking_uri()` and only the model's
artifact (model.pt) is used: the torch VAE is rebuilt directly from it (no pyfunc, no
environment), which is what batch inference wants. The pyfunc is for `mlflow models serve`.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from facevae.core.config import Params
from facevae.core.errors import FaceVAEError
from facevae.tracking.registry import CHAMPION, MODEL_PREFIX
from facevae.transfer.actor import DEFAULT_BATCH, ActorModel

MODEL_FILE = "model.pt"

ACTOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

# ---- where the model is ---------------------------------------------------------------------


def model_uri(model: str) -> str | None:
    """The MLflow URI MODEL stands for, or None when it is a local path.

    An existing file or folder wins over an actor name of the same spelling."""
    if URI_SCHEME.match(model) and not Path(model).exists():
        return model
    if Path(model).exists():
        return None
    if ACTOR_NAME.fullmatch(model) and not model.endswith((".pt", ".pth")):
        return f"models:/{MODEL_PREFIX}{model}@{CHAMPION}"
    return None


def local_model_file(path: Path) -> Path:
    """model.pt inside a path: the file itself, a training output folder or an MLflow model folder."""
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / MODEL_FILE, mlmodel_artifact(path), path / "artifacts" / MODEL_FILE):
            if candidate is not None and candidate.is_file():
                return candidate
        raise FaceVAEError(f"no {MODEL_FILE} in this folder (nor an MLflow model with one)", path)
    raise FaceVAEError("no such model file or folder (nor an MLflow URI or an actor name)", path)


def mlmodel_artifact(model_dir: Path) -> Path | None:
    """The `model` artifact an MLflow model folder's MLmodel file names, if any."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    try:
        meta = yaml.safe_load(mlmodel.read_text()) or {}
        rel = meta["flavors"]["python_function"]["artifacts"]["model"]["path"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    return model_dir / rel


def fetch_model_file(model: str, tracking_uri: str, workdir: Path) -> tuple[Path, str]:
    """(a local model.pt for MODEL, a description of where it came from).

    MLflow models are downloaded into `workdir` (the caller deletes it after loading)."""
    uri = model_uri(model)
    if uri is None:
        return local_model_file(Path(model)), str(model)
    return download_model(uri, tracking_uri, workdir), uri


def download_model(uri: str, tracking_uri: str, workdir: Path) -> Path:
    """Download the MLflow model at `uri` into `workdir`; return its model.pt."""
    import mlflow
    from mlflow.exceptions import MlflowException

    check_tracking_store(tracking_uri, uri)
    try:
        location = artifact_location(uri, tracking_uri)
        with quiet_downloads():
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=str(workdir), tracking_uri=tracking_uri, registry_uri=tracking_uri
                )
            )
    except MlflowException as exc:
        message = one_line(getattr(exc, "message", None) or str(exc)).rstrip(".")
        raise FaceVAEError(f"{uri}: {message} (in {tracking_uri}); {registered_models_text(tracking_uri)}") from None
    except OSError as exc:
        raise FaceVAEError(f"{uri}: could not download the model ({exc})") from None
    try:
        return local_model_file(local)
    except FaceVAEError:
        raise FaceVAEError(f"{uri}: not a facevae model (no {MODEL_FILE} artifact)") from None


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """No MLflow download progress bar (a dozen small files) unless the user asked for one."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def artifact_location(uri: str, tracking_uri: str) -> str:
    """Where the files of a models:/ or runs:/ URI are (other URIs are returned as they are).

    Resolved with a client on `tracking_uri`: MLflow's own resolution of these schemes reads the
    process-wide tracking/registry URIs, and setting those also sets MLFLOW_TRACKING_URI in
    os.environ, which would leak into everything that runs later in the process."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if uri.startswith("models:/"):
        from mlflow.store.artifact.utils.models import get_model_name_and_version

        found = get_model_name_and_version(client, uri)
        if len(found) == 1:  # models:/m-<model id>, a logged model
            return client.get_logged_model(found[0]).artifact_location
        return client.get_model_version_download_uri(*found)
    if uri.startswith("runs:/"):
        from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

        run_id, path = RunsArtifactRepository.parse_runs_uri(uri)
        run = client.get_run(run_id)
        if path and "/" not in path:  # MLflow 3: a model logged by the run is a LoggedModel
            logged = client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"name = '{path}' AND source_run_id = '{run_id}'",
            )
            if logged:
                return logged[0].artifact_location
        return run.info.artifact_uri.rstrip("/") + (f"/{path}" if path else "")
    return uri


def check_tracking_store(tracking_uri: str, uri: str) -> None:
    """A sqlite store that does not exist has no models: say so instead of creating an empty one."""
    if tracking_uri.startswith("sqlite:///"):
        db = tracking_uri[len("sqlite:///") :]
        if db and db != ":memory:" and not Path(db).exists():
            raise FaceVAEError(
                f"{uri}: the MLflow store {tracking_uri} does not exist (no model has been trained or "
                "registered here); train one, set MLFLOW_TRACKING_URI, or pass a model.pt"
            )


def registered_models(tracking_uri: str) -> list[str]:
    """'name@alias (vN)' for each alias and 'name/N' for the latest version of each registered model."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        models = list(client.search_registered_models(max_results=100))
    except MlflowException:
        return []
    entries = []
    for rm in sorted(models, key=lambda m: m.name):
        aliases = dict(getattr(rm, "aliases", None) or {})
        versions = sorted({int(v.version) for v in rm.latest_versions or []})
        parts = [f"models:/{rm.name}@{alias} (v{version})" for alias, version in sorted(aliases.items())]
        if versions:
            parts.append(f"models:/{rm.name}/{versions[-1]}")
        entries.append(", ".join(parts) or f"models:/{rm.name} (no versions)")
    return entries


def model_choices(tracking_uri: str, versions_per_model: int = 10) -> list[dict[str, str]]:
    """The registry's facevae models as `{"uri", "label"}`: each alias, then the latest versions."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    choices = []
    try:
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        for rm in sorted(client.search_registered_models(max_results=100), key=lambda m: m.name):
            if not rm.name.startswith(MODEL_PREFIX):
                continue
            for alias, version in sorted(dict(getattr(rm, "aliases", None) or {}).items()):
                choices.append({"uri": f"models:/{rm.name}@{alias}", "label": f"{rm.name}@{alias} (v{version})"})
            found = client.search_model_versions(f"name = '{rm.name}'", max_results=versions_per_model,
                                                 order_by=["version_number DESC"])
            for mv in found:
                choices.append({"uri": f"models:/{rm.name}/{mv.version}", "label": f"{rm.name} v{mv.version}"})
    except MlflowException:
        return choices
    return choices


def registered_models_text(tracking_uri: str) -> str:
    models = registered_models(tracking_uri)
    return "registered models: " + ("; ".join(models) if models else "none")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_actor_model(
    model: str | Path, params: Params, requested: dict[str, Any] | None = None, batch_size: int = DEFAULT_BATCH
) -> ActorModel:
    """Resolve MODEL (see module docstring) and load it. `requested` holds crop settings the
    user asked for explicitly (`crop_size`, `coverage`): they must match the model's."""
    with tempfile.TemporaryDirectory(prefix="facevae-model-") as tmp:
        path, source = fetch_model_file(str(model), params.mlflow.resolved_tracking_uri(), Path(tmp))
        return ActorModel.from_file(path, params.extract, requested=requested, source=source, batch_size=batch_size)
