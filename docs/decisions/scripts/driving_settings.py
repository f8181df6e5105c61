"""Score driving settings on driver clips without touching MLflow or the registry (decision 043).

    python docs/decisions/scripts/driving_settings.py MODEL.pt ACTOR.h5 CLIP[,CLIP...] "{}" "{'snap_ramp': 0.7, 'snap_far': 0.7}"

Each setting is a dict of `transfer.*` overrides; per clip it prints plausible, expression r, gain,
sharpness, jitter, identity and in range for the blend mode, as the evaluate stage measures them
(the clips' first 600 frames), then the means.
"""

import ast
import sys
import time

import numpy as np

from facevae.core.config import load_params
from facevae.data.dataset import read_split
from facevae.evaluation.plausibility import PlausibilityReference
from facevae.evaluation.scoring import OutputFaceReader, actor_reference, evaluate_transfer
from facevae.evaluation.stage import load_clip
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import ClipTranslator

KEYS = ("plausible", "expression_r", "expression_gain", "sharpness", "jitter", "identity_pass", "in_range")


def main() -> None:
    model_path, data, clip_list, *settings = sys.argv[1:]
    params = load_params("params.yaml")
    model = ActorModel.from_file(model_path, params.extract)
    train = read_split(data, "train", clean_only=True)
    reader = OutputFaceReader(model.crop.size, model.crop.coverage)
    centroid, sharpness = actor_reference(reader, train, 40)
    reference = PlausibilityReference(train)
    clips = [load_clip(c, params.extract, model, 600) for c in clip_list.split(",")]
    for setting in settings:
        cfg = params.transfer.model_copy(update=ast.literal_eval(setting))
        started, rows = time.time(), []
        for clip in clips:
            result = evaluate_transfer(ClipTranslator(model, cfg, "blend"), clip, reader, centroid, sharpness, 40, reference)
            rows.append([result.scores[k] for k in KEYS])
            print(f"{setting} {clip.name}: " + " ".join(f"{k} {v:.3f}" for k, v in zip(KEYS, rows[-1])))
        means = np.mean(rows, axis=0)
        print(f"{setting} mean: " + " ".join(f"{k} {v:.3f}" for k, v in zip(KEYS, means)) + f" ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
