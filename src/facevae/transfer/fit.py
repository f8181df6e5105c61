"""What the train stage fits into model.pt for driving: the actor's colour and shape statistics,
her neutral face, the landmark-to-latent ridge head and her footage range."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facevae.core.config import TransferConfig
from facevae.core.errors import FaceVAEError
from facevae.core.images import spread
from facevae.data.dataset import SPLITS, clean_rows, open_dataset
from facevae.faces.align import template_in_crop
from facevae.faces.landmarks import BROWS, EYES, MOUTH
from facevae.transfer.footage import footage_range
from facevae.transfer.pose import pose_range

RIDGE_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)

# ---- masks and colour ---------------------------------------------------------------------------


def face_mask(landmarks: np.ndarray, size: int, forehead: float = 0.35, feather: float = 2.0) -> np.ndarray:
    """float32 (N, S, S) in [0, 1]: the landmark hull, brows raised by `forehead` eye-to-mouth
    distances to take the forehead in, edges blurred by a Gaussian of `feather` px."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2)
    masks = np.zeros((len(lm), size, size), dtype=np.float32)
    for i, points in enumerate(lm):
        if not np.isfinite(points).all():
            masks[i] = 1.0  # no landmarks: keep everything
            continue
        eyes, mouth = points[EYES].mean(0), points[MOUTH].mean(0)
        up = eyes - mouth
        raised = points[BROWS] + forehead * up
        hull = cv2.convexHull(np.round(np.vstack([points, raised]) * 16).astype(np.int32))
        cv2.fillConvexPoly(masks[i], hull, 1.0, lineType=cv2.LINE_AA, shift=4)
        if feather > 0:
            masks[i] = cv2.GaussianBlur(masks[i], (0, 0), feather)
    return masks


def to_lab(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) RGB -> float32 Lab (L 0..100). One cvtColor call for the whole stack."""
    images = np.asarray(images)
    n, h, w, _ = images.shape
    flat = images.reshape(n * h, w, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(n, h, w, 3)


def from_lab(lab: np.ndarray) -> np.ndarray:
    n, h, w, _ = lab.shape
    rgb = cv2.cvtColor(np.ascontiguousarray(lab.reshape(n * h, w, 3), dtype=np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb.reshape(n, h, w, 3) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def colour_stats(images: np.ndarray, masks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of Lab channels over the pixels of `images`, weighted by `masks` (face region)."""
    lab = to_lab(images).reshape(-1, 3).astype(np.float64)
    weight = np.ones(len(lab)) if masks is None else np.asarray(masks, dtype=np.float64).reshape(-1)
    total = max(weight.sum(), 1e-9)
    mean = (lab * weight[:, None]).sum(0) / total
    std = np.sqrt(((lab - mean) ** 2 * weight[:, None]).sum(0) / total)
    return mean, np.maximum(std, 1e-3)


