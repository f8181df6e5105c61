"""Extraction end to end on real clips: outputs, filters with reasons, bad inputs, the CLI."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from facevae.cli import app
from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.extract.extractor import (
    FaceRecord,
    choose_face,
    extract_actor,
    find_videos,
    summary_json,
)
from facevae.faces.align import template_in_crop
from facevae.faces.landmarks import SUBJECT_LEFT_EYE, SUBJECT_RIGHT_EYE
from tests.media import astronaut_frames, coffee_frames, truncate, write_clip

CFG = ExtractConfig(detect_width=256)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    astronaut = astronaut_frames(12)
    mirrored_pair = [np.hstack([frame, frame[:, ::-1]]) for frame in astronaut]
    alone = [np.hstack([frame, np.full_like(frame, 128)]) for frame in astronaut]
    return {
        "astronaut": write_clip(folder / "astronaut.mp4", astronaut),
        "coffee": write_clip(folder / "coffee.mp4", coffee_frames(8)),
        "face_then_cut": write_clip(folder / "face_then_cut.mp4", astronaut[:6] + coffee_frames(6)),
        "alone_then_pair": write_clip(folder / "alone_then_pair.mp4", alone + mirrored_pair),
    }


def read_outputs(out_dir):
    frames = pd.read_csv(out_dir / "frames.csv", keep_default_na=False)
    summary = json.loads((out_dir / "summary.json").read_text())
    return frames, summary


def test_astronaut_clip_is_extracted_and_aligned(clips, tmp_path):
    out = tmp_path / "faces"
    summary = extract_actor([clips["astronaut"]], out, CFG, progress=False)
    frames, summary_file = read_outputs(out)
    assert summary.frames == 12 and summary.kept == 12
    assert summary_file["totals"]["kept"] == 12 and summary_file["skipped"] == {}
    assert list(frames["frame"]) == list(range(12)) and set(frames["video"]) == {"astronaut.mp4"}
    assert list(frames["crop_index"]) == list(range(12)) and set(frames["reason"]) == {""}
    # full detection on the first frame, landmark tracking on the others
    assert frames["detected"].tolist() == [1] + [0] * 11
    template = template_in_crop(CFG.crop_size, CFG.coverage)
    for eye in (SUBJECT_RIGHT_EYE, SUBJECT_LEFT_EYE):
        xs = frames[[f"lm_x{i}" for i in range(68)[eye]]].to_numpy().mean(axis=1)
        ys = frames[[f"lm_y{i}" for i in range(68)[eye]]].to_numpy().mean(axis=1)
        centre = template[eye].mean(axis=0)
        assert np.hypot(xs - centre[0], ys - centre[1]).max() < 3
    with h5py.File(out / "crops.h5") as h5:
        assert h5["images"].shape == (12, 64, 64, 3) and h5["images"].dtype == np.uint8
        assert json.loads(h5.attrs["extract_params"])["detect_width"] == 256
        assert h5["kept"][:].tolist() == [1] * 12 and h5["frame"][:].tolist() == list(range(12))
    assert len(list((out / "crops").glob("astronaut_*.png"))) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]  # no temp folders left


def test_the_same_clip_gives_byte_identical_outputs(clips, tmp_path):
    """The folder is a DVC-cached output: timings go to the stage's report, never into the folder."""
    first, second = tmp_path / "a", tmp_path / "b"
    summary = extract_actor([clips["astronaut"]], first, CFG, progress=False)
    extract_actor([clips["astronaut"]], second, CFG, progress=False)
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert names and names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert [n for n in names if (first / n).read_bytes() != (second / n).read_bytes()] == []
    report = summary_json(summary)["videos"]["astronaut.mp4"]
    assert report["seconds"] > 0 and report["frames_per_s"] > 0 and report["kept"] == 12


def test_workers_change_nothing_in_the_outputs(clips, tmp_path):
    """Videos extracted in parallel processes come back in order: the same bytes as one at a time."""
    videos = [clips["alone_then_pair"], clips["astronaut"], clips["face_then_cut"]]
    extract_actor(videos, tmp_path / "one", CFG, progress=False)
    extract_actor(videos, tmp_path / "two", CFG.model_copy(update={"workers": 2}), progress=False)
    names = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(names) > 3 and names == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert [n for n in names if (tmp_path / "one" / n).read_bytes() != (tmp_path / "two" / n).read_bytes()] == []


