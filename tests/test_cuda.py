"""The training path on a CUDA GPU, mixed precision included.

Skipped where torch sees no GPU (CI has none); run on a GPU machine with `make test-gpu`
(`pytest -m gpu`). Nothing here is mocked: the same run_training as `facevae train`.
"""

import math
import os

import numpy as np
import pytest
import torch

from facevae.data.dataset import read_split
from facevae.faces.crop import CropGeometry
from facevae.model.files import load_model
from facevae.tracking.runs import face_grids
from facevae.training.loop import CHECKPOINT, resolve_precision, run_training
from facevae.transfer.actor import ActorModel
from tests.facedata import quick_params, write_face_dataset

# cuBLAS reads this when its first handle is made: set before any CUDA work, for the determinism test
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def faces_h5(tmp_path_factory):
    """More faces than the shared fixture: enough batches for mixed precision to differ from fp32."""
    return write_face_dataset(tmp_path_factory.mktemp("data") / "astro.h5", n_train=96, n_val=16)


def params(model=None, **train):
    return quick_params(model, device="cuda", **train)


def val_faces(path) -> torch.Tensor:
    return torch.from_numpy(read_split(path, "val")).permute(0, 3, 1, 2).float() / 255


def test_auto_precision_on_cuda_is_bf16_where_the_gpu_has_it():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("fp32", torch.device("cuda")) is None


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp16", "fp32"])
def test_cuda_training_learns_and_writes_a_model_that_loads_on_the_cpu(faces_h5, tmp_path, precision):
    mirror_only = {"hflip": True, "color_jitter": 0.0, "affine_jitter": 0.0}  # jitter has its own test below
    result = run_training(faces_h5, "astro", params(epochs=5, precision=precision, augment=mirror_only), tmp_path,
                          progress=False)
    assert all(math.isfinite(v) for row in result.history for v in row.values())
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < 0.9 * first["train_loss"], [r["train_loss"] for r in result.history]
    assert last["val_loss"] < first["val_loss"]

    on_cpu = load_model(tmp_path / "model.pt")
    assert {p.device.type for p in on_cpu.parameters()} == {"cpu"}
    on_gpu = load_model(tmp_path / "model.pt", map_location="cuda")
    faces = val_faces(faces_h5)
    difference = (on_cpu.reconstruct(faces) - on_gpu.reconstruct(faces.cuda()).cpu()).abs().max().item()
    assert difference < 1e-2  # fp32 on both; cuDNN may use TF32 convolutions

    scaler = torch.load(tmp_path / CHECKPOINT, weights_only=True)["scaler"]
    assert bool(scaler) == (resolve_precision(precision, torch.device("cuda")) == torch.float16)


def test_cuda_resume_gives_identical_weights_with_deterministic_kernels(faces_h5, tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        straight = run_training(faces_h5, "a", params(epochs=3), tmp_path / "straight", progress=False)
        run_training(faces_h5, "a", params(epochs=2), tmp_path / "killed", progress=False)
        resumed = run_training(faces_h5, "a", params(epochs=3), tmp_path / "killed", resume=True, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(straight.history) == strip(resumed.history)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_adversarial_decoder_phase_leaves_the_encoder_alone_and_resumes(faces_h5, tmp_path, precision):
    sharper = {"ssim_weight": 1.0, "gdl_weight": 0.1}
    phase = dict(precision=precision, adversarial_weight=0.3, adversarial_warmup=1)
    torch.use_deterministic_algorithms(True)
    try:
        vae_only = run_training(faces_h5, "a", params(sharper, epochs=2, **phase), tmp_path / "vae", progress=False)
        straight = run_training(faces_h5, "a", params(sharper, epochs=2, decoder_epochs=3, **phase),
                                tmp_path / "straight", progress=False)
        run_training(faces_h5, "a", params(sharper, epochs=2, decoder_epochs=2, **phase), tmp_path / "killed",
                     progress=False)
        run_training(faces_h5, "a", params(sharper, epochs=2, decoder_epochs=3, **phase), tmp_path / "killed",
                     resume=True, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(math.isfinite(v) for row in straight.history for v in row.values())
    assert "train_adv" in straight.history[-1] and "train_adv" not in straight.history[2]  # after the warm-up
    weights = {name: torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"]
               for name in ("vae", "straight", "killed")}
    encoder = [k for k in weights["vae"] if k.startswith("encoder.")]
    decoder = [k for k in weights["vae"] if k.startswith("decoder.") and weights["vae"][k].is_floating_point()]
    assert all(torch.equal(weights["vae"][k], weights["straight"][k]) for k in encoder)
    assert not all(torch.equal(weights["vae"][k], weights["straight"][k]) for k in decoder)
    assert all(torch.equal(weights["straight"][k], weights["killed"][k]) for k in weights["straight"])
    assert [r["val_loss"] for r in vae_only.history] == [r["val_loss"] for r in straight.history[:2]]


def test_colour_and_warp_augmentation_runs_with_images_on_the_gpu(faces_h5, tmp_path):
    augment = {"hflip": True, "color_jitter": 0.5, "affine_jitter": 0.5}  # albumentations round-trips via the CPU
    result = run_training(faces_h5, "a", params(epochs=2, augment=augment), tmp_path, progress=False)
    assert all(math.isfinite(row["train_loss"]) for row in result.history)


def test_sample_grids_and_driving_work_with_a_model_on_the_gpu(faces_h5, tmp_path):
    run_training(faces_h5, "a", params(epochs=2), tmp_path, progress=False)
    vae = load_model(tmp_path / "model.pt", map_location="cuda")
    faces = torch.from_numpy(read_split(faces_h5, "val")).permute(0, 3, 1, 2).cuda()
    grids = face_grids(vae, faces)
    assert grids and all(g.dtype == np.uint8 and g.ndim == 3 for g in grids.values())

    crops = read_split(faces_h5, "val")
    gpu = ActorModel(vae, CropGeometry(64, 1.6)).reconstruct(crops)
    cpu = ActorModel(load_model(tmp_path / "model.pt"), CropGeometry(64, 1.6)).reconstruct(crops)
    assert gpu.dtype == np.uint8 and gpu.shape == crops.shape
    assert np.abs(gpu.astype(int) - cpu.astype(int)).max() <= 3
