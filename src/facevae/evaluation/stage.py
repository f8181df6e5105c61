"""The evaluate stage: score a trained model on its driver clips, write the reports, log to its MLflow
run and decide the champion."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from facevae.core.config import TargetConfig
from facevae.core.errors import FaceVAEError
from facevae.core.parallel import forked_map
from facevae.data.dataset import read_split
from facevae.evaluation.report import write_reports
from facevae.evaluation.scoring import LOWER_IS_BETTER, DriverClip, evaluate_model
from facevae.evaluation.target import target_key
from facevae.extract.drivers import align_driver
from facevae.faces.occlusion import occluded_frames
from facevae.tracking.registry import (
    EVAL_DRIVERS,
    EVAL_TARGET,
    log_evaluation,
    log_report_files,
)
from facevae.tracking.runs import read_run_file
from facevae.transfer.actor import ActorModel
from facevae.transfer.fit import add_footage_range, fit_transfer_from_dataset

# ---- the stage: model folder + dataset + driver clips -> reports, MLflow, champion -------------


def load_clip(path: Path, extract_cfg, actor: ActorModel, max_frames: int = 0) -> DriverClip:
    """A driver clip's aligned faces (of its first `max_frames` frames; 0 = all) and their occlusion flags."""

    faces = align_driver(path, extract_cfg, actor.crop, max_frames=max_frames)
    if not faces.found.any():
        raise FaceVAEError("no face found in the driver clip", path)
    crops, landmarks = faces.face_crops, faces.face_landmarks
    occluded = occluded_frames(crops, landmarks, *extract_cfg.occlusion_thresholds)
    return DriverClip(Path(path).name, crops, landmarks, faces.face_frames, occluded)


def run_evaluation(model_dir: Path, data: Path, drivers: list[Path], params, out_dir: Path) -> dict:
    """Evaluate models/<actor>/ on its dataset and drivers; write reports; log to MLflow; move champion."""

    actor = ActorModel.from_file(Path(model_dir) / "model.pt", params.extract)
    # frames with a masked occluder (a hand) are left out: the VAE never learnt to draw it, and the
    # baselines would copy it into their outputs
    train_images, val_images = read_split(data, "train", clean_only=True), read_split(data, "val", clean_only=True)
    if actor.transfer is None:  # a model file from before the driving modes: fit them here

        actor.transfer = fit_transfer_from_dataset(actor, data, params.transfer, params.extract.occlusion_thresholds)
    elif "range_limit" not in actor.transfer.info:  # trained before the footage range was stored

        add_footage_range(actor, val_images, params.transfer.snap_k)
    train_landmarks = read_split(data, "train", clean_only=True, field="landmarks")
    if len(val_images) == 0:
        val_images = train_images
    cfg = params.evaluate
    clips = list(forked_map(partial(load_clip, extract_cfg=params.extract, actor=actor, max_frames=cfg.max_frames),
                            [Path(p) for p in drivers], cfg.workers))
    evaluation = evaluate_model(actor, train_images, val_images, clips, cfg.identity_frames,
                                params.extract.identity_threshold, params.transfer, train_landmarks,
                                cfg.target, {Path(p).name for p in cfg.held_out}, cfg.workers,
                                progress=True)
    run_record = read_run_file(model_dir)
    ranking = [(m, m in LOWER_IS_BETTER) for m in (cfg.champion_metric, cfg.champion_tiebreak) if m]
    decision = log_evaluation(run_record, evaluation.headline(), ranking, benchmark(clips, cfg.target, ranking))
    files = write_reports(evaluation, actor.actor or Path(model_dir).name, Path(out_dir), decision)
    log_report_files(run_record, files)
    return {**evaluation.headline(), "champion": decision}


def benchmark(clips: list[DriverClip], target: TargetConfig, ranking: list[tuple[str, bool]]) -> dict[str, str]:
    """The run tags that say what the eval_* numbers were measured on (facevae.tracking.registry)."""

    tags = {EVAL_DRIVERS: ",".join(sorted(c.name for c in clips))}
    if any(metric == "target_score" for metric, _ in ranking):
        tags[EVAL_TARGET] = target_key(target)
    return tags
