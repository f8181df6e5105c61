"""Driving modes (facevae.transfer.drive) on real faces: the astronaut's clip, aligned by the real aligner."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facevae.apps.reconstruct import reconstruct_video
from facevae.core.config import ExtractConfig, ModelConfig, TransferConfig
from facevae.core.errors import FaceVAEError
from facevae.faces.align import FaceAligner
from facevae.faces.crop import CropGeometry
from facevae.model.vae import build_model
from facevae.transfer.actor import ActorModel
from facevae.transfer.drive import MODES, ClipTranslator, DriveSession
from facevae.transfer.fit import (
    TransferAssets,
    add_footage_range,
    colour_stats,
    face_mask,
    fit_transfer,
    reinhard,
)
from facevae.transfer.footage import (
    LatentSmoother,
    footage_distance,
    footage_neighbours,
    ramped_snap,
    smooth_latents,
    snap_to_codes,
)
from facevae.transfer.pose import PoseFilter, pose_range
from tests.media import astronaut_frames, write_clip

CFG = TransferConfig()


@pytest.fixture(scope="module")
def faces():
    """Aligned 64 px crops and landmarks of the astronaut moving a little (12 frames)."""
    aligner = FaceAligner(crop_size=64, coverage=2.2)
    found = [aligner.align_one(rgb) for rgb in astronaut_frames(12)]
    assert all(f is not None for f in found)
    return np.stack([f.crop for f in found]), np.stack([f.landmarks for f in found])


@pytest.fixture(scope="module")
def model(faces):
    """A small random-weight VAE with transfer assets fitted on the astronaut's frames."""
    torch.manual_seed(0)
    actor = ActorModel(build_model(ModelConfig(latent_dim=8)), CropGeometry(64, 2.2))
    crops, landmarks = faces
    val = np.arange(len(crops)) % 4 == 3
    actor.transfer = fit_transfer(actor, crops, landmarks, val, CFG)
    return actor


def driver_clip(faces):
    """Another 'person': the astronaut's crops tinted blue and darkened (real pixels, other colours)."""
    crops, landmarks = faces
    tinted = np.clip(crops.astype(np.float32) * np.array([0.6, 0.7, 1.1]) - 10, 0, 255).astype(np.uint8)
    return tinted[::-1].copy(), landmarks[::-1].copy()


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_maps_a_clip_to_actor_faces(model, faces, mode):
    crops, landmarks = driver_clip(faces)
    out = ClipTranslator(model, CFG, mode).translate_clip(crops, landmarks)
    assert out.shape == crops.shape and out.dtype == np.uint8
    # deterministic: the same clip gives the same faces
    assert np.array_equal(out, ClipTranslator(model, CFG, mode).translate_clip(crops, landmarks))


def test_modes_other_than_seed_need_landmarks_and_fitted_assets(model, faces):
    crops, _ = faces
    assert ClipTranslator(model, CFG, "seed")(crops).shape == crops.shape
    with pytest.raises(FaceVAEError, match="landmarks"):
        ClipTranslator(model, CFG, "blend")(crops)
    bare = ActorModel(model.vae, model.crop)
    with pytest.raises(FaceVAEError, match="transfer statistics"):
        DriveSession(bare, CFG, "relative")
    with pytest.raises(FaceVAEError, match="unknown driving mode"):
        ClipTranslator(model, CFG, "magic")


def test_colour_transfer_moves_the_driver_stats_to_the_actors(model, faces):
    crops, landmarks = driver_clip(faces)
    masks = face_mask(landmarks, 64)
    actor = (model.transfer.lab_mean, model.transfer.lab_std)
    before = colour_stats(crops, masks)
    after = colour_stats(reinhard(crops, before, actor), masks)
    assert np.abs(before[0] - actor[0]).max() > 5  # the tint is far from the actor's colours
    np.testing.assert_allclose(after[0], actor[0], atol=1.5)
    np.testing.assert_allclose(after[1], actor[1], rtol=0.1, atol=0.5)


