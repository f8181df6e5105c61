"""HDF5 datasets of one actor's aligned faces: the contract between extraction and training.

Layout of `data/hdf5/<actor>.h5`:
    images     uint8   (N, S, S, 3)  chunked, gzip-compressed
    landmarks  float32 (N, 68, 2)    in crop pixel coordinates (NaN when unknown)
    source     str     (N,)          video (or image) file name
    frame      int64   (N,)          0-based frame index in its video
    split      uint8   (N,)          0 = train, 1 = val (contiguous time blocks, see `assign_split`)
    loss_mask  uint8   (N, S, S)     optional: 1 = pixel counts in the reconstruction loss, 0 = masked
                                     (an occluder, e.g. the lower face of `occluded:mouth` frames)
    attrs: size, coverage, extract_params (JSON), build_params (JSON), format_version
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from facevae.core.atomic import atomic_path
from facevae.core.config import BuildConfig
from facevae.core.errors import FaceVAEError
from facevae.data.curation import apply_curation, load_curation
from facevae.faces.occlusion import lower_face_mask

SPLITS = {"train": 0, "val": 1}

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

FORMAT_VERSION = 1


def assign_split(frames: np.ndarray, cfg: BuildConfig) -> np.ndarray:
    """Split one video's kept frames (any order) into train/val by contiguous time blocks.

    The video's kept frames, in time order, are cut into `val_blocks` equal segments and the
    last `val_fraction` of each segment goes to val, so val covers the whole video without
    being a near-copy of its neighbouring train frames.
    """
    n = len(frames)
    split = np.zeros(n, dtype=np.uint8)
    n_val = int(round(n * cfg.val_fraction))
    if n_val == 0:
        return split
    order = np.argsort(frames, kind="stable")
    for segment in np.array_split(order, min(cfg.val_blocks, n_val)):
        take = int(round(len(segment) * cfg.val_fraction)) or 1
        split[segment[-take:]] = SPLITS["val"]
    return split


def write_dataset(
    path: str | Path,
    images: np.ndarray,
    landmarks: np.ndarray,
    source: Sequence[str],
    frame: np.ndarray,
    split: np.ndarray,
    attrs: dict[str, Any] | None = None,
    loss_mask: np.ndarray | None = None,
) -> Path:
    """Write the HDF5 dataset atomically (a temp file renamed into place)."""
    path = Path(path)
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise FaceVAEError(f"images must be (N, S, S, 3), got {images.shape}", path)
    n = len(images)
    if n == 0:
        raise FaceVAEError("no images to write", path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        chunk = (min(n, 256), *images.shape[1:])
        h5.create_dataset("images", data=images, chunks=chunk, compression="gzip", compression_opts=4)
        h5.create_dataset("landmarks", data=np.asarray(landmarks, dtype=np.float32).reshape(n, 68, 2))
        h5.create_dataset("source", data=np.asarray(source, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("frame", data=np.asarray(frame, dtype=np.int64))
        h5.create_dataset("split", data=np.asarray(split, dtype=np.uint8))
        if loss_mask is not None:
            mask = np.asarray(loss_mask, dtype=np.uint8).reshape(n, *images.shape[1:3])
            h5.create_dataset("loss_mask", data=mask, chunks=chunk[:3], compression="gzip", compression_opts=4)
        h5.attrs["size"] = images.shape[1]
        h5.attrs["format_version"] = FORMAT_VERSION
        for key, value in (attrs or {}).items():
            h5.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
    return path


def open_dataset(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise FaceVAEError("dataset not found", path)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise FaceVAEError(f"not a readable HDF5 file ({exc})", path) from None
    missing = {"images", "split"} - set(h5.keys())
    if missing:
        h5.close()
        raise FaceVAEError(f"not a facevae dataset: missing {', '.join(sorted(missing))}", path)
    return h5


def table_landmarks(table) -> np.ndarray:
    """(N, 68, 2) float64 crop-pixel landmarks of frames.csv rows (`lm_x0..lm_y67`); NaN where a
    frame has no face (blank cells, as read with keep_default_na=False, included)."""
    import pandas as pd

    def axis(name: str) -> np.ndarray:
        return table[[f"lm_{name}{i}" for i in range(68)]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)

    return np.stack([axis("x"), axis("y")], axis=-1)


def clean_rows(h5: h5py.File) -> np.ndarray:
    """(N,) bool: the rows with no masked region (all rows when the dataset has no loss masks)."""
    n = len(h5["split"])
    return h5["loss_mask"][:].reshape(n, -1).all(1) if "loss_mask" in h5 else np.ones(n, bool)


def read_split(path: str | Path, split: str, clean_only: bool = False, field: str = "images") -> np.ndarray:
    """All images of one split as uint8 (N, S, S, 3), in file order; `clean_only`: without the
    images that have a masked region (their loss mask is not all ones). `field` reads another
    per-frame array the same way (e.g. "landmarks")."""
    if split not in SPLITS:
        raise FaceVAEError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    with open_dataset(path) as h5:
        rows = h5["split"][:] == SPLITS[split]
        if clean_only:
            rows &= clean_rows(h5)
        return h5[field][:][rows]


def read_split_masks(path: str | Path, split: str) -> np.ndarray | None:
    """The split's loss masks, uint8 (N, S, S) in file order, or None when the dataset has none."""
    with open_dataset(path) as h5:
        if "loss_mask" not in h5:
            return None
        return h5["loss_mask"][:][h5["split"][:] == SPLITS[split]]


