"""Video I/O on real clips: streaming decode, rotation metadata, bad files, atomic writing."""

from __future__ import annotations

import numpy as np
import pytest

from facevae.core.errors import FaceVAEError
from facevae.data.video import VideoWriter, iter_frames, probe
from tests.media import astronaut_frames, truncate, write_clip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("video")


@pytest.fixture(scope="module")
def astronaut_mp4(clip_dir):
    return write_clip(clip_dir / "astronaut.mp4", astronaut_frames(12))


def test_probe_describes_the_clip(astronaut_mp4):
    info = probe(astronaut_mp4)
    assert (info.width, info.height, info.frame_count, info.rotation) == (256, 256, 12, 0)
    assert info.fps == pytest.approx(10)
    assert info.codec == "h264" and not info.has_audio


def test_iter_frames_streams_every_frame_in_order(astronaut_mp4):
    written = astronaut_frames(12)
    decoded = list(iter_frames(astronaut_mp4))
    assert [index for index, _, _ in decoded] == list(range(12))
    assert [t for _, t, _ in decoded] == pytest.approx([i / 10 for i in range(12)])
    for (_, _, rgb), original in zip(decoded, written):
        assert rgb.dtype == np.uint8 and rgb.shape == (256, 256, 3)
        assert np.abs(rgb.astype(int) - original).mean() < 4  # lossy codec, same picture


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(clip_dir, rotation):
    wide = [frame[:128] for frame in astronaut_frames(3)]  # 256 wide, 128 high: orientation shows
    path = write_clip(clip_dir / f"rotated{rotation}.mp4", wide, rotation=rotation)
    info = probe(path)
    expected = np.rot90(wide[0], rotation // 90)  # counter-clockwise, as the display matrix means
    assert (info.height, info.width) == expected.shape[:2]
    _, _, rgb = next(iter_frames(path))
    assert rgb.shape == expected.shape
    assert np.abs(rgb.astype(int) - expected).mean() < 4


def test_mpeg4_avi_is_read(clip_dir):
    path = write_clip(clip_dir / "astronaut.avi", astronaut_frames(5), codec="mpeg4")
    assert probe(path).codec == "mpeg4"
    assert len(list(iter_frames(path))) == 5


def test_text_file_named_mp4_is_one_clear_error(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(FaceVAEError, match="not a readable video") as info:
        list(iter_frames(fake))
    assert info.value.path == fake
    with pytest.raises(FaceVAEError, match="notes.mp4: not a readable video"):
        probe(fake)


def test_truncated_video_is_an_error_naming_it(clip_dir, tmp_path):
    # index at the end (the default): the cut file has none
    cut = truncate(clip_dir / "astronaut.mp4", tmp_path / "cut.mp4", keep=0.5)
    with pytest.raises(FaceVAEError, match="not a readable video") as info:
        list(iter_frames(cut))
    assert info.value.path == cut


def test_truncated_faststart_video_is_detected_by_its_missing_frames(tmp_path):
    # index at the front: the file opens and decodes, but ends early (noise makes every frame
    # big, so the cut falls well after the first frame)
    noise = np.random.default_rng(0).integers(0, 256, size=(30, 128, 128, 3), dtype=np.uint8)
    whole = write_clip(tmp_path / "whole.mp4", list(noise), faststart=True)
    cut = truncate(whole, tmp_path / "cut.mp4", keep=0.6)
    with pytest.raises(FaceVAEError, match=r"truncated: decoded \d+ of the 30 frames"):
        list(iter_frames(cut))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FaceVAEError, match="no such file"):
        probe(tmp_path / "absent.mp4")


def test_writer_round_trip(tmp_path):
    frames = astronaut_frames(8)
    with VideoWriter(tmp_path / "out.mp4", fps=25) as writer:
        for rgb in frames:
            writer.write(rgb)
    info = probe(tmp_path / "out.mp4")
    assert (info.width, info.height, info.frame_count) == (256, 256, 8)
    assert info.fps == pytest.approx(25)
    decoded = [rgb for _, _, rgb in iter_frames(tmp_path / "out.mp4")]
    assert np.abs(decoded[3].astype(int) - frames[3]).mean() < 4
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp file left


def test_writer_leaves_nothing_when_interrupted(tmp_path):
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "out.mp4", fps=25) as writer:
            writer.write(astronaut_frames(1)[0])
            raise RuntimeError("crash mid-video")
    assert list(tmp_path.iterdir()) == []


def test_writer_pads_odd_sizes_and_rejects_size_changes(tmp_path):
    with pytest.raises(FaceVAEError, match="frame 1 is"):
        with VideoWriter(tmp_path / "odd.avi", fps=10) as writer:
            writer.write(np.zeros((63, 65, 3), np.uint8))
            writer.write(np.zeros((32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with VideoWriter(tmp_path / "odd.avi", fps=10) as writer:
        writer.write(np.zeros((63, 65, 3), np.uint8))
    assert (probe(tmp_path / "odd.avi").width, probe(tmp_path / "odd.avi").height) == (66, 64)


def test_writer_copies_audio_from_a_source(tmp_path):
    source = write_clip(tmp_path / "talk.mp4", astronaut_frames(10), audio_seconds=1.0)
    assert probe(source).has_audio
    with VideoWriter(tmp_path / "out.mp4", fps=10, audio_from=source) as writer:
        for rgb, _ in zip(astronaut_frames(10), range(10)):
            writer.write(rgb[:64, :64])
    out = probe(tmp_path / "out.mp4")
    assert out.has_audio and out.frame_count == 10


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, size, frames",
    [("WolfgangLanger_Pexels.mp4", (640, 360), 472), ("face_noface.mov", (960, 540), 169)],
)
def test_sample_clips_decode_completely(sample_clips_dir, name, size, frames):
    info = probe(sample_clips_dir / name)
    assert (info.width, info.height) == size and info.frame_count == frames and info.has_audio
    count = 0
    for index, _, rgb in iter_frames(sample_clips_dir / name):
        assert rgb.shape == (size[1], size[0], 3)
        count = index + 1
    assert count == frames
