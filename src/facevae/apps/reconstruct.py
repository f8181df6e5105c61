"""A stranger's face drives the actor: find it, align it as the actor's faces were, encode, decode.

Driver faces go through the code extraction uses: a video's frames through `track_video`
(full detection now and then, landmark tracking in between: `FaceTracker`), a photo through
`FaceAligner.align`, both ending in `FaceAligner.align_landmarks` with the model's own crop
geometry. When several faces are in view the one followed so far is kept, else the largest.

`reconstruct_video` streams: frames are decoded, tracked and aligned one at a time, the
network runs on `batch` faces at once, and composed frames go straight to the (atomic)
video writer, so memory stays flat however long the video (`--save-arrays` aside).

Library entry points (the evaluation stage uses them): `align_driver` (a whole driver's faces
in memory) and `ActorModel` in facevae.transfer.actor (encode / decode / reconstruct).
"""

from __future__ import annotations

import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from facevae.apps.render import (
    NEUTRAL,
    SideBySide,
    check_upscale,
    driver_panel,
    enlarge_batch,
)
from facevae.core.atomic import atomic_path
from facevae.core.config import ExtractConfig, TransferConfig
from facevae.core.errors import FaceVAEError
from facevae.core.images import save_png
from facevae.data.dataset import IMAGE_SUFFIXES
from facevae.data.video import OUTPUT_FORMATS, VideoWriter, probe
from facevae.evaluation.gaps import FootageGaps, gap_window
from facevae.evaluation.plausibility import PLAUSIBLE, PlausibilityReference
from facevae.extract.drivers import aligner_for, is_image, iter_video_faces, read_image
from facevae.faces.align import FaceAligner
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import DriveSession
from facevae.transfer.footage import Footage

PNG_SUFFIXES = frozenset({".png"})

BATCH = 32  # faces per network call: amortises the per-call cost, keeps latency and memory small

# Torch threads while streaming a video. The network is ~10% of the work per frame; the rest
# (decoding, dlib, x264) keeps the cores busy between batches, so a second OpenMP thread spends
# each parallel region waiting to be scheduled: on 2 busy cores, 1 thread ran 3x faster overall.
PIPELINE_TORCH_THREADS = 1

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
    plausibility: np.ndarray | None = None  # per face: SSIM with her most similar training frame (--data)
    covered: int = 0  # faces whose mouth was covered (a hand): each held the last uncovered face

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
        if self.covered:
            beyond += f"; {self.covered} faces with a covered mouth held the last uncovered face"
        if self.plausibility is not None and len(self.plausibility):
            low = int((self.plausibility < PLAUSIBLE).sum())
            beyond += (f"; {low} of the {len(self.plausibility)} faces ({100 * low / len(self.plausibility):.0f}%) "
                       f"below the plausibility bar {PLAUSIBLE} (least {self.plausibility.min():.2f})")
        return (
            f"{self.output}: {what}, {self.with_face} with a face, {missing}{audio}; "
            f"{self.seconds:.1f} s ({rate:.1f} frames/s){beyond}"
        )


class FrameBatcher:
    """Collects frames in order, runs the network on `batch` faces at a time, emits composed frames.

    A frame without a face repeats the last composed frame (the blank one before any face).
    Faces go through a driving session (facevae.transfer.drive, the seed's decode(mu) by default); its
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
        plausibility: PlausibilityReference | None = None,
    ):
        self.model, self.layout, self.emit, self.batch = model, layout, emit, batch
        self.session = session or DriveSession(model, TransferConfig(), "seed")
        self.gaps = gaps  # facevae.evaluation.gaps.FootageGaps: the faces driven farthest from the actor's footage
        self.plausibility = plausibility  # scores each output against her training frames
        self.scores: list[np.ndarray] = []
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
        if self.plausibility is not None and outputs is not None:
            self.scores.append(self.plausibility(outputs).score)
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

    def face_scores(self) -> np.ndarray | None:
        """Plausibility of every face driven so far (None: not measured)."""
        if self.plausibility is None:
            return None
        return np.concatenate(self.scores) if self.scores else np.zeros(0)

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

    return FootageGaps(gap_window(frames))


def nearest_actor_faces(model: ActorModel) -> Callable[[np.ndarray], np.ndarray]:
    """Rows of the model's actor codes -> her faces as the model decodes them (model.pt holds her
    training frames' codes, not the frames)."""
    return lambda rows: model.decode(model.transfer.codes[rows])


