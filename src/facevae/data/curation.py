"""Hand curation of an actor's frames: `data/curation/<actor>.yaml`, applied by `build`.

The file is optional (absent = no curation). Both keys are optional lists:

    exclude:                                   # drop these frames even if extraction kept them
      - {video: WolfgangLanger_Pexels.mp4, frames: "70-227"}
      - {video: other.mp4}                     # no `frames`: the whole video
    keep:                                      # force-keep frames extraction dropped (they need a crop)
      - {video: WolfgangLanger_Pexels.mp4, frames: "12, 15-18"}

`frames` is a frame number, a list of them, or a string of numbers and inclusive ranges
("12, 15-18"), 0-based as in frames.csv. A line naming a video the actor has no frames of, a
frame outside that video, a `keep` frame without a crop, or a frame both kept and excluded is an
error naming the file and line. `review` writes a contact sheet to pick the frames from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from facevae.core.errors import FaceVAEError

ACTIONS = ("exclude", "keep")

ENTRY_KEYS = {"video", "frames", "note"}

RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclass
class CurationEntry:
    action: str  # "exclude" | "keep"
    video: str
    frames: list[int] | None  # None: every frame of the video
    line: int  # 1-based line in the file


@dataclass
class Curation:
    path: Path | None = None
    entries: list[CurationEntry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entries)


@dataclass
class CurationResult:
    kept: np.ndarray  # bool per table row: in the dataset after curation
    excluded: int  # frames extraction kept that curation removed
    rescued: int  # frames extraction dropped that curation keeps


def curation_path(actor: str, root: str | Path = "data/curation") -> Path:
    return Path(root) / f"{actor}.yaml"


def load_curation(path: str | Path | None) -> Curation:
    """Parse a curation file; a missing file (or None) is an empty curation."""
    if path is None or not Path(path).exists():
        return Curation()
    path = Path(path)
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FaceVAEError(f"not valid YAML ({' '.join(str(exc).split())})", path) from None
    curation = Curation(path)
    if data is None:
        return curation
    if not isinstance(data, dict):
        raise FaceVAEError("line 1: expected a mapping with `exclude:` and/or `keep:` lists", path)
    lines = {node_key.value: node_value for node_key, node_value in root.value}
    for key, value in data.items():
        key_line = _line(next(k for k, _ in root.value if k.value == key))
        if key not in ACTIONS:
            raise FaceVAEError(f"line {key_line}: unknown key {key!r}; expected one of {', '.join(ACTIONS)}", path)
        if value is None:
            continue
        if not isinstance(value, list):
            raise FaceVAEError(f"line {key_line}: `{key}` must be a list of {{video, frames}} entries", path)
        for item, node in zip(value, lines[key].value):
            curation.entries.append(_entry(key, item, _line(node), path))
    return curation


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _entry(action: str, item, line: int, path: Path) -> CurationEntry:
    if not isinstance(item, dict) or "video" not in item:
        raise FaceVAEError(f"line {line}: each {action} entry needs `video:` (and optionally `frames:`)", path)
    unknown = set(item) - ENTRY_KEYS
    if unknown:
        raise FaceVAEError(f"line {line}: unknown key {min(unknown)!r} (expected video, frames, note)", path)
    frames = None if item.get("frames") is None else parse_frames(item["frames"], line, path)
    return CurationEntry(action, str(item["video"]), frames, line)


def parse_frames(spec, line: int, path: Path) -> list[int]:
    """12 | [12, "15-18"] | "12, 15-18" -> sorted unique frame numbers."""
    parts = spec if isinstance(spec, list) else [spec]
    frames: set[int] = set()
    for part in parts:
        if isinstance(part, bool):
            raise FaceVAEError(f"line {line}: bad frames {spec!r}", path)
        if isinstance(part, int):
            if part < 0:
                raise FaceVAEError(f"line {line}: frame numbers start at 0, got {part}", path)
            frames.add(part)
            continue
        for piece in str(part).split(","):
            match = RANGE.match(piece)
            if not match:
                raise FaceVAEError(f"line {line}: bad frames {piece.strip()!r} (expected e.g. \"12, 15-18\")", path)
            first, last = int(match[1]), int(match[2] or match[1])
            if last < first:
                raise FaceVAEError(f"line {line}: range {first}-{last} runs backwards", path)
            frames.update(range(first, last + 1))
    return sorted(frames)


def apply_curation(table: pd.DataFrame, curation: Curation) -> CurationResult:
    """Which rows of an extract frames.csv go into the dataset once `curation` is applied."""
    base = ((table["kept"] == 1) & (table["crop_index"] >= 0)).to_numpy()
    keep = base.copy()
    videos = table["video"].astype(str).to_numpy()
    frames = table["frame"].to_numpy()
    has_crop = (table["crop_index"] >= 0).to_numpy()
    by_video = {name: np.flatnonzero(videos == name) for name in dict.fromkeys(videos)}
    claimed: dict[int, CurationEntry] = {}
    excluded = np.zeros(len(table), dtype=bool)
    forced = np.zeros(len(table), dtype=bool)
    for entry in curation.entries:
        rows = _rows(entry, by_video, frames, curation.path)
        if entry.action == "keep":
            no_crop = rows[~has_crop[rows]]
            if len(no_crop):
                reason = table["reason"].iloc[no_crop[0]] or "no crop"
                raise FaceVAEError(
                    f"line {entry.line}: cannot keep {entry.video} frame {frames[no_crop[0]]}: it has no face crop "
                    f"({reason})", curation.path,
                )  # fmt: skip
        for row in rows:
            other = claimed.get(int(row))
            if other is not None and other.action != entry.action:
                raise FaceVAEError(
                    f"line {entry.line}: {entry.video} frame {frames[row]} is both kept and excluded "
                    f"(see line {other.line})", curation.path,
                )  # fmt: skip
            claimed.setdefault(int(row), entry)
        (forced if entry.action == "keep" else excluded)[rows] = True
    keep[excluded] = False
    keep[forced] = True
    return CurationResult(keep, excluded=int((base & excluded).sum()), rescued=int((~base & forced).sum()))


def _rows(entry: CurationEntry, by_video: dict[str, np.ndarray], frames: np.ndarray, path: Path | None) -> np.ndarray:
    if entry.video not in by_video:
        known = ", ".join(sorted(by_video)) or "none"
        raise FaceVAEError(f"line {entry.line}: unknown video {entry.video!r} (the actor's videos: {known})", path)
    rows = by_video[entry.video]
    if entry.frames is None:
        return rows
    at = {int(f): r for f, r in zip(frames[rows], rows)}
    missing = [f for f in entry.frames if f not in at]
    if missing:
        last = max(at) if at else -1
        raise FaceVAEError(
            f"line {entry.line}: {entry.video} has no frame {missing[0]} (its frames are 0-{last})", path
        )
    return np.array([at[f] for f in entry.frames], dtype=np.int64)


EMPTY_TEMPLATE = """\
# Hand curation of this actor's frames, applied by `build` (see `facevae review` for a contact sheet).
# frames: a number, a list, or a string of numbers and inclusive ranges, e.g. "12, 15-18" (0-based,
# as in data/faces/<actor>/frames.csv). Leave `frames` out to mean the whole video.
#
# exclude:                                  # drop frames extraction kept (e.g. a hand over the face)
#   - {video: clip.mp4, frames: "70-227"}
# keep:                                     # force-keep frames extraction dropped (they need a crop)
#   - {video: clip.mp4, frames: "12, 15-18"}
exclude: []
keep: []
"""
