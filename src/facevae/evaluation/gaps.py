"""Where driving leaves the actor's footage: the faces driven farthest beyond it, beside her nearest
frame (beyond.png, `reconstruct --gaps`), and the least plausible outputs beside her most similar
frame (plausibility.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from facevae.core.images import make_grid, save_png, upscale
from facevae.evaluation.page import page
from facevae.evaluation.plausibility import PLAUSIBLE
from facevae.evaluation.scoring import Evaluation
from facevae.transfer.footage import Footage

GAP_FACES = 8  # beyond.png: faces per clip

BEYOND_COLOUR = (220, 0, 0)


def mark_beyond(faces: np.ndarray, beyond: np.ndarray | None, width: int = 2) -> np.ndarray:
    """A red frame around the faces driven beyond the actor's footage (copies; the rest as they are)."""
    if beyond is None or not beyond.any():
        return faces
    faces = faces.copy()
    for i in np.flatnonzero(beyond):
        face = faces[i]  # a view: the frame is drawn into `faces`
        face[:width], face[-width:], face[:, :width], face[:, -width:] = (BEYOND_COLOUR,) * 4
    return faces


def farthest_apart(distance: np.ndarray, k: int, gap: int, positions: np.ndarray | None = None) -> np.ndarray:
    """Up to k indices of the largest distances, farthest first, each at least `gap` faces (in
    `positions`, default the indices themselves) from the ones already taken: the worst moments of a
    clip rather than eight frames of the same one."""
    positions = np.arange(len(distance)) if positions is None else np.asarray(positions)
    taken: list[int] = []
    for i in np.argsort(-distance, kind="stable"):
        if all(abs(int(positions[i]) - int(positions[j])) >= gap for j in taken):
            taken.append(int(i))
            if len(taken) == k:
                break
    return np.array(taken, dtype=np.int64)


def gap_grid(driver: np.ndarray, outputs: np.ndarray, beyond: np.ndarray, actor_faces: np.ndarray | None,
             zoom: int = 2) -> np.ndarray:
    """One clip's gap picture: rows = the driver's crops, the outputs (red frame beyond the range)
    and, when given, the actor's faces nearest to each output."""
    rows = [driver, mark_beyond(outputs, beyond)] + ([actor_faces] if actor_faces is not None else [])
    return upscale(make_grid(np.concatenate(rows), ncols=len(driver)), zoom)


def footage_gaps(evaluation: Evaluation, driver: str, zoom: int = 2) -> np.ndarray | None:
    """The headline mode's faces driven farthest from the actor's footage in one clip (spread over
    it), farthest first: rows = the driver's crops, the outputs (red frame beyond the range) and the actor's own
    training frame nearest to each (what the footage holds closest). None when the range was not measured."""
    result = evaluation.transfers[driver].get(evaluation.mode)
    if result is None or result.footage is None or not len(result.footage.distance):
        return None
    distance, nearest = result.footage.distance, result.footage.nearest
    order = farthest_apart(distance, GAP_FACES, gap=gap_window(len(distance)))
    actor = evaluation.actor_frames[nearest[order]] if evaluation.actor_frames is not None else None
    return gap_grid(evaluation.clips[driver].crops[order], result.outputs[order], result.beyond_range[order], actor, zoom)


