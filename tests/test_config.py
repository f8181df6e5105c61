from pathlib import Path

import pytest

from facevae.core.config import Params, flatten, load_params
from facevae.core.errors import FaceVAEError

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_is_valid_and_complete():
    params = load_params(REPO / "params.yaml")
    # every section of the typed config is spelled out in params.yaml, so the file holds every knob
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(raw) == set(Params.model_fields)
    assert params.actors


def test_overrides_are_parsed_as_yaml(tmp_path):
    params = load_params(REPO / "params.yaml", ["train.epochs=3", "model.enc_channels=[8, 16, 32, 64]",
                                                 "train.augment.hflip=false"])
    assert params.train.epochs == 3
    assert params.model.enc_channels == [8, 16, 32, 64]
    assert params.train.augment.hflip is False


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"),
    ("model.recon_loss=l1", "model.recon_loss"),
    ("extract.no_such_knob=1", "extract.no_such_knob"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(FaceVAEError, match=key.replace(".", r"\.")):
        load_params(REPO / "params.yaml", [override])


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(FaceVAEError, match=str(bad)):
        load_params(bad)


def test_flatten_gives_dotted_keys():
    flat = flatten(Params())
    assert flat["train.augment.hflip"] is True
    assert "model.latent_dim" in flat


def test_the_schema_defaults_are_params_yaml():
    """One source of defaults: a run or test without params.yaml gets the shipped recipe."""
    shipped = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    differ = {k: (v, flatten(shipped)[k]) for k, v in flatten(Params()).items() if flatten(shipped)[k] != v}
    assert differ == {}, f"config.py default vs params.yaml: {differ}"