def reinhard(images: np.ndarray, source: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Reinhard et al. colour transfer: per Lab channel, (x - source mean) / source std * target std + target mean."""
    lab = to_lab(images)
    scale = (target[1] / source[1]).astype(np.float32)
    lab = (lab - source[0].astype(np.float32)) * scale + target[0].astype(np.float32)
    return from_lab(lab)


def composite(faces: np.ndarray, masks: np.ndarray, background: np.ndarray) -> np.ndarray:
    """faces inside the masks, `background` (one S x S x 3 image) outside."""
    m = masks[..., None]
    out = faces.astype(np.float32) * m + background.astype(np.float32)[None] * (1.0 - m)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)

# ---- neutral frames, geometry ---------------------------------------------------------------------


def neutral_index(landmarks: np.ndarray) -> int:
    """The frame whose landmarks are closest to the median shape of all of them (finite rows
    only): the median, not the mean, so a third of the frames crying with shut eyes does not make
    the neutral face squint."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(len(landmarks), -1)
    ok = np.isfinite(lm).all(1)
    if not ok.any():
        raise FaceVAEError("no frame with landmarks to choose a neutral face from")
    dist = np.linalg.norm(lm - np.median(lm[ok], axis=0), axis=1)
    return int(np.argmin(np.where(ok, dist, np.inf)))


def geometry(landmarks: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """(N, 136): landmarks relative to the person's neutral shape (crop px; crops are aligned on
    the rigid points, so what is left is expression)."""
    return (np.asarray(landmarks, dtype=np.float64) - np.asarray(neutral, dtype=np.float64)).reshape(len(landmarks), -1)

# ---- the landmark head ----------------------------------------------------------------------------


@dataclass
class RidgeHead:
    """z = bias + (x / scale) @ weight: landmark geometry (N, 136) -> latent means (N, D).

    `scale` is the actor's per-coordinate spread, so an eyelid's 1 px counts as much as the
    jaw's 5 (without it the ridge penalty all but ignores the eyes)."""

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    val_r2: float  # on the actor's held-out frames (nan when there were none)
    scale: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.scale is not None:
            x = x / self.scale
        return (x @ self.weight + self.bias).astype(np.float32)


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    weight = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return weight, ym - xm @ weight


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    return float(1.0 - ((pred - y) ** 2).sum() / max(((y - y.mean(0)) ** 2).sum(), 1e-12))


def fit_head(x: np.ndarray, y: np.ndarray, val: np.ndarray, alpha: float = 0.0, standardise: bool = True) -> RidgeHead:
    """Ridge regression; alpha 0 = picked on the `val` rows (the actor's held-out frames), then
    refitted on every row."""
    scale = np.maximum(x.std(0), 0.05) if standardise else None
    if scale is not None:
        x = x / scale
    train = ~val
    best, best_r2 = alpha or RIDGE_ALPHAS[0], float("nan")
    if val.any() and train.sum() > 2:
        for a in [alpha] if alpha else RIDGE_ALPHAS:
            w, b = ridge(x[train], y[train], a)
            score = r2(x[val] @ w + b, y[val])
            if not score <= best_r2:  # the first finite score, then any better one
                best, best_r2 = a, score
    weight, bias = ridge(x, y, best)
    return RidgeHead(weight, bias, float(best), best_r2, scale)

# ---- what a model carries for driving -----------------------------------------------------------


@dataclass
class TransferAssets:
    lab_mean: np.ndarray  # (3,) Lab mean of the actor's face region (training crops)
    lab_std: np.ndarray  # (3,)
    neutral_crop: np.ndarray  # uint8 (S, S, 3): the actor's frame closest to their median shape
    neutral_landmarks: np.ndarray  # (68, 2) crop px
    neutral_mu: np.ndarray  # (D,) its latent mean
    head: RidgeHead | None = None  # None when the dataset has no landmarks
    info: dict[str, float] = field(default_factory=dict)
    codes: np.ndarray | None = None  # (M, D) latent means of the actor's clean training frames (the snap)
    frames: np.ndarray | None = None  # uint8 (F, S, S, 3): her clean training frames, at most transfer.stored_frames

    def to_payload(self) -> dict[str, Any]:
        """Plain tensors and numbers: model.pt stays loadable with torch.load(weights_only=True)."""
        import torch

        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
        payload: dict[str, Any] = {
            "lab_mean": t(self.lab_mean), "lab_std": t(self.lab_std), "neutral_crop": t(self.neutral_crop),
            "neutral_landmarks": t(self.neutral_landmarks), "neutral_mu": t(self.neutral_mu),
            "info": {k: float(v) for k, v in self.info.items()},
        }  # fmt: skip
        if self.codes is not None:
            payload["codes"] = t(self.codes)
        if self.frames is not None:
            payload["frames"] = t(self.frames)
        if self.head is not None:
            payload["head"] = {"weight": t(self.head.weight), "bias": t(self.head.bias),
                               "alpha": self.head.alpha, "val_r2": self.head.val_r2}
            if self.head.scale is not None:
                payload["head"]["scale"] = t(self.head.scale)
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TransferAssets:
        n = lambda v: np.asarray(v.numpy() if hasattr(v, "numpy") else v)
        head = payload.get("head")
        return cls(
            n(payload["lab_mean"]), n(payload["lab_std"]), n(payload["neutral_crop"]).astype(np.uint8),
            n(payload["neutral_landmarks"]), n(payload["neutral_mu"]).astype(np.float32),
            RidgeHead(n(head["weight"]), n(head["bias"]), float(head["alpha"]), float(head["val_r2"]),
                      n(head["scale"]) if "scale" in head else None) if head else None,
            dict(payload.get("info", {})),
            n(payload["codes"]).astype(np.float32) if "codes" in payload else None,
            n(payload["frames"]).astype(np.uint8) if "frames" in payload else None,
        )  # fmt: skip


def fit_transfer(model, images: np.ndarray, landmarks: np.ndarray, val: np.ndarray, cfg: TransferConfig,
                 occlusion: tuple[float, float] | None = None) -> TransferAssets:
    """The actor's colour statistics, neutral frame, landmark head and range of head pose from their
    own frames.

    `model` is an ActorModel (or anything with encode); `val` marks held-out rows (ridge alpha);
    `occlusion`: the (high, low) mouth occlusion thresholds that flagged her frames, kept for judging
    a driver's (extract.max_occlusion, extract.occlusion_low)."""
    images = np.asarray(images)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    size = images.shape[1]
    has_lm = np.isfinite(landmarks.reshape(len(landmarks), -1)).all(1)
    mask_lm = np.where(has_lm[:, None, None], landmarks, template_in_crop(size, 2.2)[None])
    masks = face_mask(mask_lm, size, cfg.forehead, cfg.feather)
    lab_mean, lab_std = colour_stats(images, masks)
    mu = model.encode(images)
    if has_lm.any():
        ni = int(np.flatnonzero(has_lm)[neutral_index(landmarks[has_lm])])
    else:
        ni = int(np.argmin(np.linalg.norm(mu - mu.mean(0), axis=1)))
    head = None
    info: dict[str, float] = {"neutral_index": ni, "frames": len(images)}
    if has_lm.sum() > 8:
        x = geometry(landmarks[has_lm], landmarks[ni])
        head = fit_head(x, mu[has_lm].astype(np.float64), np.asarray(val, bool)[has_lm], cfg.ridge_alpha,
                        cfg.standardise_landmarks)
        info.update(head_alpha=head.alpha, head_val_r2=head.val_r2)
    train = ~np.asarray(val, bool)
    codes = (mu[train] if train.any() else mu).astype(np.float32)
    if train.any():
        info.update(footage_range(mu[~train], codes, cfg.snap_k))
    info.update(guard_info(landmarks[(train if train.any() else has_lm) & has_lm], occlusion))
    frames = stored_frames(images[train] if train.any() else images, cfg.stored_frames)
    return TransferAssets(lab_mean, lab_std, images[ni].copy(), landmarks[ni].astype(np.float32), mu[ni], head, info,
                          codes, frames)


def guard_info(landmarks: np.ndarray, occlusion: tuple[float, float] | None) -> dict[str, float]:
    """What the driving guards read from model.pt: her range of head pose (from her training frames'
    landmarks) and the (high, low) occlusion thresholds that flagged her frames (none when not given)."""
    info = pose_range(landmarks)
    if occlusion is not None:
        info.update(occlusion_high=occlusion[0], occlusion_low=occlusion[1])
    return info


def stored_frames(frames: np.ndarray, limit: int) -> np.ndarray | None:
    """At most `limit` of her frames, spread evenly over them (None for 0)."""
    if limit == 0:
        return None
    return np.ascontiguousarray(frames[spread(len(frames), limit)])


def fit_transfer_from_dataset(model, data, cfg: TransferConfig, occlusion: tuple[float, float] | None = None) -> TransferAssets:
    """`fit_transfer` on the frames of an actor's HDF5 dataset (val frames choose the ridge alpha).

    Frames with a masked occluder (`occluded:mouth`) are left out: a hand in the crop moves the
    encoder's code in ways no landmark explains, and it would tint the colours and could become
    the neutral face. (Measured on pexels, two training seeds: blend expression r 0.851 / 0.665
    with them in the head's fit, 0.802 / 0.833 without.)"""

    with open_dataset(data) as h5:
        images = h5["images"][:]
        n = len(images)
        landmarks = h5["landmarks"][:] if "landmarks" in h5 else np.full((n, 68, 2), np.nan, np.float32)
        val = h5["split"][:] == SPLITS["val"]
        clean = clean_rows(h5)
    if not clean.any():
        raise FaceVAEError("every frame has a masked region: no clean face to fit the driving modes on", data)
    return fit_transfer(model, images[clean], landmarks[clean], val[clean], cfg, occlusion)


def add_footage_range(model, val_images: np.ndarray, k: int) -> bool:
    """A model file trained before the footage range was stored gets it from the actor's clean val
    crops, measured as the train stage measures it (against the codes the file carries), so its
    `in range` check is not NaN. False when it cannot be: no codes (older still) or no val frames."""
    assets = model.transfer
    if assets is None or assets.codes is None or not len(val_images):
        return False
    assets.info.update(footage_range(model.encode(val_images), assets.codes, k))
    return True
