"""The driver's head pose beyond the actor's footage, taken out of the driving signal.

A stranger turns and tilts their head; an actor filmed facing the camera never did. Both driving
signals carry the turn: the encoder's code of the driver's crop, and the landmark geometry the head
reads. Relative to the driver's neutral frame, a turn she never made sends the code where her
decoder has seen nothing, and it paints a ghost (on mead-w009, whose footage is frontal, the faces
driven beyond her footage were those of turned heads; decision 052).

`PoseFilter` fits how the driving offsets move with the driver's head pose
(`facevae.faces.align.head_pose`, relative to the driver's neutral frame: a least-squares line per
latent coordinate) over the driver's faces up to each one (up to the end of the neutral window for
the faces in it: a stream and a whole clip get the same faces), and subtracts the part due to the
pose beyond her footage's range of it (`pose_range`: her training frames' 1st to 99th percentile,
about her neutral frame's pose). A turn she also makes on film stays; an actor with no head motion
at all gets frontal faces. The pose is smoothed first (`transfer.pose_smooth_lag`): the landmarks'
frame-to-frame noise would otherwise shake the code. The fit is ridge-regularised
(`transfer.pose_ridge`, in squared pose units: 0.1 is about 20 faces turned 0.07 of the face width
that moved nothing), so a clip whose head has barely moved yet gets no slope from noise.
"""

from __future__ import annotations

import numpy as np

from facevae.faces.align import head_pose
from facevae.transfer.footage import LatentSmoother

POSE_PERCENTILES = (1.0, 99.0)  # her range of head pose: her own rarest 1% at either end left out

POSE_KEYS = ("pose_yaw_low", "pose_pitch_low", "pose_yaw_high", "pose_pitch_high")


def pose_range(landmarks: np.ndarray) -> dict[str, float]:
    """Her training frames' range of head pose (model.pt info; POSE_KEYS), {} without landmarks."""
    pose = head_pose(landmarks)
    pose = pose[np.isfinite(pose).all(1)]
    if not len(pose):
        return {}
    low, high = np.percentile(pose, POSE_PERCENTILES, axis=0)
    return dict(zip(POSE_KEYS, map(float, [*low, *high])))


class PoseFilter:
    """Offsets (N, D) of one driver clip, in time order -> the same without the head pose beyond hers.

    `her_neutral`: her neutral frame's landmarks; `her_range`: pose_range of her footage;
    `driver_neutral`: the driver's neutral frame's landmarks (offsets are measured from it); `full`:
    take out all of the driver's pose, not only the part beyond her range."""

    def __init__(self, her_neutral: np.ndarray, her_range: dict[str, float], driver_neutral: np.ndarray,
                 smooth_lag: float, window: int, ridge: float, full: bool = False):
        self.her_neutral = head_pose(her_neutral)[0]
        self.low = np.array([her_range[k] for k in POSE_KEYS[:2]])
        self.high = np.array([her_range[k] for k in POSE_KEYS[2:]])
        self.driver_neutral = head_pose(driver_neutral)[0]
        self.smoother = LatentSmoother(smooth_lag)
        self.window, self.ridge, self.full = max(int(window), 1), float(ridge), full
        self.seen = 0  # faces filtered so far
        self.pose_squares = np.zeros((2, 2))
        self.pose_offsets: np.ndarray | None = None

    def beyond(self, pose: np.ndarray) -> np.ndarray:
        """(N, 2) the part of each pose offset that lies beyond her range (all of it with `full`)."""
        if self.full:
            return pose
        kept = np.clip(self.her_neutral + pose, self.low, self.high) - self.her_neutral
        return pose - kept

    def __call__(self, offsets: np.ndarray, landmarks: np.ndarray, fit_rows: np.ndarray | None = None) -> np.ndarray:
        """`fit_rows` (N,) bool: the faces the fit may learn from (not those with a covered mouth)."""
        offsets = np.asarray(offsets, dtype=np.float64)
        n = len(offsets)
        if n == 0:
            return offsets.astype(np.float32)
        pose = np.nan_to_num(self.smoother(head_pose(landmarks) - self.driver_neutral).astype(np.float64))
        learn = pose * (np.ones(n) if fit_rows is None else np.asarray(fit_rows, np.float64))[:, None]
        squares = self.pose_squares + np.cumsum(learn[:, :, None] * pose[:, None, :], axis=0)  # (N, 2, 2)
        moves = np.cumsum(learn[:, :, None] * offsets[:, None, :], axis=0)  # (N, 2, D)
        if self.pose_offsets is not None:
            moves += self.pose_offsets
        # each face's fit: the faces up to it, or up to the end of the neutral window
        upto = np.minimum(np.maximum(np.arange(n), self.window - 1 - self.seen), n - 1)
        slopes = np.linalg.solve(squares[upto] + self.ridge * np.eye(2), moves[upto])  # (N, 2, D)
        self.pose_squares, self.pose_offsets, self.seen = squares[-1], moves[-1], self.seen + n
        return (offsets - np.einsum("nk,nkd->nd", self.beyond(pose), slopes)).astype(np.float32)
