import numpy as np
import pytest
from skimage.data import astronaut

from facevae.core.images import distinct_images
from facevae.evaluation.baselines import NearestNeighbour, PCABaseline
from facevae.evaluation.metrics import (
    active_dimensions,
    kl_per_dimension,
    laplacian_sharpness,
    reconstruction_metrics,
)


def crops(n=20, size=32, step=3):
    img = astronaut()
    return np.stack([img[100 + step * i: 100 + step * i + size, 180: 180 + size] for i in range(n)])


def test_identical_images_are_perfect_and_noise_is_worse():
    a = crops()
    perfect = reconstruction_metrics(a, a)
    assert perfect["mse"] == 0 and perfect["ssim"] == pytest.approx(1.0)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    worse = reconstruction_metrics(a, noisy)
    assert worse["mse"] > 0 and 10 < worse["psnr"] < 40 and worse["ssim"] < 0.9


def test_kl_per_dimension_finds_the_used_dimensions():
    rng = np.random.default_rng(0)
    mu = np.zeros((100, 4))
    mu[:, 1] = rng.normal(0, 2, 100)
    logvar = np.zeros((100, 4))
    logvar[:, 3] = -3
    kl = kl_per_dimension(mu, logvar)
    assert kl[0] == 0 and kl[1] > 1 and kl[3] > 0.5
    assert active_dimensions(kl) == 2


def test_blur_lowers_sharpness():
    a = crops()
    blurred = ((a[:, :-1, :-1].astype(int) + a[:, 1:, 1:] + a[:, 1:, :-1] + a[:, :-1, 1:]) // 4).astype(np.uint8)
    assert (laplacian_sharpness(blurred) < laplacian_sharpness(a[:, :-1, :-1])).all()


def test_nearest_neighbour_returns_the_closest_actor_crop():
    actor = crops()
    query = np.clip(actor[[3, 7]].astype(int) + 5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(NearestNeighbour(actor)(query), actor[[3, 7]])


def test_pca_with_all_components_reconstructs_training_images():
    actor = crops(n=10)
    out = PCABaseline(actor, n_components=10)(actor)
    assert np.abs(out.astype(int) - actor).max() <= 1
    coarse = PCABaseline(actor, n_components=1)(actor)
    assert np.abs(coarse.astype(int) - actor).mean() > 1


def test_distinct_images_rebuild_the_batch():
    faces = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    batch = faces[[0, 2, 0, 3, 3, 1, 2]]
    rows, inverse = distinct_images(batch)
    assert len(rows) == 4 and np.array_equal(batch[rows][inverse], batch)
    assert len(distinct_images(batch[:0])[0]) == 0
