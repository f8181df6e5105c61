"""A second opinion on expression transfer: MediaPipe FaceMesh reads the driver's and the actor's faces.

The evaluation reads expression with dlib's 68 landmarks, the same reader that aligns the
driver's faces. A driving method can learn to please one reader (a warp that moves the pixels
dlib keys on raises its r far more than it moves the face). This script reads the same crops with
an unrelated landmark model and prints, per clip and feature, the r and gain it sees.

It runs in its own environment (`make audit`: `.venv-audit` with mediapipe==0.10.21, which pins
numpy<2 and cannot share facevae's). facevae is not installed there: from this checkout's `src/` it
takes only two modules that need nothing but numpy, `facevae.faces.expression` (the evaluation's own eye levelling,
r and gain) and `facevae.core.atomic` (the write). Its input is the `.npz` that `facevae reconstruct
--save-arrays` writes (`driver`, `output` uint8 (N, S, S, 3), `found`).

    python audit/second_reader.py out.npz [more.npz ...] [--max-frames 600] [--json audit.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from facevae.core.atomic import atomic_path
from facevae.faces.expression import eyes_level, gain, mean_r, pearson_r

FEATURES = ("mouth_open", "mouth_width", "eye_open", "brow_height")
# FaceMesh indices (478 points with refine_landmarks): iris centres, inner lip midpoints, inner
# mouth corners, upper/lower eyelid midpoints of each eye, the ten points along the two brows
IRIS_RIGHT, IRIS_LEFT = 468, 473
INNER_LIPS = (13, 14)
MOUTH_CORNERS = (78, 308)
EYELIDS = ((159, 145), (386, 374))
BROWS = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300)
READ_SIZE = 256  # crops are enlarged to this before reading (FaceMesh misses faces at 64 px)


def mesh_features(landmarks: np.ndarray) -> np.ndarray:
    """(N, 478, 2) FaceMesh points -> (N, 4) features in FEATURES order, measured like facevae's
    dlib features: eyes levelled, in inter-ocular (iris to iris) distances. NaN rows stay NaN."""
    lm = np.asarray(landmarks, dtype=np.float64)
    level, _ = eyes_level(lm, lm[:, IRIS_RIGHT], lm[:, IRIS_LEFT])

    def gap(a: int, b: int) -> np.ndarray:
        return np.linalg.norm(level[:, a] - level[:, b], axis=1)

    eye_open = np.mean([gap(a, b) for a, b in EYELIDS], axis=0)
    brow_height = -level[:, list(BROWS), 1].mean(1)  # image y grows downwards; eyes are at y=0
    return np.stack([gap(*INNER_LIPS), gap(*MOUTH_CORNERS), eye_open, brow_height], axis=1)


def transfer_scores(driver: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Per-feature r and gain (std(output) / std(driver)) over the frames both were read in."""
    scores = {f"r_{name}": pearson_r(driver[:, k], output[:, k]) for k, name in enumerate(FEATURES)}
    gains = [gain(driver[:, k], output[:, k]) for k in range(len(FEATURES))]
    scores["expression_r"] = mean_r([scores[f"r_{n}"] for n in FEATURES])  # as the evaluation: undefined = 0
    scores["expression_gain"] = float(np.nanmean(gains))
    scores["read_driver"] = float(np.isfinite(driver[:, 0]).mean()) if len(driver) else float("nan")
    scores["read_output"] = float(np.isfinite(output[:, 0]).mean()) if len(output) else float("nan")
    return scores


@contextlib.contextmanager
def native_logs_quiet():
    """MediaPipe's C++ side logs warnings about its own graph to fd 2 on every start (no setting
    turns them off): hold them, and show them only when something fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class FaceMeshReader:
    def __init__(self):
        with native_logs_quiet():
            import mediapipe as mp  # only in the audit environment

            self.mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.3
            )

    def features(self, crops: np.ndarray) -> np.ndarray:
        import cv2

        points = np.full((len(crops), 478, 2), np.nan)
        with native_logs_quiet():
            for i, crop in enumerate(crops):
                big = cv2.resize(np.ascontiguousarray(crop), (READ_SIZE, READ_SIZE), interpolation=cv2.INTER_CUBIC)
                found = self.mesh.process(big).multi_face_landmarks
                if found:
                    points[i] = [(p.x * READ_SIZE, p.y * READ_SIZE) for p in found[0].landmark]
        return mesh_features(points)


def load_arrays(path: Path, max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The driver and output crops of the frames with a face (the first `max_frames` video frames)."""
    try:
        with np.load(path) as data:
            driver, output, found = data["driver"], data["output"], data["found"].astype(bool)
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"error: {path}: not an npz from `facevae reconstruct --save-arrays` ({err})")
    if max_frames:
        driver, output, found = driver[:max_frames], output[:max_frames], found[:max_frames]
    if not found.any():
        raise SystemExit(f"error: {path}: no frame with a face")
    return driver[found], output[found]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arrays", nargs="+", type=Path, help="npz files from `facevae reconstruct --save-arrays`")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="only the first N video frames (the evaluation scores 600: evaluate.max_frames)")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args(argv)
    clips = {path: load_arrays(path, args.max_frames) for path in args.arrays}  # every file checked first
    reader = FaceMeshReader()
    results = {}
    print(f"{'clip':24s} {'r':>6s} " + " ".join(f"{n:>11s}" for n in FEATURES) + f" {'gain':>6s} {'read':>5s}")
    for path, (driver, output) in clips.items():
        scores = transfer_scores(reader.features(driver), reader.features(output))
        results[path.stem] = scores
        print(f"{path.stem:24s} {scores['expression_r']:6.3f} "
              + " ".join(f"{scores['r_' + n]:11.3f}" for n in FEATURES)
              + f" {scores['expression_gain']:6.3f} {min(scores['read_driver'], scores['read_output']):5.2f}", flush=True)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"reader": "mediapipe FaceMesh (refine_landmarks)",
                                       "max_frames": args.max_frames, "clips": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
