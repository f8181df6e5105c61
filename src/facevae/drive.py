"""A stranger's face drives the actor: find it, align it as the actor's faces were, encode, decode.

Driver faces go through the code extraction uses: a video's frames through `track_video`
(full detection now and then, landmark tracking in between: `FaceTracker`), a photo through
`FaceAligner.align`, both ending in `FaceAligner.align_landmarks` with the model's own crop
geometry. When several faces are in view the one followed so far is kept, else the largest.

`reconstruct_video` streams: frames are decoded, tracked and aligned one at a time, the
network runs on `batch` faces at once, and composed frames go straight to the (atomic)
video writer, so memory stays flat however long the video (`--save-arrays` aside).

Library entry points (the evaluation stage uses them): `align_driver` (a whole driver's faces
in memory) and `ActorModel` in facevae.inference (encode / decode / reconstruct).
"""

from __future__ import annotations

import math
import re
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from tqdm import tqdm

from facevae.atomic import atomic_path
from facevae.config import ExtractConfig, TransferConfig
from facevae.dataset import IMAGE_SUFFIXES
from facevae.errors import FaceVAEError
from facevae.extract import track_video
from facevae.faces import AlignedFace, FaceAligner
from facevae.facetrack import FaceTracker, Track
from facevae.images import make_grid, save_png
from facevae.inference import ActorModel, CropGeometry, latent_path
from facevae.transfer import DriveSession, Footage
from facevae.render import NEUTRAL, SideBySide, check_upscale, driver_panel, enlarge, enlarge_batch, save_gif
from facevae.video import OUTPUT_FORMATS, VIDEO_SUFFIXES, VideoWriter, probe

if TYPE_CHECKING:
    from facevae.report import FootageGaps

PNG_SUFFIXES = frozenset({".png"})
DATASET_ROW = re.compile(r"(?P<path>.+\.(?:h5|hdf5)):(?P<index>-?\d+)", re.IGNORECASE)
BATCH = 32  # faces per network call: amortises the per-call cost, keeps latency and memory small
# Torch threads while streaming a video. The network is ~10% of the work per frame; the rest
# (decoding, dlib, x264) keeps the cores busy between batches, so a second OpenMP thread spends
# each parallel region waiting to be scheduled: on 2 busy cores, 1 thread ran 3x faster overall.
PIPELINE_TORCH_THREADS = 1


# ---- finding driver faces -------------------------------------------------------------------


@dataclass
class DriverFrame:
    index: int
    time: float
    rgb: np.ndarray
    face: AlignedFace | None  # the driver's face in this frame (model geometry), None if none
    detected: bool  # full detection ran on this frame (else landmarks were tracked)


@dataclass
class DriverFaces:
    """A driver's faces, one row per frame (a photo is one frame)."""

    crops: np.ndarray  # uint8 (N, S, S, 3) aligned as the model's crops; zeros where no face
    landmarks: np.ndarray  # float32 (N, 68, 2) in crop pixels; NaN where no face
    found: np.ndarray  # bool (N,)
    fps: float  # frames per second of the video (0.0 for a photo)
    frame_count: int  # N, every decoded frame
    matrices: np.ndarray | None = None  # float32 (N, 2, 3) source px -> crop px; NaN where no face
    source: Path | None = None

    @property
    def face_frames(self) -> np.ndarray:
        """Indices of the frames with a face."""
        return np.flatnonzero(self.found)

    @property
    def face_crops(self) -> np.ndarray:
        """Only the frames with a face: uint8 (found.sum(), S, S, 3)."""
        return self.crops[self.found]

    @property
    def face_landmarks(self) -> np.ndarray:
        """Only the frames with a face: float32 (found.sum(), 68, 2), crop pixels."""
        return self.landmarks[self.found]


def aligner_for(extract_cfg: ExtractConfig, crop: CropGeometry) -> FaceAligner:
    """The extraction aligner (detector, landmarks) cutting crops at the model's geometry."""
    return FaceAligner.from_config(crop.extract_config(extract_cfg))


def pick_face(found: list[tuple[Track, AlignedFace]], followed: int | None) -> tuple[Track | None, AlignedFace | None]:
    """The face followed so far when it is still there, else the largest one."""
    if not found:
        return None, None
    for track, face in found:
        if track.id == followed:
            return track, face
    return max(found, key=lambda pair: pair[1].face_px)


