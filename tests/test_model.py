import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facevae.core.config import ModelConfig
from facevae.core.errors import FaceVAEError
from facevae.model.files import load_model, save_model
from facevae.model.flops import flops_per_image
from facevae.model.losses import (
    SSIM_RADIUS,
    SSIM_SIGMA,
    gradient_difference,
    ssim_map,
    vae_loss,
)
from facevae.model.vae import (
    VAE,
    Deconv,
    VAEOutput,
    decoder_sizes,
    encoder_sizes,
    same_padding,
)


def seed_config(**changes) -> ModelConfig:
    """The seed's 2017 architecture and loss (deconv decoder, no SSIM term), which these tests pin
    down; the shipped recipe (params.yaml, the config defaults) uses the resize decoder and SSIM."""
    return ModelConfig(**{"decoder": "deconv", "ssim_weight": 0.0, **changes})


def test_seed_architecture_at_64x64():
    cfg = seed_config()
    model = VAE(cfg).eval()
    x = torch.rand(2, 3, 64, 64)
    assert encoder_sizes(cfg) == [32, 16, 8, 4]
    assert model.encoder.convs(x).shape == (2, 256, 4, 4)
    assert model.encoder.mu.in_features == 4 * 4 * 256
    assert decoder_sizes(cfg) == [5, 13, 30, 64]
    assert model.decoder.fc.out_features == 1024
    out = model(x)
    assert out.logits.shape == (2, 3, 64, 64)
    assert out.mu.shape == out.logvar.shape == (2, 30)
    assert 0 <= out.recon.min() and out.recon.max() <= 1
    convs = [m for m in model.encoder.convs if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (c, (4, 4), (2, 2)) for c in (32, 64, 128, 256)
    ]
    deconvs = [m for m in model.decoder.deconvs if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.out_channels, m.kernel_size[0]) for m in deconvs] == [(128, 5), (64, 5), (32, 6), (3, 6)]
    # BN + ReLU after every hidden layer, none after the RGB layer (sigmoid is applied to the logits)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 4 + 3
    assert isinstance(model.decoder.deconvs[-1], Deconv)


def test_same_padding_is_tensorflow_same():
    assert same_padding(64, 4, 2) == (1, 1, 32)
    assert same_padding(64, 5, 2) == (1, 2, 32)  # TF puts the odd pixel after
    assert same_padding(5, 4, 2) == (1, 2, 3)
    cfg = seed_config(enc_kernel=5)
    assert VAE(cfg).encoder.convs(torch.rand(1, 3, 64, 64)).shape == (1, 256, 4, 4)


def test_decoder_that_misses_the_image_size_is_a_clear_error():
    with pytest.raises(FaceVAEError, match=r"decode to 64x64 \(1 -> 5 -> 13 -> 30 -> 64\).*image_size is 32"):
        VAE(seed_config(image_size=32))


def test_sweep_knobs_come_from_config():
    cfg = seed_config(
        latent_dim=8, enc_channels=[8, 16, 32], dec_hidden=64, dec_channels=[32, 16], dec_kernels=[4, 4, 4],
        image_size=22, batch_norm=False,
    )
    model = VAE(cfg)
    out = model(torch.rand(3, 3, 22, 22))
    assert out.logits.shape == (3, 3, 22, 22) and out.mu.shape == (3, 8)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("c_in,c_out,kernel,size", [(64, 16, 5, 1), (32, 3, 6, 30), (8, 3, 5, 7), (8, 2, 4, 3)])
def test_fast_deconv_forms_equal_conv_transpose(c_in, c_out, kernel, size):
    torch.manual_seed(0)
    layer = Deconv(c_in, c_out, kernel, 2, input_1x1=size == 1)
    x = torch.randn(4, c_in, size, size, requires_grad=True)
    ours = layer(x)
    reference = F.conv_transpose2d(x, layer.weight, layer.bias, stride=2)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), layer.weight)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), layer.weight)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-3, rtol=1e-3)


def test_matrix_form_weight_stays_contiguous_under_channels_last():
    model = VAE(seed_config()).to(memory_format=torch.channels_last)
    first = model.decoder.deconvs[0]
    assert first.input_1x1 and first.weight.is_contiguous()
    assert model.encoder.convs[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_loss_terms():
    cfg = seed_config()
    target = torch.rand(2, 3, 64, 64)
    logits = torch.randn(2, 3, 64, 64)
    zeros = torch.zeros(2, 30)
    loss = vae_loss(VAEOutput(logits, zeros, zeros), target, cfg)
    assert loss.kl.item() == 0.0  # q = N(0, I) is the prior
    expected = F.binary_cross_entropy(torch.sigmoid(logits), target, reduction="sum") / 2
    torch.testing.assert_close(loss.recon, expected, rtol=1e-4, atol=1e-2)
    assert loss.total.item() == pytest.approx(loss.recon.item())

    mu, logvar = torch.full((2, 30), 1.0), torch.full((2, 30), -1.0)
    loss = vae_loss(VAEOutput(logits, mu, logvar), target, cfg.model_copy(update={"beta": 4.0}))
    kl_per_dim = 0.5 * (1.0 + torch.exp(torch.tensor(-1.0)) - 1.0 + 1.0)
    assert loss.kl.item() == pytest.approx(30 * kl_per_dim.item(), rel=1e-5)
    assert loss.total.item() == pytest.approx(loss.recon.item() + 4.0 * loss.kl.item(), rel=1e-6)

    mse = vae_loss(VAEOutput(logits, zeros, zeros), target, cfg.model_copy(update={"recon_loss": "mse"}))
    expected = (torch.sigmoid(logits) - target).square().sum() / 2
    assert mse.recon.item() == pytest.approx(expected.item(), rel=1e-5)


def test_inference_uses_mu_and_training_samples():
    torch.manual_seed(0)
    model = VAE(seed_config())
    x = torch.rand(4, 3, 64, 64)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    mu = model.encode(x)
    torch.testing.assert_close(model.reconstruct(x), torch.sigmoid(model.decoder(mu)))
    model.train()
    assert not torch.equal(model(x).logits, model(x).logits)


def test_flops_per_training_image():
    flops = flops_per_image(seed_config())
    assert flops["forward"] == pytest.approx(0.102e9, rel=0.02)
    assert flops["train"] == pytest.approx(0.30e9, rel=0.03)  # forward + ~2x backward


def test_model_file_round_trip(tmp_path):
    model = VAE(seed_config(latent_dim=12)).eval()
    save_model(tmp_path / "model.pt", model, "astro")
    loaded = load_model(tmp_path / "model.pt")
    x = torch.rand(2, 3, 64, 64)
    assert loaded.cfg.latent_dim == 12 and not loaded.training
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(FaceVAEError, match="not a facevae model file"):
        load_model(tmp_path / "junk.pt")


def test_the_same_model_saves_to_the_same_bytes(tmp_path):
    """DVC hashes model.pt: an unchanged model must not look changed because of the file's name."""
    model = VAE(seed_config(latent_dim=12)).eval()
    first = save_model(tmp_path / "model.pt", model, "astro", {"size": 64, "coverage": 2.2})
    (tmp_path / "again").mkdir()
    second = save_model(tmp_path / "again" / "other_name.pt", model, "astro", {"size": 64, "coverage": 2.2})
    assert first.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "model.pt"]  # no temp file left


