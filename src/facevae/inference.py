"""A trained actor model, wherever it lives, as a fast numpy-in / numpy-out wrapper.

MODEL, as every inference command takes it, is one of

    models:/facevae-pexels@champion   a registry alias (also models:/NAME/VERSION, models:/m-<id>)
    runs:/<run_id>/model              the model logged by a run
    models/pexels/model.pt            a model file (or its folder, or a downloaded MLflow model folder)
    pexels                            an actor name: models:/facevae-pexels@champion

MLflow URIs are resolved against `params.mlflow.resolved_tracking_uri()` and only the model's
artifact (model.pt) is used: the torch VAE is rebuilt directly from it (no pyfunc, no
environment), which is what batch inference wants. The pyfunc is for `mlflow models serve`.

The crop geometry (crop size and coverage) drivers must be aligned with is the model's own:
model.pt records it (`payload["crop"]`); older files fall back to `params.extract`.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from facevae.config import ExtractConfig, Params
from facevae.errors import FaceVAEError
from facevae.model import faces_to_tensor, reconstruct_faces, tensor_to_faces
from facevae.registry import CHAMPION

MODEL_FILE = "model.pt"
ACTOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class CropGeometry:
    """How faces are cut out for a model: `size` px square, `coverage` template units wide."""

    size: int
    coverage: float

    def describe(self) -> str:
        return f"{self.size} px crops at coverage {self.coverage:g}"

    def extract_config(self, cfg: ExtractConfig) -> ExtractConfig:
        """`cfg` (detector, tracking) with this geometry: what aligning a driver for the model uses."""
        return cfg.model_copy(update={"crop_size": self.size, "coverage": self.coverage})


def model_crop(payload: dict[str, Any], extract_cfg: ExtractConfig) -> tuple[CropGeometry, bool]:
    """(the crop geometry a model was trained with, whether the model file records it).

    Falls back to `extract_cfg` (params.extract) for model files written before the geometry
    was recorded."""
    crop = payload.get("crop") if isinstance(payload, dict) else None
    if isinstance(crop, dict) and "size" in crop and "coverage" in crop:
        return CropGeometry(int(crop["size"]), float(crop["coverage"])), True
    return CropGeometry(extract_cfg.crop_size, extract_cfg.coverage), False


# ---- where the model is ---------------------------------------------------------------------


def model_uri(model: str) -> str | None:
    """The MLflow URI MODEL stands for, or None when it is a local path.

    An existing file or folder wins over an actor name of the same spelling."""
    if URI_SCHEME.match(model) and not Path(model).exists():
        return model
    if Path(model).exists():
        return None
    if ACTOR_NAME.fullmatch(model) and not model.endswith((".pt", ".pth")):
        return f"models:/facevae-{model}@{CHAMPION}"
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


def registered_models_text(tracking_uri: str) -> str:
    models = registered_models(tracking_uri)
    return "registered models: " + ("; ".join(models) if models else "none")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


# ---- the model ------------------------------------------------------------------------------


class ActorModel:
    """The actor's VAE for inference: uint8 NHWC crops in, latent means or uint8 faces out.

    Calls are batched (`batch_size` faces per forward pass) and run without autograd.
    """

    def __init__(
        self, vae, crop: CropGeometry, source: str = "", actor: str = "", batch_size: int = DEFAULT_BATCH,
        transfer=None,
    ):
        self.vae = vae.eval()
        self.transfer = transfer  # facevae.transfer.TransferAssets (driving modes), None if not fitted
        self.crop = crop
        self.source = source
        self.actor = actor
        self.batch_size = batch_size
        self.image_size = int(vae.cfg.image_size)
        self.latent_dim = int(vae.cfg.latent_dim)
        self.device = next(vae.parameters()).device
        if crop.size != self.image_size:
            raise FaceVAEError(
                f"the model takes {self.image_size} px faces but its crop geometry is {crop.describe()}", source or None
            )
        if self.device.type == "cpu":
            self.vae = self.vae.to(memory_format=torch.channels_last)  # oneDNN's fastest conv layout

    # -- loading

    @classmethod
    def load(
        cls, model: str | Path, params: Params, requested: dict[str, Any] | None = None, batch_size: int = DEFAULT_BATCH
    ) -> "ActorModel":
        """Resolve MODEL (see module docstring) and load it. `requested` holds crop settings the
        user asked for explicitly (`crop_size`, `coverage`): they must match the model's."""
        with tempfile.TemporaryDirectory(prefix="facevae-model-") as tmp:
            path, source = fetch_model_file(str(model), params.mlflow.resolved_tracking_uri(), Path(tmp))
            return cls.from_file(path, params.extract, requested=requested, source=source, batch_size=batch_size)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        extract_cfg: ExtractConfig,
        requested: dict[str, Any] | None = None,
        source: str | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> "ActorModel":
        """A model.pt (e.g. models/<actor>/model.pt, the train stage's output)."""
        from facevae.model import model_from_payload, read_model_file

        path = Path(path)
        source = source or str(path)
        payload = read_model_file(path)  # read once: weights, crop geometry and transfer data
        vae = model_from_payload(payload)
        crop, recorded = model_crop(payload, extract_cfg)
        size = int(vae.cfg.image_size)
        if not recorded and crop.size != size:
            raise FaceVAEError(
                f"the model takes {size} px faces but extract.crop_size is {crop.size} and the model file does "
                f"not record its crop geometry: pass --set extract.crop_size={size} (and the coverage it was "
                "trained with, extract.coverage)",
                source,
            )
        check_requested_crop(crop, requested or {}, source)
        transfer = None
        if isinstance(payload.get("transfer"), dict):
            from facevae.transfer import TransferAssets

            transfer = TransferAssets.from_payload(payload["transfer"])
        return cls(vae, crop, source=source, actor=str(payload.get("actor", "")), batch_size=batch_size,
                   transfer=transfer)

    # -- numpy in, numpy out

    def check_crops(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        shape = (self.image_size, self.image_size, 3)
        if crops.ndim != 4 or crops.shape[1:] != shape:
            got = "x".join(map(str, crops.shape[1:])) if crops.ndim == 4 else str(crops.shape)
            raise FaceVAEError(
                f"the model takes {self.image_size}x{self.image_size}x3 aligned faces ({self.crop.describe()}), "
                f"got {got}",
                self.source or None,
            )
        if crops.dtype != np.uint8:
            raise FaceVAEError(f"faces must be uint8 RGB, got {crops.dtype}", self.source or None)
        return crops

    def encode(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) aligned faces -> float32 (N, latent_dim) latent means mu."""
        crops = self.check_crops(crops)
        out = np.empty((len(crops), self.latent_dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                chunk = crops[start : start + self.batch_size]
                out[start : start + len(chunk)] = self.vae.encode(faces_to_tensor(chunk, self.device)).float().cpu().numpy()
        return out

    def decode(self, mu: np.ndarray) -> np.ndarray:
        """float (N, latent_dim) latent codes -> uint8 (N, S, S, 3) faces of the actor."""
        mu = np.asarray(mu, dtype=np.float32)
        if mu.ndim == 1:
            mu = mu[None]
        if mu.ndim != 2 or mu.shape[1] != self.latent_dim:
            raise FaceVAEError(f"latent codes must be (N, {self.latent_dim}), got {mu.shape}", self.source or None)
        out = np.empty((len(mu), self.image_size, self.image_size, 3), dtype=np.uint8)
        with torch.inference_mode():
            for start in range(0, len(mu), self.batch_size):
                z = torch.from_numpy(np.ascontiguousarray(mu[start : start + self.batch_size])).to(self.device)
                out[start : start + len(z)] = tensor_to_faces(self.vae.decode(z))
        return out

    def reconstruct(self, crops: np.ndarray) -> np.ndarray:
        """uint8 faces -> the actor making the same expression: decode(mu(face)), uint8."""
        return reconstruct_faces(self.vae, self.check_crops(crops), self.batch_size)

    def sample(self, n: int, seed: int = 0, temperature: float = 1.0) -> np.ndarray:
        """n faces decoded from z ~ N(0, temperature^2 I) (seeded; the global RNG is untouched)."""
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=generator) * temperature
        return self.decode(z.numpy())

    def describe(self) -> str:
        actor = f"actor {self.actor}, " if self.actor else ""
        return f"{self.source} ({actor}{self.crop.describe()}, latent {self.latent_dim})"


def check_requested_crop(crop: CropGeometry, requested: dict[str, Any], source: str) -> None:
    """An explicitly asked crop size/coverage other than the model's is an error, not a silent switch."""
    size, coverage = requested.get("crop_size"), requested.get("coverage")
    if size is not None and int(size) != crop.size:
        raise FaceVAEError(
            f"the model was trained on {crop.describe()}, but extract.crop_size={size} was asked; "
            "drivers are always aligned with the model's own geometry, drop the setting or pick a model "
            f"trained at {size} px",
            source,
        )
    if coverage is not None and not math.isclose(float(coverage), crop.coverage, rel_tol=1e-6):
        raise FaceVAEError(
            f"the model was trained on {crop.describe()}, but extract.coverage={coverage} was asked; "
            "drop the setting or pick a model trained at that coverage",
            source,
        )


def requested_crop(overrides: list[str] | None) -> dict[str, Any]:
    """The crop settings among `--set` overrides (extract.crop_size, extract.coverage)."""
    import yaml

    asked: dict[str, Any] = {}
    for item in overrides or []:
        key, _, value = item.partition("=")
        key = key.strip()
        if key in ("extract.crop_size", "extract.coverage"):
            asked[key.split(".", 1)[1]] = yaml.safe_load(value)
    return asked


def latent_path(a: np.ndarray, b: np.ndarray, steps: int, mode: str = "linear") -> np.ndarray:
    """(steps, D) codes from a to b inclusive, straight (`linear`) or along the great circle with
    the norm interpolated linearly (`slerp`, which keeps in-between codes as typical as the ends
    under a Gaussian prior, where a straight line dips towards the origin)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if steps < 2:
        raise FaceVAEError(f"a walk needs at least 2 steps, got {steps}")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if mode == "linear":
        return ((1 - t) * a + t * b).astype(np.float32)
    if mode != "slerp":
        raise FaceVAEError(f"unknown walk mode {mode!r}: use linear or slerp")
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a < 1e-8 or norm_b < 1e-8:
        return ((1 - t) * a + t * b).astype(np.float32)
    unit_a, unit_b = a / norm_a, b / norm_b
    omega = math.acos(float(np.clip(unit_a @ unit_b, -1.0, 1.0)))
    if omega < 1e-4:
        direction = (1 - t) * unit_a + t * unit_b
    else:
        direction = (np.sin((1 - t) * omega) * unit_a + np.sin(t * omega) * unit_b) / math.sin(omega)
    return (direction * ((1 - t) * norm_a + t * norm_b)).astype(np.float32)
