"""Tiny real-image face datasets for the model/training tests: astronaut crops with small head moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.data import astronaut

from facevae.core.config import Params, validate_params
from facevae.data.dataset import write_dataset


def face_crops(n: int, size: int = 64) -> np.ndarray:
    """n crops around the astronaut's face, shifted and zoomed a little per frame."""
    img = astronaut()
    crops = []
    for i in range(n):
        dy, dx, grow = (i * 3) % 11, (i * 5) % 13, (i * 7) % 9
        crops.append(img[20 + dy : 220 + dy + grow, 160 + dx : 360 + dx + grow])
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BILINEAR)) for c in crops])


def write_face_dataset(path: Path, n_train: int = 40, n_val: int = 8, size: int = 64) -> Path:
    n = n_train + n_val
    split = np.zeros(n, dtype=np.uint8)
    split[n_train:] = 1
    return write_dataset(
        path, face_crops(n, size), np.full((n, 68, 2), np.nan, dtype=np.float32),
        ["astronaut.png"] * n, np.arange(n), split, attrs={"coverage": 1.6, "extract_params": {}},
    )


QUICK_TRAIN = {"batch_size": 16, "decoder_epochs": 0}  # seconds, not minutes: no decoder phase


def quick_params(model: dict | None = None, mlflow: bool = False, **train) -> Params:
    """The shipped recipe (the config defaults are params.yaml's) with a short training: no decoder
    phase, batch 16, MLflow off unless asked; `train` and `model` override what a test needs."""
    return validate_params({"model": model or {}, "train": {**QUICK_TRAIN, **train}, "mlflow": {"enabled": mlflow}})
