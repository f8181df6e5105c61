from facevae.samples import SAMPLE_FILES, fetch_samples, sha256_of


def test_samples_are_laid_out_as_actors_with_checked_hashes(sample_layout):
    assert sorted(p.name for p in (sample_layout.raw_dir / "pexels").iterdir()) == ["WolfgangLanger_Pexels.mp4"]
    assert sorted(p.name for p in (sample_layout.raw_dir / "feat").iterdir()) == ["face_noface.mov"]
    for sample in SAMPLE_FILES:
        folder = sample_layout.drivers_dir if sample.group == "drivers" else sample_layout.raw_dir / sample.group
        assert sha256_of(folder / sample.name) == sample.sha256


def test_a_damaged_clip_is_fetched_again(sample_layout):
    clip = sample_layout.raw_dir / "pexels" / "WolfgangLanger_Pexels.mp4"
    original = clip.read_bytes()
    clip.write_bytes(original[:1000])
    fetch_samples(sample_layout)
    assert clip.read_bytes() == original
