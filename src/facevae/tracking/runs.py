"""MLflow tracking of a training run: params, data lineage, per-epoch metrics, face grids, the model.

Experiment `facevae-<actor>`; each run registers a new version of model `facevae-<actor>`. The
`@champion` alias is not touched here: only an evaluation moves it (facevae.tracking.registry).
`out_dir/mlflow.json` records the run and model URIs (and lets `--resume` continue the same run).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import numpy as np
import torch

from facevae.core.atomic import write_json
from facevae.core.config import MlflowConfig, Params, flatten
from facevae.core.errors import FaceVAEError
from facevae.core.images import as_uint8_nhwc, make_grid, stack_rows, upscale
from facevae.data.dataset import dataset_counts
from facevae.model.flops import flops_per_image
from facevae.model.vae import VAE
from facevae.tracking.pyfunc import log_pyfunc_model
from facevae.tracking.records import EpochReport, TrainResult
from facevae.tracking.registry import MODEL_PREFIX

RUN_FILE = "mlflow.json"

MODEL_KEYS = ("model_uri", "registered_model", "version")  # what log_final_model adds to it

GRID_FACES = 8  # fixed val faces shown with their reconstructions

PRIOR_SAMPLES = 16

WALK_STEPS = 8

GRID_ZOOM = 2  # 64 px faces are small in a browser

PARAMS_PER_CALL = 100  # MLflow's log_batch limit

URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def experiment_name(actor: str) -> str:
    return f"facevae-{actor}"


def registered_model_name(actor: str) -> str:
    return f"{MODEL_PREFIX}{actor}"

# ---- setup --------------------------------------------------------------------------------------


def configure_tracking(cfg: MlflowConfig) -> str:
    """Point MLflow at the resolved tracking URI (a database: MLflow 3 refuses plain file stores)."""
    import mlflow

    uri = cfg.resolved_tracking_uri()
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        raise FaceVAEError(
            f"mlflow.tracking_uri {uri!r} is a plain file store, which MLflow 3 no longer supports; "
            "use sqlite:///mlruns/mlflow.db (or an http(s):// server)"
        )
    if scheme == "sqlite":
        db = sqlite_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """File of a sqlite:/// URI (relative or absolute); None for in-memory."""
    rest = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    return Path(rest) if rest and rest != ":memory:" else None


def artifact_root(cfg: MlflowConfig, uri: str) -> Path | None:
    """Where a new experiment keeps its artifacts: mlflow.artifact_location for the configured sqlite
    store; beside the database when MLFLOW_TRACKING_URI names another sqlite file (so that store and
    artifacts stay together); None for a server, which decides itself."""
    if urlparse(uri).scheme != "sqlite":
        return None
    db = sqlite_path(uri)
    if uri != cfg.tracking_uri and db is not None:
        return db.parent / "artifacts"
    return Path(cfg.artifact_location)


def ensure_experiment(actor: str, cfg: MlflowConfig, uri: str) -> str:
    """Experiment id of facevae-<actor>, created (with an absolute artifact URI) when missing."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    name = experiment_name(actor)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        root = artifact_root(cfg, uri)
        location = (root.resolve() / name).as_uri() if root is not None else None
        return client.create_experiment(name, artifact_location=location)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def previous_run_id(out_dir: Path, uri: str) -> str | None:
    """The run recorded in out_dir/mlflow.json, if it exists in this tracking store."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    record = read_run_file(out_dir)
    if not record.get("run_id") or record.get("tracking_uri") != uri:
        return None
    try:
        MlflowClient(uri).get_run(record["run_id"])
    except MlflowException:
        return None
    return record["run_id"]


@contextmanager
def environment_kept(keys: tuple[str, ...] = URI_VARIABLES) -> Iterator[None]:
    """Restore these environment variables on exit: mlflow.set_tracking_uri also exports
    MLFLOW_TRACKING_URI, which would then override params.yaml for the rest of the process."""
    saved = {key: os.environ.get(key) for key in keys}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class RunOptions:
    """Where a training run goes and what it keeps; the defaults are a plain `facevae train`."""

    parent_run_id: str | None = None  # nest under this run (a sweep's), also from another process
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    log_model: bool = True  # False: no pyfunc model and no registry version (sweep trials)


