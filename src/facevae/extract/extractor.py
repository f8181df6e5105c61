"""Extraction: an actor's videos -> aligned face crops, one table row per frame, with reasons.

Two steps, so videos can be processed in parallel (`extract.workers` processes):

1. `extract_video` (per video): decode, follow every face (full detection every
   `redetect_every` frames or when tracking looks wrong, a landmark re-fit in between), align,
   measure, and sample identity descriptors sparsely along each face track. Candidate crops go
   to a per-video part file; the result holds the per-frame records.
2. `finish_extraction` (cheap, all videos at once): the actor's identity centroid from the
   single-face frames of every video; per frame, the actor's face and the reason to drop it;
   then frames.csv, crops.h5, summary.json (and crops/*.png) are written.

`extract_actor` runs both and writes the output folder atomically.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from facevae.core.atomic import atomic_dir
from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.data.dataset import table_landmarks
from facevae.data.video import VIDEO_SUFFIXES, iter_frames, probe
from facevae.faces.align import AlignedFace, FaceAligner
from facevae.faces.detect import FaceEncoder
from facevae.faces.occlusion import hysteresis, mouth_patches, occlusion_scores
from facevae.faces.tracker import FaceTracker, Track

REASONS = ("no_face", "multiple_faces", "wrong_identity", "tiny", "pose", "blur", "occluded")

MASKED_MOUTH = "occluded:mouth"  # kept, with the lower face masked out of the training loss

CROP_BLOCK = 256  # crops buffered before an HDF5 write


@dataclass
class FaceRecord:
    """One face found in one frame; its crop is row `part_index` of the video's part file."""

    track: int
    part_index: int
    quality: str  # "", "tiny", "pose" or "blur"
    box: np.ndarray
    det_score: float
    roll_deg: float
    yaw: float
    face_px: float
    sharpness: float
    landmarks: np.ndarray  # (68, 2) float32, crop pixels
    matrix: np.ndarray  # (2, 3) float32, source -> crop


@dataclass
class FrameRecord:
    frame: int
    time: float
    faces: list[FaceRecord]
    detected: bool  # full detection ran on this frame (else landmarks were tracked)


@dataclass
class IdentitySample:
    track: int
    frame: int
    descriptor: np.ndarray
    single_face: bool


@dataclass
class VideoResult:
    path: Path
    frames: list[FrameRecord]
    samples: list[IdentitySample]
    part_path: Path
    seconds: float

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ExtractSummary:
    out_dir: Path
    frames: int
    kept: int  # masked ones included
    dropped: dict[str, int]
    videos: dict[str, dict]
    masked: int = 0  # kept as occluded:mouth, lower face masked out of the training loss
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

# ---- inputs ---------------------------------------------------------------------------------


def find_videos(inputs: list[Path]) -> list[Path]:
    """Video files named directly, plus every video (by suffix) under the folders named."""
    if not inputs:
        raise FaceVAEError("no videos given")
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if is_video_file(p))
            if not found:
                raise FaceVAEError(f"no videos found (looked for {', '.join(sorted(VIDEO_SUFFIXES))})", item)
            videos.extend(found)
        elif item.is_file():
            videos.append(item)
        else:
            raise FaceVAEError("no such file or folder", item)
    _check_unique_names(videos)
    return videos


