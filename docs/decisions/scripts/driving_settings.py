"""Score driving settings on driver clips without touching MLflow or the registry (decision 043).

    python docs/decisions/scripts/driving_settings.py MODEL.pt ACTOR.h5 CLIP[,CLIP...] "{}" "{'snap_ramp': 0.7, 'snap_far': 0.7}"

Each setting is a dict of `transfer.*` overrides; per clip it prints plausible, expression r, the r
within her footage and that share, gain, sharpness, jitter, identity and in range for the blend mode,
as the evaluate stage measures them (the clips' first 600 frames), then the means. The clips are
scored in `evaluate.workers` processes.
"""

import ast
import sys
import time
from dataclasses import replace
from functools import partial

import numpy as np

from facevae.core.config import load_params
from facevae.core.parallel import forked_map
from facevae.data.dataset import read_split
from facevae.evaluation.baselines import FootageExpressions
from facevae.evaluation.plausibility import PlausibilityReference
from facevae.evaluation.scoring import OutputFaceReader, actor_reference, evaluate_transfer
from facevae.evaluation.stage import load_clip
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import ClipTranslator
from facevae.transfer.fit import guard_info
from facevae.transfer.pose import POSE_KEYS

KEYS = ("plausible", "expression_r", "expression_r_within", "within_footage", "expression_gain", "sharpness", "jitter",
        "identity_pass", "in_range")


def score(clip, model, cfg, reader, centroid, sharpness, reference) -> list[float]:
    result = evaluate_transfer(ClipTranslator(model, cfg, "blend"), clip, reader, centroid, sharpness, 40, reference)
    return [result.scores[k] for k in KEYS]


def main() -> None:
    model_path, data, clip_list, *settings = sys.argv[1:]
    params = load_params("params.yaml")
    model = ActorModel.from_file(model_path, params.extract)
    train = read_split(data, "train", clean_only=True)
    info = model.transfer.info
    if not all(k in info for k in POSE_KEYS):  # a model file from before decision 052: fit as the train stage does
        info.update(guard_info(read_split(data, "train", clean_only=True, field="landmarks"),
                               params.extract.occlusion_thresholds))
        print("added her pose range and the occlusion thresholds, as the train stage now stores them")
    expressions = FootageExpressions(read_split(data, "train", clean_only=True, field="landmarks"),
                                     params.transfer.neutral_window)
    reader = OutputFaceReader(model.crop.size, model.crop.coverage)
    centroid, sharpness = actor_reference(reader, train, 40)
    reference = PlausibilityReference(train)
    clips = [load_clip(c, params.extract, model, 600) for c in clip_list.split(",")]
    clips = [replace(c, within_footage=expressions.within(c.landmarks)) for c in clips]
    for setting in settings:
        cfg = params.transfer.model_copy(update=ast.literal_eval(setting))
        started = time.time()
        job = partial(score, model=model, cfg=cfg, reader=reader, centroid=centroid, sharpness=sharpness,
                      reference=reference)
        rows = list(forked_map(job, clips, params.evaluate.workers))
        for clip, row in zip(clips, rows):
            print(f"{setting} {clip.name}: " + " ".join(f"{k} {v:.3f}" for k, v in zip(KEYS, row)))
        means = np.nanmean(rows, axis=0)
        print(f"{setting} mean: " + " ".join(f"{k} {v:.3f}" for k, v in zip(KEYS, means)) + f" ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
