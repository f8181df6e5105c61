"""The adversarial decoder phase's speed: the textbook step vs. ours, in one run.

    python bench/adversarial.py [DATA.h5] [--epochs 4] [--images 400] [--params params.yaml] [--set key=value ...]

DATA defaults to data/hdf5/pexels.h5 (synthetic astronaut crops when it does not exist).

Textbook (what this project ran until issue 28, VQGAN's recipe as usually written): per batch the
frozen encoder's means, the decoder on them and on random mixes of them, one discriminator step
(real and fake), then -mean D(fake) with the discriminator frozen, the adaptive weight from two
`autograd.grad` calls through it to the decoder's last weight, and a backward of the whole
objective through the discriminator again; the PatchGAN of 64-128-256 channels, contiguous.
Ours: facevae.training.loop.run_training's decoder phase as `facevae train` runs it, with
params.yaml's discriminator (train.discriminator_channels).

Both: the same network, data, batch size and augmentation (train.augment); the discriminator term
active from the first phase epoch; images/s is the median over the phase's epochs after the first
(warm-up), training time only. bench/profile_train.py shows where each step's time goes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from facevae.core.config import Params, load_params
from facevae.model.discriminator import (
    PatchDiscriminator,
    adaptive_adversarial_weight,
    hinge_discriminator_loss,
    last_decoder_weight,
)
from facevae.model.losses import vae_loss
from facevae.model.vae import VAEOutput
from facevae.training.loop import (
    Augmenter,
    build_training_model,
    enter_decoder_phase,
    build_optimizer,
    epoch_order,
    load_split_tensor,
    resolve_device,
    run_training,
    to_float,
)

from benchdata import bench_dataset, training_bench_parser  # bench/, the script's own folder, is on sys.path

ROOT = Path(__file__).resolve().parents[1]
TEXTBOOK_CHANNELS = (64, 128, 256)


class TextbookAdversary:
    """The decoder phase's step as this project wrote it before (loop.Adversary at 4c260ad)."""

    def __init__(self, params: Params, device: torch.device):
        self.net = PatchDiscriminator(TEXTBOOK_CHANNELS).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=params.train.discriminator_lr, betas=(0.5, 0.9))
        self.factor = params.train.adversarial_weight

    def term(self, model, out: VAEOutput, real: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        fake = torch.sigmoid(out.logits)
        alpha = torch.rand(len(out.mu), 1)
        mixed = alpha * out.mu + (1 - alpha) * out.mu[torch.randperm(len(out.mu))]
        fake = torch.cat([fake, torch.sigmoid(model.decoder(mixed))])
        disc_loss = hinge_discriminator_loss(self.net(real), self.net(fake.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        disc_loss.backward()
        self.optimizer.step()
        self.net.requires_grad_(False)
        adv_loss = -self.net(fake).mean()
        self.net.requires_grad_(True)
        return adaptive_adversarial_weight(recon, adv_loss, last_decoder_weight(model), self.factor) * adv_loss


def textbook_images_per_s(data: Path, params: Params, device: torch.device, epochs: int) -> float:
    torch.manual_seed(params.train.seed)
    model = build_training_model(params.model, device)
    optimizer = build_optimizer(model, params.train, device)
    enter_decoder_phase(model, optimizer, params.train.decoder_lr, first_epoch=True)
    adversary = TextbookAdversary(params, device)
    images = load_split_tensor(data, "train", params.model, device)
    augment = Augmenter(params.train.augment)
    model.train()
    model.encoder.eval()
    speeds = []
    for epoch in range(epochs):
        augment.start_epoch(epoch)
        order, started = epoch_order(len(images), epoch, params.train.seed), time.perf_counter()
        for start in range(0, len(order), params.train.batch_size):
            x = to_float(augment(images[order[start : start + params.train.batch_size]]))
            with torch.no_grad():
                mu, logvar = model.encoder(x)
            out = VAEOutput(model.decoder(mu), mu, logvar)
            loss = vae_loss(out, x, params.model)
            total = loss.total + adversary.term(model, out, x, loss.recon)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
        speeds.append(len(order) / (time.perf_counter() - started))
    return statistics.median(speeds[1:] or speeds)


def our_images_per_s(data: Path, params: Params, epochs: int) -> float:
    params.train.epochs = 1
    params.train.decoder_epochs = epochs
    params.train.adversarial_warmup = 0
    params.mlflow.enabled = False
    with tempfile.TemporaryDirectory() as out:
        result = run_training(data, "bench", params, Path(out), progress=False)
    speeds = [row["images_per_s"] for row in result.history[1:]]
    return statistics.median(speeds[1:] or speeds)


def main() -> None:
    parser = training_bench_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="decoder-phase epochs per loop; the first is warm-up")
    args = parser.parse_args()

    params = load_params(args.params, args.overrides)
    device = resolve_device(params.train.device)
    with tempfile.TemporaryDirectory() as tmp:
        data, data_name = bench_dataset(args.data, args.images, tmp)
        textbook = textbook_images_per_s(data, params, device, args.epochs)
        ours = our_images_per_s(data, params.model_copy(deep=True), args.epochs)
    print(f"data: {data_name}, batch {params.train.batch_size}, "
          f"{args.epochs} decoder-phase epochs per loop (first = warm-up), device {device.type}, {torch.get_num_threads()} threads")
    print(f"textbook step (discriminator {'-'.join(map(str, TEXTBOOK_CHANNELS))}): {textbook:.1f} images/s")
    print(f"our step (discriminator {'-'.join(map(str, params.train.discriminator_channels))}): {ours:.1f} images/s")
    print(f"speed-up: {ours / textbook:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