def gap_window(faces: int) -> int:
    """How far apart (in faces) the faces of a gap picture are: a sixteenth of the clip."""
    return max(1, faces // (2 * GAP_FACES))


def gap_caption(evaluation: Evaluation, driver: str) -> str:
    rows = "driver, output" + (", the actor's nearest own frame" if evaluation.actor_frames is not None else "")
    return gap_text(driver, evaluation.transfers[driver][evaluation.mode].footage, rows)


def gap_text(clip: str, footage: Footage, rows: str) -> str:
    distance, beyond = footage.distance, int(footage.beyond.sum())
    return (f"{clip}: {beyond} of {len(distance)} faces ({100 * beyond / len(distance):.0f}%) beyond the actor's footage, "
            f"the farthest at {distance.max() / footage.limit:.2f}x its range; rows = {rows}")


def beyond_png(evaluation: Evaluation, actor: str, path: Path) -> Path:
    """beyond.png: per clip, the faces the headline mode drove farthest from the actor's footage:
    where the footage has no face like the driver's (what to film more of)."""
    gaps = {d: footage_gaps(evaluation, d) for d in evaluation.clips}
    sections = [(gap_caption(evaluation, d), Image.fromarray(g)) for d, g in gaps.items() if g is not None]
    header = [f"facevae: {actor} driven beyond the actor's footage ({evaluation.mode}; red frame: beyond the range)"]
    if not sections:
        header.append("not measured: the headline mode or this model file has no footage range")
    width = max([0, *(len(caption) * 7 + 8 for caption, _ in sections)])
    return save_png(page(header, sections, width=width), path)


def least_plausible(evaluation: Evaluation, driver: str, zoom: int = 2) -> tuple[str, np.ndarray] | None:
    """The headline mode's least plausible outputs in one clip (spread over it), worst first: rows =
    the driver's crops, the outputs (red frame below the bar), her most similar training frame."""
    result = evaluation.transfers[driver].get(evaluation.mode)
    if result is None or result.plausibility is None or not len(result.plausibility.score):
        return None
    score, nearest = result.plausibility.score, result.plausibility.nearest
    order = farthest_apart(-score, GAP_FACES, gap=gap_window(len(score)))
    grid = gap_grid(evaluation.clips[driver].crops[order], result.outputs[order], score[order] < PLAUSIBLE,
                    evaluation.reference_frames[nearest[order]], zoom)
    low = int((score < PLAUSIBLE).sum())
    caption = (f"{driver}: {low} of {len(score)} faces ({100 * low / len(score):.0f}%) below {PLAUSIBLE}; shown (worst first): "
               f"{' '.join(f'{s:.2f}' for s in score[order])}; rows = driver, output, her most similar training frame")
    return caption, grid


def plausibility_png(evaluation: Evaluation, actor: str, path: Path) -> Path:
    """plausibility.png: per clip, the outputs least like any frame she has (ghosts, blotches)."""
    found = [least_plausible(evaluation, d) for d in evaluation.clips]
    sections = [(caption, Image.fromarray(grid)) for caption, grid in filter(None, found)]
    header = [f"facevae: {actor}, the least plausible outputs ({evaluation.mode}; grey SSIM with her most similar "
              f"training frame; red frame: below {PLAUSIBLE})"]
    width = max([0, *(len(caption) * 7 + 8 for caption, _ in sections)])
    return save_png(page(header, sections, width=width), path)


class FootageGaps:
    """A clip's gap picture gathered while it streams past (`facevae reconstruct --gaps`): per window
    of `window` faces only the one driven farthest from the actor's footage is kept (its driver crop,
    output, distance and nearest actor code), so memory follows the clip's length / window, not its
    frames; `window` is gap_window(the clip's frames), the spacing beyond.png uses."""

    def __init__(self, window: int):
        self.window = max(1, window)
        self.best: dict[int, tuple[float, int, np.ndarray, np.ndarray, int]] = {}

    def add(self, first: int, crops: np.ndarray, outputs: np.ndarray, distance: np.ndarray, nearest: np.ndarray) -> None:
        """Faces `first`, `first` + 1, ... of the clip (face indices, frames without a face not counted)."""
        for j, d in enumerate(distance):
            slot = (first + j) // self.window
            if slot not in self.best or d > self.best[slot][0]:
                self.best[slot] = (float(d), first + j, crops[j].copy(), outputs[j].copy(), int(nearest[j]))

    def farthest(self, k: int = GAP_FACES) -> list[tuple[float, int, np.ndarray, np.ndarray, int]]:
        """Up to k kept faces, farthest first, at least `window` faces apart."""
        kept = sorted(self.best.values(), key=lambda face: face[1])
        distance = np.array([face[0] for face in kept])
        order = farthest_apart(distance, k, self.window, positions=np.array([face[1] for face in kept]))
        return [kept[i] for i in order]

    def png(self, path: Path, clip: str, mode: str, footage: Footage, actor_faces: Callable[[np.ndarray], np.ndarray]) -> Path:
        """The picture: driver, output (red frame beyond the range) and actor_faces(nearest code rows);
        `footage` is the whole clip's (DriveSession.footage), for the caption's counts."""
        faces = self.farthest()
        if not faces:
            raise ValueError("no face was driven")
        distance = np.array([face[0] for face in faces])
        grid = gap_grid(np.stack([face[2] for face in faces]), np.stack([face[3] for face in faces]),
                        distance > footage.limit, actor_faces(np.array([face[4] for face in faces])))
        caption = gap_text(clip, footage, "driver, output, the actor's nearest training frame as the model draws it")
        header = [f"facevae: driven by {clip} beyond the actor's footage ({mode}; red frame: beyond the range)"]
        return save_png(page(header, [(caption, Image.fromarray(grid))], width=len(caption) * 7 + 8), path)