@contextmanager
def tracked_run(
    data: Path, actor: str, params: Params, out_dir: Path, resume: bool = False, options: RunOptions | None = None
) -> Iterator["RunTracker"]:
    """An active MLflow run for one training; ends FAILED if training raises. Leaves the environment as it was."""
    with environment_kept():
        with _tracked_run(data, actor, params, out_dir, resume, options or RunOptions()) as tracker:
            yield tracker


@contextmanager
def _tracked_run(
    data: Path, actor: str, params: Params, out_dir: Path, resume: bool, options: RunOptions
) -> Iterator["RunTracker"]:
    import mlflow

    uri = configure_tracking(params.mlflow)
    experiment_id = ensure_experiment(actor, params.mlflow, uri)
    recorded = previous_run_id(out_dir, uri) if resume else None
    run_id = recorded if (out_dir / "checkpoint.pt").exists() else None
    nested = mlflow.active_run() is not None  # e.g. one trial of a sweep that has its own parent run
    new_run = {} if run_id else {
        "experiment_id": experiment_id, "parent_run_id": options.parent_run_id,
        "run_name": options.run_name, "tags": options.tags or None,
    }
    with mlflow.start_run(run_id=run_id, nested=nested, **new_run) as run:
        if recorded is not None and run_id is None:
            close_killed_run(uri, recorded, run.info.run_id)
        tracker = RunTracker(run.info.run_id, uri, actor, params, data, out_dir)
        logged = {k: v for k, v in read_run_file(out_dir).items() if k in MODEL_KEYS} if run_id else {}  # same run: its model
        write_run_file(out_dir, {"tracking_uri": uri, "experiment_id": run.info.experiment_id, "run_id": run.info.run_id,
                                 **logged})
        if run_id is None:
            tracker.log_setup()
        yield tracker


RESTARTED_AS = "facevae.restarted_as"  # tag of a run killed before its first checkpoint: the run that redid it


def close_killed_run(uri: str, old_run_id: str, new_run_id: str) -> None:
    """`--resume` without a checkpoint starts over in a new run: the run of the killed attempt (still
    RUNNING, as a kill -9 leaves it) ends KILLED, tagged with the new run's id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if client.get_run(old_run_id).info.status == "RUNNING":
        client.set_tag(old_run_id, RESTARTED_AS, new_run_id)
        client.set_terminated(old_run_id, "KILLED")

# ---- the run ------------------------------------------------------------------------------------


class RunTracker:
    def __init__(self, run_id: str, uri: str, actor: str, params: Params, data: Path, out_dir: Path):
        self.run_id, self.uri, self.actor = run_id, uri, actor
        self.params, self.data, self.out_dir = params, Path(data), Path(out_dir)
        self.epochs_logged = 0

    def log_setup(self) -> None:
        import mlflow

        flat = {k: json.dumps(v, default=str) if isinstance(v, (list, dict)) else v for k, v in flatten(self.params).items()}
        flat.update({f"data.{k}": v for k, v in dataset_lineage(self.data).items()})
        flat["model.gflop_per_train_image"] = round(flops_per_image(self.params.model)["train"] / 1e9, 4)
        items = sorted(flat.items())
        for start in range(0, len(items), PARAMS_PER_CALL):
            mlflow.log_params(dict(items[start : start + PARAMS_PER_CALL]))
        mlflow.set_tags({"actor": self.actor, **git_tags()})

    def log_epoch(self, report: "EpochReport") -> None:
        import mlflow

        self.epochs_logged += 1
        metrics = {k: v for k, v in report.row.items() if k != "epoch" and math.isfinite(v)}
        mlflow.log_metrics(metrics, step=report.epoch)
        every = self.params.train.log_images_every
        if report.epoch % every == 0 or report.epoch == report.epochs:
            self.log_grids(report)

    def log_grids(self, report: "EpochReport") -> None:
        import mlflow

        faces = fixed_faces(report.val_images)
        grids = face_grids(report.model, faces, seed=self.params.train.seed)
        for name, grid in grids.items():
            mlflow.log_image(upscale(grid, GRID_ZOOM), artifact_file=f"images/epoch{report.epoch:04d}_{name}.png")

    def log_final_model(self, result: "TrainResult") -> None:
        import mlflow

        record = read_run_file(self.out_dir)
        if not self.epochs_logged and record.get("run_id") == self.run_id and record.get("model_uri"):
            # --resume of a run killed after it logged its model: no epoch trained, nothing new to register
            result.model_version, result.run_id = record.get("version"), self.run_id
            return
        for name in ("metrics.json", "history.csv", "config.json"):
            mlflow.log_artifact(str(result.out_dir / name), artifact_path="outputs")
        cfg = self.params.mlflow
        name = registered_model_name(self.actor) if cfg.register_model else None
        image_size = self.params.model.image_size
        example = np.full((1, image_size, image_size, 3), 128, dtype=np.uint8)
        info = log_pyfunc_model(result.model_path, image_size, name, example)
        record: dict[str, Any] = {"model_uri": info.model_uri}
        version = getattr(info, "registered_model_version", None)
        if name and version is not None:
            version = str(version)
            record.update(registered_model=name, version=version)  # @champion moves only after an evaluation
            result.model_version = version
        result.run_id = self.run_id
        write_run_file(self.out_dir, {**read_run_file(self.out_dir), **record})


# ---- lineage ------------------------------------------------------------------------------------


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def dataset_lineage(path: Path) -> dict[str, Any]:

    counts = dataset_counts(path)
    return {
        "path": str(path),
        "md5": file_md5(path),
        **{f"rows_{split}": n for split, n in counts.items()},
    }


def git_tags() -> dict[str, str]:
    """Commit of the working tree (and whether it had uncommitted changes); empty outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.commit": commit.stdout.strip(), "git.dirty": str(bool(status.stdout.strip())).lower()}