def test_face_mask_covers_the_face_and_not_the_corners(faces):
    _, landmarks = faces
    masks = face_mask(landmarks, 64)
    assert masks.shape == (len(landmarks), 64, 64) and masks.min() >= 0 and masks.max() <= 1
    nose = np.round(landmarks[:, 30]).astype(int)
    assert (masks[np.arange(len(masks)), nose[:, 1], nose[:, 0]] > 0.99).all()
    assert (masks[:, 0, 0] < 0.01).all() and (masks[:, -1, -1] < 0.01).all()


def test_relative_driving_by_the_actor_neutral_returns_the_actor_neutral(model):
    a = model.transfer
    neutral = np.repeat(a.neutral_crop[None], 3, 0)
    lm = np.repeat(a.neutral_landmarks[None], 3, 0)
    no_snap = CFG.model_copy(update={"snap": 0.0})  # the snap would pull the neutral code toward its neighbours
    for mode in ("relative", "landmark", "blend"):
        cfg = no_snap.model_copy(update={"blend_weight": 0.0}) if mode == "blend" else no_snap
        out = ClipTranslator(model, cfg, mode).translate_clip(neutral, lm)
        if mode == "landmark":  # the head maps zero motion to its bias: near, not exactly, the neutral code
            continue
        expected = model.decode(a.neutral_mu[None])[0]
        assert np.abs(out.astype(int) - expected).max() <= 1, mode


def test_streaming_in_chunks_matches_the_whole_clip(model, faces):
    crops, landmarks = driver_clip(faces)
    cfg = CFG.model_copy(update={"neutral_window": 5})
    whole = DriveSession(model, cfg, "blend")(crops, landmarks)
    session = DriveSession(model, cfg, "blend")
    parts = [session(crops[i : i + 5], landmarks[i : i + 5]) for i in range(0, len(crops), 5)]
    assert np.abs(np.concatenate(parts).astype(int) - whole).max() <= 1


def test_smoothing_lag_is_bounded_and_it_removes_jitter():
    t = np.arange(200, dtype=np.float32)
    ramp = np.stack([t * 0.1, -t * 0.05], axis=1)
    for lag in (0.5, 1.0, 2.0):
        out = smooth_latents(ramp, lag)
        delay = (ramp[50:] - out[50:]) / np.array([0.1, -0.05])  # frames behind the ramp
        assert delay.max() <= lag + 1e-3
    fast = LatentSmoother(2.0, beta=50.0)(ramp)
    assert ((ramp[50:] - fast[50:]) / np.array([0.1, -0.05])).max() < 2.0  # motion shortens the lag
    noisy = np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32)
    assert smooth_latents(noisy, 1.0).std() < 0.8 * noisy.std()
    assert np.array_equal(smooth_latents(noisy, 0.0), noisy)


def test_assets_survive_model_pt(model, tmp_path):
    from facevae.model.files import save_model

    path = save_model(tmp_path / "model.pt", model.vae, "astro", {"size": 64, "coverage": 2.2},
                      transfer=model.transfer.to_payload())
    loaded = ActorModel.from_file(path, ExtractConfig())
    a, b = model.transfer, loaded.transfer
    assert isinstance(b, TransferAssets)
    np.testing.assert_array_equal(a.neutral_crop, b.neutral_crop)
    np.testing.assert_allclose(a.head.weight, b.head.weight)
    np.testing.assert_allclose(a.head.scale, b.head.scale)
    assert a.codes is not None and a.codes.shape[1] == model.latent_dim
    np.testing.assert_array_equal(a.codes, b.codes)


