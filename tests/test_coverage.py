"""Expression coverage (facevae.data.coverage) on faces extracted from real clips: groups, summary,
outputs of the build stage and the review page."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facevae.core.config import BuildConfig, ExtractConfig
from facevae.data import coverage
from facevae.data.coverage import (
    frame_features,
    metrics,
    plot_rows,
    range_share,
    read_frames,
    summary,
    write_coverage,
)
from facevae.data.curation import apply_curation, load_curation
from facevae.data.dataset import build_actor_dataset
from facevae.data.review import write_review
from facevae.extract.extractor import extract_actor
from facevae.faces.expression import EXPRESSION_FEATURES, expression_features
from tests.media import astronaut_frames, coffee_frames, write_clip

REPO = Path(__file__).resolve().parents[1]
CURATION = 'exclude: [{video: pair.mp4, frames: "2-3"}]\nkeep: [{video: pair.mp4, frames: 20}]\n'


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> Path:
    """pair.mp4: the astronaut alone for 12 frames (kept), then beside her mirror image for 12
    (dropped as multiple_faces); cut.mp4: 6 frames of her, then 6 of coffee (no_face)."""
    root = tmp_path_factory.mktemp("coverage")
    alone = [np.hstack([f, np.full_like(f, 128)]) for f in astronaut_frames(12)]
    pair = [np.hstack([f, f[:, ::-1]]) for f in astronaut_frames(12)]
    clips = [
        write_clip(root / "pair.mp4", alone + pair),
        write_clip(root / "cut.mp4", astronaut_frames(6) + coffee_frames(6)),
    ]
    extract_actor(
        clips, root / "faces", ExtractConfig(detect_width=256), progress=False
    )
    return root / "faces"


@pytest.fixture
def faces(extracted, tmp_path) -> Path:
    """A copy of the extract output whose cut.mp4 frame 1 is kept with its mouth masked."""
    faces = tmp_path / "faces"
    shutil.copytree(extracted, faces)
    table = read_table(faces)
    table.loc[(table["video"] == "cut.mp4") & (table["frame"] == 1), "reason"] = (
        "occluded:mouth"
    )
    table.to_csv(faces / "frames.csv", index=False)
    (tmp_path / "actor.yaml").write_text(CURATION)
    return faces


def read_table(faces: Path) -> pd.DataFrame:
    return pd.read_csv(faces / "frames.csv", keep_default_na=False, low_memory=False)


def pairs(frames: pd.DataFrame, *groups: str) -> set[tuple[str, int]]:
    rows = frames[frames["group"].isin(groups)]
    return set(zip(rows["video"], rows["frame"].astype(int)))


def test_groups_are_the_frames_build_keeps_and_leaves_out(faces, tmp_path):
    curation = tmp_path / "actor.yaml"
    frames = read_frames(faces, curation)
    counts = build_actor_dataset(
        faces, tmp_path / "a.h5", BuildConfig(), curation=curation
    )
    with h5py.File(tmp_path / "a.h5") as h5:
        in_dataset = set(zip(h5["source"].asstr()[:], h5["frame"][:].tolist()))
    assert pairs(frames, "kept", "masked") == in_dataset
    assert pairs(frames, "masked") == {("cut.mp4", 1)}
    assert pairs(frames, "curated_out") == {("pair.mp4", 2), ("pair.mp4", 3)}
    assert counts["curated_excluded"] == 2 and counts["curated_kept"] == 1
    assert ("pair.mp4", 20) in pairs(frames, "kept")  # curated in
    assert pairs(frames, "dropped:multiple_faces") == {
        ("pair.mp4", f) for f in range(12, 24) if f != 20
    }
    # no_face frames have no landmarks: not part of any group
    assert not {("cut.mp4", f) for f in range(6, 12)} & pairs(
        frames, *frames["group"].unique()
    )
    assert metrics(frames)["frames"] == {
        "kept": 12 - 2 + 1 + 5,
        "masked": 1,
        "curated_out": 2,
        "dropped:multiple_faces": 11,
    }


def test_a_dropped_frame_moves_its_features_from_kept_to_dropped(faces):
    table = read_table(faces)
    before = frame_features(table, apply_curation(table, load_curation(None)))
    row = (table["video"] == "pair.mp4") & (table["frame"] == 5)
    table.loc[row, ["kept", "reason"]] = [0, "blur"]
    after = frame_features(table, apply_curation(table, load_curation(None)))
    moved = (after["video"] == "pair.mp4") & (after["frame"] == 5)
    assert after.loc[moved, "group"].tolist() == ["dropped:blur"]
    was = (before["video"] == "pair.mp4") & (before["frame"] == 5)
    assert before.loc[was, "group"].tolist() == ["kept"]
    features = list(EXPRESSION_FEATURES)
    np.testing.assert_array_equal(after.loc[moved, features], before.loc[was, features])
    n_before, n_after = metrics(before)["frames"], metrics(after)["frames"]
    assert n_after["kept"] == n_before["kept"] - 1 and n_after["dropped:blur"] == 1
    stats = summary(after).set_index(["feature", "group"])
    assert stats.loc[("mouth_open", "dropped:blur"), "count"] == 1


def test_summary_quantiles_are_numpy_quantiles_of_the_table(faces, tmp_path):
    table = read_table(faces)
    frames = read_frames(faces, tmp_path / "actor.yaml")
    stats = summary(frames).set_index(["feature", "group"])
    # independently: landmarks of the kept, not masked rows straight from frames.csv
    kept = table[(table["kept"] == 1) & (table["reason"] == "")]
    kept = kept[~kept["frame"].isin([2, 3]) | (kept["video"] != "pair.mp4")]
    xs = kept[[f"lm_x{i}" for i in range(68)]].astype(float).to_numpy()
    ys = kept[[f"lm_y{i}" for i in range(68)]].astype(float).to_numpy()
    curated_in = table[(table["video"] == "pair.mp4") & (table["frame"] == 20)]
    xs = np.vstack(
        [xs, curated_in[[f"lm_x{i}" for i in range(68)]].astype(float).to_numpy()]
    )
    ys = np.vstack(
        [ys, curated_in[[f"lm_y{i}" for i in range(68)]].astype(float).to_numpy()]
    )
    values = expression_features(np.stack([xs, ys], axis=-1))
    for i, feature in enumerate(EXPRESSION_FEATURES):
        row = stats.loc[(feature, "kept")]
        assert row["count"] == len(values) == 16
        np.testing.assert_allclose(
            row[["q5", "q25", "q50", "q75", "q95"]].to_numpy(float),
            np.quantile(values[:, i], [0.05, 0.25, 0.5, 0.75, 0.95]),
        )
        assert row["min"] == pytest.approx(values[:, i].min())
        assert row["max"] == pytest.approx(values[:, i].max())
    assert set(stats.index.get_level_values("group")) == {
        "kept",
        "masked",
        "curated_out",
        "dropped:multiple_faces",
    }


def test_range_share_is_the_datasets_span_over_the_full_span():
    frames = pd.DataFrame(
        {
            "group": ["kept", "masked", "dropped:pose", "dropped:pose", "curated_out"],
            **{f: [0.2, 0.4, 0.0, 1.0, 0.5] for f in EXPRESSION_FEATURES},
        }
    )
    assert range_share(frames, "mouth_open") == pytest.approx(0.2)
    assert range_share(frames[frames["group"] != "masked"], "eye_open") == 0.0
    only_kept = frames.assign(group="kept")
    assert range_share(only_kept, "brow_height") == 1.0


def test_write_coverage_writes_plot_data_metrics_and_figure(faces, tmp_path):
    frames = read_frames(faces, tmp_path / "actor.yaml")
    out = tmp_path / "reports"
    result = write_coverage(frames, out, "actor")
    assert sorted(p.name for p in out.iterdir()) == [
        "coverage.csv",
        "coverage.json",
        "coverage.png",
    ]
    assert json.loads((out / "coverage.json").read_text()) == result
    assert set(result["range_share"]) == set(EXPRESSION_FEATURES)
    rows = pd.read_csv(out / "coverage.csv")
    assert len(rows) == len(frames) * len(EXPRESSION_FEATURES)
    assert set(rows["range_bin"]) <= {
        f"{lo:02d}-{lo + 10}%" for lo in range(0, 100, 10)
    }
    assert {"00-10%", "90-100%"} <= set(
        rows["range_bin"]
    )  # min and max of every feature
    kept = rows[rows["series"] == "mouth_open | kept"]
    assert len(kept) == result["frames"]["kept"]
    np.testing.assert_allclose(
        np.sort(kept["value"]),
        np.sort(frames.loc[frames["group"] == "kept", "mouth_open"]),
        rtol=1e-4,
    )
    with Image.open(out / "coverage.png") as png:
        png.verify()
        assert png.format == "PNG" and png.size[0] > 600


def test_figure_is_written_atomically(faces, tmp_path, monkeypatch):
    frames = read_frames(faces, None)
    target = tmp_path / "coverage.png"
    target.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(coverage, "figure", broken)
    with pytest.raises(RuntimeError):
        coverage.write_png(frames, target, "actor")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "actor.yaml",
        "coverage.png",
        "faces",
    ]


def test_plot_rows_label_every_feature_and_group(faces):
    frames = read_frames(faces, None)
    rows = plot_rows(frames)
    assert set(rows["series"]) == {
        f"{f} | {g}" for f in EXPRESSION_FEATURES for g in set(frames["group"])
    }


def test_review_page_shows_the_coverage_figure_first(faces, tmp_path):
    page = write_review(
        faces, tmp_path / "review", "actor", curation=tmp_path / "actor.yaml"
    )
    text = page.read_text()
    figure_at = text.index("<img src='coverage.png'")
    assert figure_at < text.index("<img src='kept_000.png'") and figure_at < text.index(
        "<h3>Videos"
    )
    assert "<td>curated_out</td>" in text and "<td>dropped:multiple_faces</td>" in text
    with Image.open(page.parent / "coverage.png") as png:
        png.verify()


def test_build_stage_writes_the_coverage_reports(faces, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(faces, work / "data" / "faces" / "actor")
    (work / "data" / "curation").mkdir()
    shutil.copy(tmp_path / "actor.yaml", work / "data" / "curation" / "actor.yaml")
    (work / "params.yaml").write_text("build: {val_fraction: 0.2}\n")
    run = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "build.py"), "--actor", "actor"],
        check=False,
        capture_output=True,
        text=True,
        cwd=work,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    reports = work / "reports" / "actor"
    assert {p.name for p in reports.iterdir()} == {
        "build.json",
        "coverage.csv",
        "coverage.json",
        "coverage.png",
    }
    metrics_file = json.loads((reports / "coverage.json").read_text())
    assert metrics_file["frames"]["curated_out"] == 2
    assert (work / "data" / "hdf5" / "actor.h5").is_file()
