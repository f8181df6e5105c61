import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage.data import astronaut

from facevae.core.config import BuildConfig
from facevae.core.errors import FaceVAEError
from facevae.data.dataset import (
    SPLITS,
    assign_split,
    build_actor_dataset,
    images_to_hdf5,
    read_split,
    read_split_masks,
)


def face_crops(n: int, size: int = 64) -> np.ndarray:
    """Crops around the astronaut's face, shifted a little per frame like a moving head."""
    img = astronaut()
    crops = [img[20 + i % 7: 220 + i % 7, 160 + i % 5: 360 + i % 5] for i in range(n)]
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size))) for c in crops])


def test_val_blocks_are_contiguous_and_spread_over_the_video():
    frames = np.arange(300)
    split = assign_split(frames, BuildConfig(val_fraction=0.2, val_blocks=3))
    assert split.sum() == 60
    val_frames = frames[split == 1]
    runs = np.split(val_frames, np.where(np.diff(val_frames) != 1)[0] + 1)
    assert len(runs) == 3
    assert val_frames.min() > 50 and val_frames.max() == 299
    assert max(len(r) for r in runs) - min(len(r) for r in runs) <= 1


def test_split_does_not_depend_on_row_order():
    frames = np.arange(100)
    shuffled = np.random.default_rng(0).permutation(frames)
    split = assign_split(shuffled, BuildConfig())
    assert set(shuffled[split == 1]) == set(frames[assign_split(frames, BuildConfig()) == 1])


def write_fake_extract(folder, n=40, kept_every=4):
    """An extract output folder as `facevae extract` writes it (frames.csv + crops.h5)."""
    folder.mkdir()
    crops = face_crops(n)
    with h5py.File(folder / "crops.h5", "w") as h5:
        h5.create_dataset("images", data=crops)
        h5.attrs["extract_params"] = '{"coverage": 1.6, "crop_size": 64}'
    rows = []
    for i in range(n):
        dropped = i % kept_every == 0
        row = {"video": "a.mp4" if i < n // 2 else "b.mov", "frame": i % (n // 2), "kept": int(not dropped),
               "reason": "blur" if dropped else "", "crop_index": i}
        row.update({f"lm_x{k}": float(k) for k in range(68)})
        row.update({f"lm_y{k}": float(i) for k in range(68)})
        rows.append(row)
    pd.DataFrame(rows).to_csv(folder / "frames.csv", index=False)
    return crops


def test_build_packs_only_kept_faces_with_their_landmarks(tmp_path):
    crops = write_fake_extract(tmp_path / "faces")
    out = tmp_path / "actor.h5"
    counts = build_actor_dataset(tmp_path / "faces", out, BuildConfig(val_fraction=0.2, val_blocks=2))
    assert counts["train"] + counts["val"] == 30
    with h5py.File(out) as h5:
        assert h5["images"].shape == (30, 64, 64, 3) and h5["images"].dtype == np.uint8
        assert h5["images"].compression == "gzip"
        kept_rows = [i for i in range(40) if i % 4]
        np.testing.assert_array_equal(h5["images"][:], crops[kept_rows])
        np.testing.assert_array_equal(h5["landmarks"][:, 0, 1], np.array(kept_rows, dtype=np.float32))
        assert set(h5["source"].asstr()[:]) == {"a.mp4", "b.mov"}
        assert h5.attrs["coverage"] == 1.6
        for video in ("a.mp4", "b.mov"):  # each video has its own val blocks
            assert (h5["split"][:][h5["source"].asstr()[:] == video] == SPLITS["val"]).any()
    assert len(read_split(out, "val")) == counts["val"]


def test_build_without_extract_output_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(FaceVAEError, match="frames.csv"):
        build_actor_dataset(tmp_path, out, BuildConfig())
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_images_to_hdf5_resizes_a_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, crop in enumerate(face_crops(10, size=80)):
        Image.fromarray(crop).save(folder / f"{i:03d}.png")
    counts = images_to_hdf5(folder, tmp_path / "out.h5", 32, BuildConfig(val_fraction=0.2, val_blocks=1))
    assert counts == {"train": 8, "val": 2}
    assert read_split(tmp_path / "out.h5", "train").shape == (8, 32, 32, 3)


def test_images_to_hdf5_cli_rejects_a_broken_image_and_leaves_nothing(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(face_crops(1)[0]).save(folder / "a.png")
    (folder / "b.png").write_text("not an image")
    out = tmp_path / "out.h5"
    result = subprocess.run([sys.executable, "-m", "facevae.cli", "images-to-hdf5", str(folder), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "b.png" in result.stderr and "not a readable image" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FaceVAEError, match="no images"):
        images_to_hdf5(tmp_path, tmp_path / "o.h5", 64, BuildConfig())


def test_build_masks_the_lower_face_of_occluded_mouth_frames_only(tmp_path):
    write_fake_extract(tmp_path / "faces", n=40, kept_every=100)
    table = pd.read_csv(tmp_path / "faces" / "frames.csv", keep_default_na=False)
    for k in range(68):  # eyes at y 20, mouth at y 46
        table[f"lm_y{k}"] = 46.0 if k >= 48 else 20.0
    table.loc[[3, 4, 25], "reason"] = "occluded:mouth"
    table.to_csv(tmp_path / "faces" / "frames.csv", index=False)
    out = tmp_path / "actor.h5"
    counts = build_actor_dataset(tmp_path / "faces", out, BuildConfig(val_fraction=0.2, val_blocks=2, mask_margin=0.1))
    assert counts["masked"] == 3
    with h5py.File(out) as h5:
        mask = h5["loss_mask"][:]
    assert mask.shape == (39, 64, 64) and mask.dtype == np.uint8  # row 0 is dropped (blur)
    masked = ~mask.reshape(39, -1).all(1)
    assert np.flatnonzero(masked).tolist() == [2, 3, 24]
    assert mask[2, :22].all() and not mask[2, 23:].any()  # eyes and brows count, nose, mouth and chin do not
    with h5py.File(out) as h5:
        train = h5["split"][:] == SPLITS["train"]
    assert len(read_split(out, "train", clean_only=True)) == (train & ~masked).sum()
    assert len(read_split(out, "train")) == train.sum()
    np.testing.assert_array_equal(read_split_masks(out, "train"), mask[train])


def test_driving_statistics_are_fitted_on_clean_frames_only(tmp_path):
    from facevae.core.config import TransferConfig
    from facevae.transfer.fit import fit_transfer_from_dataset

    write_fake_extract(tmp_path / "faces", n=40, kept_every=100)
    table = pd.read_csv(tmp_path / "faces" / "frames.csv", keep_default_na=False)
    table.loc[[3, 4, 25], "reason"] = "occluded:mouth"
    table.to_csv(tmp_path / "faces" / "frames.csv", index=False)
    build_actor_dataset(tmp_path / "faces", tmp_path / "a.h5", BuildConfig())

    class MeanColour:  # a stand-in encoder: what the fit does with codes is not under test here
        def encode(self, images):
            return images.reshape(len(images), -1, 3).mean(1).astype(np.float32)

    assets = fit_transfer_from_dataset(MeanColour(), tmp_path / "a.h5", TransferConfig())
    assert assets.info["frames"] == 39 - 3