def is_video_file(path: Path) -> bool:
    # dot files are hidden copies (macOS "._name.mp4" metadata, editors' temp files), never videos
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def _check_unique_names(videos: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for video in videos:
        if video.name in seen:
            raise FaceVAEError(f"two videos share this file name (also {seen[video.name]}); rename one", video)
        seen[video.name] = video

# ---- per video: quality, identity samples, crops --------------------------------------------


def quality_reason(face: AlignedFace, cfg: ExtractConfig) -> str:
    """The first quality filter a face fails ("" when it passes all)."""
    if face.face_px < cfg.min_face_px:
        return "tiny"
    if abs(face.roll_deg) > cfg.max_roll_deg or abs(face.yaw) > cfg.max_yaw:
        return "pose"
    if face.sharpness < cfg.min_sharpness:
        return "blur"
    return ""


class CropWriter:
    """Appends crops to a resizable, chunked HDF5 dataset, a block at a time."""

    def __init__(self, path: Path, crop_size: int, compression: str | None = None):
        self._file = h5py.File(path, "w")
        shape = (crop_size, crop_size, 3)
        self.images = self._file.create_dataset(
            "images", shape=(0, *shape), maxshape=(None, *shape), dtype=np.uint8,
            chunks=(64, *shape), compression=compression,
        )  # fmt: skip
        self._buffer: list[np.ndarray] = []
        self.count = 0

    @property
    def attrs(self):
        return self._file.attrs

    def append(self, crop: np.ndarray) -> int:
        self._buffer.append(crop)
        self.count += 1
        if len(self._buffer) >= CROP_BLOCK:
            self.flush()
        return self.count - 1

    def extend(self, crops: np.ndarray) -> None:
        self.flush()
        start = self.images.shape[0]
        self.images.resize(start + len(crops), axis=0)
        self.images[start:] = crops
        self.count += len(crops)

    def add_dataset(self, name: str, data: np.ndarray) -> None:
        self._file.create_dataset(name, data=data)

    def flush(self) -> None:
        if self._buffer:
            start = self.images.shape[0]
            self.images.resize(start + len(self._buffer), axis=0)
            self.images[start:] = np.stack(self._buffer)
            self._buffer = []

    def close(self) -> None:
        self.flush()
        self._file.close()

    def __enter__(self) -> "CropWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def extract_video(
    path: Path,
    cfg: ExtractConfig,
    part_path: Path,
    aligner: FaceAligner | None = None,
    encoder: FaceEncoder | None = None,
    progress: bool = True,
) -> VideoResult:
    """Follow, align and measure every face in one video; crops of all of them go to `part_path`."""
    started = time.perf_counter()
    aligner = aligner or FaceAligner.from_config(cfg)
    encoder = encoder or FaceEncoder()
    tracker = FaceTracker(aligner, cfg)
    frames: list[FrameRecord] = []
    samples: list[IdentitySample] = []
    total = probe(path).frame_count
    with (
        CropWriter(part_path, cfg.crop_size) as crops,
        tqdm(total=total, desc=path.name, unit="frame", disable=not progress, leave=True) as bar,
    ):
        for index, time_s, rgb, found, detected in track_video(path, tracker):
            records = []
            for track, face in found:
                quality = quality_reason(face, cfg)
                if not quality and index - track.last_sample >= cfg.identity_every:
                    descriptor = encoder.encode(rgb, face.source_landmarks)
                    samples.append(IdentitySample(track.id, index, descriptor, single_face=len(found) == 1))
                    track.last_sample = index
                records.append(face_record(face, track.id, crops.append(face.crop), quality))
            frames.append(FrameRecord(index, time_s, records, detected))
            bar.update()
    return VideoResult(path, frames, samples, part_path, time.perf_counter() - started)


def track_video(
    path: Path, tracker: FaceTracker
) -> Iterator[tuple[int, float, np.ndarray, list[tuple[Track, AlignedFace]], bool]]:
    """Per decoded frame: (index, time_s, rgb, faces followed with their tracks, whether full
    detection ran). The one frame loop extraction and inference (a driver's video) share, so a
    driver's faces are found and followed exactly as the actor's were."""
    for index, time_s, rgb in iter_frames(path):
        found, detected = tracker.step(index, rgb)
        yield index, time_s, rgb, found, detected


