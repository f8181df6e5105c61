"""Extraction over several videos: one at a time (baseline) vs. `extract.workers` processes, in one run.

    python bench/extract_workers.py [CLIP] [--copies 4] [--workers 2] [--params params.yaml] [--set ...]

The actor's videos are COPIES copies of one clip (default: the sample WolfgangLanger_Pexels.mp4),
so every video is the same length: the best case for spreading them over processes. Both runs
call `extract_actor` end to end (model loading, every video, identity, outputs), and their output
folders must be byte-identical. Prints both times and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from facevae.core.config import load_params
from facevae.extract.extractor import extract_actor

CLIP_CANDIDATES = [Path("data/raw/pexels/WolfgangLanger_Pexels.mp4"), Path("data/drivers/woman2.mp4")]


def timed_extract(videos: list[Path], out: Path, cfg) -> float:
    started = time.perf_counter()
    extract_actor(videos, out, cfg, progress=False)
    return time.perf_counter() - started


def differing_files(first: Path, second: Path) -> list[str]:
    names = sorted(str(p.relative_to(first)) for p in first.rglob("*") if p.is_file())
    others = sorted(str(p.relative_to(second)) for p in second.rglob("*") if p.is_file())
    if names != others:
        return sorted(set(names) ^ set(others))
    return [n for n in names if (first / n).read_bytes() != (second / n).read_bytes()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", nargs="?", help="the clip to copy (default: the sample pexels clip)")
    parser.add_argument("--copies", type=int, default=4, help="videos in the actor's folder (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="processes for our run (default 2)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    clip = next((c for c in ([Path(args.clip)] if args.clip else CLIP_CANDIDATES) if c.is_file()), None)
    if clip is None:
        sys.exit("clip not found; run `facevae fetch-samples` or name one")
    cfg = load_params(args.params, args.overrides).extract
    print(f"{args.copies} copies of {clip.name}; {os.cpu_count()} CPUs; ours: {args.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        videos = []
        for number in range(args.copies):
            videos.append(Path(tmp) / f"take{number}{clip.suffix}")
            shutil.copyfile(clip, videos[-1])
        base_s = timed_extract(videos, Path(tmp) / "one", cfg.model_copy(update={"workers": 1}))
        ours_s = timed_extract(videos, Path(tmp) / "many", cfg.model_copy(update={"workers": args.workers}))
        differ = differing_files(Path(tmp) / "one", Path(tmp) / "many")
    print(f"baseline (one video at a time): {base_s:.2f} s")
    print(f"ours ({args.workers} workers): {ours_s:.2f} s")
    print(f"speed-up: {base_s / ours_s:.2f}x; outputs {'identical' if not differ else 'DIFFER: ' + ', '.join(differ)}")
    if differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