def test_snap_pulls_codes_toward_their_nearest_actor_codes():
    codes = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]], dtype=np.float32)
    z = np.array([[1.0, 1.0], [9.0, 8.0], [4.0, 6.0]], dtype=np.float32)
    np.testing.assert_array_equal(snap_to_codes(z, codes, 0.0, 1), z)
    np.testing.assert_array_equal(snap_to_codes(z, None, 0.5, 1), z)  # an older model file: no codes
    np.testing.assert_allclose(snap_to_codes(z, codes, 1.0, 1), [[0, 0], [10, 10], [0, 10]])
    np.testing.assert_allclose(snap_to_codes(z, codes, 0.25, 1), [[0.75, 0.75], [9.25, 8.5], [3.0, 7.0]])
    np.testing.assert_allclose(snap_to_codes(np.array([[2.0, 1.0]]), codes, 1.0, 2), [[5.0, 0.0]])  # (0,0), (10,0)
    np.testing.assert_allclose(snap_to_codes(z, codes, 1.0, 99), np.repeat([[5.0, 5.0]], 3, 0))  # k capped at M
    long = np.random.default_rng(0).normal(size=(600, 2)).astype(np.float32)
    np.testing.assert_allclose(snap_to_codes(long, codes, 0.5, 2, chunk=7), snap_to_codes(long, codes, 0.5, 2))


def test_snap_parts_snaps_each_code_before_the_blend(model, faces):
    crops, landmarks = driver_clip(faces)
    cfg = CFG.model_copy(update={"snap": 0.5, "snap_k": 2, "snap_parts": True})

    def latents(mode, cfg):
        session = DriveSession(model, cfg, mode)
        session.start(crops, landmarks)
        return session.latents(crops, landmarks)

    codes = model.transfer.codes
    rel, lm = (snap_to_codes(latents(mode, cfg), codes, 0.5, 2) for mode in ("relative", "landmark"))
    expected = cfg.blend_weight * lm + (1 - cfg.blend_weight) * rel
    np.testing.assert_allclose(latents("blend", cfg), expected, rtol=1e-5, atol=1e-5)
    plain = latents("blend", cfg.model_copy(update={"snap_parts": False}))
    assert np.abs(plain - expected).max() > 1e-4  # the switch changes the codes (10x the tolerance above)


def test_reconstruct_video_drives_with_a_mode(model, tmp_path):
    clip = write_clip(tmp_path / "astro.mp4", astronaut_frames(12))
    out = tmp_path / "out.mp4"
    summary = reconstruct_video(model, clip, out, ExtractConfig(), progress=False, mode="blend",
                                transfer_cfg=CFG.model_copy(update={"neutral_window": 8}), batch=4)
    assert summary.frames == 12 and summary.with_face == 12 and out.is_file()
    assert summary.beyond_range is not None and 0 <= summary.beyond_range <= 12
    assert "beyond the actor's footage" in summary.describe()


def test_footage_distance_is_the_rms_distance_to_the_k_nearest_codes():
    codes = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [10.0, 10.0]])
    np.testing.assert_allclose(footage_distance(codes[:1], codes, k=1), [0.0])
    np.testing.assert_allclose(footage_distance(np.array([[0.0, 0.0]]), codes, k=3), [np.sqrt((0 + 9 + 16) / 3)])
    far = footage_distance(np.array([[0.0, 0.0], [100.0, 100.0]]), codes, k=2)
    assert far[1] > 100 > far[0]


def test_footage_neighbours_name_the_nearest_actor_code():
    rng = np.random.default_rng(3)
    codes, z = rng.normal(size=(50, 6)), rng.normal(size=(20, 6))
    distance, nearest = footage_neighbours(z, codes, k=8)
    brute = np.linalg.norm(z[:, None] - codes[None], axis=-1)
    np.testing.assert_array_equal(nearest, brute.argmin(1))
    np.testing.assert_allclose(distance, np.sqrt((np.sort(brute, 1)[:, :8] ** 2).mean(1)))


