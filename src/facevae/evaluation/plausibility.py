"""Plausibility: does a driven face look like a frame the actor really has? (issue 24)

Each output face is compared with her most similar training frame: grey SSIM at the crop size
(the training loss's Gaussian-window SSIM, facevae.model.losses.ssim_map, averaged over the face),
the best over the `candidates` training frames nearest by a 16x16 grey thumbnail. It reads pixels
only, never the model's latent space, so a code that the latent range calls "near her footage" but
that decodes to a blotchy ghost still scores low. Measured on outputs sorted by it: blotchy or
ghostly faces fall below ~0.70, soft ones 0.70-0.80, clean ones above; `PLAUSIBLE` is the bar a face
must clear to count as plausible.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from facevae.core.errors import FaceVAEError
from facevae.data.dataset import read_split
from facevae.model.losses import ssim_blur, ssim_from_moments
from facevae.transfer.footage import nearest_indices

PLAUSIBLE = 0.75  # a face at or above this SSIM with her nearest frame is plausible

THUMBNAIL = 16  # px: the candidate search's thumbnail side

CANDIDATES = 16  # training frames per output compared at full size

CHUNK = 256  # outputs per SSIM batch


def grey(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC RGB -> float32 (N, H, W) grey in [0, 1]."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (images.astype(np.float32) @ weights) / 255.0


def thumbnails(images: np.ndarray) -> np.ndarray:
    return np.stack([cv2.resize(g, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA).ravel() for g in grey(images)])


@dataclass
class Plausibility:
    """Per output face: `score` (SSIM with her most similar training frame) and `nearest` (its row)."""

    score: np.ndarray  # (N,) float
    nearest: np.ndarray  # (N,) int, rows of the reference frames

    def take(self, rows: np.ndarray) -> "Plausibility":
        return Plausibility(self.score[rows], self.nearest[rows])

    def share(self, bar: float = PLAUSIBLE) -> float:
        """Share of faces at or above the bar (NaN for none)."""
        return float((self.score >= bar).mean()) if len(self.score) else float("nan")

    def least(self, k: int) -> np.ndarray:
        """Rows of the k least plausible faces, worst first."""
        return np.argsort(self.score, kind="stable")[:k]


class PlausibilityReference:
    """Her training frames, ready to score faces against."""

    def __init__(self, frames: np.ndarray, candidates: int = CANDIDATES, source=None):
        if len(frames) == 0:
            raise FaceVAEError("no clean training frames to compare faces with", source)
        self.frames, self.source = frames, source
        self.grey = torch.from_numpy(grey(frames))
        self.blurred = ssim_blur(torch.stack([self.grey, self.grey * self.grey], dim=1))  # her SSIM moments, once
        self.thumbs = thumbnails(frames)
        self.candidates = min(candidates, len(frames))

    @classmethod
    def from_dataset(cls, path) -> "PlausibilityReference":
        """Her clean training frames in an actor dataset (data/hdf5/ACTOR.h5), as the evaluation compares with."""
        return cls(read_split(path, "train", clean_only=True), source=path)

    @classmethod
    def from_model(cls, model) -> "PlausibilityReference | None":
        """Her training frames stored in an ActorModel (transfer.stored_frames); None when it has none."""
        frames = model.transfer.frames if model.transfer is not None else None
        return cls(frames, source=model.source or None) if frames is not None and len(frames) else None

    @torch.no_grad()
    def __call__(self, faces: np.ndarray) -> Plausibility:
        if len(faces) == 0:
            return Plausibility(np.zeros(0), np.zeros(0, np.int64))
        if faces.shape[1:] != self.frames.shape[1:]:
            raise FaceVAEError(f"the faces are {faces.shape[1]} px, her training frames {self.frames.shape[1]} px: "
                               "give the dataset the model was trained on", self.source)
        rows = nearest_indices(thumbnails(faces), self.thumbs, self.candidates)
        faces_grey = torch.from_numpy(grey(faces))
        scores = np.empty(rows.shape, dtype=np.float64)
        for start in range(0, len(faces), CHUNK):
            # only x*y needs blurring per (face, candidate) pair: each side's own moments are blurred once
            block = torch.from_numpy(rows[start : start + CHUNK])
            x = faces_grey[start : start + CHUNK]
            mx, xx = ssim_blur(torch.stack([x, x * x], dim=1))[:, :, None].unbind(1)
            my, yy = self.blurred[block].unbind(2)
            xy = ssim_blur(x[:, None] * self.grey[block])
            ssim = ssim_from_moments(mx, my, xx, yy, xy).mean(dim=(2, 3))
            scores[start : start + CHUNK] = ssim.double().numpy()
        best = scores.argmax(1)
        return Plausibility(scores[np.arange(len(faces)), best], rows[np.arange(len(faces)), best])
