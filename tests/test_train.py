import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import facevae.training.loop as train_module
from facevae.cli import app
from facevae.core.errors import FaceVAEError
from facevae.model.discriminator import (
    PatchDiscriminator,
    adaptive_adversarial_weight,
    hinge_discriminator_loss,
    last_decoder_weight,
)
from facevae.model.files import load_model
from facevae.model.losses import vae_loss
from facevae.model.vae import VAE, VAEOutput
from facevae.training.loop import (
    ADVERSARIAL_COLUMNS,
    CHECKPOINT,
    HISTORY_COLUMNS,
    Adversary,
    Augmenter,
    build_optimizer,
    build_training_model,
    decode_means,
    enter_decoder_phase,
    epoch_lr,
    epoch_order,
    load_checkpoint,
    load_split_tensor,
    resolve_device,
    run_training,
    to_float,
)
from tests.facedata import quick_params, write_face_dataset


def params(**train):
    return quick_params(**train)


def assert_same_run(dir_a, result_a, dir_b, result_b):
    """Bit-identical weights and the same history (timings aside) in two training outputs."""
    a = torch.load(dir_a / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(dir_b / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]  # noqa: E731
    assert strip(result_a.history) == strip(result_b.history)


def test_training_writes_model_metrics_and_history(faces_h5, tmp_path):
    out = tmp_path / "models" / "astro"
    result = run_training(faces_h5, "astro", params(epochs=2), out, progress=False)
    assert {p.name for p in out.iterdir()} >= {"model.pt", "config.json", "metrics.json", "history.csv", CHECKPOINT}
    with open(out / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == HISTORY_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["images_per_s"] > 0
    assert metrics["val_loss"] == pytest.approx(metrics["val_recon"] + metrics["val_kl"], rel=1e-5)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] * 1.5
    config = json.loads((out / "config.json").read_text())
    assert config["actor"] == "astro" and config["params"]["train"]["epochs"] == 2
    model = load_model(out / "model.pt")
    assert model.reconstruct(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)


def test_resume_gives_identical_weights(faces_h5, tmp_path):
    augment = {"hflip": True, "color_jitter": 0.5, "affine_jitter": 0.5}  # albumentations path included
    straight = run_training(faces_h5, "a", params(epochs=3, augment=augment), tmp_path / "straight", progress=False)
    run_training(faces_h5, "a", params(epochs=2, augment=augment), tmp_path / "killed", progress=False)
    resumed = run_training(
        faces_h5, "a", params(epochs=3, augment=augment), tmp_path / "killed", resume=True, progress=False
    )
    assert_same_run(tmp_path / "straight", straight, tmp_path / "killed", resumed)


def test_decoder_phase_trains_the_decoder_alone_on_the_means(faces_h5, tmp_path):
    vae_only = run_training(faces_h5, "a", params(epochs=2), tmp_path / "vae", progress=False)
    phased = run_training(
        faces_h5, "a", params(epochs=2, decoder_epochs=2, decoder_lr=5e-4), tmp_path / "phased", progress=False
    )
    a = torch.load(tmp_path / "vae" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "phased" / "model.pt", weights_only=True)["state_dict"]
    encoder = [k for k in a if k.startswith("encoder.")]
    decoder = [k for k in a if k.startswith("decoder.") and a[k].is_floating_point()]
    assert encoder and decoder
    assert all(torch.equal(a[k], b[k]) for k in encoder)  # weights and batch-norm statistics
    assert not all(torch.equal(a[k], b[k]) for k in decoder)
    assert [row["epoch"] for row in phased.history] == [1, 2, 3, 4]
    assert [row["lr"] for row in phased.history] == [2e-3, 2e-3, 5e-4, 5e-4]
    assert phased.history[:2] == [dict(r, images_per_s=p["images_per_s"]) for r, p in zip(vae_only.history, phased.history)]


def test_resume_inside_the_decoder_phase_gives_identical_weights(faces_h5, tmp_path):
    straight = run_training(faces_h5, "a", params(epochs=2, decoder_epochs=2), tmp_path / "straight", progress=False)
    run_training(faces_h5, "a", params(epochs=2, decoder_epochs=1), tmp_path / "killed", progress=False)
    resumed = run_training(
        faces_h5, "a", params(epochs=2, decoder_epochs=2), tmp_path / "killed", resume=True, progress=False
    )
    assert_same_run(tmp_path / "straight", straight, tmp_path / "killed", resumed)


ADVERSARIAL = dict(epochs=2, decoder_epochs=3, adversarial_weight=0.3, adversarial_warmup=1)


def test_adversarial_decoder_phase_trains_a_discriminator_and_leaves_the_encoder_alone(faces_h5, tmp_path):
    plain = run_training(faces_h5, "a", params(epochs=2, decoder_epochs=3), tmp_path / "plain", progress=False)
    adversarial = run_training(faces_h5, "a", params(**ADVERSARIAL), tmp_path / "adv", progress=False)
    a = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "adv" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    last_conv = [k for k in a if k.startswith("decoder.") and k.endswith(".weight")][-1]
    assert not torch.equal(a[last_conv], b[last_conv])
    assert adversarial.history[:2] == [dict(r, images_per_s=q["images_per_s"]) for r, q in zip(plain.history[:2], adversarial.history)]
    # epoch 3 is the warm-up: the discriminator learns, the decoder sees only the reconstruction loss
    # (its val loss moves anyway: decoding the mixes updates the decoder's batch-norm statistics)
    warmup = adversarial.history[2]
    assert (warmup["train_loss"], warmup["train_recon"]) == (plain.history[2]["train_loss"], plain.history[2]["train_recon"])
    assert adversarial.history[3]["train_recon"] != plain.history[3]["train_recon"]
    assert [sorted(set(r) & set(ADVERSARIAL_COLUMNS)) for r in adversarial.history] == [
        [], [], ["train_disc"], ["train_adv", "train_disc"], ["train_adv", "train_disc"]]
    assert all(0 < r["train_disc"] < 4 for r in adversarial.history[2:])  # hinge loss: 2 = chance
    with open(tmp_path / "adv" / "history.csv") as f:
        assert list(csv.DictReader(f).fieldnames) == HISTORY_COLUMNS + ADVERSARIAL_COLUMNS


def test_resume_inside_the_adversarial_phase_gives_identical_weights(faces_h5, tmp_path):
    straight = run_training(faces_h5, "a", params(**ADVERSARIAL), tmp_path / "straight", progress=False)
    run_training(faces_h5, "a", params(**dict(ADVERSARIAL, decoder_epochs=2)), tmp_path / "killed", progress=False)
    resumed = run_training(faces_h5, "a", params(**ADVERSARIAL), tmp_path / "killed", resume=True, progress=False)
    assert_same_run(tmp_path / "straight", straight, tmp_path / "killed", resumed)


@pytest.mark.parametrize("mix_share", [0.0, 0.5])
def test_the_decoder_steps_surrogates_give_the_textbook_gradient(faces_h5, mix_share):
    """The decoder phase backpropagates sum(output * d term / d output) for the loss and the
    adversarial term: the same decoder gradient as VQGAN's recipe (the adaptive weight from two
    autograd.grad calls, then a backward of loss + weight * -mean D(fake) through D again)."""
    p = params(**ADVERSARIAL, adversarial_mix=mix_share > 0, adversarial_mix_share=mix_share or 1.0, discriminator_every=2)
    model = build_training_model(p.model, torch.device("cpu"))
    enter_decoder_phase(model, build_optimizer(model, p.train, torch.device("cpu")), p.train.decoder_lr, first_epoch=True)
    model.train()
    model.encoder.eval()
    adversary = Adversary(p.train, torch.device("cpu"), None)
    adversary.net.eval()  # spectral norm's power iteration would move sigma between the two passes
    x = to_float(load_split_tensor(faces_h5, "train", p.model, torch.device("cpu"))[:8])
    decoder = [q for q in model.decoder.parameters()]
    active_epoch = p.train.epochs + p.train.adversarial_warmup

    torch.manual_seed(3)  # the mixes' weights and partners
    out = decode_means(model, x)
    loss = vae_loss(out, x, p.model)
    step = adversary.decoder_step(model, out, x, loss, active_epoch, batch=1)  # odd batch: no discriminator step
    ours = torch.autograd.grad(step.backward, decoder)

    torch.manual_seed(3)
    out = decode_means(model, x)
    loss = vae_loss(out, x, p.model)
    fake = torch.sigmoid(out.logits)
    if mix_share:
        fake = torch.cat([fake, torch.sigmoid(adversary.decode_mixes(model, out.mu))])
        assert len(fake) == 8 + 4
    adv = -adversary.net(fake).mean()
    weight = adaptive_adversarial_weight(loss.recon, adv, last_decoder_weight(model), p.train.adversarial_weight)
    textbook = torch.autograd.grad(loss.total + weight * adv, decoder)

    assert step.adv_loss.item() == pytest.approx(adv.item(), rel=1e-6)
    assert step.objective.item() == pytest.approx((loss.total + weight * adv).item(), rel=1e-6)
    for a, b in zip(ours, textbook):  # the same up to float32 summation order
        assert (a - b).norm() <= 1e-4 * b.norm()


def test_a_slower_discriminator_steps_every_nth_batch_and_its_loss_counts_those_batches(faces_h5, tmp_path):
    every = run_training(faces_h5, "a", params(**ADVERSARIAL, discriminator_every=3), tmp_path / "every", progress=False)
    assert all(0 < r["train_disc"] < 4 for r in every.history[2:])  # the mean over stepped batches only


def test_adaptive_adversarial_weight_balances_the_two_gradients_at_the_last_layer():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    recon, adversarial = 3.0 * (w**2).sum(), (w**2).sum()  # gradients 6w and 2w: ratio 3
    assert adaptive_adversarial_weight(recon, adversarial, w, 0.5).item() == pytest.approx(1.5, rel=1e-3)
    assert not adaptive_adversarial_weight(recon, adversarial, w, 0.5).requires_grad


def test_hinge_loss_and_patch_discriminator_shapes():
    assert hinge_discriminator_loss(torch.full((2, 1, 8, 8), 2.0), torch.full((2, 1, 8, 8), -3.0)).item() == 0.0
    assert hinge_discriminator_loss(torch.zeros(2, 1), torch.zeros(2, 1)).item() == 2.0
    assert hinge_discriminator_loss(torch.tensor([0.5]), torch.tensor([0.25])).item() == pytest.approx(0.5 + 1.25)
    assert PatchDiscriminator()(torch.rand(2, 3, 64, 64)).shape == (2, 1, 8, 8)


def test_lr_decay_anneals_the_last_share_of_the_epochs_to_lr_final():
    cfg = params(epochs=10, lr=1e-3, lr_decay=0.3, lr_final=0.1).train
    lrs = [epoch_lr(cfg, e) for e in range(10)]
    assert lrs[:7] == [1e-3] * 7
    assert lrs[6] > lrs[7] > lrs[8] > lrs[9] and lrs[9] == pytest.approx(1e-4)
    assert lrs[8] == pytest.approx(1e-4 + 0.9e-3 * 0.25)  # cos(2 pi / 3): a quarter of the way from the floor
    constant = params(epochs=10, lr=1e-3).train
    assert [epoch_lr(constant, e) for e in range(10)] == [1e-3] * 10
    with pytest.raises(FaceVAEError, match="train.lr_decay"):
        params(lr_decay=1.5)


class Killed(Exception):
    pass


def test_resume_inside_the_lr_decay_gives_identical_weights(faces_h5, tmp_path):
    cfg = params(epochs=4, lr_decay=0.5, lr_final=0.1)
    straight = run_training(faces_h5, "a", cfg, tmp_path / "straight", progress=False)
    assert [row["lr"] for row in straight.history] == pytest.approx([2e-3, 2e-3, 2e-3 * 0.55, 2e-4])

    def kill_after_third(report):
        if report.epoch == 3:
            raise Killed

    with pytest.raises(Killed):
        run_training(faces_h5, "a", cfg, tmp_path / "killed", progress=False, on_epoch=kill_after_third)
    resumed = run_training(faces_h5, "a", cfg, tmp_path / "killed", resume=True, progress=False)
    assert_same_run(tmp_path / "straight", straight, tmp_path / "killed", resumed)


def test_resume_refuses_a_checkpoint_of_another_model(faces_h5, tmp_path):
    run_training(faces_h5, "a", params(epochs=1), tmp_path, progress=False)
    other = quick_params(model={"latent_dim": 8}, epochs=2)
    with pytest.raises(FaceVAEError, match="model.latent_dim"):
        run_training(faces_h5, "a", other, tmp_path, resume=True, progress=False)


def test_nan_loss_stops_naming_epoch_and_batch_and_keeps_last_good_checkpoint(faces_h5, tmp_path, monkeypatch):
    real_loss, calls = train_module.vae_loss, {"n": 0}
    batches_per_epoch = 3  # 40 images, batch 16

    def poisoned(out, target, cfg, weight=None):
        loss = real_loss(out, target, cfg, weight)
        calls["n"] += 1
        if calls["n"] == batches_per_epoch + 2:  # epoch 2, batch 2 (validation does not call it in training)
            loss.total = loss.total * float("nan")
        return loss

    monkeypatch.setattr(train_module, "vae_loss", poisoned)
    monkeypatch.setattr(train_module, "evaluate", lambda *a, **k: {"loss": 1.0, "recon": 1.0, "kl": 0.0})
    with pytest.raises(FaceVAEError, match=r"loss became nan .*epoch 2, batch 2.*checkpoint of epoch 1 is kept"):
        run_training(faces_h5, "a", params(epochs=3), tmp_path, progress=False)
    cfg = params().model
    model = build_training_model(cfg, torch.device("cpu"))
    optimizer = build_optimizer(model, params().train, torch.device("cpu"))
    epoch, history = load_checkpoint(tmp_path / CHECKPOINT, model, optimizer, torch.amp.GradScaler("cpu", enabled=False), cfg)
    assert epoch == 1 and len(history) == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_non_finite_adversarial_term_stops_training_too(faces_h5, tmp_path, monkeypatch):
    nan_weight = lambda *args: torch.tensor(float("nan"))  # noqa: E731
    monkeypatch.setattr(train_module, "adaptive_adversarial_weight", nan_weight)
    with pytest.raises(FaceVAEError, match=r"loss with the adversarial term became nan .*epoch 4, batch 1"):
        run_training(faces_h5, "a", params(**ADVERSARIAL), tmp_path, progress=False)  # epoch 3 is the warm-up
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 3


def test_diverging_learning_rate_is_a_clear_error(faces_h5, tmp_path):
    with pytest.raises(FaceVAEError, match=r"loss became (nan|inf).*epoch 1, batch \d.*lower train.lr"):
        run_training(faces_h5, "a", params(epochs=2, lr=1e30), tmp_path, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_clear_error(faces_h5, tmp_path, monkeypatch):
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(FaceVAEError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.chdir(tmp_path)  # mlflow stays enabled: the error must come before any run is created
    result = CliRunner().invoke(
        app, ["train", "--data", str(faces_h5), "--actor", "a", "--out", str(tmp_path / "m"), "--device", "cuda"]
    )
    assert not (tmp_path / "mlruns").exists()
    assert result.exit_code == 1
    assert "CUDA is not available" in result.output and "Traceback" not in result.output


def test_bad_device_name_is_a_clear_error():
    with pytest.raises(FaceVAEError, match="not a device"):
        resolve_device("gpu0")


def test_crop_size_must_match_model(tmp_path):
    small = write_face_dataset(tmp_path / "small.h5", n_train=4, n_val=2, size=32)
    with pytest.raises(FaceVAEError, match="train crops are 32x32x3 but model.image_size is 64"):
        run_training(small, "a", params(epochs=1), tmp_path / "out", progress=False)


def test_epoch_order_is_distributed_sampler_order():
    dataset = list(range(37))
    for rank in (0, 1):
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(3)
        assert epoch_order(37, epoch=3, seed=5, rank=rank, world=2).tolist() == list(sampler)
    assert sorted(epoch_order(37, 0, 5).tolist()) == dataset


def test_augmenter_mirrors_about_half_reproducibly():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4).repeat(100, 1, 1, 1)
    augment = Augmenter(params(augment={"hflip": True, "color_jitter": 0.0, "affine_jitter": 0.0}).train.augment)
    augment.start_epoch(7)
    first = augment(images)
    augment.start_epoch(7)
    assert torch.equal(first, augment(images))
    flipped = (first != images).flatten(1).any(1).float().mean().item()
    assert 0.35 < flipped < 0.65
    changed = (first != images).flatten(1).any(1)
    assert torch.equal(first[changed], images[changed].flip(-1))


def test_cli_train_runs_with_overrides(faces_h5, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    stale = {"tracking_uri": "sqlite:///elsewhere.db", "run_id": "an-earlier-run"}
    (out / "mlflow.json").write_text(json.dumps(stale))  # evaluate must not log to that run
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(faces_h5), "--actor", "astro", "--out", str(out), "--no-progress",
         "--set", "train.epochs=1", "--set", "mlflow.enabled=false", "--set", "train.batch_size=32",
         "--set", "train.decoder_epochs=3"],  # params.yaml's adversarial phase: 2 warm-up epochs, then 1
    )
    assert result.exit_code == 0, result.output
    assert ": 4 epochs" in result.output and (out / "model.pt").exists()
    with open(out / "history.csv") as f:
        assert [bool(row["train_adv"]) for row in csv.DictReader(f)] == [False, False, False, True]
    assert json.loads((out / "config.json").read_text())["params"]["train"]["batch_size"] == 32
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["train_loss"])
    assert json.loads((out / "mlflow.json").read_text()) == {"tracking_uri": None, "run_id": None}