def test_the_range_limit_is_the_farthest_val_frame_and_flags_codes_beyond_it(model, faces):
    crops, landmarks = faces
    assets = model.transfer
    val = np.arange(len(crops)) % 4 == 3
    mu = model.encode(crops[val])
    assert assets.info["range_k"] == CFG.snap_k
    assert assets.info["range_limit"] == pytest.approx(footage_distance(mu, assets.codes, CFG.snap_k).max())
    session = DriveSession(model, CFG, "blend")
    session(crops, landmarks)
    beyond = session.footage().beyond
    assert beyond.shape == (len(crops),) and beyond.dtype == bool
    # the same clip, driven past her footage: every code pushed far along its offset from the neutral
    pushed = DriveSession(model, CFG.model_copy(update={"relative_gain": 200.0, "landmark_gain": 200.0, "snap": 0.0}), "blend")
    pushed(crops, landmarks)
    assert pushed.footage().beyond.sum() > beyond.sum()
    assert DriveSession(model, CFG, "seed").footage() is None


def test_a_model_file_from_before_the_range_gets_it_from_its_val_frames(model, faces):
    import copy

    crops, _ = faces
    val = np.arange(len(crops)) % 4 == 3
    older = copy.copy(model)
    older.transfer = copy.deepcopy(model.transfer)
    for key in ("range_k", "range_limit"):
        del older.transfer.info[key]
    assert DriveSession(older, CFG, "blend").footage() is None  # in range: NaN, the check fails
    assert not add_footage_range(older, crops[:0], CFG.snap_k)  # no val frames: nothing to measure
    assert add_footage_range(older, crops[val], CFG.snap_k)
    assert older.transfer.info["range_limit"] == pytest.approx(model.transfer.info["range_limit"], rel=1e-6)
    assert older.transfer.info["range_k"] == CFG.snap_k
    older.transfer.codes = None  # older still: nothing to measure against
    assert not add_footage_range(older, crops[val], CFG.snap_k)


def test_a_clip_translator_keeps_the_last_clips_range_flags(model, faces):
    crops, landmarks = faces
    translator = ClipTranslator(model, CFG, "blend")
    assert translator.footage is None
    translator.translate_clip(crops[:6], landmarks[:6])
    assert translator.footage.beyond.shape == (6,)
    translator.translate_clip(crops, landmarks)
    assert translator.footage.beyond.shape == (len(crops),)
    distance, nearest = translator.footage.distance, translator.footage.nearest
    assert distance.shape == nearest.shape == (len(crops),)
    np.testing.assert_array_equal(translator.footage.beyond, distance > model.transfer.info["range_limit"])
    assert 0 <= nearest.min() and nearest.max() < len(model.transfer.codes)


def test_reconstruct_writes_the_clips_gap_picture_and_footage_arrays(model, tmp_path):
    clip = write_clip(tmp_path / "astro.mp4", astronaut_frames(12))
    cfg = CFG.model_copy(update={"neutral_window": 8})
    summary = reconstruct_video(model, clip, tmp_path / "out.mp4", ExtractConfig(), progress=False, mode="blend",
                                transfer_cfg=cfg, batch=4, save_arrays=tmp_path / "out.npz", gaps=tmp_path / "gaps.png")
    assert summary.gaps == tmp_path / "gaps.png" and summary.gaps.stat().st_size > 0
    with np.load(tmp_path / "out.npz") as saved:
        distance, limit = saved["footage_distance"], float(saved["range_limit"])
        assert distance.shape == saved["found"].shape == (12,) and np.isfinite(distance[saved["found"]]).all()
        np.testing.assert_array_equal(saved["beyond_range"], distance > limit)
    assert limit == model.transfer.info["range_limit"] and int((distance > limit).sum()) == summary.beyond_range
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astro.mp4", "gaps.png", "out.mp4", "out.npz"]


@pytest.mark.parametrize("mode, gaps, message", [
    ("seed", "gaps.png", "the seed mode has no range"),
    ("blend", "gaps.jpg", "--gaps writes a .png picture"),
])
def test_a_gap_picture_that_cannot_be_drawn_is_refused_before_any_work(model, tmp_path, mode, gaps, message):
    clip = write_clip(tmp_path / "astro.mp4", astronaut_frames(2))
    with pytest.raises(FaceVAEError, match=message):
        reconstruct_video(model, clip, tmp_path / "out.mp4", ExtractConfig(), progress=False, mode=mode,
                          gaps=tmp_path / gaps)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astro.mp4"]


