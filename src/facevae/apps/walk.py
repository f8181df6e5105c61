"""Walks through the actor's latent space and samples from its prior: `facevae walk`, `facevae sample`."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from facevae.apps.reconstruct import PNG_SUFFIXES, check_video_output
from facevae.apps.render import check_upscale, enlarge, enlarge_batch, save_gif
from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.core.images import make_grid, save_png
from facevae.data.dataset import IMAGE_SUFFIXES
from facevae.data.video import OUTPUT_FORMATS, VideoWriter
from facevae.extract.drivers import aligner_for, is_image, read_image
from facevae.faces.align import FaceAligner
from facevae.faces.crop import CropGeometry
from facevae.transfer.actor import ActorModel

DATASET_ROW = re.compile(r"(?P<path>.+\.(?:h5|hdf5)):(?P<index>-?\d+)", re.IGNORECASE)

# ---- walks and samples ----------------------------------------------------------------------


def read_dataset_row(path: Path, index: int, crop: CropGeometry) -> np.ndarray:
    """Row `index` of an HDF5 dataset's `images` (data/hdf5/<actor>.h5 or an extract crops.h5),
    checked against the model's crop geometry."""
    import h5py

    if not path.is_file():
        raise FaceVAEError("no such file", path)
    try:
        with h5py.File(path, "r") as h5:
            if "images" not in h5:
                raise FaceVAEError("no `images` dataset in this HDF5 file", path)
            images = h5["images"]
            n = len(images)
            if not -n <= index < n:
                raise FaceVAEError(f"row {index} is out of range: the file has {n} images", path)
            if images.shape[1:] != (crop.size, crop.size, 3):
                raise FaceVAEError(
                    f"its faces are {'x'.join(map(str, images.shape[1:]))} but the model takes {crop.describe()}", path
                )
            check_dataset_coverage(h5, crop, path)
            return np.asarray(images[index % n], dtype=np.uint8)
    except OSError as exc:
        raise FaceVAEError(f"not a readable HDF5 file ({exc.__class__.__name__})", path) from None


def check_dataset_coverage(h5, crop: CropGeometry, path: Path) -> None:
    """A dataset (attrs `coverage`) or extract crops.h5 (attrs `extract_params`) cut at another
    coverage than the model's holds differently framed faces: an error, not a silent mismatch."""
    import json

    coverage = h5.attrs.get("coverage")
    if coverage is None and "extract_params" in h5.attrs:
        coverage = json.loads(h5.attrs["extract_params"]).get("coverage")
    if coverage is None or not math.isfinite(float(coverage)):
        return
    if not math.isclose(float(coverage), crop.coverage, rel_tol=1e-6):
        raise FaceVAEError(
            f"its faces were cut at coverage {float(coverage):g} but the model takes {crop.describe()}", path
        )


def load_face(
    spec: str | Path, extract_cfg: ExtractConfig, crop: CropGeometry, aligner: FaceAligner | None = None
) -> np.ndarray:
    """An aligned uint8 (S, S, 3) face from `photo.jpg` (its largest face, aligned on the fly)
    or `dataset.h5:INDEX` (a row of a dataset, already aligned)."""
    text = str(spec)
    match = DATASET_ROW.fullmatch(text)
    if match:
        return read_dataset_row(Path(match["path"]), int(match["index"]), crop)
    path = Path(text)
    if not is_image(path):
        photos = ", ".join(sorted(IMAGE_SUFFIXES))
        raise FaceVAEError(f"expected a photo ({photos}) or a dataset row FILE.h5:INDEX", path)
    aligner = aligner or aligner_for(extract_cfg, crop)
    face = aligner.align_one(read_image(path))
    if face is None:
        raise FaceVAEError("no face found in this image", path)
    return face.crop


def write_frames(frames: list[np.ndarray], output: Path, fps: float) -> None:
    """A .gif or a video file (atomic either way)."""
    suffix = output.suffix.lower()
    if suffix == ".gif":
        save_gif(frames, output, fps)
        return
    if suffix not in OUTPUT_FORMATS:
        raise FaceVAEError(f"write a .gif or a video ({', '.join(sorted(OUTPUT_FORMATS))})", output)
    with VideoWriter(output, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)


