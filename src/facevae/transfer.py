"""Driving modes: how a stranger's clip becomes the actor's faces.

The seed encodes each driver crop to mu and decodes it as the actor. A stranger's skin tone,
lighting and background are out of the actor's distribution and steer the code as much as the
expression does, so the modes here take those cues away step by step:

- `seed`: decode(mu(crop)), frame by frame (the seed's plain method);
- `normalised`: the driver's colours moved to the actor's (Reinhard transfer in Lab, actor
  statistics from the training crops) and everything outside the face hull (landmarks, with the
  forehead, feathered) replaced by the actor's own neutral frame before encoding;
- `relative`: z = z(actor neutral) + gain * (z(driver frame) - z(driver neutral)) on normalised
  crops: the driver's identity cancels in the difference;
- `landmark`: a ridge head fitted on the actor's own frames maps landmark geometry relative to
  the person's neutral shape to the latent mean; the driver's landmarks pick the actor's code,
  the driver's pixels are not used at all;
- `blend`: w * landmark + (1 - w) * relative.

Every mode but `seed` then pulls each code part of the way (`transfer.snap`) toward the mean of
its `transfer.snap_k` nearest codes of the actor's own training frames (`snap_to_codes`): driven
codes drift between and beyond her frames, where the decoder draws soft, averaged faces
(`transfer.snap_parts`: in `blend`, each of the two codes is snapped before they are averaged
as well). Last,
it smooths the latent sequence with a one-euro style filter whose lag is bounded by
`transfer.smooth_lag` frames (`smooth_latents`).

A clip is processed by a `DriveSession` in chunks, in time order: the first chunk (at least
`transfer.neutral_window` faces, or what there is) picks the driver's neutral frame (closest to
the window's median landmark shape, unless `transfer.driver_neutral` names one) and its colour
statistics; later chunks reuse them, and the smoother carries over. `ClipTranslator` runs one
session over a whole clip: the evaluation report and `facevae reconstruct` see the same numbers.

What the modes need from the actor (`TransferAssets`: colour statistics, neutral frame and its
code, the landmark head, the training frames' codes) is fitted after training (`fit_transfer`)
and stored in model.pt. A model file from before the codes were stored drives without the snap.

A session also measures how far each driven code lies from the actor's footage
(`footage_distance`, to its `snap_k` nearest training codes, k as at training) and flags the codes farther than any
of her own val frames (`info["range_limit"]`): `DriveSession.footage().beyond`. Those are the frames
where the decoder extrapolates (blotchy, smeared faces): a driver making a face the actor never
made on film.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facevae.config import TransferConfig
from facevae.errors import FaceVAEError
from facevae.faces import template_in_crop

MODES = ("seed", "normalised", "relative", "landmark", "blend")
NEEDS_HEAD = frozenset({"landmark", "blend"})
BROWS = slice(17, 27)
EYES = slice(36, 48)
MOUTH = slice(48, 68)
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
        )  # fmt: skip


def fit_transfer(model, images: np.ndarray, landmarks: np.ndarray, val: np.ndarray, cfg: TransferConfig) -> TransferAssets:
    """The actor's colour statistics, neutral frame and landmark head from their own frames.

    `model` is an ActorModel (or anything with encode); `val` marks held-out rows (ridge alpha)."""
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
    return TransferAssets(lab_mean, lab_std, images[ni].copy(), landmarks[ni].astype(np.float32), mu[ni], head, info,
                          codes)


def fit_transfer_from_dataset(model, data, cfg: TransferConfig) -> TransferAssets:
    """`fit_transfer` on the frames of an actor's HDF5 dataset (val frames choose the ridge alpha).

    Frames with a masked occluder (`occluded:mouth`) are left out: a hand in the crop moves the
    encoder's code in ways no landmark explains, and it would tint the colours and could become
    the neutral face. (Measured on pexels, two training seeds: blend expression r 0.851 / 0.665
    with them in the head's fit, 0.802 / 0.833 without.)"""
    from facevae.dataset import SPLITS, clean_rows, open_dataset

    with open_dataset(data) as h5:
        images = h5["images"][:]
        n = len(images)
        landmarks = h5["landmarks"][:] if "landmarks" in h5 else np.full((n, 68, 2), np.nan, np.float32)
        val = h5["split"][:] == SPLITS["val"]
        clean = clean_rows(h5)
    if not clean.any():
        raise FaceVAEError("every frame has a masked region: no clean face to fit the driving modes on", data)
    return fit_transfer(model, images[clean], landmarks[clean], val[clean], cfg)


def add_footage_range(model, val_images: np.ndarray, k: int) -> bool:
    """A model file trained before the footage range was stored gets it from the actor's clean val
    crops, measured as the train stage measures it (against the codes the file carries), so its
    `in range` check is not NaN. False when it cannot be: no codes (older still) or no val frames."""
    assets = model.transfer
    if assets is None or assets.codes is None or not len(val_images):
        return False
    assets.info.update(footage_range(model.encode(val_images), assets.codes, k))
    return True


# ---- snap and smoothing ---------------------------------------------------------------------------


def nearest_indices(queries: np.ndarray, table: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """(N, k) row indices of `table` nearest (Euclidean) to each query, in no particular order.

    Distances as |t|^2 - 2 q.t (|q|^2 is the same for every row), `chunk` queries at a time: memory
    stays chunk x M, not chunk x M x D, for an actor with many frames."""
    queries, table = np.asarray(queries, dtype=np.float64), np.asarray(table, dtype=np.float64)
    k = min(k, len(table))
    sq_norms = (table**2).sum(1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        dist = sq_norms[None] - 2 * queries[start : start + chunk] @ table.T
        out[start : start + chunk] = np.argpartition(dist, k - 1, axis=1)[:, :k]
    return out


def snap_to_codes(z: np.ndarray, codes: np.ndarray | None, weight: float, k: int, chunk: int = 256) -> np.ndarray:
    """z' = (1 - weight) * z + weight * (mean of the k actor codes nearest to z), row by row.
    No codes (an older model file) or weight 0: z unchanged."""
    z = np.asarray(z, dtype=np.float32)
    if weight == 0 or codes is None or len(codes) == 0:
        return z
    codes = np.asarray(codes, dtype=np.float64)
    nearest = codes[nearest_indices(z, codes, k, chunk)].mean(1)
    return ((1 - weight) * z.astype(np.float64) + weight * nearest).astype(np.float32)


def footage_neighbours(z: np.ndarray, codes: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(N,) root mean square distance from each code to its k nearest actor codes: how far a driven
    face is from anything in the actor's footage (where the decoder has seen nothing, it draws
    blotchy, smeared faces that a landmark reader may still score well); and (N,) the row of
    `codes` nearest to each (the actor's own frame that comes closest)."""
    z, codes = np.asarray(z, dtype=np.float64), np.asarray(codes, dtype=np.float64)
    rows = nearest_indices(z, codes, k, chunk)
    squared = ((codes[rows] - z[:, None]) ** 2).sum(-1)
    return np.sqrt(squared.mean(1)), rows[np.arange(len(z)), squared.argmin(1)]


def footage_distance(z: np.ndarray, codes: np.ndarray, k: int, chunk: int = 256) -> np.ndarray:
    """(N,) the distance of `footage_neighbours`."""
    return footage_neighbours(z, codes, k, chunk)[0]


@dataclass
class Footage:
    """How far each driven face of a clip lies from the actor's footage: (N,) `distance`
    (footage_neighbours), (N,) `nearest` (rows of the model's codes: her clean training frames)
    and the model's `limit` (range_limit)."""

    distance: np.ndarray
    nearest: np.ndarray
    limit: float

    @property
    def beyond(self) -> np.ndarray:
        """(N,) bool: the code lies beyond the actor's footage."""
        return self.distance > self.limit


def footage_range(val_mu: np.ndarray, codes: np.ndarray, k: int) -> dict[str, float]:
    """range_k and range_limit for the model file. Her own unseen (val) frames are the yardstick: a
    driven code farther from her training codes than the farthest of them is beyond her footage."""
    if not len(val_mu) or not len(codes):
        return {}
    return {"range_k": k, "range_limit": float(footage_distance(val_mu, codes, k).max())}


class LatentSmoother:
    """One-euro style filter in frame units with a hard lag bound.

    Each step is an EMA z_hat += a * (z - z_hat) with a = 1 / (1 + L / (1 + beta * speed)),
    speed = |smoothed first difference| per dimension. On a steady ramp an EMA lags (1 - a) / a
    = L / (1 + beta * speed) <= L frames: `lag` bounds the delay, fast moves shorten it, still
    frames get the full smoothing. lag 0 passes codes through."""

    def __init__(self, lag: float, beta: float = 0.0, derivative_alpha: float = 0.5):
        self.lag, self.beta, self.d_alpha = float(lag), float(beta), derivative_alpha
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32)
        if self.lag <= 0:
            return z
        out = np.empty_like(z)
        for i, zi in enumerate(z):
            if self.value is None:
                self.value, self.speed = zi.copy(), np.zeros_like(zi)
            else:
                self.speed += self.d_alpha * (np.abs(zi - self.value) - self.speed)
                a = 1.0 / (1.0 + self.lag / (1.0 + self.beta * self.speed))
                self.value = self.value + a * (zi - self.value)
            out[i] = self.value
        return out


def smooth_latents(z: np.ndarray, lag: float, beta: float = 0.0) -> np.ndarray:
    return LatentSmoother(lag, beta)(z)


# ---- driving --------------------------------------------------------------------------------------


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise FaceVAEError(f"unknown driving mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


class DriveSession:
    """One driver clip in time order, fed in chunks: (crops, landmarks) -> the actor's faces."""

    def __init__(self, model, cfg: TransferConfig, mode: str | None = None):
        self.model, self.cfg = model, cfg
        self.mode = check_mode(mode or cfg.mode)
        self.assets: TransferAssets | None = getattr(model, "transfer", None)
        if self.mode != "seed" and self.assets is None:
            raise FaceVAEError(
                f"driving mode {self.mode!r} needs the actor's transfer statistics, which this model file does "
                "not carry: retrain it (the train stage fits them) or use --mode seed", getattr(model, "source", None)
            )
        if self.mode in NEEDS_HEAD and self.assets.head is None:
            raise FaceVAEError(f"driving mode {self.mode!r} needs a landmark head: the actor's dataset had no landmarks")
        self.smoother = LatentSmoother(cfg.smooth_lag if self.mode != "seed" else 0.0, cfg.smooth_beta)
        self.started = False
        self.driver_stats: tuple[np.ndarray, np.ndarray] | None = None
        self.driver_neutral_lm: np.ndarray | None = None
        self.driver_neutral_z: np.ndarray | None = None
        self.distances: list[np.ndarray] = []  # per chunk: footage_neighbours of each driven code
        self.nearest: list[np.ndarray] = []

    @property
    def range_limit(self) -> float | None:
        """The farthest any of the actor's own val frames lies from her training codes (None for
        the seed mode and for model files from before it was stored)."""
        if self.mode == "seed" or self.assets is None or self.assets.codes is None:
            return None
        return self.assets.info.get("range_limit")

    def footage(self) -> Footage | None:
        """Every face driven so far against the actor's footage; None where the range is not
        measured (the seed mode, older model files)."""
        if self.range_limit is None:
            return None
        if not self.distances:
            return Footage(np.zeros(0), np.zeros(0, np.int64), self.range_limit)
        return Footage(np.concatenate(self.distances), np.concatenate(self.nearest), self.range_limit)

    @property
    def warmup(self) -> int:
        """Faces the first chunk should hold (the neutral window); 0 for the seed."""
        return 0 if self.mode == "seed" else self.cfg.neutral_window

    def start(self, crops: np.ndarray, landmarks: np.ndarray) -> None:
        """Driver neutral frame and colour statistics from the first faces of the clip."""
        window = self.cfg.neutral_window or len(crops)
        crops, landmarks = crops[:window], landmarks[:window]
        given = self.cfg.driver_neutral
        ni = given if given is not None and 0 <= given < len(crops) else neutral_index(landmarks)
        self.driver_neutral_lm = np.asarray(landmarks[ni], dtype=np.float64)
        masks = face_mask(landmarks, crops.shape[1], self.cfg.forehead, self.cfg.feather)
        self.driver_stats = colour_stats(crops, masks)
        if self.mode in ("relative", "blend"):
            self.driver_neutral_z = self.encode_normalised(crops[ni : ni + 1], landmarks[ni : ni + 1])[0]
        self.started = True

    def normalise(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        a, cfg = self.assets, self.cfg
        out = crops
        if cfg.colour_transfer:
            out = reinhard(out, self.driver_stats, (a.lab_mean, a.lab_std))
        if cfg.mask_background:
            out = composite(out, face_mask(landmarks, crops.shape[1], cfg.forehead, cfg.feather), a.neutral_crop)
        return out

    def encode_normalised(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.model.encode(self.normalise(crops, landmarks))

    def latents(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        a, cfg = self.assets, self.cfg
        if self.mode == "normalised":
            return self.encode_normalised(crops, landmarks)
        parts = []
        if self.mode in ("relative", "blend"):
            delta = self.encode_normalised(crops, landmarks) - self.driver_neutral_z
            parts.append(a.neutral_mu + cfg.relative_gain * delta)
        if self.mode in ("landmark", "blend"):
            z = a.head(geometry(landmarks, self.driver_neutral_lm))
            parts.append(a.head.bias + cfg.landmark_gain * (z - a.head.bias))
        if self.mode == "blend":
            if cfg.snap_parts:
                parts = [snap_to_codes(part, a.codes, cfg.snap, cfg.snap_k) for part in parts]
            return (cfg.blend_weight * parts[1] + (1 - cfg.blend_weight) * parts[0]).astype(np.float32)
        return parts[0].astype(np.float32)

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        crops = self.model.check_crops(crops)
        if self.mode == "seed":
            return self.model.reconstruct(crops)
        if landmarks is None:
            raise FaceVAEError(f"driving mode {self.mode!r} needs the driver's landmarks")
        landmarks = np.asarray(landmarks, dtype=np.float64).reshape(len(crops), 68, 2)
        if not self.started:
            self.start(crops, landmarks)
        z = self.smoother(snap_to_codes(self.latents(crops, landmarks), self.assets.codes, self.cfg.snap, self.cfg.snap_k))
        if self.range_limit is not None:
            distance, nearest = footage_neighbours(z, self.assets.codes, int(self.assets.info["range_k"]))
            self.distances.append(distance)
            self.nearest.append(nearest)
        return self.model.decode(z)


class ClipTranslator:
    """A driving mode as a Translator over a whole clip: `translate_clip(crops, landmarks)`."""

    def __init__(self, model, cfg: TransferConfig, mode: str):
        self.model, self.cfg, self.mode = model, cfg, check_mode(mode)
        self.footage: Footage | None = None  # of the last clip: DriveSession.footage

    def session(self) -> DriveSession:
        return DriveSession(self.model, self.cfg, self.mode)

    def translate_clip(self, crops: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        session = self.session()
        faces = session(crops, landmarks)
        self.footage = session.footage()
        return faces

    def __call__(self, crops: np.ndarray) -> np.ndarray:  # pixels only: the seed
        if self.mode != "seed":
            raise FaceVAEError(f"driving mode {self.mode!r} needs the driver's landmarks: call translate_clip")
        return self.model.reconstruct(crops)


def available_modes(model) -> list[str]:
    """The modes this model can run (all of them when it carries transfer assets with a head)."""
    assets = getattr(model, "transfer", None)
    if assets is None:
        return ["seed"]
    return [m for m in MODES if m not in NEEDS_HEAD or assets.head is not None]


def default_mode(model, cfg: TransferConfig) -> str:
    """transfer.mode when this model can run it, else the best mode it can (old model files carry
    no statistics: seed; a dataset without landmarks gives no head: relative)."""
    modes = available_modes(model)
    return cfg.mode if cfg.mode in modes else next(m for m in ("relative", "seed") if m in modes)


def translators(model, cfg: TransferConfig) -> dict[str, ClipTranslator]:
    return {mode: ClipTranslator(model, cfg, mode) for mode in available_modes(model)}