def test_the_ramped_snap_keeps_near_codes_and_pulls_far_ones_all_the_way():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(200, 6)).astype(np.float32)
    limit = float(footage_distance(codes[:20] + 0.3, codes, 8).max())
    near, far = codes[:1] + 0.01, codes[:1] + 10.0
    z = np.concatenate([near, far])
    ramped = ramped_snap(z, codes, 0.25, 8, 8, limit, ramp=0.5)
    np.testing.assert_allclose(ramped[0], snap_to_codes(near, codes, 0.25, 8)[0], atol=1e-6)  # within: the constant snap
    np.testing.assert_allclose(ramped[1], snap_to_codes(far, codes, 1.0, 8)[0], atol=1e-5)  # beyond: her nearest codes' mean
    assert footage_distance(ramped[1:], codes, 8)[0] < limit


def test_past_the_limit_the_snap_keeps_growing_to_her_nearest_codes_at_snap_full():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(200, 6)).astype(np.float32)
    limit = float(footage_distance(codes[:20] + 0.3, codes, 8).max())
    direction = np.ones((1, 6), np.float32) / np.sqrt(6)
    z = codes[:1] + direction * np.array([[0.0], [3.0], [30.0]], np.float32)  # near, a little beyond, far beyond
    distance = footage_distance(z, codes, 8)
    plain = ramped_snap(z, codes, 0.25, 8, 8, limit, ramp=0.5, far=0.7, distance=distance)
    full = ramped_snap(z, codes, 0.25, 8, 8, limit, ramp=0.5, far=0.7, distance=distance, full=1.5)
    np.testing.assert_allclose(full[0], plain[0], atol=1e-6)  # within her footage: unchanged
    weight = 0.7 + 0.3 * np.clip((distance[1] - limit) / (0.5 * limit), 0, 1)
    np.testing.assert_allclose(full[1], snap_to_codes(z[1:2], codes, weight, 8)[0], atol=1e-5)
    np.testing.assert_allclose(full[2], snap_to_codes(z[2:], codes, 1.0, 8)[0], atol=1e-5)  # her nearest codes' mean
    assert distance[1] > limit and distance[2] > 1.5 * limit
    assert footage_distance(full[2:], codes, 8)[0] < footage_distance(plain[2:], codes, 8)[0]


def test_a_session_with_the_ramp_records_what_was_asked_and_draws_it_nearer(model):
    faces = astronaut_frames(12)
    aligner = FaceAligner.from_config(model.crop.extract_config(ExtractConfig()))
    aligned = [aligner.align_one(f) for f in faces]
    crops, landmarks = np.stack([a.crop for a in aligned]), np.stack([a.landmarks for a in aligned])
    plain = DriveSession(model, TransferConfig(smooth_lag=0, snap_ramp=None), "relative")
    ramped = DriveSession(model, TransferConfig(smooth_lag=0, snap_ramp=0.0, snap_far=1.0), "relative")
    plain(crops, landmarks), ramped(crops, landmarks)
    assert plain.requested == [] and len(ramped.requested) == 1
    asked, drawn = ramped.requested[0], ramped.footage().distance
    assert (drawn <= asked + 1e-6).all() and drawn.mean() < plain.footage().distance.mean()


