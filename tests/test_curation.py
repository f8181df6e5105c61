"""Hand curation (data/curation/<actor>.yaml) applied by build, and the review contact sheet."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from facevae.cli import app
from facevae.core.config import BuildConfig
from facevae.core.errors import FaceVAEError
from facevae.data.curation import (
    EMPTY_TEMPLATE,
    apply_curation,
    load_curation,
    parse_frames,
)
from facevae.data.dataset import build_actor_dataset
from facevae.data.review import review_groups, write_review
from tests.test_dataset import write_fake_extract

# write_fake_extract: 40 crops; a.mp4 frames 0-19 then b.mov frames 0-19; every 4th row dropped as blur
# (a.mp4 frames 0, 4, 8, 12, 16; b.mov frames 0, 4, 8, 12, 16), 30 kept.


@pytest.fixture
def faces(tmp_path):
    write_fake_extract(tmp_path / "faces")
    return tmp_path / "faces"


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "spec, expected",
    [(3, [3]), ("12, 15-18", [12, 15, 16, 17, 18]), ([1, "4-5"], [1, 4, 5]), ("7-7", [7]), ("2,2", [2])],
)
def test_frame_specs(spec, expected, tmp_path):
    assert parse_frames(spec, 1, tmp_path / "c.yaml") == expected


@pytest.mark.parametrize("spec", ["5-3", "x", "1;2", -1, True])
def test_bad_frame_specs_name_the_file_and_line(spec, tmp_path):
    with pytest.raises(FaceVAEError, match=r"c\.yaml: line 7"):
        parse_frames(spec, 7, tmp_path / "c.yaml")


def test_absent_and_empty_template_files_are_no_curation(faces, tmp_path):
    assert not load_curation(tmp_path / "absent.yaml") and not load_curation(None)
    empty = write(tmp_path / "empty.yaml", EMPTY_TEMPLATE)
    assert not load_curation(empty)
    counts = build_actor_dataset(faces, tmp_path / "a.h5", BuildConfig(), curation=empty)
    assert counts["train"] + counts["val"] == 30 and counts["curated_excluded"] == counts["curated_kept"] == 0


def test_build_applies_exclusions_and_rescues_before_the_split(faces, tmp_path):
    curation = write(tmp_path / "actor.yaml", (
        "exclude:\n"
        "  - {video: a.mp4, frames: \"1-6\"}   # a hand over the face\n"
        "  - video: b.mov\n"
        "    frames: [19]\n"
        "keep:\n"
        "  - {video: a.mp4, frames: \"12, 16\"}  # dropped as blur, fine by eye\n"
    ))  # fmt: skip
    out = tmp_path / "actor.h5"
    counts = build_actor_dataset(faces, out, BuildConfig(), curation=curation)
    # a.mp4 1-6 holds 5 kept frames (4 was dropped already), b.mov 19 is kept: 6 out; 12 and 16 back in
    assert counts["curated_excluded"] == 6 and counts["curated_kept"] == 2
    assert counts["train"] + counts["val"] == 30 - 6 + 2
    with h5py.File(out) as h5:
        pairs = set(zip(h5["source"].asstr()[:], h5["frame"][:].tolist()))
        assert ("a.mp4", 12) in pairs and ("a.mp4", 16) in pairs
        assert not {("a.mp4", f) for f in range(1, 7)} & pairs and ("b.mov", 19) not in pairs
        assert json.loads(h5.attrs["curation"])["excluded"] == 6


def test_whole_video_exclusion(faces, tmp_path):
    curation = write(tmp_path / "c.yaml", "exclude:\n  - video: b.mov\n")
    counts = build_actor_dataset(faces, tmp_path / "a.h5", BuildConfig(), curation=curation)
    assert counts["train"] + counts["val"] == 15 and counts["curated_excluded"] == 15


@pytest.mark.parametrize(
    "text, message",
    [
        ("exclude:\n  - {video: a.mp4, frames: 1}\n  - {video: nope.mp4, frames: 3}\n", r"line 3: unknown video 'nope.mp4'"),
        ("keep:\n\n  - {video: a.mp4, frames: \"18-25\"}\n", r"line 3: a.mp4 has no frame 20 \(its frames are 0-19\)"),
        ("exclude:\n  - {video: a.mp4, frames: \"3-9\"}\nkeep:\n  - {video: a.mp4, frames: 8}\n",
         r"line 4: a.mp4 frame 8 is both kept and excluded \(see line 2\)"),
        ("exclude:\n  - {video: a.mp4, frame: 3}\n", r"line 2: unknown key 'frame'"),
        ("exclude:\n  - a.mp4\n", r"line 2: each exclude entry needs `video:`"),
        ("drop: []\n", r"line 1: unknown key 'drop'"),
        ("exclude: {video: a.mp4}\n", r"line 1: `exclude` must be a list"),
        ("exclude: [\n", r"not valid YAML"),
    ],
)
def test_bad_curation_is_a_one_line_error_naming_file_and_line_and_writes_nothing(faces, tmp_path, text, message):
    curation = write(tmp_path / "actor.yaml", text)
    out = tmp_path / "actor.h5"
    with pytest.raises(FaceVAEError, match=message) as info:
        build_actor_dataset(faces, out, BuildConfig(), curation=curation)
    assert str(info.value).startswith(str(curation)) and "\n" not in str(info.value)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_keep_needs_a_crop(tmp_path):
    table = pd.DataFrame({"video": ["a.mp4"] * 3, "frame": [0, 1, 2], "kept": [1, 0, 0],
                          "reason": ["", "no_face", "blur"], "crop_index": [0, -1, 1]})  # fmt: skip
    curation = load_curation(write(tmp_path / "c.yaml", "keep:\n  - {video: a.mp4, frames: \"1-2\"}\n"))
    with pytest.raises(FaceVAEError, match=r"line 2: cannot keep a.mp4 frame 1: it has no face crop \(no_face\)"):
        apply_curation(table, curation)
    result = apply_curation(table, load_curation(write(tmp_path / "d.yaml", "keep: [{video: a.mp4, frames: 2}]\n")))
    assert result.kept.tolist() == [True, False, True] and result.rescued == 1


def test_cli_build_with_curation(faces, tmp_path):
    curation = write(tmp_path / "c.yaml", "exclude: [{video: a.mp4, frames: \"1-3\"}]\n")
    result = CliRunner().invoke(app, ["build", str(faces), str(tmp_path / "a.h5"), "--curation", str(curation)])
    assert result.exit_code == 0, result.output
    assert "3 excluded, 0 kept" in result.output
    bad = write(tmp_path / "bad.yaml", "exclude: [{video: z.mp4}]\n")
    result = CliRunner().invoke(app, ["build", str(faces), str(tmp_path / "b.h5"), "--curation", str(bad)])
    assert result.exit_code == 1 and "bad.yaml: line 1: unknown video 'z.mp4'" in result.output
    assert not (tmp_path / "b.h5").exists()


def test_review_groups_kept_first_then_reasons_sorted_by_score():
    table = pd.DataFrame({
        "video": ["a.mp4"] * 6, "frame": range(6), "kept": [1, 1, 0, 0, 0, 0],
        "reason": ["", "", "blur", "blur", "pose", "no_face"], "crop_index": [0, 1, 2, 3, 4, -1],
        "sharpness": [30.0, 20.0, 5.0, 12.0, 40.0, np.nan], "yaw": [0.0, 0.1, 0.0, 0.0, -0.6, np.nan],
    })  # fmt: skip
    groups = review_groups(table)
    assert list(groups) == ["kept", "blur", "pose"]
    assert groups["kept"]["frame"].tolist() == [1, 0]  # blurriest kept first (no occlusion score yet)
    assert groups["blur"]["frame"].tolist() == [3, 2]  # closest to passing first: the one to rescue
    table["occlusion"] = [0.1, 0.9, 0.5, 0.5, 0.5, np.nan]
    table.loc[1, ["kept", "reason"]] = [0, "occluded"]
    groups = review_groups(table)
    assert list(groups) == ["kept", "occluded", "blur", "pose"]
    table.loc[0, ["kept", "reason"]] = [1, "occluded:mouth"]  # kept with the lower face masked
    table.loc[6] = {"video": "a.mp4", "frame": 6, "kept": 1, "reason": "", "crop_index": 5, "sharpness": 25.0,
                    "yaw": 0.0, "occlusion": 0.05}  # fmt: skip
    groups = review_groups(table)
    assert list(groups) == ["kept", "occluded:mouth", "occluded", "blur", "pose"]
    assert groups["occluded:mouth"]["frame"].tolist() == [0] and groups["kept"]["frame"].tolist() == [6]


def test_review_writes_a_static_page_with_every_crop(faces, tmp_path):
    curation = write(tmp_path / "c.yaml", "exclude: [{video: a.mp4, frames: 1}]\nkeep: [{video: b.mov, frames: 4}]\n")
    page = write_review(faces, tmp_path / "review", "actor", curation=curation, per_sheet=20)
    text = page.read_text()
    assert "kept (30)" in text and "blur (10)" in text and "a.mp4" in text and "b.mov" in text
    sheets = sorted(p.name for p in page.parent.glob("*.png") if p.name != "coverage.png")
    assert sheets == ["blur_000.png", "kept_000.png", "kept_001.png"]
    for name in sheets:
        assert f"src='{name}'" in text
    assert text.count("<td>out</td>") == 1 and text.count("<td>in</td>") == 1


def test_cli_review(faces, tmp_path):
    out = tmp_path / "rev"
    result = CliRunner().invoke(app, ["review", "actor", "--faces", str(faces), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists()
    result = CliRunner().invoke(app, ["review", "actor", "--faces", str(tmp_path / "none"), "--out", str(out)])
    assert result.exit_code == 1 and "frames.csv: missing" in result.output


def test_committed_curation_files_are_valid():
    """feat's is empty; pexels's excludes the hand frames the lower-face mask does not cover (and
    keeps nothing), as README and the file's comments say."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "data" / "curation"
    assert (root / "feat.yaml").exists() and not load_curation(root / "feat.yaml")
    pexels = load_curation(root / "pexels.yaml")
    assert {e.action for e in pexels.entries} == {"exclude"}
    assert {e.video for e in pexels.entries} == {"WolfgangLanger_Pexels.mp4"}
    excluded = sorted(f for e in pexels.entries for f in e.frames)
    assert excluded == [58, *range(94, 142)]