def plausibility_arrays(scores: np.ndarray | None, found: list[bool]) -> dict[str, np.ndarray]:
    """--save-arrays' `plausibility` column (NaN without a face), when measured (--data)."""
    if scores is None:
        return {}
    column = np.full(len(found), np.nan)
    column[np.asarray(found, dtype=bool)] = scores
    return {"plausibility": column}


def covered_arrays(covered: np.ndarray | None, found: list[bool]) -> dict[str, np.ndarray]:
    """--save-arrays' `covered` column: the face's mouth was covered and it held the last uncovered
    face (False without a face); none where the hold is off."""
    if covered is None:
        return {}
    column = np.zeros(len(found), dtype=bool)
    column[np.asarray(found, dtype=bool)] = covered
    return {"covered": column}


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
    plausibility: PlausibilityReference | None = None,
) -> ReconstructSummary:
    """The actor's face for every frame of `video`, side by side with the driver's, as a video
    with the input's frame rate, frame count and audio. Nothing is written unless it succeeds.
    `mode`: the driving mode (facevae.transfer.drive), with `transfer_cfg` (params.transfer). `gaps`: also
    a PNG of the faces driven farthest beyond the actor's footage (as beyond.png shows per clip).
    `plausibility`: her training frames, to score every output face against (facevae.evaluation.plausibility)."""
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
                               gaps=collector, plausibility=plausibility)
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
            write_npz(arrays_tmp, **batcher.arrays(), **footage_arrays(footage, batcher.found_rows),
                      **plausibility_arrays(batcher.face_scores(), batcher.found_rows),
                      **covered_arrays(session.covered_flags(), batcher.found_rows), fps=np.float64(info.fps))
        if collector is not None:
            with atomic_path(gaps) as gaps_tmp:
                collector.png(gaps_tmp, video.name, session.mode, footage, nearest_actor_faces(model))
    return ReconstructSummary(
        input=video, output=output, frames=frames, with_face=batcher.faces, held=batcher.held,
        blank=batcher.blank, fps=info.fps, audio=audio_from is not None,
        seconds=time.perf_counter() - started, arrays=save_arrays,
        beyond_range=int(footage.beyond.sum()) if footage is not None else None, gaps=gaps,
        plausibility=batcher.face_scores(), covered=session.covered_faces,
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
    plausibility: PlausibilityReference | None = None,
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
    scores = plausibility(outputs).score if plausibility is not None else None
    with ExitStack() as stack:
        arrays_tmp = stack.enter_context(atomic_path(save_arrays)) if save_arrays is not None else None
        if arrays_tmp is not None:
            names = np.array([target.name for target in kept])
            found = np.ones(len(kept), dtype=bool)
            write_npz(arrays_tmp, driver=drivers, output=outputs, found=found, names=names,
                      **plausibility_arrays(scores, found))
        for target, driver, actor in zip(kept, panels, large):
            save_png(layout.compose(driver, actor), target)
    return ReconstructSummary(
        input=source, output=output, frames=len(files), with_face=len(kept), held=0, blank=0, fps=0.0,
        audio=False, seconds=time.perf_counter() - started, arrays=save_arrays, skipped=skipped,
        plausibility=scores,
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
    plausibility: PlausibilityReference | None = None,
) -> ReconstructSummary:
    """Dispatch on the input: a video -> a video, a photo or a folder of photos -> PNGs."""
    source = Path(source)
    drive = {"mode": mode, "transfer_cfg": transfer_cfg, "plausibility": plausibility}
    if source.is_dir() or (source.is_file() and is_image(source)):
        if gaps is not None:
            raise FaceVAEError("--gaps is for a video input (photos have no clip to pick the worst moments of)", source)
        return reconstruct_images(model, source, output, extract_cfg, upscale, save_arrays, progress=progress, **drive)
    if not source.exists():
        raise FaceVAEError("no such file or folder", source)
    return reconstruct_video(model, source, output, extract_cfg, upscale, save_arrays, progress=progress, gaps=gaps,
                             **drive)