def test_matched_gains_scale_the_offsets_to_her_footages_spread_over_the_clip_so_far(model):
    """gain_rule matched: each chunk's codes are the fixed gains' codes scaled about her neutral code by
    her training codes' RMS offset over the RMS offset of every code driven so far."""
    faces = astronaut_frames(12)
    aligner = FaceAligner.from_config(model.crop.extract_config(ExtractConfig()))
    aligned = [aligner.align_one(f) for f in faces]
    crops, landmarks = np.stack([a.crop for a in aligned]), np.stack([a.landmarks for a in aligned])
    assets = model.transfer
    rms = lambda z: np.sqrt(((np.asarray(z, np.float64) - assets.neutral_mu) ** 2).sum(1).mean())  # noqa: E731
    hers = rms(assets.codes)
    fixed = DriveSession(model, TransferConfig(relative_gain=4.0), "relative")
    fixed.start(crops, landmarks)
    asked = fixed.latents(crops, landmarks)
    session = DriveSession(model, TransferConfig(relative_gain=4.0, gain_rule="matched"), "relative")
    session.start(crops, landmarks)
    first, rest = session.latents(crops[:5], landmarks[:5]), session.latents(crops[5:], landmarks[5:])
    assert rms(first) == pytest.approx(hers, rel=1e-3)  # the first chunk alone: exactly her spread
    expected = assets.neutral_mu + (asked[5:] - assets.neutral_mu) * hers / rms(asked)
    np.testing.assert_allclose(rest, expected, rtol=0, atol=1e-3 * hers)