def walk_faces(model: ActorModel, face_a: np.ndarray, face_b: np.ndarray, steps: int, mode: str) -> np.ndarray:
    """uint8 (steps, S, S, 3): the actor's faces along the latent path from face A's mu to face B's."""
    mu = model.encode(np.stack([face_a, face_b]))
    return model.decode(latent_path(mu[0], mu[1], steps, mode))


def render_walk(
    model: ActorModel,
    face_a: np.ndarray,
    face_b: np.ndarray,
    output: str | Path,
    steps: int = 60,
    mode: str = "linear",
    upscale: int = 4,
    fps: float = 20.0,
    bounce: bool = False,
) -> Path:
    """A latent walk as a GIF or video: each frame one face, `upscale` times the model's size;
    `bounce` walks back again (a seamless loop)."""
    output = Path(output)
    if output.suffix.lower() != ".gif":
        check_video_output(output)
    upscale = check_upscale(upscale)
    faces = walk_faces(model, face_a, face_b, steps, mode)
    frames = [enlarge(face, model.image_size * upscale) for face in faces]
    if bounce:
        frames += frames[-2:0:-1]
    write_frames(frames, output, fps)
    return output


def render_samples(
    model: ActorModel, n: int, output: str | Path, seed: int = 0, upscale: int = 1, temperature: float = 1.0
) -> Path:
    """n faces decoded from prior samples z ~ N(0, I), as one PNG grid (about square)."""
    if n < 1:
        raise FaceVAEError(f"--n must be at least 1, got {n}")
    output = Path(output)
    if output.suffix.lower() not in PNG_SUFFIXES:
        raise FaceVAEError("the sample grid is written as a .png", output)
    upscale = check_upscale(upscale)
    faces = enlarge_batch(model.sample(n, seed=seed, temperature=temperature), model.image_size * upscale)
    return save_png(make_grid(faces, ncols=math.ceil(math.sqrt(n))), output)


def walk_endpoints(model: ActorModel, dataset: str | Path, max_rows: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Two of the actor's own faces far apart in latent space, for a demo walk: A is the face
    farthest from the average code, B the face farthest from A (rows spread evenly over the set)."""
    import h5py

    dataset = Path(dataset)
    try:
        with h5py.File(dataset, "r") as h5:
            n = len(h5["images"])
            if n == 0:
                raise FaceVAEError("no images in this dataset", dataset)
            check_dataset_coverage(h5, model.crop, dataset)
            rows = np.unique(np.linspace(0, n - 1, num=min(n, max_rows)).round().astype(int))
            faces = h5["images"][rows]
    except (OSError, KeyError) as exc:
        raise FaceVAEError(f"not a readable dataset ({exc.__class__.__name__})", dataset) from None
    model.check_crops(faces)
    mu = model.encode(faces)
    a = int(np.argmax(np.linalg.norm(mu - mu.mean(axis=0), axis=1)))
    b = int(np.argmax(np.linalg.norm(mu - mu[a], axis=1)))
    return faces[a], faces[b]


def latent_path(a: np.ndarray, b: np.ndarray, steps: int, mode: str = "linear") -> np.ndarray:
    """(steps, D) codes from a to b inclusive, straight (`linear`) or along the great circle with
    the norm interpolated linearly (`slerp`, which keeps in-between codes as typical as the ends
    under a Gaussian prior, where a straight line dips towards the origin)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if steps < 2:
        raise FaceVAEError(f"a walk needs at least 2 steps, got {steps}")
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if mode == "linear":
        return ((1 - t) * a + t * b).astype(np.float32)
    if mode != "slerp":
        raise FaceVAEError(f"unknown walk mode {mode!r}: use linear or slerp")
    norm_a, norm_b = np.linalg.norm(a), np.linalg.norm(b)
    if norm_a < 1e-8 or norm_b < 1e-8:
        return ((1 - t) * a + t * b).astype(np.float32)
    unit_a, unit_b = a / norm_a, b / norm_b
    omega = math.acos(float(np.clip(unit_a @ unit_b, -1.0, 1.0)))
    if omega < 1e-4:
        direction = (1 - t) * unit_a + t * unit_b
    else:
        direction = (np.sin((1 - t) * omega) * unit_a + np.sin(t * omega) * unit_b) / math.sin(omega)
    return (direction * ((1 - t) * norm_a + t * norm_b)).astype(np.float32)
