import numpy as np
import pytest

from facevae.faces.expression import (
    FEATURES,
    expression_features,
    gain,
    mean_r,
    pearson_r,
)


def neutral_face() -> np.ndarray:
    """A rough 68-point face: eyes 40 px apart at y=0, brows above, mouth below."""
    lm = np.zeros((68, 2))
    lm[0:17] = np.stack([np.linspace(-45, 45, 17), np.linspace(0, 60, 17)], 1)
    lm[17:22] = np.stack([np.linspace(-35, -10, 5), np.full(5, -15.0)], 1)
    lm[22:27] = np.stack([np.linspace(10, 35, 5), np.full(5, -15.0)], 1)
    lm[27:36] = np.stack([np.zeros(9), np.linspace(5, 30, 9)], 1)
    for start, cx in ((36, -20.0), (42, 20.0)):
        xs = cx + np.array([-8, -3, 3, 8, 3, -3])
        ys = np.array([0, -3, -3, 0, 3, 3])
        lm[start:start + 6] = np.stack([xs, ys], 1)
    lm[48:60] = np.stack([15 * np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False)) * -1,
                          40 + 5 * np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False))], 1)
    lm[60:68] = np.stack([np.array([-12, -5, 0, 5, 12, 5, 0, -5]), np.array([40, 39, 39, 39, 40, 41, 41, 41])], 1)
    return lm


def rotated(lm, degrees, scale=1.0, shift=(0, 0)):
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return lm @ rot.T * scale + np.asarray(shift)


def test_features_ignore_roll_scale_and_position():
    lm = neutral_face()
    base = expression_features(lm)[0]
    moved = expression_features(rotated(lm, 20, scale=2.5, shift=(100, 50)))[0]
    np.testing.assert_allclose(moved[:4], base[:4], atol=1e-9)
    assert moved[FEATURES.index("head_roll")] == pytest.approx(20.0)


def test_open_mouth_and_raised_brows_are_measured():
    lm = neutral_face()
    open_mouth = lm.copy()
    open_mouth[65:68, 1] += 10
    raised = lm.copy()
    raised[17:27, 1] -= 8
    base, mouth, brows = expression_features(np.stack([lm, open_mouth, raised]))
    i_mouth, i_brow = FEATURES.index("mouth_open"), FEATURES.index("brow_height")
    assert mouth[i_mouth] > base[i_mouth] + 0.15
    assert brows[i_brow] == pytest.approx(base[i_brow] + 8 / 40)
    assert mouth[i_brow] == pytest.approx(base[i_brow])


def test_correlation_and_gain():
    x = np.sin(np.linspace(0, 6, 50))
    assert pearson_r(x, 0.5 * x + 1) == pytest.approx(1.0)
    assert gain(x, 0.5 * x) == pytest.approx(0.5)
    assert np.isnan(pearson_r(x, np.full_like(x, 3.0)))
    y = x.copy()
    y[::5] = np.nan
    assert pearson_r(x, y) == pytest.approx(1.0)


def test_mean_r_counts_an_undefined_r_as_0():
    assert mean_r([0.9, 0.7, float("nan"), 0.6]) == pytest.approx(0.55)
    assert mean_r([0.5, 0.5]) == pytest.approx(0.5)