def turned(landmarks: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(N, 68, 2): one face's landmarks with the nose tip moved yaw[i] of the face width toward one ear."""
    out = np.repeat(np.asarray(landmarks, np.float64)[None], len(yaw), 0)
    out[:, 30] += yaw[:, None] * (landmarks[16] - landmarks[0])
    return out


def test_the_pose_filter_takes_out_a_turn_she_never_made_and_keeps_the_expression(faces):
    _, landmarks = faces
    rng = np.random.default_rng(0)
    yaw = 0.15 * np.sin(np.arange(240) * 2 * np.pi / 80)  # a head turning from side to side, from its neutral pose
    expression = rng.normal(0, 1, (240, 6))
    offsets = expression + yaw[:, None] * np.array([20.0, -30.0, 25.0, -15.0, 40.0, 18.0])  # the turn moves every coordinate
    driver = turned(landmarks[0], yaw)
    frontal = pose_range(landmarks[:1])  # her footage: one pose, her neutral's
    make = lambda her: PoseFilter(landmarks[0], her, landmarks[0], smooth_lag=0, window=20, ridge=1e-3)  # noqa: E731
    out = make(frontal)(offsets, driver)
    later = slice(60, None)  # once the line is fitted on enough faces
    for d in range(6):
        assert np.corrcoef(offsets[later, d], expression[later, d])[0, 1] < 0.9  # the turn dominated
        assert np.corrcoef(out[later, d], expression[later, d])[0, 1] > 0.97
    # an actor who turns her head as far as the driver does keeps all of it
    wide = {"pose_yaw_low": -1.0, "pose_yaw_high": 1.0, "pose_pitch_low": -1.0, "pose_pitch_high": 1.0}
    np.testing.assert_allclose(make(wide)(offsets, driver), offsets, atol=1e-4)
    # causal: chunk by chunk (the first chunk holding the window) gives the same as the whole clip
    stream = make(frontal)
    chunks = [stream(offsets[i : i + 20], driver[i : i + 20]) for i in range(0, 240, 20)]
    np.testing.assert_allclose(np.concatenate(chunks), out, atol=1e-4)
    # faces left out of the fit (a covered mouth) do not bend the line, however wild their offsets
    wild = offsets.copy()
    wild[100:140] = 1e3
    learn = np.ones(240, bool)
    learn[100:140] = False
    kept = make(frontal)(wild, driver, fit_rows=learn)
    bent = make(frontal)(wild, driver)
    after = slice(140, None)
    for d in range(6):
        assert np.corrcoef(kept[after, d], expression[after, d])[0, 1] > 0.97
    assert min(np.corrcoef(bent[after, d], expression[after, d])[0, 1] for d in range(6)) < 0.9


def test_her_pose_range_and_the_occlusion_thresholds_are_fitted_into_the_model(faces, model):
    crops, landmarks = faces
    info = model.transfer.info
    assert set(pose_range(landmarks)) <= set(info) and "occlusion_high" not in info
    val = np.arange(len(crops)) % 4 == 3
    assets = fit_transfer(model, crops, landmarks, val, CFG, occlusion=(0.28, 0.16))
    assert (assets.info["occlusion_high"], assets.info["occlusion_low"]) == (0.28, 0.16)
    assert assets.info["pose_yaw_low"] <= assets.info["pose_yaw_high"]
    np.testing.assert_allclose([assets.info[k] for k in pose_range(landmarks[~val])], list(pose_range(landmarks[~val]).values()))


def covered_mouths(crops: np.ndarray, landmarks: np.ndarray, frames) -> np.ndarray:
    """The crops with the mouth of `frames` hidden under a patch of the same face's forehead (a hand's
    colour, not a lip's)."""
    out = crops.copy()
    for i in frames:
        x0, y0 = np.floor(landmarks[i, 48:60].min(0)).astype(int) - 2
        x1, y1 = np.ceil(landmarks[i, 48:60].max(0)).astype(int) + 2
        out[i, y0:y1, x0:x1] = crops[i, 2 : 2 + y1 - y0, x0:x1]
    return out


def test_a_covered_mouth_holds_the_last_uncovered_face(faces, model):
    crops, landmarks = driver_clip(faces)
    hidden = covered_mouths(crops, landmarks, [6, 7, 8])
    val = np.arange(len(faces[0])) % 4 == 3
    actor = ActorModel(model.vae, model.crop)
    actor.transfer = fit_transfer(actor, *faces, val, CFG, occlusion=(0.28, 0.16))
    still = CFG.model_copy(update={"smooth_lag": 0.0})  # the smoother would blend the held face with the next
    session = DriveSession(actor, still, "blend")
    out = session(hidden, landmarks)
    covered = session.covered(hidden, landmarks)
    np.testing.assert_array_equal(covered, np.isin(np.arange(12), [6, 7, 8]))
    for i in (6, 7, 8):
        np.testing.assert_array_equal(out[i], out[5])
    held = DriveSession(actor, still, "blend")
    held.start(hidden, landmarks)
    z = held.latents(hidden, landmarks, covered)
    np.testing.assert_array_equal(z[6:9], np.repeat(z[5:6], 3, 0))
    driven = DriveSession(actor, still.model_copy(update={"occluded": "drive"}), "blend")
    driven.start(hidden, landmarks)
    assert not driven.covered(hidden, landmarks).any()
    moved = driven.latents(hidden, landmarks)
    assert np.abs(moved[6:9] - moved[5]).max() > 10 * np.abs(z[6:9] - z[5]).max() + 1e-3  # the hidden mouth drives


def test_reconstruct_counts_the_faces_whose_covered_mouth_was_held(faces, model, tmp_path):
    frames = astronaut_frames(12)
    aligner = FaceAligner(crop_size=64, coverage=2.2)
    for i in (6, 7, 8):  # a patch of her own forehead over the mouth, in the video's pixels
        mouth = aligner.align_one(frames[i]).source_landmarks[48:60]
        (x0, y0), (x1, y1) = np.floor(mouth.min(0)).astype(int) - 4, np.ceil(mouth.max(0)).astype(int) + 4
        brow_top = int(aligner.align_one(frames[i]).source_landmarks[17:27, 1].min()) - (y1 - y0) - 4
        frames[i][y0:y1, x0:x1] = frames[i][brow_top : brow_top + y1 - y0, x0:x1]
    clip = write_clip(tmp_path / "hand.mp4", frames)
    val = np.arange(len(faces[0])) % 4 == 3
    actor = ActorModel(model.vae, model.crop)
    actor.transfer = fit_transfer(actor, *faces, val, CFG, occlusion=(0.28, 0.16))
    summary = reconstruct_video(actor, clip, tmp_path / "out.mp4", ExtractConfig(), progress=False, mode="blend",
                                transfer_cfg=CFG, batch=4, save_arrays=tmp_path / "out.npz")
    assert summary.with_face == 12 and summary.covered == 3
    assert "3 faces with a covered mouth held the last uncovered face" in summary.describe()
    with np.load(tmp_path / "out.npz") as saved:
        np.testing.assert_array_equal(saved["covered"], np.isin(np.arange(12), [6, 7, 8]))
