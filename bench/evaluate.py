"""The evaluate stage's scoring: one process vs. evaluate.workers processes, in one run.

    python bench/evaluate.py [--actor pexels] [--frames 200] [--clips 2]

Scores the trained model (models/ACTOR/model.pt, from `make demo`) on the first --clips driver
clips of evaluate.drivers, --frames frames each, every driving mode and baseline, as the stage does:
first in this process (the baseline, as the stage ran before), then in forked workers (ours,
evaluate.workers, 0 = one per core). The scores must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from facevae.core.config import load_params
from facevae.data.dataset import read_split
from facevae.evaluation.scoring import evaluate_model
from facevae.evaluation.stage import load_clip
from facevae.transfer.actor import ActorModel

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actor", default="pexels")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--clips", type=int, default=2)
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    model, data = ROOT / "models" / args.actor / "model.pt", ROOT / "data" / "hdf5" / f"{args.actor}.h5"
    if not (model.exists() and data.exists()):
        print(f"skipped: {model} or {data} is missing: run `make demo` first")
        return 0
    actor = ActorModel.from_file(model, params.extract)
    train, val = read_split(data, "train", clean_only=True), read_split(data, "val", clean_only=True)
    landmarks = read_split(data, "train", clean_only=True, field="landmarks")
    drivers = params.evaluate.drivers[args.actor][: args.clips]
    clips = [load_clip(ROOT / p, params.extract, actor, args.frames) for p in drivers]
    runs = {}
    for name, workers in (("one process", 1), ("ours", params.evaluate.workers)):
        started = time.perf_counter()
        runs[name] = evaluate_model(actor, train, val, clips, params.evaluate.identity_frames,
                                    params.extract.identity_threshold, params.transfer, landmarks,
                                    params.evaluate.target, set(), workers)
        runs[name + " s"] = time.perf_counter() - started
    n_workers = params.evaluate.workers or os.cpu_count()
    same = json.dumps(runs["one process"].metrics["transfer"], sort_keys=True) == json.dumps(runs["ours"].metrics["transfer"], sort_keys=True)
    print(f"{args.actor}: {len(clips)} clips x {len(runs['ours'].modes)} rows, {sum(len(c.crops) for c in clips)} faces")
    print(f"baseline (one process): {runs['one process s']:.1f} s")
    print(f"ours ({n_workers} worker processes): {runs['ours s']:.1f} s")
    print(f"speed-up: {runs['one process s'] / runs['ours s']:.2f}x; scores {'identical' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
