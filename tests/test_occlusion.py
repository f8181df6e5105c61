"""The occlusion score: a hand over the mouth is flagged (masked or dropped), strong expressions are not."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from skimage.data import astronaut

from facevae.core.config import ExtractConfig
from facevae.extract.extractor import extract_actor
from facevae.faces.occlusion import (
    OUTER_LIP,
    hysteresis,
    lower_face_mask,
    mouth_patches,
    occlusion_scores,
)

LABELS = Path(__file__).parent / "data" / "pexels_occlusion_labels.csv"


def test_a_covered_mouth_scores_high_and_a_moved_one_does_not():
    face = np.asarray(astronaut()[20:220:3, 160:360:3][:64, :64])
    crops = np.repeat(face[None], 20, axis=0).copy()
    landmarks = np.full((20, 68, 2), 32.0, dtype=np.float32)
    landmarks[:, OUTER_LIP, 0] = np.linspace(22, 42, len(OUTER_LIP))
    landmarks[:, OUTER_LIP, 1] = 48.0
    # frame 3: the whole crop (and its landmarks) shifted: patches follow the landmarks
    crops[3] = np.roll(face, 3, axis=0)
    landmarks[3, OUTER_LIP, 1] += 3
    crops[7, 40:60] = np.linspace(150, 230, 64, dtype=np.uint8)[None, :, None]  # a smooth "hand" over the mouth
    scores = occlusion_scores(mouth_patches(crops, landmarks))
    assert scores.shape == (20,) and scores[0] == pytest.approx(0, abs=1e-5)
    assert scores[3] < 0.05 and scores[7] > 0.5


def test_no_crops_no_scores():
    assert occlusion_scores(np.zeros((0, 12, 75), np.float32)).shape == (0,)


def test_hysteresis_grows_runs_that_reach_high_and_nothing_else():
    scores = np.array([0.05, 0.2, 0.5, 0.2, 0.1, 0.2, 0.25, 0.1, np.nan, 0.2, 0.4])
    flags = hysteresis(scores, high=0.3, low=0.15)
    # 1-3: a run above low around 0.5; 5-6: above low but never high; 9: cut off from 10 by nothing
    assert flags.tolist() == [False, True, True, True, False, False, False, False, False, True, True]
    assert hysteresis(scores, high=0.3, low=0.3).tolist() == (np.nan_to_num(scores) > 0.3).tolist()
    assert not hysteresis(np.array([np.nan, 0.2, np.nan, 0.9]), 1.0, 0.1).any()


def test_lower_face_mask_keeps_eyes_and_brows_and_masks_mouth_nose_chin():
    landmarks = np.zeros((2, 68, 2))
    landmarks[:, 17:27, 1] = 12  # brows
    landmarks[:, 36:48, 1] = 20  # eyes (lower lids included)
    landmarks[:, 48:68, 1] = 46  # mouth: 26 px below the eyes
    landmarks[1, :, 1] += 4  # a face lower in its crop
    masks = lower_face_mask(landmarks, 64, margin=0.1)
    assert masks.shape == (2, 64, 64) and masks.dtype == np.uint8
    for mask, eyes in zip(masks, (20, 24)):
        line = eyes + 2.6
        assert mask[: int(np.ceil(line))].all() and not mask[int(np.ceil(line)) :].any()
    assert lower_face_mask(np.full((1, 68, 2), np.nan), 64)[0, :25].all()  # no landmarks: upper 40% kept


@pytest.mark.slow
def test_pexels_hand_over_face_is_occluded_and_strong_expressions_are_kept(sample_clips_dir, tmp_path):
    summary = extract_actor([sample_clips_dir / "WolfgangLanger_Pexels.mp4"], tmp_path / "out", ExtractConfig(),
                            progress=False)  # fmt: skip
    frames = pd.read_csv(tmp_path / "out" / "frames.csv", keep_default_na=False).set_index("frame")
    labels = pd.read_csv(LABELS).set_index("frame")["occluded"].astype(bool)
    assert len(labels) == len(frames) == 472
    flagged = frames["reason"] == "occluded:mouth"  # the default: kept with the lower face masked
    assert flagged[labels].mean() >= 0.9 and flagged[~labels].mean() <= 0.05
    assert (frames.loc[flagged, "kept"] == 1).all()
    # the hand's first and last frames score lower; hysteresis takes them with their run
    assert (frames.loc[flagged, "occlusion"] <= ExtractConfig().max_occlusion).any()
    for frame in (100, 150, 200):  # a hand over the mouth and nose
        assert flagged[frame]
    # eyes shut while crying, wide-eyed with the mouth open, a broad smile, a wink
    for frame in (20, 45, 232, 300, 288, 450):
        assert frames.loc[frame, "kept"] == 1 and frames.loc[frame, "reason"] == "", frame
    stats = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert stats["totals"]["masked"] == summary.masked == flagged.sum() and summary.dropped["occluded"] == 0

    dropping = ExtractConfig(occluded="drop")
    summary = extract_actor([sample_clips_dir / "WolfgangLanger_Pexels.mp4"], tmp_path / "drop", dropping,
                            progress=False)  # fmt: skip
    dropped = pd.read_csv(tmp_path / "drop" / "frames.csv", keep_default_na=False).set_index("frame")
    assert ((dropped["reason"] == "occluded") == flagged).all() and (dropped.loc[flagged, "kept"] == 0).all()
    assert summary.dropped["occluded"] == flagged.sum() and summary.masked == 0
    assert not (tmp_path / "drop" / "crops" / "WolfgangLanger_Pexels_000150.png").exists()
    assert (tmp_path / "out" / "crops" / "WolfgangLanger_Pexels_000150.png").exists()


@pytest.mark.slow
def test_clips_without_occlusion_are_hardly_flagged(sample_clips_dir, tmp_path):
    clips = [sample_clips_dir / name for name in ("face_noface.mov", "noface_face.mov", "single_face.mp4")]
    for clip in clips:
        extract_actor([clip], tmp_path / clip.stem, ExtractConfig(), progress=False)
        frames = pd.read_csv(tmp_path / clip.stem / "frames.csv", keep_default_na=False)
        with_face = frames[frames["crop_index"] >= 0]
        assert with_face["reason"].str.startswith("occluded").mean() <= 0.05, clip.name
