"""Identity descriptors: dlib's own forward pass vs. its network run by torch, in one run.

    python bench/descriptor.py [--faces 64] [--threads 1]

The faces are the evaluation's kind: 64 px astronaut crops enlarged 4x, with their landmarks.
Both compute the 128-d descriptor of the same dlib chips (facevae.faces.descriptor); the baseline is
`compute_face_descriptor`, one face at a time as the evaluate stage called it; ours is
`FaceEncoder.encode_many` (batches of 64). One torch thread by default, as in each evaluate worker.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import dlib
import numpy as np
import torch
from skimage.data import astronaut

from facevae.faces.detect import (
    ENCODER_MODEL,
    FaceEncoder,
    HogDetector,
    LandmarkPredictor,
    face_shape,
    model_path,
    to_grey,
)


def evaluation_faces(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """n enlarged 64 px face crops, shifted a little each, and their landmarks."""
    image, detector, predictor = astronaut(), HogDetector(detect_width=256, upsample=0), LandmarkPredictor()
    faces, landmarks = [], []
    for i in range(n):
        dy, dx = (i * 3) % 11, (i * 5) % 13
        crop = cv2.resize(image[20 + dy : 220 + dy, 160 + dx : 360 + dx], (64, 64), interpolation=cv2.INTER_AREA)
        big = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
        found = detector.detect(big)
        if found:
            faces.append(big)
            landmarks.append(predictor.predict(to_grey(big), found[0].box))
    return faces, landmarks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faces, landmarks = evaluation_faces(args.faces)
    encoder, dlib_model = FaceEncoder(), dlib.face_recognition_model_v1(str(model_path(ENCODER_MODEL)))
    started = time.perf_counter()
    theirs = np.stack([np.array(dlib_model.compute_face_descriptor(face, face_shape(lm))) for face, lm in zip(faces, landmarks)])
    baseline = time.perf_counter() - started
    encoder.encode_many(faces[:2], landmarks[:2])  # warm-up
    started = time.perf_counter()
    ours = encoder.encode_many(faces, landmarks)
    ours_s = time.perf_counter() - started
    diff = float(np.abs(ours - theirs).max())
    print(f"{len(faces)} faces, {args.threads} torch thread(s); largest descriptor difference {diff:.1e} (same person below 0.6)")
    print(f"baseline (dlib compute_face_descriptor): {1000 * baseline / len(faces):.1f} ms a face")
    print(f"ours (dlib's network in torch, batched): {1000 * ours_s / len(faces):.1f} ms a face")
    print(f"speed-up: {baseline / ours_s:.1f}x")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