def test_masked_pixels_do_not_count_in_the_loss_or_the_gradient():
    # the pixel term alone: the SSIM term's 11x11 window still sees masked pixels within 5 px of the
    # mask's edge (see test_model's SSIM test for what it does respect)
    cfg = params().model.model_copy(update={"ssim_weight": 0.0})
    model = VAE(cfg)
    x = torch.rand(2, 3, 64, 64)
    weight = torch.ones(2, 1, 64, 64)
    weight[:, :, 30:] = 0
    out = model(x)
    other = x.clone()
    other[:, :, 30:] = 1 - other[:, :, 30:]  # a different lower face: an occluder
    a, b = vae_loss(out, x, cfg, weight), vae_loss(out, other, cfg, weight)
    assert torch.allclose(a.recon, b.recon) and not torch.allclose(a.recon, vae_loss(out, x, cfg).recon)
    logits = out.logits.detach().requires_grad_()
    vae_loss(VAEOutput(logits, out.mu, out.logvar), x, cfg, weight).recon.backward()
    assert (logits.grad[:, :, 30:] == 0).all() and (logits.grad[:, :, :30] != 0).any()


def test_augmenter_moves_masks_with_their_images():
    images = torch.randint(0, 255, (64, 3, 16, 16), dtype=torch.uint8)
    masks = torch.zeros(64, 1, 16, 16, dtype=torch.uint8)
    masks[:, :, :, :5] = 1  # the left edge
    cfg = params().train.augment.model_copy(update={"affine_jitter": 1.0})
    augment = Augmenter(cfg)
    augment.start_epoch(3)
    out, moved = augment.pair(images, masks)
    assert moved.shape == masks.shape and moved.dtype == torch.uint8
    mirrored = moved[:, 0, :, -1].bool().any(1)  # the flipped ones have their mask on the right
    assert 0.2 < mirrored.float().mean() < 0.8
    augment.start_epoch(3)
    assert torch.equal(augment(images), out)  # the masks do not change the images' augmentation