def face_record(face: AlignedFace, track: int, part_index: int, quality: str) -> FaceRecord:
    return FaceRecord(
        track=track,
        part_index=part_index,
        quality=quality,
        box=face.box.astype(np.float32),
        det_score=face.det_score,
        roll_deg=face.roll_deg,
        yaw=face.yaw,
        face_px=face.face_px,
        sharpness=face.sharpness,
        landmarks=face.landmarks.astype(np.float32),
        matrix=face.matrix.astype(np.float32),
    )

# ---- all videos: identity and outputs -------------------------------------------------------


def actor_centroid(descriptors: list[np.ndarray], threshold: float, rounds: int = 5) -> np.ndarray | None:
    """Robust mean descriptor: start at the coordinate-wise median, then repeatedly average the
    descriptors within `threshold` of the current estimate, so other people fall away."""
    if not descriptors:
        return None
    stack = np.stack(descriptors)
    centre = np.median(stack, axis=0)
    for _ in range(rounds):
        near = stack[np.linalg.norm(stack - centre, axis=1) <= threshold]
        if len(near) == 0:
            break
        centre = near.mean(axis=0)
    return centre


def track_distances(result: VideoResult, centroid: np.ndarray | None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{track: (sample frames, their distances to the centroid)}, for nearest-in-time lookup."""
    if centroid is None:
        return {}
    by_track: dict[int, list[IdentitySample]] = {}
    for sample in result.samples:
        by_track.setdefault(sample.track, []).append(sample)
    return {
        track: (
            np.array([s.frame for s in group]),
            np.linalg.norm(np.stack([s.descriptor for s in group]) - centroid, axis=1),
        )
        for track, group in by_track.items()
    }


def identity_distance(distances: dict[int, tuple[np.ndarray, np.ndarray]], track: int, frame: int) -> float:
    """Distance of the track's identity sample nearest in time (NaN when the track has none)."""
    if track not in distances:
        return math.nan
    frames, dists = distances[track]
    at = int(np.searchsorted(frames, frame))
    candidates = [i for i in (at - 1, at) if 0 <= i < len(frames)]
    nearest = min(candidates, key=lambda i: abs(frames[i] - frame))
    return float(dists[nearest])


def choose_face(faces: list[FaceRecord], dists: list[float], threshold: float) -> tuple[int | None, str]:
    """(index of the actor's face among `faces` or None, drop reason or "")."""
    if not faces:
        return None, "no_face"
    close = [i for i, d in enumerate(dists) if d <= threshold]
    if len(faces) > 1 and len(close) != 1:
        # Several faces and not exactly one of them is the actor: ambiguous, unless every face is
        # known to be someone else.
        if not close and not any(math.isnan(d) for d in dists):
            return int(np.argmin(dists)), "wrong_identity"
        order = sorted(range(len(faces)), key=lambda i: (math.isnan(dists[i]), dists[i], -faces[i].face_px))
        return order[0], "multiple_faces"
    best = close[0] if close else 0
    if dists[best] > threshold:
        return best, "wrong_identity"
    return best, faces[best].quality


def finish_extraction(
    results: list[VideoResult], out_dir: Path, cfg: ExtractConfig, skipped: dict[str, str]
) -> ExtractSummary:
    """Resolve the actor's identity across videos and write frames.csv, crops.h5, summary.json
    (and crops/*.png) into `out_dir`."""
    single_face = [s.descriptor for r in results for s in r.samples if s.single_face]
    centroid = actor_centroid(single_face or [s.descriptor for r in results for s in r.samples], cfg.identity_threshold)
    png_dir = out_dir / "crops" if cfg.save_crops else None
    if png_dir:
        png_dir.mkdir()
    tables, patches, png_of_crop = [], [], []
    with CropWriter(out_dir / "crops.h5", cfg.crop_size, compression="gzip") as crops:
        for result in results:
            table, picks = video_table(result, centroid, cfg, first_crop=crops.count)
            with_crop = table[table["crop_index"] >= 0]
            png_names = [f"{result.path.stem}_{frame:06d}.png" if kept else None
                         for frame, kept in zip(with_crop["frame"], with_crop["kept"])]  # fmt: skip
            png_of_crop += png_names
            landmarks, done = table_landmarks(with_crop).astype(np.float32), 0
            for block, names in iter_picked_crops(result.part_path, picks, png_names):
                crops.extend(block)
                patches.append(mouth_patches(block, landmarks[done : done + len(block)]))
                done += len(block)
                if png_dir:
                    save_pngs(block, names, png_dir)
            tables.append(table)
        frames = pd.concat(tables, ignore_index=True)
        flag_occluded(frames, np.concatenate(patches) if patches else np.zeros((0, 1, 1)), cfg, png_dir, png_of_crop)
        describe_crops(crops, frames, [r.name for r in results], cfg)
    frames.to_csv(out_dir / "frames.csv", index=False)
    summary = summarize(frames, results, out_dir, skipped)
    # Without timings: the folder is a DVC-cached output, and the same videos must give the same hash.
    (out_dir / "summary.json").write_text(json.dumps(summary_json(summary, timings=False), indent=2) + "\n")
    return summary


def flag_occluded(
    frames: pd.DataFrame, patches: np.ndarray, cfg: ExtractConfig, png_dir: Path | None, png_of_crop: list
) -> None:
    """Score every crop (column `occlusion`, see facevae.faces.occlusion) against the actor's own crops,
    flag runs above cfg.max_occlusion (grown down to cfg.occlusion_low along each video), and
    either keep flagged frames as `occluded:mouth` (cfg.occluded == "mask") or drop them as
    `occluded` (their PNG goes too)."""
    with_crop = np.flatnonzero(frames["crop_index"].to_numpy() >= 0)
    scores = np.full(len(frames), np.nan, dtype=np.float32)
    scores[with_crop] = occlusion_scores(patches)
    at = frames.columns.get_loc("crop_index") + 1
    frames.insert(at, "occlusion", np.round(scores, 4))
    flags = np.zeros(len(frames), dtype=bool)
    for rows in frames.groupby("video", sort=False).indices.values():
        rows = rows[np.argsort(frames["frame"].to_numpy()[rows], kind="stable")]
        flags[rows] = hysteresis(scores[rows], cfg.max_occlusion, cfg.occlusion_low)
    occluded = (frames["kept"].to_numpy() == 1) & flags
    if cfg.occluded == "mask":
        frames.loc[occluded, "reason"] = MASKED_MOUTH
        return
    frames.loc[occluded, "kept"] = 0
    frames.loc[occluded, "reason"] = "occluded"
    if png_dir:
        for index in frames.loc[occluded, "crop_index"]:
            if png_of_crop[index]:
                (png_dir / png_of_crop[index]).unlink(missing_ok=True)


def video_table(
    result: VideoResult, centroid: np.ndarray | None, cfg: ExtractConfig, first_crop: int
) -> tuple[pd.DataFrame, list[int]]:
    """frames.csv rows for one video, and the part-file rows of the crops it keeps (in order)."""
    distances = track_distances(result, centroid)
    columns: dict[str, list] = {name: [] for name in TABLE_COLUMNS}
    landmarks = np.full((len(result.frames), 2, 68), np.nan, dtype=np.float32)
    picks: list[int] = []
    for row, record in enumerate(result.frames):
        dists = [identity_distance(distances, face.track, record.frame) for face in record.faces]
        chosen, reason = choose_face(record.faces, dists, cfg.identity_threshold)
        face = record.faces[chosen] if chosen is not None else None
        crop_index = -1
        if face is not None:
            crop_index = first_crop + len(picks)
            picks.append(face.part_index)
            landmarks[row] = face.landmarks.T
        add_row(columns, result.name, record, face, dists[chosen] if face else math.nan, reason, crop_index)
    table = pd.DataFrame(columns).round(ROUNDING)
    lm_names = [f"lm_x{i}" for i in range(68)] + [f"lm_y{i}" for i in range(68)]
    lm_table = pd.DataFrame(landmarks.reshape(len(result.frames), 136).round(3), columns=lm_names)
    return pd.concat([table, lm_table], axis=1), picks


TABLE_COLUMNS = (
    "video", "frame", "time", "kept", "reason", "box_x0", "box_y0", "box_x1", "box_y1", "det_score",
    "sharpness", "roll_deg", "yaw", "face_px", "identity_dist", "crop_index", "faces", "track",
    "detected", "m00", "m01", "m02", "m10", "m11", "m12",
)  # fmt: skip

# Decimals kept in frames.csv (full float noise would triple its size).
ROUNDING = {
    **dict.fromkeys(("box_x0", "box_y0", "box_x1", "box_y1", "sharpness", "face_px"), 2),
    **dict.fromkeys(("roll_deg",), 3),
    **dict.fromkeys(("det_score", "yaw", "identity_dist", "m02", "m12"), 4),
    **dict.fromkeys(("m00", "m01", "m10", "m11"), 6),
}


def add_row(
    columns: dict[str, list], video: str, record: FrameRecord, face: FaceRecord | None, dist: float, reason: str,
    crop_index: int,
) -> None:  # fmt: skip
    nan = math.nan
    values = {
        "video": video,
        "frame": record.frame,
        "time": round(record.time, 4),
        "kept": int(face is not None and reason == ""),
        "reason": reason,
        "det_score": face.det_score if face else nan,
        "sharpness": face.sharpness if face else nan,
        "roll_deg": face.roll_deg if face else nan,
        "yaw": face.yaw if face else nan,
        "face_px": face.face_px if face else nan,
        "identity_dist": dist,
        "crop_index": crop_index,
        "faces": len(record.faces),
        "track": face.track if face else -1,
        "detected": int(record.detected),
    }
    box = face.box if face else [nan] * 4
    matrix = face.matrix.ravel() if face else [nan] * 6
    values.update(zip(("box_x0", "box_y0", "box_x1", "box_y1"), box))
    values.update(zip(("m00", "m01", "m02", "m10", "m11", "m12"), matrix))
    for name, value in values.items():
        columns[name].append(value)


def iter_picked_crops(part_path: Path, picks: list[int], labels: list) -> Iterator[tuple[np.ndarray, list]]:
    """The picked rows of a part file (increasing), with their labels, a block at a time."""
    picks_array = np.asarray(picks, dtype=np.int64)
    block = 4 * CROP_BLOCK
    with h5py.File(part_path, "r") as part:
        images = part["images"]
        for start in range(0, len(images), block):
            inside = np.flatnonzero((picks_array >= start) & (picks_array < start + block))
            if len(inside):
                rows = images[start : min(start + block, len(images))]
                yield rows[picks_array[inside] - start], [labels[i] for i in inside]


def save_pngs(crops: np.ndarray, names: list[str | None], png_dir: Path) -> None:
    for crop, name in zip(crops, names):
        if name is not None:
            cv2.imwrite(str(png_dir / name), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


def describe_crops(crops: CropWriter, frames: pd.DataFrame, videos: list[str], cfg: ExtractConfig) -> None:
    """Per crop: its video (index into attrs["videos"]), frame and kept flag; the parameters."""
    rows = frames[frames["crop_index"] >= 0]
    crops.add_dataset("video", rows["video"].map({name: i for i, name in enumerate(videos)}).to_numpy(np.int32))
    crops.add_dataset("frame", rows["frame"].to_numpy(np.int32))
    crops.add_dataset("kept", rows["kept"].to_numpy(np.uint8))
    crops.attrs["videos"] = json.dumps(videos)
    crops.attrs["extract_params"] = json.dumps(cfg.model_dump(mode="json", exclude={"workers"}))


def summarize(
    frames: pd.DataFrame, results: list[VideoResult], out_dir: Path, skipped: dict[str, str]
) -> ExtractSummary:
    videos = {}
    for result in results:
        rows = frames[frames["video"] == result.name]
        videos[result.name] = {
            "frames": len(rows),
            "kept": int(rows["kept"].sum()),
            "masked": int((rows["reason"] == MASKED_MOUTH).sum()),
            "dropped": {reason: int((rows["reason"] == reason).sum()) for reason in REASONS},
            "detections": int(rows["detected"].sum()),
            "identity_samples": len(result.samples),
            "seconds": round(result.seconds, 2),
            "frames_per_s": round(len(rows) / max(result.seconds, 1e-9), 1),
        }
    return ExtractSummary(
        out_dir=out_dir,
        frames=len(frames),
        kept=int(frames["kept"].sum()),
        masked=int((frames["reason"] == MASKED_MOUTH).sum()),
        dropped={reason: int((frames["reason"] == reason).sum()) for reason in REASONS},
        videos=videos,
        skipped=dict(skipped),
    )


TIMING_KEYS = ("seconds", "frames_per_s")


def summary_json(summary: ExtractSummary, timings: bool = True) -> dict:
    """Counts per video and in total; with `timings`, each video's seconds and frames/s too."""
    videos = {name: {key: value for key, value in info.items() if timings or key not in TIMING_KEYS}
              for name, info in summary.videos.items()}  # fmt: skip
    return {
        "totals": {"frames": summary.frames, "kept": summary.kept, "masked": summary.masked, "dropped": summary.dropped},
        "videos": videos,
        "skipped": summary.skipped,
        "identity_samples": sum(info["identity_samples"] for info in summary.videos.values()),
    }

# ---- entry point ----------------------------------------------------------------------------


def extract_actor(videos: list[Path], out_dir: Path, cfg: ExtractConfig, progress: bool = True) -> ExtractSummary:
    """Extract the actor's aligned faces from `videos` (files or folders) into `out_dir`.

    The folder appears only when everything succeeded. A bad video fails the whole run
    (cfg.on_error == "fail") or is skipped and listed in summary.json ("skip").
    """
    started = time.perf_counter()
    paths = find_videos(videos)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        parts = tmp / ".parts"
        parts.mkdir()
        results, skipped = extract_videos(paths, parts, cfg, progress)
        check_some_work(paths, results, skipped)
        summary = finish_extraction(results, tmp, cfg, skipped)
        shutil.rmtree(parts)
        check_some_kept(summary, describe_inputs(videos, paths))
    summary.out_dir = out_dir
    summary.seconds = time.perf_counter() - started
    return summary


def extract_videos(
    paths: list[Path], parts: Path, cfg: ExtractConfig, progress: bool
) -> tuple[list[VideoResult], dict[str, str]]:
    """Step 1 for every video, each into its own part file, `cfg.workers` videos at a time.
    Results come back in the order of `paths`, so the outputs do not depend on the workers."""
    jobs = [(path, parts / f"{number}.h5") for number, path in enumerate(paths)]
    workers = min(cfg.workers, len(jobs))
    if workers == 1:
        aligner, encoder = FaceAligner.from_config(cfg), FaceEncoder()
        return gather(jobs, (video_job(path, part, cfg, progress, (aligner, encoder)) for path, part in jobs), cfg)
    # spawn, not fork: the parent may hold torch's and dlib's threads, which a forked child inherits locked
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=load_worker_models, initargs=(cfg,)) as pool:
        futures: list = []
        with tqdm(total=len(jobs), desc=f"{len(jobs)} videos, {workers} workers", unit="video", disable=not progress) as bar:
            try:
                for path, part in jobs:  # one at a time, so that a failure stops those already handed out
                    futures.append(submitted(pool, path, part, cfg))
                return gather(jobs, (finished(future, path, bar) for (path, _), future in zip(jobs, futures)), cfg)
            except BaseException:
                stop_workers(pool, futures)
                raise


def stop_workers(pool: ProcessPoolExecutor, futures: list) -> None:
    """A failed run keeps nothing, so stop the videos in flight too. The executor has no public way
    to: and once a worker has died, Python 3.11 can wait forever on the others at shutdown."""
    for future in futures:
        future.cancel()
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        process.terminate()


WORKER_DIED = "a worker process died (killed, or out of memory) before this video was done; try fewer extract.workers"


def submitted(pool: ProcessPoolExecutor, path: Path, part: Path, cfg: ExtractConfig):
    """The video's future; a worker may already have died while the videos were being handed out.
    Python 3.11 says so as BrokenProcessPool, or, when the death is noticed while submit is starting
    a new worker, as OSError("handle is closed") from the queue the executor has just closed."""
    try:
        return pool.submit(video_job, path, part, cfg, False)
    except BrokenProcessPool as exc:
        raise FaceVAEError(WORKER_DIED, path) from exc
    except OSError as exc:
        if not getattr(pool, "_broken", False):  # another OSError (no more processes, ...) stays itself
            raise
        raise FaceVAEError(WORKER_DIED, path) from exc


def finished(future, path: Path, bar: tqdm):
    try:
        outcome = future.result()
    except BrokenProcessPool as exc:
        raise FaceVAEError(WORKER_DIED, path) from exc
    bar.update()
    return outcome


_worker_models: tuple[FaceAligner, FaceEncoder] | None = None  # set in each worker process


def load_worker_models(cfg: ExtractConfig) -> None:
    """The pool's initializer: a worker loads the dlib models once, for all the videos it is given."""
    global _worker_models
    torch.set_num_threads(1)  # the descriptor network runs one face at a time, one worker per core
    _worker_models = (FaceAligner.from_config(cfg), FaceEncoder())


def video_job(
    path: Path, part: Path, cfg: ExtractConfig, progress: bool, models: tuple[FaceAligner, FaceEncoder] | None = None
) -> VideoResult | FaceVAEError:
    """One video's step 1 (with `models`, else the worker's); its error is returned, not raised,
    so a worker's failure reaches `gather` in order."""
    aligner, encoder = models or _worker_models
    try:
        return extract_video(path, cfg, part, aligner, encoder, progress)
    except FaceVAEError as exc:
        return exc


def gather(jobs: list[tuple[Path, Path]], outcomes, cfg: ExtractConfig) -> tuple[list[VideoResult], dict[str, str]]:
    """Results in order; a failed video stops the run (`on_error: fail`) or is listed as skipped."""
    results, skipped = [], {}
    for (path, part), outcome in zip(jobs, outcomes):
        if isinstance(outcome, FaceVAEError):
            if cfg.on_error == "fail":
                raise outcome
            skipped[path.name] = str(outcome)
            part.unlink(missing_ok=True)
        else:
            results.append(outcome)
    return results, skipped


def check_some_work(paths: list[Path], results: list[VideoResult], skipped: dict[str, str]) -> None:
    if not results:
        reasons = "; ".join(skipped.values())
        raise FaceVAEError(f"none of the {len(paths)} videos could be read: {reasons}")


def check_some_kept(summary: ExtractSummary, inputs: str) -> None:
    if summary.kept:
        return
    with_face = summary.frames - summary.dropped["no_face"]
    if with_face == 0:
        raise FaceVAEError(f"no face found in {inputs}")
    reasons = ", ".join(f"{n} {reason}" for reason, n in summary.dropped.items() if n and reason != "no_face")
    raise FaceVAEError(f"no usable face in {inputs}: all {with_face} frames with a face were dropped ({reasons})")


def describe_inputs(inputs: list[Path], paths: list[Path]) -> str:
    if len(inputs) == 1:
        return str(inputs[0])
    return ", ".join(str(p) for p in paths)
