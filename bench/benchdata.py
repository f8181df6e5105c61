"""What the training benches share: their data (the actor's HDF5, else synthetic astronaut crops) and
their common arguments."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_dataset(path: Path, n: int) -> Path:
    """n real 64x64 face crops (the astronaut, shifted) in the project's HDF5 layout."""
    sys.path.insert(0, str(ROOT / "tests"))
    from facedata import write_face_dataset

    return write_face_dataset(path, n_train=n, n_val=max(1, n // 8))


def training_bench_parser(description: str) -> argparse.ArgumentParser:
    """DATA (default data/hdf5/pexels.h5), --images for the synthetic fallback, --params, --set."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("data", nargs="?", type=Path, default=ROOT / "data/hdf5/pexels.h5")
    parser.add_argument("--images", type=int, default=400, help="train crops of the synthetic dataset")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    return parser


def bench_dataset(data: Path, images: int, tmp: str) -> tuple[Path, str]:
    """DATA when it exists, else `images` synthetic crops in the temp folder; and how to name it."""
    if data.exists():
        return data, data.name
    return synthetic_dataset(Path(tmp) / "bench.h5", images), "synthetic astronaut crops"
