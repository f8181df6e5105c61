"""Occlusion filter: recall and false flags on the hand-labelled pexels clip, flag rate on clips
without occlusion, and extraction time with and without the filter (same machine, same run).

    python bench/occlusion.py [--repeats 2]

Labels: tests/data/pexels_occlusion_labels.csv (frame, occluded), made by looking at the crops.
"without" replaces the scoring with nothing (every crop kept as extraction decided). Flags are
read from frames.csv's `reason` (threshold plus hysteresis along time), and also shown for the
plain threshold on the score.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from facevae.core.config import load_params
from facevae.extract import extractor as extract

LABELS = Path("tests/data/pexels_occlusion_labels.csv")
CLEAN = {"feat": [Path("data/raw/feat")], "single_face": [Path("data/drivers/single_face.mp4")]}


def run(videos, cfg, out: Path) -> tuple[float, pd.DataFrame]:
    started = time.perf_counter()
    extract.extract_actor(videos, out, cfg, progress=False)
    frames = pd.read_csv(out / "frames.csv", keep_default_na=False)
    frames["occlusion"] = pd.to_numeric(frames["occlusion"], errors="coerce")  # blank where there is no crop
    return time.perf_counter() - started, frames


def timed(videos, cfg, root: Path, repeats: int, filtered: bool) -> tuple[float, pd.DataFrame]:
    saved = extract.mouth_patches, extract.occlusion_scores
    if not filtered:
        extract.mouth_patches = lambda crops, landmarks: np.zeros((len(crops), 1, 1), np.float32)
        extract.occlusion_scores = lambda patches: np.zeros(len(patches), np.float32)
    try:
        runs = [run(videos, cfg, root / f"{filtered}_{i}") for i in range(repeats)]
    finally:
        extract.mouth_patches, extract.occlusion_scores = saved
    return min(t for t, _ in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="extractions per setting; the fastest counts")
    args = parser.parse_args()
    cfg = load_params(Path("params.yaml")).extract.model_copy(update={"save_crops": False})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pexels = [Path("data/raw/pexels")]
        plain, _ = timed(pexels, cfg, root, args.repeats, filtered=False)
        filtered, frames = timed(pexels, cfg, root, args.repeats, filtered=True)
        labels = pd.read_csv(LABELS).set_index("frame")["occluded"].astype(bool)
        frames = frames.set_index("frame")
        print(f"pexels ({len(labels)} frames, {int(labels.sum())} occluded by hand label, "
              f"max_occlusion={cfg.max_occlusion}, occlusion_low={cfg.occlusion_low})")  # fmt: skip
        threshold_only = frames["occlusion"].reindex(labels.index) > cfg.max_occlusion
        flagged = frames["reason"].reindex(labels.index).str.startswith("occluded")
        for name, flags in (("threshold only", threshold_only), ("with hysteresis (what extract does)", flagged)):
            print(f"  {name}:")
            print(f"    recall on occluded frames:   {flags[labels].mean():.3f}  ({int(flags[labels].sum())}/{int(labels.sum())})")
            print(f"    false flags on clean frames: {flags[~labels].mean():.3f}  ({int(flags[~labels].sum())}/{int((~labels).sum())})")
        print(f"  missed frames: {sorted(labels.index[labels & ~flagged].tolist())}")
        print(f"  extract.occluded={cfg.occluded}: {int((frames['reason'] == 'occluded:mouth').sum())} kept masked, "
              f"{int((frames['reason'] == 'occluded').sum())} dropped")  # fmt: skip
        print(f"  extract time without filter: {plain:.2f} s")
        print(f"  extract time with filter:    {filtered:.2f} s  ({100 * (filtered / plain - 1):+.1f}%)")
        for name, videos in CLEAN.items():
            _, frames = timed(videos, cfg, root / name, 1, filtered=True)
            with_face = frames[frames["crop_index"] >= 0]
            rate = with_face["reason"].str.startswith("occluded").mean()
            print(f"{name} (no occlusion): {rate:.3f} of {len(with_face)} faces flagged, "
                  f"max score {with_face['occlusion'].max():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
