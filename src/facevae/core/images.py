"""Picture grids of faces with numpy + Pillow only (no torchvision): for MLflow, reports and videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from facevae.core.atomic import atomic_path


def as_uint8_nhwc(images: np.ndarray) -> np.ndarray:
    """Accept uint8 NHWC, or float NCHW / NHWC in [0, 1]; return uint8 NHWC."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (N, H, W, 3), got shape {images.shape}")
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


def spread(n: int, k: int) -> np.ndarray:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    return np.arange(n) if k >= n else np.linspace(0, n - 1, k).round().astype(int)


def distinct_images(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the first copy of each distinct image, each image's index into those rows):
    images[rows][inverse] == images. Retrieval rows repeat a few of her frames hundreds of times."""
    flat = np.ascontiguousarray(images).reshape(len(images), int(np.prod(images.shape[1:])))
    keys = flat.view(np.dtype((np.void, flat.shape[1] * flat.dtype.itemsize))).ravel()
    _, rows, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return rows, inverse.ravel()


def make_grid(images: np.ndarray, ncols: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile N images row by row into one uint8 (H', W', 3) picture; missing cells stay pad_value."""
    images = as_uint8_nhwc(images)
    n, h, w, c = images.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = pad + (i // ncols) * (h + pad), pad + (i % ncols) * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def stack_rows(*rows: np.ndarray) -> np.ndarray:
    """Interleave equally long batches as rows, e.g. originals above their reconstructions."""
    rows = tuple(as_uint8_nhwc(r) for r in rows)
    if len({len(r) for r in rows}) != 1:
        raise ValueError("every row needs the same number of images")
    return np.concatenate(rows, axis=0)


def upscale(grid: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement so that 64x64 faces are visible in a browser."""
    return grid if factor <= 1 else grid.repeat(factor, axis=0).repeat(factor, axis=1)


def to_pil(picture: np.ndarray) -> Image.Image:
    """One picture (H, W, 3), uint8 or float in [0, 1], as a Pillow image."""
    return Image.fromarray(as_uint8_nhwc(picture)[0])


def save_png(grid: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        to_pil(grid).save(tmp, format="PNG")
    return path
