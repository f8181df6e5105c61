"""What a training reports to its observers: each epoch, and the result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from facevae.model.vae import VAE


@dataclass
class EpochReport:
    """What an observer (MLflow tracking) sees after each epoch."""

    epoch: int  # completed epochs, 1-based
    epochs: int
    row: dict[str, float]
    model: VAE
    val_images: Tensor  # uint8 (N, 3, H, W) on the training device; train images if val is empty
    device: torch.device


@dataclass
class TrainResult:
    out_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    run_id: str | None = None  # MLflow run, when tracking is on
    model_version: str | None = None  # registry version, when registered


EpochCallback = Callable[[EpochReport], None]