def iter_video_faces(
    path: str | Path, extract_cfg: ExtractConfig, crop: CropGeometry, aligner: FaceAligner | None = None
) -> Iterator[DriverFrame]:
    """Every frame of a driver's video with its face (or None), tracked as extraction tracks."""
    cfg = crop.extract_config(extract_cfg)
    aligner = aligner or FaceAligner.from_config(cfg)
    check_aligner(aligner, crop)
    tracker = FaceTracker(aligner, cfg)
    followed: int | None = None
    for index, time_s, rgb, found, detected in track_video(Path(path), tracker):
        track, face = pick_face(found, followed)
        if track is not None:
            followed = track.id
        yield DriverFrame(index, time_s, rgb, face, detected)


def check_aligner(aligner: FaceAligner, crop: CropGeometry) -> None:
    if aligner.crop_size != crop.size or not math.isclose(aligner.coverage, crop.coverage, rel_tol=1e-9):
        raise ValueError(
            f"aligner cuts {aligner.crop_size} px at {aligner.coverage}, the model needs {crop.describe()}"
        )


def read_image(path: str | Path) -> np.ndarray:
    """An image file as upright (EXIF orientation applied) uint8 RGB."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FaceVAEError("no such file", path)
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise FaceVAEError(f"not a readable image ({exc.__class__.__name__})", path) from None


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def align_driver(
    path: str | Path,
    extract_cfg: ExtractConfig,
    crop: CropGeometry,
    aligner: FaceAligner | None = None,
    progress: bool = False,
    max_frames: int = 0,
) -> DriverFaces:
    """All of a driver's faces (a video, or a photo as one frame), aligned with `crop`; with
    `max_frames`, those of the video's first `max_frames` frames only (decoding stops there).

    Holds every crop in memory (12 KB a frame at 64 px); stream with `iter_video_faces` for
    very long videos."""
    path = Path(path)
    aligner = aligner or aligner_for(extract_cfg, crop)
    size = crop.size
    if is_image(path):
        faces = [aligner.align_one(read_image(path))]
        fps, frame_count = 0.0, 1
    else:
        info = probe(path)
        faces = []
        total = min(info.frame_count, max_frames) if max_frames else info.frame_count
        with tqdm(total=total, desc=path.name, unit="frame", disable=not progress) as bar:
            frames = iter_video_faces(path, extract_cfg, crop, aligner)
            for frame in islice(frames, max_frames or None):
                faces.append(frame.face)
                bar.update()
            frames.close()
        fps, frame_count = info.fps, len(faces)
    n = len(faces)
    crops = np.zeros((n, size, size, 3), dtype=np.uint8)
    landmarks = np.full((n, 68, 2), np.nan, dtype=np.float32)
    matrices = np.full((n, 2, 3), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    for i, face in enumerate(faces):
        if face is not None:
            crops[i], landmarks[i], matrices[i], found[i] = face.crop, face.landmarks, face.matrix, True
    return DriverFaces(crops, landmarks, found, fps, frame_count, matrices, path)


# ---- reconstruct: driver -> actor -----------------------------------------------------------


@dataclass
class ReconstructSummary:
    input: Path
    output: Path
    frames: int  # frames (or images) read
    with_face: int  # of them, with a face reconstructed
    held: int  # without a face: the previous output held
    blank: int  # without a face before the first face: a neutral frame
    fps: float  # of the output video (0 for images)
    audio: bool  # the input's audio was copied
    seconds: float
    arrays: Path | None = None
    skipped: list[str] = field(default_factory=list)  # images without a face (folder input)
    beyond_range: int | None = None  # faces driven beyond the actor's footage (None: not measured)
    gaps: Path | None = None  # the gap picture (--gaps)

    @property
    def without_face(self) -> int:
        return self.held + self.blank

    def describe(self) -> str:
        rate = self.frames / max(self.seconds, 1e-9)
        if self.fps:
            what = f"{self.frames} frames at {self.fps:.6g} fps"
            missing = f"{self.without_face} without a face ({self.held} held, {self.blank} blank before the first face)"
            audio = ", audio kept" if self.audio else ", no audio"
        else:
            what = f"{self.frames} image{'s' * (self.frames != 1)}"
            missing = f"{len(self.skipped)} without a face (skipped)"
            audio = ""
        beyond = ""
        if self.beyond_range is not None and self.with_face:
            beyond = (f"; {self.beyond_range} of the {self.with_face} faces "
                      f"({100 * self.beyond_range / self.with_face:.0f}%) beyond the actor's footage, drawn by extrapolation")
        return (
            f"{self.output}: {what}, {self.with_face} with a face, {missing}{audio}; "
            f"{self.seconds:.1f} s ({rate:.1f} frames/s){beyond}"
        )


class FrameBatcher:
    """Collects frames in order, runs the network on `batch` faces at a time, emits composed frames.

    A frame without a face repeats the last composed frame (the blank one before any face).
    Faces go through a driving session (facevae.transfer, the seed's decode(mu) by default); its
    first chunk waits for `session.warmup` faces, the window its neutral frame is chosen from."""

    def __init__(
        self,
        model: ActorModel,
        layout: SideBySide,
        emit: Callable[[np.ndarray], None],
        keep_arrays: bool,
        batch: int = BATCH,
        session: DriveSession | None = None,
        gaps: FootageGaps | None = None,
    ):
        self.model, self.layout, self.emit, self.batch = model, layout, emit, batch
        self.session = session or DriveSession(model, TransferConfig(), "seed")
        self.gaps = gaps  # facevae.report.FootageGaps: the faces driven farthest from the actor's footage
        self.first = max(batch, self.session.warmup)  # faces before the first network call
        self.slots: list[np.ndarray | None] = []  # driver panel per pending frame, None: no face
        self.crops: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.last = layout.blank()
        self.faces = self.held = self.blank = 0
        self.keep_arrays = keep_arrays
        neutral = np.full((model.image_size, model.image_size, 3), NEUTRAL, dtype=np.uint8)
        self.last_driver, self.last_output = neutral, neutral
        self.driver_rows: list[np.ndarray] = []
        self.output_rows: list[np.ndarray] = []
        self.found_rows: list[bool] = []

    def add(self, panel: np.ndarray | None, crop: np.ndarray | None, landmarks: np.ndarray | None = None) -> None:
        if panel is None and not self.slots:  # nothing pending: hold right away
            self._emit_held()
            return
        self.slots.append(panel)
        if panel is not None:
            self.crops.append(crop)
            self.landmarks.append(np.full((68, 2), np.nan) if landmarks is None else landmarks)
            if len(self.crops) >= (self.batch if self.faces else self.first):
                self.flush()

    def flush(self) -> None:
        if not self.slots:
            return
        crops = np.stack(self.crops) if self.crops else None
        outputs = self.session(crops, np.stack(self.landmarks)) if crops is not None else None
        if self.gaps is not None and outputs is not None:
            self.gaps.add(self.faces, crops, outputs, self.session.distances[-1], self.session.nearest[-1])
        large = enlarge_batch(outputs, self.layout.panel) if outputs is not None else None
        j = 0
        for panel in self.slots:
            if panel is None:
                self._emit_held()
                continue
            self.last = self.layout.compose(panel, large[j])
            self.faces += 1
            if self.keep_arrays:
                self.last_driver, self.last_output = crops[j], outputs[j]
                self._keep(True)
            self.emit(self.last)
            j += 1
        self.slots, self.crops, self.landmarks = [], [], []

    def _emit_held(self) -> None:
        if self.faces:
            self.held += 1
        else:
            self.blank += 1
        if self.keep_arrays:
            self._keep(False)
        self.emit(self.last)

    def _keep(self, found: bool) -> None:
        self.driver_rows.append(self.last_driver)
        self.output_rows.append(self.last_output)
        self.found_rows.append(found)

    def arrays(self) -> dict[str, np.ndarray]:
        size = self.model.image_size
        empty = np.empty((0, size, size, 3), dtype=np.uint8)
        return {
            "driver": np.stack(self.driver_rows) if self.driver_rows else empty,
            "output": np.stack(self.output_rows) if self.output_rows else empty,
            "found": np.array(self.found_rows, dtype=bool),
        }


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to n (never above the current one), restored after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, previous)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_video_output(output: Path) -> None:
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise FaceVAEError(f"a video input needs a video output, one of {', '.join(sorted(OUTPUT_FORMATS))}", output)


def check_arrays_output(path: Path | None) -> None:
    if path is not None and path.suffix.lower() != ".npz":
        raise FaceVAEError("--save-arrays writes a .npz file", path)


def check_gaps_output(path: Path | None, session: DriveSession) -> None:
    if path is None:
        return
    if path.suffix.lower() != ".png":
        raise FaceVAEError("--gaps writes a .png picture", path)
    if session.range_limit is None:
        why = "the seed mode has no" if session.mode == "seed" else "this model file carries no"
        raise FaceVAEError(f"--gaps needs the actor's footage range, and {why} range: use another driving mode "
                           "or a model trained since the range was stored", getattr(session.model, "source", None))


def footage_gaps(frames: int) -> FootageGaps:
    from facevae.report import FootageGaps, gap_window

    return FootageGaps(gap_window(frames))


def nearest_actor_faces(model: ActorModel) -> Callable[[np.ndarray], np.ndarray]:
    """Rows of the model's actor codes -> her faces as the model decodes them (model.pt holds her
    training frames' codes, not the frames)."""
    return lambda rows: model.decode(model.transfer.codes[rows])


def footage_arrays(footage: Footage | None, found: list[bool]) -> dict[str, np.ndarray]:
    """--save-arrays' per-frame footage columns: `footage_distance` (NaN without a face),
    `beyond_range` and the scalar `range_limit`; none where the range is not measured."""
    if footage is None:
        return {}
    found = np.asarray(found, dtype=bool)
    distance = np.full(len(found), np.nan)
    distance[found] = footage.distance
    return {"footage_distance": distance, "beyond_range": distance > footage.limit, "range_limit": np.float64(footage.limit)}


def write_npz(tmp: Path, **arrays) -> None:
    with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a bare temp name
        np.savez_compressed(f, **arrays)


def reconstruct_video(
    model: ActorModel,
    video: str | Path,
    output: str | Path,
    extract_cfg: ExtractConfig,
    upscale: int = 1,
    save_arrays: str | Path | None = None,
    progress: bool = True,
    aligner: FaceAligner | None = None,
    batch: int = BATCH,
    mode: str = "seed",
    transfer_cfg: TransferConfig | None = None,
    gaps: str | Path | None = None,
) -> ReconstructSummary:
    """The actor's face for every frame of `video`, side by side with the driver's, as a video
    with the input's frame rate, frame count and audio. Nothing is written unless it succeeds.
    `mode`: the driving mode (facevae.transfer), with `transfer_cfg` (params.transfer). `gaps`: also
    a PNG of the faces driven farthest beyond the actor's footage (as beyond.png shows per clip)."""
    started = time.perf_counter()
    video, output = Path(video), Path(output)
    save_arrays = Path(save_arrays) if save_arrays is not None else None
    gaps = Path(gaps) if gaps is not None else None
    check_video_output(output)
    check_arrays_output(save_arrays)
    upscale = check_upscale(upscale)
    session = DriveSession(model, transfer_cfg or TransferConfig(), mode)
    check_gaps_output(gaps, session)
    info = probe(video)
    size = model.image_size
    panel = size * upscale
    layout = SideBySide(panel)
    aligner = aligner or aligner_for(extract_cfg, model.crop)
    audio_from = video if info.has_audio else None
    with ExitStack() as stack:
        arrays_tmp = stack.enter_context(atomic_path(save_arrays)) if save_arrays is not None else None
        writer = stack.enter_context(VideoWriter(output, fps=info.fps, audio_from=audio_from))
        bar = stack.enter_context(
            tqdm(total=info.frame_count, desc=video.name, unit="frame", disable=not progress, leave=False)
        )

        def emit(frame: np.ndarray) -> None:
            writer.write(frame)
            bar.update()

        collector = footage_gaps(info.frame_count) if gaps is not None else None
        batcher = FrameBatcher(model, layout, emit, keep_arrays=save_arrays is not None, batch=batch, session=session,
                               gaps=collector)
        frames = 0
        stack.enter_context(torch_threads(PIPELINE_TORCH_THREADS))
        for frame in iter_video_faces(video, extract_cfg, model.crop, aligner):
            frames += 1
            face = frame.face
            if face is None:
                batcher.add(None, None)
            else:
                batcher.add(driver_panel(frame.rgb, face.matrix, size, panel), face.crop, face.landmarks)
        batcher.flush()
        if batcher.faces == 0:
            raise FaceVAEError(f"no face found in any of its {frames} frames", video)
        footage = session.footage()
        if arrays_tmp is not None:
            write_npz(arrays_tmp, **batcher.arrays(), **footage_arrays(footage, batcher.found_rows), fps=np.float64(info.fps))
        if collector is not None:
            with atomic_path(gaps) as gaps_tmp:
                collector.png(gaps_tmp, video.name, session.mode, footage, nearest_actor_faces(model))
    return ReconstructSummary(
        input=video, output=output, frames=frames, with_face=batcher.faces, held=batcher.held,
        blank=batcher.blank, fps=info.fps, audio=audio_from is not None,
        seconds=time.perf_counter() - started, arrays=save_arrays,
        beyond_range=int(footage.beyond.sum()) if footage is not None else None, gaps=gaps,
    )  # fmt: skip


def list_images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image(p) and not p.name.startswith("."))
    if not files:
        raise FaceVAEError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder", folder)
    return files


