"""Plausibility (issue 24): an output face against her most similar training frame, pixels only."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facevae.apps.reconstruct import reconstruct_video
from facevae.cli import app
from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.data.dataset import read_split
from facevae.evaluation.plausibility import PLAUSIBLE, PlausibilityReference
from facevae.transfer.fit import stored_frames
from tests.facedata import face_crops
from tests.media import astronaut_frames, coffee_frames, write_clip


def ghost(face: np.ndarray, seed: int) -> np.ndarray:
    """A blotchy, smeared version of a face: blurred, with coarse blotches of noise over it."""
    rng = np.random.default_rng(seed)
    blotches = cv2.resize(rng.normal(0, 45, (8, 8, 3)).astype(np.float32), face.shape[:2][::-1],
                          interpolation=cv2.INTER_CUBIC)
    smeared = cv2.GaussianBlur(face, (0, 0), 3).astype(np.float32)
    return np.clip(smeared + blotches, 0, 255).astype(np.uint8)


def test_her_own_frames_are_plausible_and_ghosts_are_not():
    frames = face_crops(30)
    reference = PlausibilityReference(frames[::2])  # her training frames: every other crop
    own = reference(frames[1::2])  # held-out frames of her, between the training ones
    ghosts = reference(np.stack([ghost(f, i) for i, f in enumerate(frames[1::2])]))
    assert own.share() == 1.0 and ghosts.share() == 0.0
    assert np.median(own.score) > 0.85 and ghosts.score.max() < PLAUSIBLE


def test_the_nearest_frame_is_the_most_similar_one_and_the_worst_come_first():
    frames = face_crops(20)
    reference = PlausibilityReference(frames)
    faces = np.stack([frames[7], ghost(frames[3], 0), frames[12]])
    result = reference(faces)
    assert result.score[[0, 2]] == pytest.approx(1.0, abs=1e-5)  # a frame she has, exactly
    assert result.nearest[0] == 7 and result.nearest[2] == 12
    assert result.least(1).tolist() == [1]
    assert reference(faces[:0]).score.shape == (0,) and np.isnan(reference(faces[:0]).share())


def test_reconstruct_scores_every_face_it_drives(model, tiny, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", coffee_frames(2) + astronaut_frames(6), fps=10)
    reference = PlausibilityReference.from_dataset(tiny.dataset)
    summary = reconstruct_video(model, clip, tmp_path / "out.mp4", ExtractConfig(), progress=False,
                                save_arrays=tmp_path / "out.npz", plausibility=reference)
    arrays = np.load(tmp_path / "out.npz")
    assert np.isnan(arrays["plausibility"][:2]).all() and np.isfinite(arrays["plausibility"][2:]).all()
    np.testing.assert_allclose(arrays["plausibility"][2:], reference(arrays["output"][2:]).score, atol=1e-6)
    assert len(summary.plausibility) == 6 and "plausibility bar" in summary.describe()


def test_a_dataset_at_another_crop_size_is_refused_naming_it(tmp_path):
    reference = PlausibilityReference(face_crops(4, size=32), source=tmp_path / "small.h5")
    with pytest.raises(FaceVAEError, match="small.h5"):
        reference(face_crops(2, size=64))


def test_the_model_keeps_her_training_frames_so_reconstruct_needs_no_dataset(model, tiny, tmp_path):
    """model.pt stores her clean training frames (transfer.stored_frames): `facevae reconstruct` without
    --data scores the same plausibility as with it."""
    her_frames = read_split(tiny.dataset, "train", clean_only=True)
    np.testing.assert_array_equal(model.transfer.frames, her_frames)
    clip = write_clip(tmp_path / "clip.mp4", astronaut_frames(4), fps=10)
    runs = {}
    for name, extra in (("stored", []), ("dataset", ["--data", str(tiny.dataset)])):
        arrays = tmp_path / f"{name}.npz"
        result = CliRunner().invoke(app, ["reconstruct", "--model", str(tiny.model_path), "--input", str(clip),
                                          "--output", str(tmp_path / f"{name}.mp4"), "--save-arrays", str(arrays),
                                          "--no-progress", *extra])
        assert result.exit_code == 0, result.output
        assert "plausibility bar" in result.output
        runs[name] = np.load(arrays)["plausibility"]
    np.testing.assert_array_equal(runs["stored"], runs["dataset"])


def test_stored_frames_are_spread_over_hers_and_can_be_left_out():
    frames = face_crops(10)
    assert np.array_equal(stored_frames(frames, 4), frames[[0, 3, 6, 9]])
    assert np.array_equal(stored_frames(frames, 40), frames) and stored_frames(frames, 0) is None
