"""End-to-end `reconstruct` speed on a 640x360 clip: ours vs. a plain per-frame baseline.

    python bench/reconstruct.py [CLIP] [--upscale 1] [--params params.yaml] [--set key=value ...]

Both pipelines decode, find and align the driver's face, encode (mu), decode, compose the
side-by-side frame and encode the output video (same writer, same codec, audio copied).

- ours: `facevae.apps.reconstruct.reconstruct_video`: detection at extract.detect_width every
  extract.redetect_every frames with landmark tracking in between (the extraction tracker),
  the network called on 32 faces at a time.
- baseline: full-resolution HOG detection on every frame (upsample 0, which finds the same
  faces as upsample 1 at half the width), the largest face aligned, one network call per frame
  with torch's default thread count.

The model has the default architecture (params.yaml `model`) with random weights: speed does
not depend on what the weights are. Models (dlib, the VAE) are loaded before timing. Target:
>= 30 frames/s on CPU.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from facevae.apps.reconstruct import (
    PIPELINE_TORCH_THREADS,
    reconstruct_video,
    torch_threads,
)
from facevae.apps.render import SideBySide, driver_panel, enlarge
from facevae.core.config import load_params
from facevae.data.video import VideoWriter, iter_frames, probe
from facevae.extract.drivers import aligner_for, iter_video_faces
from facevae.faces.align import FaceAligner
from facevae.faces.crop import CropGeometry
from facevae.faces.detect import HogDetector
from facevae.model.vae import build_model
from facevae.transfer.actor import ActorModel

COMPOSE_FRAMES = 200
CLIP_CANDIDATES = [Path("data/raw/pexels/WolfgangLanger_Pexels.mp4"), Path("data/drivers/single_face.mp4")]


def find_clip(given: str | None) -> Path:
    for clip in [Path(given)] if given else CLIP_CANDIDATES:
        if clip.is_file():
            return clip
    sys.exit(f"clip not found (tried {', '.join(map(str, CLIP_CANDIDATES))}); run `facevae fetch-samples`")


def random_model(params) -> ActorModel:
    torch.manual_seed(0)
    crop = CropGeometry(params.extract.crop_size, params.extract.coverage)
    return ActorModel(build_model(params.model), crop, source="random init (default architecture)")


def baseline(clip: Path, model: ActorModel, aligner: FaceAligner, out: Path, upscale: int) -> tuple[int, float]:
    """Full-resolution detection every frame, one network call per frame."""
    info = probe(clip)
    size = model.image_size
    layout = SideBySide(size * upscale)
    last = layout.blank()
    frames = 0
    started = time.perf_counter()
    with VideoWriter(out, fps=info.fps, audio_from=clip if info.has_audio else None) as writer:
        for _, _, rgb in iter_frames(clip):
            face = aligner.align_one(rgb)
            if face is not None:
                actor = model.reconstruct(face.crop[None])[0]
                last = layout.compose(driver_panel(rgb, face.matrix, size, layout.panel), enlarge(actor, layout.panel))
            writer.write(last)
            frames += 1
    return frames, time.perf_counter() - started


def stage_times(clip: Path, model: ActorModel, aligner: FaceAligner, params, upscale: int) -> dict[str, float]:
    """Seconds per frame of each stage run on its own: decode; track+align (on top of decode);
    network; compose; video encode (the last three on the first COMPOSE_FRAMES faces)."""
    times: dict[str, float] = {}
    started = time.perf_counter()
    n = sum(1 for _ in iter_frames(clip))
    times["decode"] = (time.perf_counter() - started) / n
    kept = []
    started = time.perf_counter()
    for frame in iter_video_faces(clip, params.extract, model.crop, aligner):
        if frame.face is not None and len(kept) < COMPOSE_FRAMES:
            kept.append((frame.rgb, frame.face))
    times["track+align"] = (time.perf_counter() - started) / n - times["decode"]
    crops = np.stack([face.crop for _, face in kept])
    with torch_threads(PIPELINE_TORCH_THREADS):
        started = time.perf_counter()
        outputs = model.reconstruct(crops)
        times["network"] = (time.perf_counter() - started) / len(crops)
    layout = SideBySide(model.image_size * upscale)
    started = time.perf_counter()
    composed = [
        layout.compose(driver_panel(rgb, face.matrix, model.image_size, layout.panel), enlarge(actor, layout.panel))
        for (rgb, face), actor in zip(kept, outputs)
    ]
    times["compose"] = (time.perf_counter() - started) / len(composed)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        with VideoWriter(Path(tmp) / "x.mp4", fps=probe(clip).fps) as writer:
            for frame in composed:
                writer.write(frame)
        times["video encode"] = (time.perf_counter() - started) / len(composed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", nargs="?", help="video to time (default: the 640x360 sample WolfgangLanger_Pexels.mp4)")
    parser.add_argument("--upscale", type=int, default=1, help="render faces K times the crop size (default 1)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--stages", action="store_true", help="also time each stage on its own")
    parser.add_argument("--mode", default="seed", help="driving mode (facevae.transfer.drive): seed | normalised | relative | "
                        "landmark | blend; non-seed modes need --model (a trained model.pt with transfer statistics)")
    parser.add_argument("--model", help="a trained model.pt instead of random weights")
    args = parser.parse_args()
    clip = find_clip(args.clip)
    params = load_params(args.params, args.overrides)
    info = probe(clip)
    model = ActorModel.from_file(args.model, params.extract) if args.model else random_model(params)
    print(
        f"clip: {clip.name}  {info.width}x{info.height}  {info.frame_count} frames  {info.fps:.3f} fps  "
        f"audio={info.has_audio}"
    )
    print(f"model: {model.describe()}, upscale {args.upscale}")
    aligner = aligner_for(params.extract, model.crop)
    model.reconstruct(np.zeros((32, model.image_size, model.image_size, 3), np.uint8))  # warm-up (oneDNN kernels)
    with tempfile.TemporaryDirectory() as tmp:
        summary = reconstruct_video(
            model, clip, Path(tmp) / "ours.mp4", params.extract, upscale=args.upscale, progress=False, aligner=aligner,
            mode=args.mode, transfer_cfg=params.transfer,
        )
        ours_s = summary.seconds
        n = summary.frames
        print(
            f"ours (detect every {params.extract.redetect_every} at {params.extract.detect_width}px, track, batch 32, "
            f"{PIPELINE_TORCH_THREADS} torch thread, mode {args.mode}): {n / ours_s:7.1f} frames/s  "
            f"({ours_s:.2f} s, {summary.with_face} faces)"
        )
        if not args.no_baseline:
            full_res = FaceAligner(
                crop_size=model.crop.size, coverage=model.crop.coverage,
                detector=HogDetector(detect_width=10**6, upsample=0), predictor=aligner.predictor,
            )  # fmt: skip
            base_n, base_s = baseline(clip, model, full_res, Path(tmp) / "base.mp4", args.upscale)
            print(
                f"baseline (full-res HOG every frame, 1 frame per network call, "
                f"{torch.get_num_threads()} torch threads): "
                f"{base_n / base_s:7.1f} frames/s  ({base_s:.2f} s)"
            )
            print(f"speed-up: {base_s / ours_s:.2f}x")
    if args.stages:
        times = stage_times(clip, model, aligner, params, args.upscale)
        print("stages alone (ms/frame): " + ", ".join(f"{k} {1000 * v:.2f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
