"""A trained actor model as a fast numpy-in / numpy-out wrapper: the VAE, the crop geometry drivers
are aligned with, and the driving data fitted into model.pt.

`ActorModel.from_file` reads a model.pt; facevae.tracking.models.load_actor_model resolves MODEL
(a file, an MLflow URI or an actor name) first. The crop geometry is the model's own: model.pt
records it (`payload["crop"]`); older files fall back to `params.extract`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.faces.crop import CropGeometry
from facevae.model.files import model_from_payload, read_model_file
from facevae.model.vae import faces_to_tensor, reconstruct_faces, tensor_to_faces
from facevae.transfer.fit import TransferAssets

DEFAULT_BATCH = 32


def model_crop(payload: dict[str, Any], extract_cfg: ExtractConfig) -> tuple[CropGeometry, bool]:
    """(the crop geometry a model was trained with, whether the model file records it).

    Falls back to `extract_cfg` (params.extract) for model files written before the geometry
    was recorded."""
    crop = payload.get("crop") if isinstance(payload, dict) else None
    if isinstance(crop, dict) and "size" in crop and "coverage" in crop:
        return CropGeometry(int(crop["size"]), float(crop["coverage"])), True
    return CropGeometry(extract_cfg.crop_size, extract_cfg.coverage), False

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
        self.transfer = transfer  # facevae.transfer.fit.TransferAssets (driving modes), None if not fitted
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
    def from_file(
        cls,
        path: str | Path,
        extract_cfg: ExtractConfig,
        requested: dict[str, Any] | None = None,
        source: str | None = None,
        batch_size: int = DEFAULT_BATCH,
    ) -> "ActorModel":
        """A model.pt (e.g. models/<actor>/model.pt, the train stage's output)."""

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
