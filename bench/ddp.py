"""Data-parallel training speed: `facevae train` in 1 process vs `--nproc 2`, in one run.

    python bench/ddp.py [DATA.h5] [--epochs 4] [--images 400] [--nproc 2] [--params params.yaml] [--set key=value ...]

DATA defaults to a temp dataset of --images real 64x64 face crops (the astronaut, shifted), since
the point is the ratio, not the data. Both runs: model.* and train.* from params (train.batch_size
is the global batch, split over the processes), no decoder phase, MLflow off, the first epoch
warm-up; images/s is the median over the other epochs of the training phase (all processes'
images over rank 0's time), as history.csv records it. On CPU the processes share the cores:
the 1-process run uses every core's thread, each of N processes cores/N threads (so that both
use the machine alike). Expect little gain on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from facevae.core.config import load_params

from benchdata import synthetic_dataset  # bench/, the script's own folder, is on sys.path

ROOT = Path(__file__).resolve().parents[1]


def images_per_s(data: Path, params_file: Path, out: Path, nproc: int, threads: int) -> float:
    """Median training images/s of `facevae train --nproc nproc` (the first epoch left out)."""
    command = [sys.executable, "-m", "facevae.cli", "-q", "train", "--data", str(data), "--actor", "bench",
               "--params", str(params_file), "--out", str(out), "--no-progress", "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(out / "history.csv") as f:
        speeds = [float(row["images_per_s"]) for row in csv.DictReader(f)]
    return statistics.median(speeds[1:] or speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", type=Path)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is warm-up")
    parser.add_argument("--images", type=int, default=400, help="train crops of the synthetic dataset")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    params = load_params(args.params, [*args.overrides, f"train.epochs={args.epochs}", "train.decoder_epochs=0",
                                       "mlflow.enabled=false", "train.device=cpu"])
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_dataset(Path(tmp) / "bench.h5", args.images)
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
        one = images_per_s(data, params_file, Path(tmp) / "one", 1, cores)
        many = images_per_s(data, params_file, Path(tmp) / "many", args.nproc, max(1, cores // args.nproc))

    print(f"data: {args.data.name if args.data else f'{args.images} synthetic astronaut crops'}, "
          f"global batch {params.train.batch_size}, {args.epochs} epochs per run (first = warm-up), cpu, "
          f"{cores} cores, torch {torch.__version__}, gloo")
    print(f"1 process  ({cores} threads): {one:.1f} images/s")
    print(f"{args.nproc} processes ({max(1, cores // args.nproc)} thread(s) each): {many:.1f} images/s")
    print(f"ratio {args.nproc} / 1: {many / one:.2f}x")


if __name__ == "__main__":
    main()