def test_resize_decoder_decodes_to_the_image_size_and_round_trips():
    from facevae.model.files import load_model, save_model

    cfg = ModelConfig(decoder="resize")
    model = VAE(cfg).eval()
    x = torch.rand(2, 3, 64, 64)
    assert model(x).logits.shape == (2, 3, 64, 64)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules())
    path = save_model(Path(tempfile.mkdtemp()) / "m.pt", model, "a")
    assert torch.equal(load_model(path).reconstruct(x), model.reconstruct(x))


def test_resize_decoder_names_the_knobs_when_sizes_do_not_fit():
    with pytest.raises(FaceVAEError, match="dec_hidden"):
        VAE(ModelConfig(decoder="resize", dec_hidden=1000))
    with pytest.raises(FaceVAEError, match="multiple of 16"):
        VAE(ModelConfig(decoder="resize", image_size=40))


def test_ssim_map_matches_scikit_image_away_from_the_border():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 40, 40))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    ours = ssim_map(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    r = SSIM_RADIUS  # the borders differ by padding (skimage: symmetric, ours: reflect)
    for i in range(len(x)):
        for c in range(3):
            _, reference = structural_similarity(
                x[i, c], y[i, c], full=True, gaussian_weights=True, sigma=SSIM_SIGMA,
                use_sample_covariance=False, data_range=1.0,
            )
            np.testing.assert_allclose(ours[i, c, r:-r, r:-r], reference[r:-r, r:-r], atol=1e-9)
    assert 0.05 < ours.mean() < 0.9  # noisy copy: similar, far from identical


def test_ssim_term_adds_to_the_reconstruction_loss_and_respects_the_mask():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 64, 64)
    out = VAEOutput(torch.randn(2, 3, 64, 64), torch.zeros(2, 30), torch.zeros(2, 30))
    plain = vae_loss(out, target, seed_config()).recon
    with_ssim = vae_loss(out, target, seed_config(ssim_weight=2.0)).recon
    dissimilar = (1 - ssim_map(torch.sigmoid(out.logits), target)).flatten(1).sum(1).mean()
    torch.testing.assert_close(with_ssim, plain + 2.0 * dissimilar)
    half = torch.ones(2, 1, 64, 64)
    half[..., 32:, :] = 0
    masked = vae_loss(out, target, seed_config(ssim_weight=2.0), half).recon
    assert masked < with_ssim * 0.6


def test_gradient_difference_term_counts_lost_edges_and_respects_the_mask():
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 3, 8, 9)), rng.random((2, 3, 8, 9))
    expected = sum(
        np.abs(np.diff(x, axis=axis) - np.diff(y, axis=axis)).reshape(2, -1).sum(1) for axis in (-1, -2)
    )
    ours = gradient_difference(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    flat = torch.full((1, 3, 8, 9), 0.5)
    assert gradient_difference(flat, flat + 0.3).item() == pytest.approx(0.0, abs=1e-6)  # same edges, other level
    left = torch.ones(2, 1, 8, 9)
    left[..., 5:] = 0  # columns 5-8 out: only pairs within columns 0-4 count
    masked = gradient_difference(torch.from_numpy(x), torch.from_numpy(y), left.double()).numpy()
    xs, ys = x[..., :5], y[..., :5]
    inside = sum(np.abs(np.diff(xs, axis=a) - np.diff(ys, axis=a)).reshape(2, -1).sum(1) for a in (-1, -2))
    np.testing.assert_allclose(masked, inside, rtol=1e-12)

    target = torch.rand(2, 3, 64, 64)
    out = VAEOutput(torch.randn(2, 3, 64, 64), torch.zeros(2, 30), torch.zeros(2, 30))
    plain = vae_loss(out, target, seed_config()).recon
    with_gdl = vae_loss(out, target, seed_config(gdl_weight=0.5)).recon
    term = gradient_difference(torch.sigmoid(out.logits), target).mean()
    torch.testing.assert_close(with_gdl, plain + 0.5 * term)


def test_ssim_map_names_the_problem_for_images_smaller_than_its_window():
    with pytest.raises(FaceVAEError, match="SSIM needs images larger than"):
        ssim_map(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4))
