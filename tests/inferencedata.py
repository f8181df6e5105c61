"""A tiny actor model trained for real (2 epochs, MLflow in a temp store) for the inference tests.

Trained once per test session whichever inference test module asks first (about 7 s on CPU):
models/pexels/model.pt, an MLflow run, and version 1 of facevae-pexels, given alias @champion by hand
(training alone names no champion: an evaluation, or a user, does).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from facevae.core.config import ExtractConfig, validate_params
from facevae.data.dataset import write_dataset
from facevae.tracking.registry import CHAMPION
from facevae.tracking.runs import environment_kept
from facevae.training.run import train
from tests.facedata import QUICK_TRAIN, face_crops

ACTOR = "pexels"
N_TRAIN, N_VAL = 40, 8


@dataclass(frozen=True)
class TinyModel:
    root: Path
    model_path: Path  # root/models/pexels/model.pt
    dataset: Path  # root/data/hdf5/pexels.h5, crops at the default geometry
    tracking_uri: str
    run_id: str
    overrides: list[str]  # --set items pointing MLflow at the temp store

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should find this model's registry."""
        return {**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri}


_TRAINED: dict[Path, TinyModel] = {}


def write_actor_dataset(path: Path) -> Path:
    """Astronaut face crops labelled with the default crop geometry (what extract would write)."""
    n = N_TRAIN + N_VAL
    split = np.zeros(n, dtype=np.uint8)
    split[N_TRAIN:] = 1
    extract = ExtractConfig()
    return write_dataset(
        path, face_crops(n, extract.crop_size), np.full((n, 68, 2), np.nan, dtype=np.float32),
        ["astronaut.png"] * n, np.arange(n), split,
        attrs={"coverage": extract.coverage, "extract_params": extract.model_dump(mode="json")},
    )  # fmt: skip


def tiny_model(root: Path) -> TinyModel:
    root = Path(root)
    if root in _TRAINED:
        return _TRAINED[root]
    dataset = write_actor_dataset(root / "data" / "hdf5" / f"{ACTOR}.h5")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    overrides = [f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={root / 'mlartifacts'}"]
    params = validate_params(
        {
            "train": {**QUICK_TRAIN, "epochs": 2, "log_images_every": 100},
            "mlflow": {"tracking_uri": uri, "artifact_location": str(root / "mlartifacts")},
        }
    )
    with environment_kept():
        result = train(dataset, ACTOR, params, root / "models" / ACTOR, progress=False)
    MlflowClient(uri).set_registered_model_alias(f"facevae-{ACTOR}", CHAMPION, result.model_version)
    _TRAINED[root] = TinyModel(root, result.model_path, dataset, uri, result.run_id, overrides)
    return _TRAINED[root]