def image_outputs(files: list[Path], output: Path, single: bool) -> list[Path]:
    """Where each input image's PNG goes: OUTPUT itself (one image, OUTPUT.png), else OUTPUT/<stem>.png."""
    if single and output.suffix.lower() in PNG_SUFFIXES:
        return [output]
    if output.suffix.lower() in OUTPUT_FORMATS or output.suffix.lower() in IMAGE_SUFFIXES - PNG_SUFFIXES:
        raise FaceVAEError("image input writes PNGs: give a folder (or a .png for a single image)", output)
    if output.exists() and not output.is_dir():
        raise FaceVAEError("not a folder", output)
    stems = [f.stem for f in files]
    names = [f"{f.stem}.png" if stems.count(f.stem) == 1 else f"{f.name}.png" for f in files]
    return [output / name for name in names]


def reconstruct_images(
    model: ActorModel,
    source: str | Path,
    output: str | Path,
    extract_cfg: ExtractConfig,
    upscale: int = 1,
    save_arrays: str | Path | None = None,
    aligner: FaceAligner | None = None,
    progress: bool = True,
    mode: str = "seed",
    transfer_cfg: TransferConfig | None = None,
) -> ReconstructSummary:
    """A photo (or every photo in a folder) -> side-by-side PNGs. The largest face of each photo
    drives the actor; in a folder, photos without a face are skipped (listed), a single photo
    without one is an error. Everything is computed before the first file is written."""
    started = time.perf_counter()
    source, output = Path(source), Path(output)
    save_arrays = Path(save_arrays) if save_arrays is not None else None
    check_arrays_output(save_arrays)
    upscale = check_upscale(upscale)
    single = source.is_file()
    files = [source] if single else list_images(source)
    targets = image_outputs(files, output, single)
    aligner = aligner or aligner_for(extract_cfg, model.crop)
    size, panel = model.image_size, model.image_size * upscale
    layout = SideBySide(panel)
    panels, crops, landmarks, kept, skipped = [], [], [], [], []
    quiet = not progress or single
    bar = tqdm(zip(files, targets), total=len(files), desc=source.name, unit="image", disable=quiet, leave=False)
    for file, target in bar:
        rgb = read_image(file)
        face = aligner.align_one(rgb)
        if face is None:
            if single:
                raise FaceVAEError("no face found in this image", file)
            skipped.append(file.name)
            continue
        panels.append(driver_panel(rgb, face.matrix, size, panel))
        crops.append(face.crop)
        landmarks.append(face.landmarks)
        kept.append(target)
    if not crops:
        raise FaceVAEError(f"no face found in any of its {len(files)} images", source)
    drivers = np.stack(crops)
    # photos in a folder are driven as one clip (a single photo is its own neutral: relative
    # and landmark modes then show the actor's neutral face)
    outputs = DriveSession(model, transfer_cfg or TransferConfig(), mode)(drivers, np.stack(landmarks))
    large = enlarge_batch(outputs, panel)
    with ExitStack() as stack:
        arrays_tmp = stack.enter_context(atomic_path(save_arrays)) if save_arrays is not None else None
        if arrays_tmp is not None:
            names = np.array([target.name for target in kept])
            write_npz(arrays_tmp, driver=drivers, output=outputs, found=np.ones(len(kept), dtype=bool), names=names)
        for target, driver, actor in zip(kept, panels, large):
            save_png(layout.compose(driver, actor), target)
    return ReconstructSummary(
        input=source, output=output, frames=len(files), with_face=len(kept), held=0, blank=0, fps=0.0,
        audio=False, seconds=time.perf_counter() - started, arrays=save_arrays, skipped=skipped,
    )  # fmt: skip


def reconstruct(
    model: ActorModel,
    source: str | Path,
    output: str | Path,
    extract_cfg: ExtractConfig,
    upscale: int = 1,
    save_arrays: str | Path | None = None,
    progress: bool = True,
    mode: str = "seed",
    transfer_cfg: TransferConfig | None = None,
    gaps: str | Path | None = None,
) -> ReconstructSummary:
    """Dispatch on the input: a video -> a video, a photo or a folder of photos -> PNGs."""
    source = Path(source)
    drive = {"mode": mode, "transfer_cfg": transfer_cfg}
    if source.is_dir() or (source.is_file() and is_image(source)):
        if gaps is not None:
            raise FaceVAEError("--gaps is for a video input (photos have no clip to pick the worst moments of)", source)
        return reconstruct_images(model, source, output, extract_cfg, upscale, save_arrays, progress=progress, **drive)
    if not source.exists():
        raise FaceVAEError("no such file or folder", source)
    return reconstruct_video(model, source, output, extract_cfg, upscale, save_arrays, progress=progress, gaps=gaps,
                             **drive)


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