KILL_A_WORKER = """
import multiprocessing, os, signal, sys, threading, time
from pathlib import Path
from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.extract.extractor import extract_actor

def kill_the_first_worker():
    while not multiprocessing.active_children():
        time.sleep(0.005)
    os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

if __name__ == "__main__":
    threading.Thread(target=kill_the_first_worker, daemon=True).start()
    videos, out = [Path(p) for p in sys.argv[1:3]], Path(sys.argv[3])
    try:
        extract_actor(videos, out, ExtractConfig(detect_width=256, workers=2), progress=False)
    except FaceVAEError as exc:
        print("error:", exc)
"""


def test_a_killed_worker_is_a_clear_error_and_writes_nothing(clips, tmp_path):
    """A worker that dies (as the kernel's out-of-memory killer would kill it) is named, not a
    traceback, and the run ends. In its own interpreter with a timeout, so a hang fails the test
    instead of stalling the suite."""
    script = tmp_path / "kill_a_worker.py"
    script.write_text(KILL_A_WORKER)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(script), str(clips["astronaut"]), str(clips["alone_then_pair"]), str(out)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"error: .*\.mp4: a worker process died .* try fewer extract.workers", run.stdout), run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kill_a_worker.py"]  # nothing written


def test_frames_after_a_cut_to_no_face_are_dropped_as_no_face(clips, tmp_path):
    extract_actor([clips["face_then_cut"]], tmp_path / "out", CFG, progress=False)
    frames, _ = read_outputs(tmp_path / "out")
    assert frames["kept"].tolist() == [1] * 6 + [0] * 6
    assert frames["reason"].tolist() == [""] * 6 + ["no_face"] * 6
    assert (frames["crop_index"] >= 0).tolist() == [True] * 6 + [False] * 6


def test_two_faces_of_one_person_are_ambiguous(clips, tmp_path):
    extract_actor([clips["alone_then_pair"]], tmp_path / "out", CFG, progress=False)
    frames, summary = read_outputs(tmp_path / "out")
    assert frames["reason"].tolist()[:12] == [""] * 12
    assert frames["reason"].tolist()[12:] == ["multiple_faces"] * 12
    assert (frames["faces"].tolist()[12:]) == [2] * 12
    assert (frames["crop_index"] >= 0).all()  # dropped faces still have a crop for review
    assert summary["videos"]["alone_then_pair.mp4"]["dropped"]["multiple_faces"] == 12


def face(px=100.0, quality=""):
    nan = math.nan
    return FaceRecord(0, 0, quality, np.zeros(4), nan, 0.0, 0.0, px, 100.0, np.zeros((68, 2)), np.zeros((2, 3)))


@pytest.mark.parametrize(
    "dists, expected",
    [
        ([0.3], (0, "")),
        ([0.8], (0, "wrong_identity")),
        ([math.nan], (0, "")),
        ([0.9, 0.3], (1, "")),  # the actor among strangers is kept
        ([0.8, 0.9], (0, "wrong_identity")),
        ([0.3, 0.4], (0, "multiple_faces")),  # two look like the actor: ambiguous
        ([0.9, math.nan], (0, "multiple_faces")),  # one unknown: ambiguous (the nearest known is shown)
    ],
)
def test_choose_face(dists, expected):
    assert choose_face([face() for _ in dists], dists, threshold=0.6) == expected


def test_quality_reason_of_a_kept_face_is_its_drop_reason():
    assert choose_face([face(quality="blur")], [0.2], threshold=0.6) == (0, "blur")
    assert choose_face([], [], threshold=0.6) == (None, "no_face")


