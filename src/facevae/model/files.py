"""model.pt: the weights, the model config, the crop geometry and the fitted driving data, written
so that the same model gives the same bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facevae.core.atomic import atomic_path
from facevae.core.config import ModelConfig
from facevae.core.errors import FaceVAEError
from facevae.model.vae import VAE

MODEL_FORMAT = 1  # version of the model.pt layout written by save_model


def model_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def model_from_config_dict(config: dict[str, Any]) -> VAE:
    return VAE(ModelConfig.model_validate(config))


def save_model(
    path: str | Path, model: VAE, actor: str, crop: dict[str, Any] | None = None, transfer: dict[str, Any] | None = None
) -> Path:
    """Weights + model config: all that rebuilding the network needs (no training state).

    `crop` ({"size", "coverage"}) records how the training faces were cut, so a driver's face
    is aligned the same way at inference."""
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {"format": MODEL_FORMAT, "actor": actor, "model_config": model_config_dict(model.cfg), "state_dict": state_dict}
    if crop:
        payload["crop"] = crop
    if transfer:  # facevae.transfer.fit.TransferAssets.to_payload(): what the driving modes need
        payload["transfer"] = transfer
    write_torch_file(payload, path)
    return Path(path)


def write_torch_file(obj: Any, path: str | Path) -> None:
    """torch.save through a temp file, renamed into place. The same object gives the same bytes:
    torch names the archive inside after the file it is given a path to (here a random temp
    name), so it is given an open file instead, and DVC sees an unchanged model as unchanged."""

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """model.pt's payload, checked: weights, model config and what training recorded beside them."""
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise FaceVAEError("model file not found", path) from None
    except Exception as exc:  # torch raises several types for damaged or foreign files
        raise FaceVAEError(f"not a facevae model file ({exc.__class__.__name__})", path) from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise FaceVAEError("not a facevae model file (no format marker)", path)
    return payload


def model_from_payload(payload: dict[str, Any]) -> VAE:
    """The network of a read_model_file payload, in eval mode."""
    model = model_from_config_dict(payload["model_config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> VAE:
    """The network saved by save_model, in eval mode, on the device `map_location` names."""
    return model_from_payload(read_model_file(path, map_location)).to(map_location)