def dataset_counts(path: str | Path) -> dict[str, int]:
    with open_dataset(path) as h5:
        split = h5["split"][:]
    return {name: int((split == code).sum()) for name, code in SPLITS.items()}


def build_actor_dataset(
    faces_dir: str | Path, out_path: str | Path, cfg: BuildConfig, curation: str | Path | None = None
) -> dict[str, int]:
    """Pack the kept faces of an `extract` output folder into one HDF5 dataset.

    `curation` is an optional `data/curation/<actor>.yaml` (absent file = no curation): its
    exclusions and force-keeps are applied before the split. Returns the split counts plus
    `curated_excluded` / `curated_kept` (frames curation removed / rescued).
    """
    import pandas as pd

    faces_dir = Path(faces_dir)
    hand = load_curation(curation)
    table_path, crops_path = faces_dir / "frames.csv", faces_dir / "crops.h5"
    for required in (table_path, crops_path):
        if not required.exists():
            raise FaceVAEError("missing; run `facevae extract` first", required)
    table = pd.read_csv(table_path, keep_default_na=False)
    curated = apply_curation(table, hand)
    kept = table[curated.kept].reset_index(drop=True)
    if kept.empty:
        raise FaceVAEError("no kept faces to build a dataset from", hand.path if hand else table_path)
    with h5py.File(crops_path, "r") as h5:
        crops = h5["images"]
        index = kept["crop_index"].to_numpy()
        order = np.argsort(index)  # h5py fancy indexing needs increasing indices
        images = np.empty((len(index), *crops.shape[1:]), dtype=np.uint8)
        images[order] = crops[index[order]]
        extract_params = h5.attrs.get("extract_params", crops.attrs.get("extract_params", "{}"))
    landmarks = table_landmarks(kept).astype(np.float32)
    masked = kept["reason"].astype(str).str.startswith("occluded:").to_numpy()
    loss_mask = np.ones((len(kept), *images.shape[1:3]), dtype=np.uint8)
    loss_mask[masked] = lower_face_mask(landmarks[masked], images.shape[1], cfg.mask_margin)
    split = np.zeros(len(kept), dtype=np.uint8)
    for _, rows in kept.groupby("video").groups.items():
        rows = np.asarray(rows)
        split[rows] = assign_split(kept.loc[rows, "frame"].to_numpy(), cfg)
    extract_info = json.loads(extract_params)
    write_dataset(
        out_path, images, landmarks, kept["video"].astype(str).tolist(), kept["frame"].to_numpy(), split,
        attrs={
            "coverage": float(extract_info.get("coverage", float("nan"))),
            "extract_params": extract_info,
            "build_params": cfg.model_dump(),
            "curation": {"file": str(hand.path) if hand.path else None, "excluded": curated.excluded,
                         "kept": curated.rescued},
        },
        loss_mask=loss_mask,
    )  # fmt: skip
    return {**dataset_counts(out_path), "masked": int(masked.sum()), "curated_excluded": curated.excluded,
            "curated_kept": curated.rescued}  # fmt: skip


def images_to_hdf5(folder: str | Path, out_path: str | Path, size: int, cfg: BuildConfig) -> dict[str, int]:
    """The seed's `images_to_hdf5`: every image of a folder, resized to size x size, into one dataset.

    Files are taken in name order, which is treated as time order for the train/val split.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise FaceVAEError("not a folder", folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FaceVAEError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder", folder)
    images = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                images[i] = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS))
        except (UnidentifiedImageError, OSError) as exc:
            raise FaceVAEError(f"not a readable image ({exc.__class__.__name__})", file) from None
    frames = np.arange(len(files))
    write_dataset(
        out_path, images, np.full((len(files), 68, 2), np.nan, dtype=np.float32),
        [f.name for f in files], frames, assign_split(frames, cfg),
        attrs={"build_params": cfg.model_dump(), "source_folder": str(folder)},
    )
    return dataset_counts(out_path)


def crop_geometry(path: str | Path) -> dict[str, Any] | None:
    """{"size", "coverage"} of a dataset's crops, when its attrs record them (extract outputs do)."""
    with open_dataset(path) as h5:
        size, coverage = h5.attrs.get("size"), h5.attrs.get("coverage")
    if size is None or coverage is None or not np.isfinite(coverage):
        return None
    return {"size": int(size), "coverage": float(coverage)}
