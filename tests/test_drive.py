"""Driving the actor: reconstruct on real clips and photos, held frames, bad inputs, walk, sample, demo."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from facevae.apps.reconstruct import reconstruct, reconstruct_video
from facevae.apps.render import SideBySide, border_px
from facevae.cli import app
from facevae.core.config import ExtractConfig
from facevae.core.errors import FaceVAEError
from facevae.data.video import iter_frames, probe
from facevae.extract.drivers import align_driver, aligner_for
from facevae.extract.extractor import extract_video
from facevae.faces.detect import FaceEncoder
from tests.media import write_clip

REPO = Path(__file__).resolve().parents[1]
CFG = ExtractConfig()


def facevae_cli(*args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    """The installed `facevae` command in a fresh process."""
    script = Path(sys.executable).with_name("facevae")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "facevae.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def aligner(model):
    return aligner_for(CFG, model.crop)


@pytest.fixture(scope="module")
def media(sample_clips_dir, tmp_path_factory):
    """Real clips and photos, plus a clip of no-face frames around face frames (no audio)."""
    folder = tmp_path_factory.mktemp("drive-media")
    face = [rgb for _, _, rgb in iter_frames(sample_clips_dir / "single_face.mp4")][:8]
    size = (face[0].shape[1], face[0].shape[0])
    room = [rgb for _, _, rgb in iter_frames(sample_clips_dir / "no_face.mp4")][:7]
    empty = [cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) for rgb in room]
    no_face_png = folder / "room.png"
    Image.fromarray(empty[0]).save(no_face_png)
    photos = folder / "photos"
    photos.mkdir()
    for name in ("single_face.jpg", "multi_face.jpg"):
        shutil.copy(sample_clips_dir / name, photos / name)
    shutil.copy(no_face_png, photos / "room.png")
    notes = folder / "notes.mp4"
    notes.write_text("not a video\n")
    return {
        "video": sample_clips_dir / "single_face.mp4",
        "no_face_video": sample_clips_dir / "no_face.mp4",
        "gaps": write_clip(folder / "gaps.mp4", empty[:3] + face + empty[3:7], fps=10),
        "photo": sample_clips_dir / "single_face.jpg",
        "no_face_photo": no_face_png,
        "photos": photos,
        "notes": notes,
    }


def test_driver_faces_are_aligned_exactly_as_extraction_aligns(media, model, aligner, tmp_path):
    driver = align_driver(media["video"], CFG, model.crop, aligner=aligner)
    assert driver.crops.shape == (72, 64, 64, 3) and driver.crops.dtype == np.uint8
    assert driver.found.all() and driver.frame_count == 72 and driver.fps == pytest.approx(30)
    assert driver.landmarks.shape == (72, 68, 2) and np.isfinite(driver.landmarks).all()
    result = extract_video(media["video"], CFG, tmp_path / "part.h5", aligner, FaceEncoder(), progress=False)
    assert [len(frame.faces) for frame in result.frames] == [1] * 72
    with h5py.File(tmp_path / "part.h5") as part:
        np.testing.assert_array_equal(part["images"][:], driver.crops)


def test_max_frames_keeps_the_first_frames_of_a_driver(media, model, aligner):
    whole = align_driver(media["video"], CFG, model.crop, aligner=aligner)
    first = align_driver(media["video"], CFG, model.crop, aligner=aligner, max_frames=10)
    assert first.crops.shape[0] == first.frame_count == 10
    np.testing.assert_array_equal(first.crops, whole.crops[:10])
    np.testing.assert_array_equal(first.landmarks, whole.landmarks[:10])


def test_reconstruct_cli_keeps_frame_count_fps_and_audio(tiny, media, tmp_path):
    out, arrays = tmp_path / "out.mp4", tmp_path / "out.npz"
    run = facevae_cli(
        "reconstruct", "--model", "pexels", "--input", str(media["video"]), "--output", str(out),
        "--save-arrays", str(arrays), "--upscale", "2", "--no-progress", "--params", str(REPO / "params.yaml"),
        "--gaps", str(tmp_path / "gaps.png"), env=tiny.env(), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "72 frames at 30 fps, 72 with a face, 0 without a face" in run.stdout
    assert f"{tmp_path / 'gaps.png'}: the faces driven farthest beyond the actor's footage" in run.stdout
    assert Image.open(tmp_path / "gaps.png").size[0] >= 8 * 64
    source, info = probe(media["video"]), probe(out)
    assert info.frame_count == source.frame_count == 72
    assert info.fps == pytest.approx(source.fps) and info.has_audio and source.has_audio
    border = border_px(128)
    assert (info.width, info.height) == (2 * 128 + 3 * border, 128 + 2 * border)
    with np.load(arrays) as saved:
        assert saved["driver"].shape == saved["output"].shape == (72, 64, 64, 3)
        assert saved["driver"].dtype == saved["output"].dtype == np.uint8 and saved["found"].all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gaps.png", "out.mp4", "out.npz"]  # no temp files left


def test_frames_without_a_face_hold_the_last_output_and_are_counted(media, model, aligner, tmp_path):
    out = tmp_path / "gaps.mp4"
    summary = reconstruct_video(
        model, media["gaps"], out, CFG, upscale=1, save_arrays=tmp_path / "gaps.npz", progress=False, aligner=aligner
    )
    assert (summary.frames, summary.with_face, summary.blank, summary.held) == (15, 8, 3, 4)
    assert "3 blank before the first face" in summary.describe() and not summary.audio
    info = probe(out)
    assert info.frame_count == 15 and info.fps == pytest.approx(10) and not info.has_audio
    frames = [rgb.astype(int) for _, _, rgb in iter_frames(out)]
    blank = SideBySide(64).blank().astype(int)
    for i in range(3):
        assert np.abs(frames[i] - blank).mean() < 3  # grey before the first face
    for i in range(11, 15):
        assert np.abs(frames[i] - frames[10]).mean() < 3  # the last output, held
    assert np.abs(frames[10] - blank).mean() > 10
    with np.load(tmp_path / "gaps.npz") as saved:
        assert saved["found"].tolist() == [False] * 3 + [True] * 8 + [False] * 4
        np.testing.assert_array_equal(saved["output"][11:], np.repeat(saved["output"][10:11], 4, axis=0))


def test_photo_and_folder_inputs_give_pngs(media, model, tmp_path):
    one = reconstruct(model, media["photo"], tmp_path / "one.png", CFG, upscale=2, progress=False)
    assert one.with_face == 1
    with Image.open(tmp_path / "one.png") as image:
        assert image.size == (2 * 128 + 3 * border_px(128), 128 + 2 * border_px(128))
    folder = reconstruct(model, media["photos"], tmp_path / "out", CFG, save_arrays=tmp_path / "p.npz", progress=False)
    assert (folder.frames, folder.with_face, folder.skipped) == (3, 2, ["room.png"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["multi_face.png", "single_face.png"]
    with np.load(tmp_path / "p.npz") as saved:
        assert saved["driver"].shape == saved["output"].shape == (2, 64, 64, 3)


def test_bad_inputs_are_one_line_errors_and_write_nothing(media, model, tmp_path):
    cases = [
        (media["no_face_photo"], tmp_path / "a.png", "no face found in this image"),
        (media["notes"], tmp_path / "b.mp4", "not a readable video"),
        (media["no_face_video"], tmp_path / "c.mp4", "no face found in any of its"),
        (media["video"], tmp_path / "d.txt", "a video input needs a video output"),
        (tmp_path / "missing.mp4", tmp_path / "e.mp4", "no such file"),
    ]
    for source, output, message in cases:
        with pytest.raises(FaceVAEError, match=message) as err:
            reconstruct(model, source, output, CFG, save_arrays=tmp_path / "x.npz", progress=False)
        assert "\n" not in str(err.value)
    with pytest.raises(FaceVAEError, match="--gaps is for a video input"):
        reconstruct(model, media["photos"], tmp_path / "out", CFG, progress=False, gaps=tmp_path / "gaps.png")
    assert list(tmp_path.iterdir()) == []  # not even temp files


def test_cli_errors_exit_nonzero_with_one_line(tiny, media, tmp_path):
    run = facevae_cli(
        "reconstruct", "-m", str(tiny.model_path), "-i", str(media["notes"]), "-o", str(tmp_path / "o.mp4"),
        "--params", str(REPO / "params.yaml"),
    )  # fmt: skip
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and run.stderr.startswith("error: ")
    assert "not a readable video" in run.stderr and not (tmp_path / "o.mp4").exists()
    run = facevae_cli(
        "sample", "-m", "models:/facevae-nobody@champion", "-o", str(tmp_path / "s.png"),
        "--params", str(REPO / "params.yaml"), env=tiny.env(),
    )  # fmt: skip
    assert run.returncode == 1 and run.stderr.count("\n") == 1
    assert "registered models: models:/facevae-pexels@champion (v1)" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_walk_and_sample_outputs(tiny, media, tmp_path):
    runner = CliRunner()
    common = ["--model", str(tiny.model_path), "--params", str(REPO / "params.yaml")]
    ends = ["--from", str(media["photo"]), "--to", f"{tiny.dataset}:3"]
    walk = ["walk", *common, *ends, "--steps", "8", "--upscale", "2"]
    result = runner.invoke(app, [*walk, "--output", str(tmp_path / "walk.gif")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "walk.gif") as gif:
        assert gif.n_frames == 8 and gif.size == (128, 128)
    result = runner.invoke(app, [*walk, "--mode", "slerp", "--bounce", "--output", str(tmp_path / "walk.mp4")])
    assert result.exit_code == 0, result.output
    info = probe(tmp_path / "walk.mp4")
    assert info.frame_count == 14 and (info.width, info.height) == (128, 128)
    result = runner.invoke(app, ["sample", *common, "--n", "10", "--seed", "1", "--output", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "s.png") as grid:
        assert grid.size == (4 * 66 + 2, 3 * 66 + 2)  # 4 columns, 3 rows of 64 px faces, 2 px gaps
    bad_walk = ["walk", *common, "--from", str(media["photo"]), "--output", str(tmp_path / "x.gif")]
    bad = runner.invoke(app, [*bad_walk, "--to", str(media["no_face_photo"])])
    assert bad.exit_code == 1 and "no face found in this image" in bad.output
    bad = runner.invoke(app, [*bad_walk, "--to", f"{tiny.dataset}:999"])
    assert bad.exit_code == 1 and "out of range" in bad.output
    assert not (tmp_path / "x.gif").exists()


def test_demo_stage_renders_video_walk_and_samples(tiny, media, tmp_path):
    (tmp_path / "models" / "pexels").mkdir(parents=True)
    (tmp_path / "data" / "hdf5").mkdir(parents=True)
    shutil.copy(tiny.model_path, tmp_path / "models" / "pexels" / "model.pt")
    shutil.copy(tiny.dataset, tmp_path / "data" / "hdf5" / "pexels.h5")
    params = {"demo": {"drivers": {"pexels": str(media["video"])}, "walk_steps": 6, "samples": 4, "upscale": 2}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "demo.py"), "--actor", "pexels"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    reports = tmp_path / "reports" / "pexels"
    assert probe(reports / "demo.mp4").frame_count == 72
    with Image.open(reports / "walk.gif") as gif:
        assert gif.n_frames == 10 and gif.size == (128, 128)  # 6 there, 4 back
    assert (reports / "samples.png").is_file()
    assert json.loads((reports / "demo.json").read_text())["frames_with_face"] == 72