# ---- pictures -----------------------------------------------------------------------------------


def fixed_faces(images: torch.Tensor, n: int = GRID_FACES) -> torch.Tensor:
    """n faces spread evenly over the set (the same ones every epoch), uint8 NCHW."""
    index = np.unique(np.linspace(0, len(images) - 1, num=min(n, len(images))).round().astype(int))
    return images[torch.from_numpy(index).to(images.device)]


def to_nhwc_uint8(x: torch.Tensor) -> np.ndarray:
    """float [0, 1] or uint8 NCHW tensor -> uint8 NHWC numpy."""
    return as_uint8_nhwc(x.detach().float().cpu().numpy() if x.dtype != torch.uint8 else x.cpu().numpy())


@torch.no_grad()
def face_grids(model: "VAE", faces: torch.Tensor, seed: int = 0) -> dict[str, np.ndarray]:
    """Three uint8 pictures: faces over their reconstructions, prior samples, a latent walk."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        x = faces.to(device).float().div(255.0).contiguous(memory_format=torch.channels_last)
        mu = model.encode(x)
        recon = model.decode(mu)
        generator = torch.Generator().manual_seed(seed)  # same samples every epoch, global RNG untouched
        z = torch.randn(PRIOR_SAMPLES, model.cfg.latent_dim, generator=generator).to(device)
        samples = model.decode(z)
        weights = torch.linspace(0, 1, WALK_STEPS, device=device)[:, None]
        walk = model.decode(mu[:1] * (1 - weights) + mu[-1:] * weights)
    finally:
        model.train(was_training)
    originals = to_nhwc_uint8(faces)
    strip = np.concatenate([originals[:1], to_nhwc_uint8(walk), originals[-1:]])
    return {
        "reconstructions": make_grid(stack_rows(originals, to_nhwc_uint8(recon)), ncols=len(originals)),
        "prior_samples": make_grid(to_nhwc_uint8(samples), ncols=PRIOR_SAMPLES // 2),
        "latent_walk": make_grid(strip, ncols=len(strip)),
    }

# ---- out_dir/mlflow.json ------------------------------------------------------------------------


def read_run_file(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_run_file(out_dir: Path, record: dict[str, Any]) -> None:
    write_json(Path(out_dir) / RUN_FILE, record)
