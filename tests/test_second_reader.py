"""audit/second_reader.py: the FaceMesh features and scores (mediapipe itself lives in its own venv)."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "audit" / "second_reader.py"


@pytest.fixture(scope="module")
def reader():
    spec = importlib.util.spec_from_file_location("second_reader", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def face(reader):
    """478 points with the eyes level: irises 20 px apart, lips, eyelids and brows where a face has them."""
    rng = np.random.default_rng(0)
    points = rng.uniform(20, 44, (478, 2))
    points[reader.IRIS_RIGHT], points[reader.IRIS_LEFT] = (22, 28), (42, 28)
    points[list(reader.INNER_LIPS)] = (32, 44), (32, 46)
    points[list(reader.MOUTH_CORNERS)] = (26, 45), (38, 45)
    for upper, lower in reader.EYELIDS:
        points[upper], points[lower] = (32, 27), (32, 29)
    points[list(reader.BROWS), 1] = 22
    return points


def moved(points, angle, scale, shift):
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (points @ rot.T) * scale + shift


def test_features_ignore_head_roll_scale_and_position(reader, face):
    base = reader.mesh_features(face[None])
    other = reader.mesh_features(moved(face, 0.3, 2.5, np.array([40.0, -7.0]))[None])
    np.testing.assert_allclose(other, base, atol=1e-9)
    np.testing.assert_allclose(base[0], [2 / 20, 12 / 20, 2 / 20, 6 / 20], atol=1e-9)


@pytest.mark.parametrize("feature, points, step", [
    ("mouth_open", (14,), (0, 3)),
    ("mouth_width", (308,), (3, 0)),
    ("eye_open", (145, 374), (0, 2)),
    ("brow_height", (70, 63, 105, 66, 107, 336, 296, 334, 293, 300), (0, -2)),
])
def test_each_feature_follows_its_own_points_only(reader, face, feature, points, step):
    after = face.copy()
    after[list(points)] += step
    before, now = reader.mesh_features(np.stack([face, after]))
    k = reader.FEATURES.index(feature)
    assert now[k] > before[k] + 0.05
    np.testing.assert_allclose(np.delete(now, k), np.delete(before, k), atol=1e-9)


def test_scores_are_r_and_gain_over_frames_read_in_both(reader):
    rng = np.random.default_rng(1)
    driver = rng.normal(size=(50, 4))
    output = 2.0 * driver + 1.0
    output[[3, 7]] = np.nan  # the output's face was not found there
    scores = reader.transfer_scores(driver, output)
    assert scores["expression_r"] == pytest.approx(1.0)
    assert scores["expression_gain"] == pytest.approx(2.0)
    assert scores["read_output"] == pytest.approx(48 / 50)
    flipped = reader.transfer_scores(driver, -output)
    assert flipped["r_mouth_open"] == pytest.approx(-1.0)


def test_a_feature_that_does_not_move_counts_as_r_0_as_in_the_evaluation(reader):
    rng = np.random.default_rng(2)
    driver = rng.normal(size=(50, 4))
    output = driver.copy()
    output[:, 2] = 0.3  # the eyes never move: no correlation to speak of
    scores = reader.transfer_scores(driver, output)
    assert np.isnan(scores["r_eye_open"])
    assert scores["expression_r"] == pytest.approx(0.75)


def test_arrays_keep_the_frames_with_a_face_among_the_first_n(reader, tmp_path):
    crops = np.arange(6, dtype=np.uint8)[:, None, None, None] * np.ones((6, 4, 4, 3), np.uint8)
    path = tmp_path / "clip.npz"
    np.savez(path, driver=crops, output=crops + 10, found=np.array([1, 0, 1, 1, 0, 1], bool))
    driver, output = reader.load_arrays(path, max_frames=4)
    assert driver[:, 0, 0, 0].tolist() == [0, 2, 3]
    assert output[:, 0, 0, 0].tolist() == [10, 12, 13]


@pytest.mark.parametrize("content", [b"not an npz", None])
def test_a_bad_arrays_file_is_named_in_the_error(reader, tmp_path, content):
    path = tmp_path / "bad.npz"
    if content is None:
        np.savez(path, driver=np.zeros((2, 4, 4, 3), np.uint8))  # no output, no found
    else:
        path.write_bytes(content)
    with pytest.raises(SystemExit, match="bad.npz"):
        reader.load_arrays(path, None)


def test_native_logs_are_held_and_shown_only_when_something_fails(reader, capfd):
    with reader.native_logs_quiet():
        os.write(2, b"W0000 graph chatter\n")
    assert "chatter" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), reader.native_logs_quiet():
        os.write(2, b"E0000 the reason it broke\n")
        raise RuntimeError("boom")
    assert "the reason it broke" in capfd.readouterr().err
