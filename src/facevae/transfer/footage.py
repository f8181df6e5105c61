"""The actor's footage in latent space: nearest training codes, the snap toward them, and how far a
driven code lies beyond her own val frames (the range limit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---- snap and smoothing ---------------------------------------------------------------------------


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
    return pull_toward_codes(z, codes, weight, k, chunk)


def pull_toward_codes(z: np.ndarray, codes: np.ndarray, weight, k: int, chunk: int = 256) -> np.ndarray:
    """(1 - weight) * z + weight * (mean of the k codes nearest to each row); `weight` a number or (N, 1)."""
    codes = np.asarray(codes, dtype=np.float64)
    nearest = codes[nearest_indices(z, codes, k, chunk)].mean(1)
    return ((1 - weight) * np.asarray(z).astype(np.float64) + weight * nearest).astype(np.float32)


def ramped_snap(z: np.ndarray, codes: np.ndarray, weight: float, k: int, range_k: int, limit: float,
                ramp: float, far: float = 1.0, distance: np.ndarray | None = None, full: float | None = None) -> np.ndarray:
    """snap_to_codes with a weight that grows with each code's footage distance d: `weight` up to
    ramp x limit, then linearly to `far` at the range limit, and (with `full`) on to 1 at full x limit.
    A code beyond her footage (where the decoder paints blotchy ghosts) is pulled toward the mean of
    her k nearest training codes (all the way with far = 1); one well within it keeps the constant
    snap. `distance`: the codes' footage_distance when already measured."""
    z = np.asarray(z, dtype=np.float32)
    distance = footage_distance(z, codes, range_k) if distance is None else distance
    weights = weight + (far - weight) * np.clip((distance - ramp * limit) / ((1.0 - ramp) * limit), 0.0, 1.0)
    if full is not None:
        weights = weights + (1.0 - far) * np.clip((distance - limit) / ((full - 1.0) * limit), 0.0, 1.0)
    return pull_toward_codes(z, codes, weights[:, None], k)


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