@pytest.mark.parametrize(
    "override, reason",
    [({"min_face_px": 1000}, "tiny"), ({"max_roll_deg": 0.01}, "pose"), ({"min_sharpness": 1e9}, "blur")],
)
def test_quality_filters_name_their_reason(clips, tmp_path, override, reason):
    cfg = CFG.model_copy(update=override)
    with pytest.raises(FaceVAEError, match=f"no usable face in .*astronaut.mp4: all 12 frames .*12 {reason}"):
        extract_actor([clips["astronaut"]], tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()


def test_no_face_anywhere_is_an_error_and_writes_nothing(clips, tmp_path):
    with pytest.raises(FaceVAEError, match="no face found in .*coffee.mp4"):
        extract_actor([clips["coffee"]], tmp_path / "out", CFG, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_empty_folder_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "videos"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    with pytest.raises(FaceVAEError, match="no videos found") as info:
        extract_actor([empty], tmp_path / "out", CFG, progress=False)
    assert info.value.path == empty and not (tmp_path / "out").exists()
    with pytest.raises(FaceVAEError, match="no videos given"):
        find_videos([])


@pytest.fixture
def bad_and_good(clips, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "a_notes.mp4").write_text("not a video")
    truncate(clips["astronaut"], folder / "b_cut.mp4", keep=0.5)
    (folder / "c_good.mp4").write_bytes(clips["astronaut"].read_bytes())
    return folder


@pytest.mark.parametrize("workers", [1, 2])
def test_fail_policy_stops_at_the_bad_video_and_writes_nothing(bad_and_good, tmp_path, workers):
    cfg = CFG.model_copy(update={"workers": workers})
    with pytest.raises(FaceVAEError, match="a_notes.mp4: not a readable video"):
        extract_actor([bad_and_good], tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_policy_keeps_the_good_videos_work(bad_and_good, tmp_path, workers):
    cfg = CFG.model_copy(update={"on_error": "skip", "workers": workers})
    summary = extract_actor([bad_and_good], tmp_path / "out", cfg, progress=False)
    frames, summary_file = read_outputs(tmp_path / "out")
    assert set(summary_file["skipped"]) == {"a_notes.mp4", "b_cut.mp4"}
    assert "not a readable video" in summary_file["skipped"]["a_notes.mp4"]
    assert set(frames["video"]) == {"c_good.mp4"} and summary.kept == 12


def test_cli_extract(clips, tmp_path):
    runner = CliRunner()
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  detect_width: 256\n")
    result = runner.invoke(
        app, ["extract", str(clips["astronaut"]), "--out", str(tmp_path / "out"), "--params", str(params),
              "--set", "extract.save_crops=false", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "kept 12 of 12 frames" in result.output
    assert not (tmp_path / "out" / "crops").exists()
    bad = runner.invoke(app, ["extract", str(tmp_path / "absent.mp4"), "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 1 and "absent.mp4: no such file or folder" in bad.output


# ---- the real sample clips ------------------------------------------------------------------


@pytest.mark.slow
def test_faceless_frames_of_the_feat_clips_are_dropped_as_no_face(sample_clips_dir, tmp_path):
    clips = [sample_clips_dir / "face_noface.mov", sample_clips_dir / "noface_face.mov"]
    summary = extract_actor(clips, tmp_path / "out", ExtractConfig(), progress=False)
    frames, _ = read_outputs(tmp_path / "out")
    first = frames[frames["video"] == "face_noface.mov"]
    second = frames[frames["video"] == "noface_face.mov"]
    assert len(first) == len(second) == 169
    # face_noface: the man talks, then a cut to a cartoon title; noface_face is the reverse
    # (its last frame is black). dlib at full resolution agrees on every frame but the cut.
    assert (first["reason"].iloc[72:] == "no_face").all() and (first["kept"].iloc[:72] == 1).all()
    assert (second["reason"].iloc[:96] == "no_face").all() and (second["kept"].iloc[97:168] == 1).all()
    assert second["reason"].iloc[168] == "no_face"
    assert summary.dropped["wrong_identity"] == summary.dropped["multiple_faces"] == 0


@pytest.mark.slow
def test_pexels_keeps_most_frames_and_another_person_is_the_wrong_identity(sample_clips_dir, tmp_path):
    clips = [sample_clips_dir / "WolfgangLanger_Pexels.mp4", sample_clips_dir / "face_noface.mov"]
    summary = extract_actor(clips, tmp_path / "out", ExtractConfig(), progress=False)
    pexels = summary.videos["WolfgangLanger_Pexels.mp4"]
    # a hand covers her mouth in about a third of the frames (dropped as occluded, see test_occlusion)
    assert pexels["kept"] + pexels["dropped"]["occluded"] >= 0.9 * pexels["frames"]
    man = summary.videos["face_noface.mov"]["dropped"]
    assert man["wrong_identity"] == 72 and man["no_face"] == 97
