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

Two guards come first (decision 052). In `relative`, `landmark` and `blend` the driver's head pose
beyond her footage's range of it is taken out of the offsets (`transfer.pose`, facevae.transfer.pose):
a stranger's head turn she never made sends the code where her decoder paints ghosts. And in every
mode but `seed` a face whose mouth is covered (a hand: extraction's occlusion score against the
driver's own lips in the neutral window, with the thresholds that flagged her frames) holds the code
of the last face that was not (`transfer.occluded: hold`): the pixels and landmarks of a covered
mouth are guesses.

Every mode but `seed` then pulls each code part of the way (`transfer.snap`) toward the mean of
its `transfer.snap_k` nearest codes of the actor's own training frames (`snap_to_codes`): driven
codes drift between and beyond her frames, where the decoder draws soft, averaged faces
(`transfer.snap_parts`: in `blend`, each of the two codes is snapped before they are averaged
as well). With `transfer.snap_ramp` the pull grows with the code's distance from her footage, up to
`transfer.snap_far` of the way at her range limit (`ramped_snap`: no ghosts beyond it). Last, it
smooths the latent sequence with a one-euro style filter whose lag is bounded by
`transfer.smooth_lag` frames (`footage.smooth_latents`).

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

from functools import cached_property

import numpy as np

from facevae.core.config import TransferConfig
from facevae.core.errors import FaceVAEError
from facevae.faces.occlusion import mouth_patches, mouth_reference, occluded_frames
from facevae.transfer.fit import (
    TransferAssets,
    colour_stats,
    composite,
    face_mask,
    geometry,
    neutral_index,
    reinhard,
)
from facevae.transfer.footage import (
    Footage,
    LatentSmoother,
    footage_distance,
    footage_neighbours,
    ramped_snap,
    snap_to_codes,
)
from facevae.transfer.pose import POSE_KEYS, PoseFilter

MODES = ("seed", "normalised", "relative", "landmark", "blend")

NEEDS_HEAD = frozenset({"landmark", "blend"})


# ---- driving --------------------------------------------------------------------------------------


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise FaceVAEError(f"unknown driving mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


class DriveSession:
    """One driver clip in time order, fed in chunks: (crops, landmarks) -> the actor's faces."""

    def __init__(self, model, cfg: TransferConfig, mode: str | None = None, keep_history: bool = True):
        self.model, self.cfg = model, cfg
        self.keep_history = keep_history  # False: `distances`/`nearest` hold the latest chunk only (a live stream)
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
        self.requested: list[np.ndarray] = []  # per chunk, with snap_ramp: each code's footage distance before the snap
        self.nearest: list[np.ndarray] = []
        self.offset_squares = (0.0, 0)  # gain_rule matched: sum of squared offsets driven so far, and their count
        self.pose_filter: PoseFilter | None = None
        self.lips: np.ndarray | None = None  # the driver's own mouth patches (occlusion reference)
        self.last_clean: np.ndarray | None = None  # the code of the last face whose mouth was not covered
        self.covered_faces = 0  # faces so far whose mouth was covered (each held the last uncovered face)
        self.covered_chunks: list[np.ndarray] = []  # per chunk (the latest only without keep_history): covered flags

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
        info = self.assets.info
        if self.mode in ("relative", "landmark", "blend") and self.cfg.pose != "keep" and all(k in info for k in POSE_KEYS):
            self.pose_filter = PoseFilter(self.assets.neutral_landmarks, info, self.driver_neutral_lm,
                                          self.cfg.pose_smooth_lag, window, self.cfg.pose_ridge,
                                          full=self.cfg.pose == "remove")
        if self.cfg.occluded == "hold" and "occlusion_high" in info:
            self.lips = mouth_reference(mouth_patches(crops, landmarks))
        self.started = True

    def covered(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(N,) bool: the face's mouth is covered (`transfer.occluded: hold`; all False otherwise)."""
        if self.lips is None:
            return np.zeros(len(crops), bool)
        info = self.assets.info
        return occluded_frames(crops, landmarks, info["occlusion_high"], info["occlusion_low"], self.lips)

    def covered_flags(self) -> np.ndarray | None:
        """(N,) bool: which faces driven so far had a covered mouth (held); None where the hold is off."""
        if self.lips is None:
            return None
        return np.concatenate(self.covered_chunks) if self.covered_chunks else np.zeros(0, bool)

    def hold(self, z: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """Each covered face takes the code of the last face that was not (her neutral code before any)."""
        if not len(z):
            return z
        before = self.assets.neutral_mu if self.last_clean is None else self.last_clean
        # row 0: the code from before this chunk; row i + 1: face i
        codes = np.concatenate([np.asarray(before, z.dtype)[None], z])
        source = np.maximum.accumulate(np.where(covered, 0, np.arange(1, len(z) + 1)))
        held = codes[source]
        self.last_clean = held[-1].copy()
        return held

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

    def offsets(self, crops: np.ndarray, landmarks: np.ndarray, covered: np.ndarray) -> list[np.ndarray]:
        """The driver's offsets from his neutral frame in her latent space: the encoder's (relative,
        blend) and the landmark head's (landmark, blend), each (N, D), the pose beyond hers taken out."""
        a = self.assets
        offsets = []
        if self.mode in ("relative", "blend"):
            offsets.append(self.encode_normalised(crops, landmarks) - self.driver_neutral_z)
        if self.mode in ("landmark", "blend"):
            offsets.append(a.head(geometry(landmarks, self.driver_neutral_lm)) - a.head.bias)
        if self.pose_filter is None:
            return offsets
        joint = self.pose_filter(np.concatenate(offsets, axis=1), landmarks, fit_rows=~covered)
        return np.split(joint, len(offsets), axis=1)

    def latents(self, crops: np.ndarray, landmarks: np.ndarray, covered: np.ndarray | None = None) -> np.ndarray:
        covered = np.zeros(len(crops), bool) if covered is None else covered
        return self.hold(self.driven(crops, landmarks, covered), covered)

    def driven(self, crops: np.ndarray, landmarks: np.ndarray, covered: np.ndarray) -> np.ndarray:
        a, cfg = self.assets, self.cfg
        if self.mode == "normalised":
            return self.encode_normalised(crops, landmarks)
        offsets = iter(self.offsets(crops, landmarks, covered))
        parts = []
        if self.mode in ("relative", "blend"):
            parts.append(a.neutral_mu + cfg.relative_gain * next(offsets))
        if self.mode in ("landmark", "blend"):
            parts.append(a.head.bias + cfg.landmark_gain * next(offsets))
        if self.mode == "blend":
            if cfg.snap_parts:
                parts = [snap_to_codes(part, a.codes, cfg.snap, cfg.snap_k) for part in parts]
            return self.matched(cfg.blend_weight * parts[1] + (1 - cfg.blend_weight) * parts[0])
        return self.matched(parts[0])

    def matched(self, z: np.ndarray) -> np.ndarray:
        """gain_rule matched: the codes' offsets from her neutral code scaled so that their RMS over the
        clip so far equals her training codes' (the driver's range of faces mapped onto hers)."""
        a = self.assets
        if self.cfg.gain_rule != "matched" or a.codes is None or not len(z):
            return np.asarray(z, dtype=np.float32)
        offsets = np.asarray(z, dtype=np.float64) - a.neutral_mu
        total, count = self.offset_squares
        self.offset_squares = total + float((offsets**2).sum()), count + len(offsets)
        driven = np.sqrt(self.offset_squares[0] / self.offset_squares[1])
        return (a.neutral_mu + offsets * (self.footage_spread / max(driven, 1e-9))).astype(np.float32)

    @cached_property
    def footage_spread(self) -> float:
        """Her training codes' RMS offset from her neutral code (gain_rule matched's target)."""
        a = self.assets
        return float(np.sqrt(((a.codes.astype(np.float64) - a.neutral_mu) ** 2).sum(1).mean()))

    def snap(self, z: np.ndarray) -> np.ndarray:
        """Toward her nearest training codes: `transfer.snap` of the way, or, with `transfer.snap_ramp`,
        further the farther the code lies from her footage (`snap_far` of the way at her range limit)."""
        a, cfg = self.assets, self.cfg
        if cfg.snap_ramp is None or self.range_limit is None:
            return snap_to_codes(z, a.codes, cfg.snap, cfg.snap_k)
        range_k = int(a.info["range_k"])
        distance = footage_distance(z, a.codes, range_k)
        self.requested = [*self.requested, distance] if self.keep_history else [distance]
        return ramped_snap(z, a.codes, cfg.snap, cfg.snap_k, range_k, self.range_limit, cfg.snap_ramp, cfg.snap_far,
                           distance, cfg.snap_full)

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        crops = self.model.check_crops(crops)
        if self.mode == "seed":
            return self.model.reconstruct(crops)
        if landmarks is None:
            raise FaceVAEError(f"driving mode {self.mode!r} needs the driver's landmarks")
        landmarks = np.asarray(landmarks, dtype=np.float64).reshape(len(crops), 68, 2)
        if not self.started:
            self.start(crops, landmarks)
        covered = self.covered(crops, landmarks)
        self.covered_chunks = [*self.covered_chunks, covered] if self.keep_history else [covered]
        self.covered_faces += int(covered.sum())
        z = self.smoother(self.snap(self.latents(crops, landmarks, covered)))
        if self.range_limit is not None:
            distance, nearest = footage_neighbours(z, self.assets.codes, int(self.assets.info["range_k"]))
            if not self.keep_history:
                self.distances, self.nearest = [], []
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
