"""Train the VAE on one actor's faces: data/hdf5/<actor>.h5 -> models/<actor>/.

The whole uint8 split lives in memory (on the training device) and batches are cut from it with
shuffled indices: no DataLoader, no per-sample Python. Augmentation is per batch (mirror as a
tensor flip; albumentations only when colour/affine jitter is on). Every epoch ends with a
validation pass and an atomic checkpoint; `resume=True` continues bit-identically. With
`train.decoder_epochs`, the last epochs train only the decoder, on z = mu, optionally against a
discriminator (`train.adversarial_weight`; see TrainConfig).

Randomness that decides *which* samples and *which* flips an epoch gets is derived from
(seed, epoch, rank), like DistributedSampler, so nothing but the global torch RNG (the VAE's
reparameterisation noise) and the optimizer state needs carrying across a resume.

Under torchrun (facevae.training.distributed) train.batch_size is the global batch: each of N
processes takes every N-th image of each one-process batch, with that image's flip and noise,
and DDP averages the gradients. Losses are averaged over the processes; rank 0 alone writes.
"""

from __future__ import annotations

import csv
import math
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from facevae.core.atomic import atomic_path, write_json
from facevae.core.config import AugmentConfig, ModelConfig, Params, TrainConfig
from facevae.core.errors import FaceVAEError
from facevae.data.dataset import crop_geometry, read_split, read_split_masks
from facevae.faces.crop import CropGeometry
from facevae.model.discriminator import (
    PatchDiscriminator,
    adaptive_adversarial_weight,
    hinge_discriminator_loss,
    last_decoder_weight,
)
from facevae.model.files import model_config_dict, save_model, write_torch_file
from facevae.model.flops import flops_per_image
from facevae.model.losses import VAELoss, vae_loss
from facevae.model.vae import VAE, VAEOutput, build_model
from facevae.tracking.records import EpochCallback, EpochReport, TrainResult
from facevae.training.distributed import (
    barrier,
    broadcast_buffers,
    data_parallel,
    distributed_rank_world,
    from_main,
    local_batch_size,
    rank_device,
    sum_over_ranks,
)
from facevae.transfer.actor import ActorModel
from facevae.transfer.fit import fit_transfer_from_dataset

CHECKPOINT = "checkpoint.pt"

MODEL_FILE = "model.pt"

HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "train_recon", "train_kl",
    "val_recon", "val_kl", "lr", "images_per_s",
]

ADVERSARIAL_COLUMNS = ["train_disc", "train_adv"]  # only in epochs with a discriminator (blank before)

DISCRIMINATOR_SEED = 7  # its initial weights come from (train.seed, this), not from the global RNG

CHECKPOINT_FORMAT = 1

FP16_GRADIENT_SCALE = 2.0**12  # the generator's image gradient in fp16 autocast, scaled against underflow

CUDA_SYNC_EVERY = 10  # batches between host syncs on CUDA (NaN check, progress); every batch on CPU


def run_training(
    data: Path,
    actor: str,
    params: Params,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    mcfg, tcfg = params.model, params.train
    device = rank_device(resolve_device(tcfg.device))
    amp_dtype = resolve_precision(tcfg.precision, device)
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    rank, world = distributed_rank_world()
    batch_size = local_batch_size(tcfg.batch_size, world)

    train_images = load_split_tensor(data, "train", mcfg, device)
    val_images = load_split_tensor(data, "val", mcfg, device)
    train_masks, val_masks = load_split_masks(data, "train", device), load_split_masks(data, "val", device)
    if len(train_images) == 0:
        raise FaceVAEError("no train images in the dataset", data)

    seed_everything(tcfg.seed)
    model = build_training_model(mcfg, device)
    model.noise_shard = (rank, world)
    optimizer = build_optimizer(model, tcfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    adversary = Adversary(tcfg, device, amp_dtype) if tcfg.decoder_epochs and tcfg.adversarial_weight > 0 else None
    checkpoint = out_dir / CHECKPOINT
    start_epoch, history = 0, []
    state = shared_checkpoint(checkpoint, mcfg) if resume else None
    if state is not None:
        start_epoch, history = apply_checkpoint(state, model, optimizer, scaler, adversary)

    augment = Augmenter(tcfg.augment, rank, world)
    total_epochs = tcfg.epochs + tcfg.decoder_epochs
    bar = progress_bar(progress and rank == 0, (total_epochs - start_epoch) * math.ceil(len(train_images) / world))
    forward = PhaseForward(model, device)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, total_epochs):
            decoder_only = epoch >= tcfg.epochs
            if decoder_only:
                enter_decoder_phase(model, optimizer, tcfg.decoder_lr, first_epoch=epoch == tcfg.epochs)
            else:
                set_lr(optimizer, epoch_lr(tcfg, epoch))
            order = epoch_order(len(train_images), epoch, tcfg.seed, rank, world)
            augment.start_epoch(derived_seed(tcfg.seed, epoch, 0), derived_seed(tcfg.seed, epoch, rank))
            train_stats = train_epoch(
                model, optimizer, scaler, train_images, order, batch_size, augment, mcfg, amp_dtype,
                epoch, bar, train_masks, decoder_only, adversary if decoder_only else None, forward(decoder_only),
            )
            broadcast_buffers(model)
            val_stats = evaluate(model, val_images, tcfg.batch_size, mcfg, amp_dtype, val_masks)
            row = history_row(epoch + 1, train_stats, val_stats, optimizer)
            history.append(row)
            if rank == 0:
                save_checkpoint(checkpoint, model, optimizer, scaler, epoch + 1, history, mcfg, adversary)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.1f}", val=f"{row['val_loss']:.1f}")
            if on_epoch is not None:
                faces = val_images if len(val_images) else train_images
                on_epoch(EpochReport(epoch + 1, total_epochs, row, model, faces, device))
    except NonFiniteLoss as exc:
        kept = f"the checkpoint of epoch {epoch} is kept" if epoch else "no checkpoint was written"
        raise FaceVAEError(f"{exc}; training stopped, {kept}: lower train.lr or check the data", checkpoint) from None
    finally:
        if bar is not None:
            bar.close()

    metrics = write_outputs(out_dir, model, params, actor, data, history) if rank == 0 else final_metrics(history, mcfg)
    barrier()  # no rank returns before model.pt & co. are complete
    return TrainResult(out_dir, out_dir / MODEL_FILE, metrics, history)

# ---- device, precision, data --------------------------------------------------------------------


def resolve_device(spec: str) -> torch.device:
    """`auto` = CUDA when present, else CPU. Asking for CUDA without it is a user error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise FaceVAEError(f"train.device {spec!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FaceVAEError(
                f"train.device is {spec!r} but CUDA is not available to this torch "
                f"({torch.__version__}); use --device cpu or --device auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FaceVAEError(f"train.device {spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise FaceVAEError(f"train.device {spec!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32. `auto`: bf16 (fp16 on old GPUs) on CUDA, fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def read_split_images(path: Path, split: str) -> np.ndarray:

    return read_split(path, split)


def load_split_tensor(path: Path, split: str, cfg: ModelConfig, device: torch.device) -> Tensor:
    """One split as uint8 (N, 3, H, W) on `device`, stored NHWC so that it is already channels_last."""
    images = read_split_images(path, split)
    if len(images) and images.shape[1:] != (cfg.image_size, cfg.image_size, 3):
        raise FaceVAEError(
            f"{split} crops are {images.shape[1]}x{images.shape[2]}x{images.shape[3]} but model.image_size "
            f"is {cfg.image_size}: rebuild the dataset or set model.image_size",
            path,
        )
    nhwc = torch.from_numpy(np.ascontiguousarray(images)).reshape(-1, cfg.image_size, cfg.image_size, 3)
    return nhwc.to(device).permute(0, 3, 1, 2)


def load_split_masks(path: Path, split: str, device: torch.device) -> Tensor | None:
    """One split's loss masks as uint8 (N, 1, H, W) on `device`; None when the dataset has none
    or none of them masks anything (every pixel then counts, as before masks existed)."""

    masks = read_split_masks(path, split)
    if masks is None or masks.all():
        return None
    return torch.from_numpy(np.ascontiguousarray(masks))[:, None].to(device)


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


def to_float(batch: Tensor) -> Tensor:
    """uint8 NCHW -> float in [0, 1], channels_last (the layout the convs are fastest in)."""
    return batch.float().div_(255.0).contiguous(memory_format=torch.channels_last)

# ---- randomness ---------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """An independent 63-bit seed from several integers (seed, epoch, rank)."""
    return int(np.random.SeedSequence([p % 2**63 for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
    """This rank's shuffled sample indices for one epoch: exactly DistributedSampler(shuffle=True)."""
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator)
    if world > 1:
        order = torch.cat([order, order[: (-n) % world]])[rank::world]
    return order


def capture_rng() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": numpy_state_to_lists(np.random.get_state()),
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if distributed_rank_world()[1] > 1:
            # rank 0 drew on cuda:0 and every rank in step with it (reparameterize): that state, here
            torch.cuda.set_rng_state(state["cuda"][0], torch.cuda.current_device())
        else:
            torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def numpy_state_to_lists(state: tuple) -> list:
    """Plain types only, so that the checkpoint loads with torch.load(weights_only=True)."""
    kind, keys, pos, has_gauss, cached = state
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]

# ---- augmentation -------------------------------------------------------------------------------


class Augmenter:
    """Per-batch augmentation of uint8 NCHW images, reseeded every epoch (reproducible, resumable).

    Of `world` processes, each draws the flips of the whole global batch and keeps its rows (those
    of a one-process run); the albumentations jitter is seeded per process instead."""

    def __init__(self, cfg: AugmentConfig, rank: int = 0, world: int = 1):
        self.hflip = cfg.hflip
        self.pipeline = albumentations_pipeline(cfg)
        self.generator = torch.Generator()
        self.rank, self.world = rank, world

    def start_epoch(self, seed: int, pipeline_seed: int | None = None) -> None:
        self.generator.manual_seed(seed)
        if self.pipeline is not None:
            self.pipeline.set_random_seed(seed if pipeline_seed is None else pipeline_seed)

    def __call__(self, batch: Tensor) -> Tensor:
        return self.pair(batch, None)[0]

    def pair(self, batch: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Images and their (N, 1, H, W) loss masks, moved by the same flips and warps."""
        if self.pipeline is not None:
            batch, masks = self.apply_pipeline(batch, masks)
        if self.hflip:
            draws = torch.rand(len(batch) * self.world, generator=self.generator)[self.rank :: self.world]
            flip = (draws < 0.5).to(batch.device)[:, None, None, None]
            batch = torch.where(flip, batch.flip(-1), batch)
            masks = None if masks is None else torch.where(flip, masks.flip(-1), masks)
        return batch, masks

    def apply_pipeline(self, batch: Tensor, masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        images = batch.permute(0, 2, 3, 1).cpu().numpy()
        extra = [{}] * len(images) if masks is None else [{"mask": m} for m in masks[:, 0].cpu().numpy()]
        results = [self.pipeline(image=image, **more) for image, more in zip(images, extra)]
        out = torch.from_numpy(np.stack([r["image"] for r in results])).to(batch.device).permute(0, 3, 1, 2)
        if masks is None:
            return out, None
        return out, torch.from_numpy(np.stack([r["mask"] for r in results]))[:, None].to(masks.device)


def albumentations_pipeline(cfg: AugmentConfig):
    """Colour and small affine jitter scaled by strength 0..1; None when both are off."""
    if cfg.color_jitter == 0 and cfg.affine_jitter == 0:
        return None
    import albumentations as A
    import cv2

    transforms = []
    if cfg.color_jitter > 0:
        s = cfg.color_jitter
        transforms.append(A.ColorJitter(brightness=0.4 * s, contrast=0.4 * s, saturation=0.4 * s, hue=0.05 * s, p=1.0))
    if cfg.affine_jitter > 0:
        s = cfg.affine_jitter
        transforms.append(
            A.Affine(
                translate_percent=(-0.06 * s, 0.06 * s), scale=(1 - 0.08 * s, 1 + 0.08 * s),
                rotate=(-10 * s, 10 * s), border_mode=cv2.BORDER_REFLECT_101, p=1.0,
            )
        )
    return A.Compose(transforms, seed=0)

# ---- model, optimizer, loop ---------------------------------------------------------------------


def build_training_model(cfg: ModelConfig, device: torch.device) -> VAE:
    return build_model(cfg).to(device).to(memory_format=torch.channels_last)


def build_optimizer(model: VAE, cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    return torch.optim.Adam(
        model.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=device.type in ("cpu", "cuda")
    )


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of VAE epoch `epoch` (0-based): `lr`, then over the last `lr_decay` share
    of `epochs` half a cosine down to lr * lr_final, reached at the last epoch. A pure function of
    the epoch, so a resume needs no scheduler state."""
    decay_epochs = round(cfg.lr_decay * cfg.epochs)
    start = cfg.epochs - decay_epochs
    if decay_epochs == 0 or epoch < start:
        return cfg.lr
    progress = min((epoch - start + 1) / decay_epochs, 1.0)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def enter_decoder_phase(model: VAE, optimizer: torch.optim.Optimizer, lr: float, first_epoch: bool) -> None:
    """From here on only the decoder learns (train.decoder_epochs): the encoder's weights get no
    gradients, so Adam leaves them alone, and its batch-norm statistics stay frozen too. The phase
    starts from fresh Adam moments, as a new optimizer over the decoder would."""
    for param in model.encoder.parameters():
        param.requires_grad_(False)
    set_lr(optimizer, lr)
    if first_epoch:
        optimizer.state.clear()


class MeansDecoder(nn.Module):
    """The decoder phase's forward (decode_means) as a module, so that DDP can wrap it."""

    def __init__(self, model: VAE):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> VAEOutput:
        return decode_means(self.model, x)


class PhaseForward:
    """The module a training step calls: the VAE, or in the decoder phase its MeansDecoder; in
    DistributedDataParallel with several processes. Rewrapped at the phase change, once the
    encoder no longer wants gradients (DDP fixes the parameters it reduces when it is built)."""

    def __init__(self, model: VAE, device: torch.device):
        self.model, self.device = model, device
        self.decoder_only: bool | None = None
        self.module: nn.Module | None = None

    def __call__(self, decoder_only: bool) -> nn.Module:
        if decoder_only != self.decoder_only:
            self.module = None  # the old wrapper's gradient hooks go before the new one's come
            self.module = data_parallel(MeansDecoder(self.model) if decoder_only else self.model, self.device)
            self.decoder_only = decoder_only
        return self.module


def progress_bar(enabled: bool, total_images: int):
    if not enabled or total_images <= 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total_images, unit="img", desc="train", dynamic_ncols=True)


class NonFiniteLoss(Exception):
    pass


class LossMeter:
    """Sums per-image loss terms on the device; syncs to the host only every few batches."""

    def __init__(self, device: torch.device, epoch: int):
        self.sums = torch.zeros(3, device=device)
        self.pending: list[tuple[int, Tensor]] = []
        self.sync_every = 1 if device.type == "cpu" else CUDA_SYNC_EVERY
        self.epoch, self.images, self.last_loss = epoch, 0, float("nan")

    def add(self, batch_index: int, terms: Tensor, n: int, objective: Tensor | None = None) -> None:
        """`terms` = (total, recon, kl); `objective`, what the step minimised when more than the
        total (the adversarial phase), is only checked for being finite."""
        self.sums += terms * n
        self.images += n
        self.pending.append((batch_index, torch.cat([terms, (terms[0] if objective is None else objective).reshape(1)])))

    def due(self) -> bool:
        return len(self.pending) >= self.sync_every

    def sync(self) -> None:
        """Raise NonFiniteLoss on the first non-finite batch loss (weights after it are never saved)."""
        if not self.pending:
            return
        values = mean_over_ranks(torch.stack([t for _, t in self.pending])).cpu()  # so every rank stops alike
        for (batch_index, _), (total, recon, kl, objective) in zip(self.pending, values.tolist()):
            if not (math.isfinite(total) and math.isfinite(objective)):
                what, value = ("loss", total) if not math.isfinite(total) else ("loss with the adversarial term", objective)
                raise NonFiniteLoss(
                    f"{what} became {value} (recon {recon}, kl {kl}) at epoch {self.epoch + 1}, batch {batch_index + 1}"
                )
            self.last_loss = total
        self.pending.clear()

    def means(self) -> dict[str, float]:
        """Per-image means over every rank's images; "images" is their number."""
        self.sync()
        sums, images = self.sums, self.images
        if distributed_rank_world()[1] > 1:
            both = sum_over_ranks(torch.cat([sums, sums.new_tensor([images])]))
            sums, images = both[:3], int(both[3].item())
        total, recon, kl = (sums / max(images, 1)).tolist()
        return {"loss": total, "recon": recon, "kl": kl, "images": images}


def mean_over_ranks(values: Tensor) -> Tensor:
    world = distributed_rank_world()[1]
    return values if world == 1 else sum_over_ranks(values) / world


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    images: Tensor,
    order: Tensor,
    batch_size: int,
    augment: Augmenter,
    cfg: ModelConfig,
    amp_dtype: torch.dtype | None,
    epoch: int,
    bar=None,
    masks: Tensor | None = None,
    decoder_only: bool = False,
    adversary: "Adversary | None" = None,
    forward: Callable[[Tensor], VAEOutput] | None = None,
) -> dict[str, float]:
    """One epoch over this rank's `order`; `forward`, what a step calls (PhaseForward: DDP), by
    default the model itself or, in the decoder phase, decode_means."""
    if forward is None:
        forward = MeansDecoder(model) if decoder_only else model
    model.train()
    if decoder_only:
        model.encoder.eval()
    device = images.device
    meter = LossMeter(device, epoch)
    adversarial_sums = torch.zeros(3, device=device)  # discriminator loss, its images, generator loss
    shown = 0  # images of this epoch already on the progress bar
    started = time.perf_counter()
    for batch_index, start in enumerate(range(0, len(order), batch_size)):
        index = order[start : start + batch_size].to(device)
        batch, weight = augment.pair(images[index], None if masks is None else masks[index])
        x = to_float(batch)
        with autocast(device, amp_dtype):
            out = forward(x)
        loss = vae_loss(out, x, cfg, weight)
        total, objective = loss.total, None
        if adversary is not None:
            step = adversary.decoder_step(model, out, x, loss, epoch, batch_index)
            total, objective = step.backward, step.objective
            stepped = float(step.disc_stepped) * len(index)
            adversarial_sums += torch.stack([step.disc_loss * stepped, step.disc_loss.new_tensor(stepped), step.adv_loss * len(index)])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        meter.add(batch_index, torch.stack([loss.total, loss.recon, loss.kl]).detach(), len(index), objective)
        if meter.due():
            meter.sync()
            if bar is not None:
                bar.update(meter.images - shown)
                shown = meter.images
                bar.set_postfix(epoch=epoch + 1, loss=f"{meter.last_loss:.1f}", refresh=False)
    stats = meter.means()
    stats["images_per_s"] = stats["images"] / (time.perf_counter() - started)
    if adversary is not None:
        disc_sum, disc_images, adv_sum = sum_over_ranks(adversarial_sums).tolist()
        disc, adv = disc_sum / max(disc_images, 1), adv_sum / max(stats["images"], 1)
        stats["disc"] = disc
        if adversary.active(epoch):
            stats["adv"] = adv
    if bar is not None:
        bar.update(meter.images - shown)
    return stats


@dataclass
class DecoderStep:
    backward: Tensor  # what the decoder's backward runs on
    objective: Tensor  # its value as a loss (loss + weight * adversarial loss), for the finiteness check
    disc_loss: Tensor
    adv_loss: Tensor
    disc_stepped: bool


def decode_means(model: VAE, x: Tensor) -> VAEOutput:
    """The decoder phase's forward pass: z = mu, as at inference, through a frozen encoder."""
    with torch.no_grad():
        mu, logvar = model.encoder(x)
    return VAEOutput(model.decoder(mu), mu, logvar)


class Adversary:
    """The decoder phase's adversarial term (train.adversarial_weight): a PatchGAN discriminator
    with its own optimizer, stepped on every decoder batch just before the decoder's own step."""

    def __init__(self, cfg: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None):
        # Same initial weights whether or not a run resumed, and the global RNG left as it was:
        # manual_seed reseeds the CUDA generators too, so those are forked as well.
        cuda_devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(derived_seed(cfg.seed, DISCRIMINATOR_SEED))
            self.net = PatchDiscriminator(tuple(cfg.discriminator_channels)).to(device)
        self.net.to(memory_format=torch.channels_last)  # as the images it judges: no layout conversions
        self.step_net = data_parallel(self.net, device)  # the discriminator's own step, data-parallel
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.discriminator_lr, betas=(0.5, 0.9))
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.device, self.amp_dtype = device, amp_dtype
        self.factor = cfg.adversarial_weight
        self.mix_share = cfg.adversarial_mix_share if cfg.adversarial_mix else 0.0
        self.every = cfg.discriminator_every
        self.first_active_epoch = cfg.epochs + cfg.adversarial_warmup

    def active(self, epoch: int) -> bool:
        """Whether the decoder feels the term in this (0-based) epoch; before, only the discriminator learns."""
        return epoch >= self.first_active_epoch

    def decoder_step(self, model: VAE, out: VAEOutput, real: Tensor, loss: VAELoss, epoch: int, batch: int) -> "DecoderStep":
        """Steps the discriminator (every `discriminator_every`-th batch), then returns what the
        decoder's backward runs on: the loss, plus the adversarial term once the warm-up is over.

        Both terms are backpropagated as surrogates, sum(output * d term / d output) with the
        gradient held constant: the same gradient for the decoder, but the loss's and the
        discriminator's backward each run once per step, where the adaptive weight (two gradients
        at the last layer) and the step would run them again (bench/adversarial.py)."""
        fake = torch.sigmoid(out.logits.float())
        if self.mix_share > 0:
            fake = torch.cat([fake, torch.sigmoid(self.decode_mixes(model, out.mu.float()).float())])
        zero = torch.zeros((), device=real.device)
        stepped = batch % self.every == 0
        disc_loss = self.step_discriminator(real, fake.detach()) if stepped else zero
        if not self.active(epoch):
            return DecoderStep(loss.total, loss.total.detach(), disc_loss, zero, stepped)
        adv_loss, adv_surrogate = self.generator_loss(fake)
        (recon_grad,) = torch.autograd.grad(loss.recon, out.logits, retain_graph=True)
        recon_surrogate = (out.logits * recon_grad).sum()
        weight = adaptive_adversarial_weight(recon_surrogate, adv_surrogate, last_decoder_weight(model), self.factor)
        objective = (loss.total + weight * adv_loss).detach()
        return DecoderStep(recon_surrogate + weight * adv_surrogate, objective, disc_loss, adv_loss, stepped)

    def generator_loss(self, fake: Tensor) -> tuple[Tensor, Tensor]:
        """The decoder's adversarial loss -mean D(fake), and its surrogate sum(fake * dloss/dfake),
        whose graph stops at the images."""
        images = fake.detach().requires_grad_()
        self.net.requires_grad_(False)  # its gradients come from its own step only (so not through DDP)
        with autocast(self.device, self.amp_dtype):
            adv_loss = -self.net(images).float().mean()
        self.net.requires_grad_(True)
        scale = FP16_GRADIENT_SCALE if self.amp_dtype == torch.float16 else 1.0
        (grad,) = torch.autograd.grad(adv_loss * scale, images)
        return adv_loss.detach(), (fake * (grad / scale)).sum()

    def decode_mixes(self, model: VAE, mu: Tensor) -> Tensor:
        """Decoded convex mixes of the first `mix_share` of the batch's codes, each with another
        code of the batch (random weights in [0, 1])."""
        alpha = torch.rand(len(mu), 1, device=mu.device)
        partner = mu[torch.randperm(len(mu), device=mu.device)]
        n = max(1, round(len(mu) * self.mix_share))
        mu, alpha, partner = mu[:n], alpha[:n], partner[:n]
        with autocast(self.device, self.amp_dtype):
            return model.decoder(alpha * mu + (1 - alpha) * partner)

    def step_discriminator(self, real: Tensor, fake: Tensor) -> Tensor:
        with autocast(self.device, self.amp_dtype):
            real_logits, fake_logits = self.step_net(real), self.step_net(fake)
        loss = hinge_discriminator_loss(real_logits, fake_logits)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])


@torch.no_grad()
def evaluate(
    model: VAE, images: Tensor, batch_size: int, cfg: ModelConfig, amp_dtype: torch.dtype | None,
    masks: Tensor | None = None,
) -> dict[str, float]:
    """Validation loss with z = mu (deterministic, as at inference) and BN running statistics;
    with several processes each takes every N-th image and the sums are added up."""
    if len(images) == 0:
        return {"loss": float("nan"), "recon": float("nan"), "kl": float("nan")}
    model.eval()
    device, n = images.device, len(images)
    rank, world = distributed_rank_world()
    if world > 1:
        images, masks = images[rank::world], None if masks is None else masks[rank::world]
    sums = torch.zeros(3, device=device)
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size])
        with autocast(device, amp_dtype):
            out = model(x)
        loss = vae_loss(out, x, cfg, None if masks is None else masks[start : start + batch_size])
        sums += torch.stack([loss.total, loss.recon, loss.kl]) * len(x)
    total, recon, kl = (sum_over_ranks(sums) / n).tolist()
    return {"loss": total, "recon": recon, "kl": kl}


def history_row(
    epoch: int, train_stats: dict[str, float], val_stats: dict[str, float], optimizer: torch.optim.Optimizer
) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": train_stats["loss"],
        "val_loss": val_stats["loss"],
        "train_recon": train_stats["recon"],
        "train_kl": train_stats["kl"],
        "val_recon": val_stats["recon"],
        "val_kl": val_stats["kl"],
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": train_stats["images_per_s"],
        **{f"train_{k}": train_stats[k] for k in ("disc", "adv") if k in train_stats},
    }

# ---- checkpoint ---------------------------------------------------------------------------------


def save_checkpoint(
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    epoch: int,
    history: list[dict[str, float]],
    cfg: ModelConfig,
    adversary: Adversary | None = None,
) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "history": history,
        "model_config": model_config_dict(cfg),
        "rng": capture_rng(),
    }
    if adversary is not None:
        state["adversary"] = adversary.state_dict()
    write_torch_file(state, path)


def load_checkpoint(
    path: Path,
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    cfg: ModelConfig,
    adversary: Adversary | None = None,
) -> tuple[int, list[dict[str, float]]]:
    """Restore everything a killed run had; returns (completed epochs, history)."""
    return apply_checkpoint(read_checkpoint(path, cfg), model, optimizer, scaler, adversary)


def shared_checkpoint(path: Path, cfg: ModelConfig) -> dict[str, Any] | None:
    """The checkpoint's state on every rank, None when there is none: rank 0 reads the file (so
    the others need not see it) and sends it, or its error, to the rest."""
    state, error = None, None
    if distributed_rank_world()[0] == 0 and path.exists():
        try:
            state = read_checkpoint(path, cfg)
        except FaceVAEError as exc:
            error = exc
    state, message = from_main((state, None if error is None else str(error)))
    if error is not None:
        raise error
    if message is not None:
        raise FaceVAEError(message)
    return state


def read_checkpoint(path: Path, cfg: ModelConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise FaceVAEError(f"checkpoint is not readable ({exc.__class__.__name__}); delete it to start over", path) from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise FaceVAEError("checkpoint has an unknown format; delete it to start over", path)
    if state["model_config"] != model_config_dict(cfg):
        changed = sorted(k for k, v in model_config_dict(cfg).items() if state["model_config"].get(k) != v)
        raise FaceVAEError(
            f"checkpoint was trained with other model params ({', '.join('model.' + k for k in changed)}); "
            "delete it or train without --resume",
            path,
        )
    return state


def apply_checkpoint(
    state: dict[str, Any],
    model: VAE,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    adversary: Adversary | None = None,
) -> tuple[int, list[dict[str, float]]]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    if adversary is not None and "adversary" in state:
        adversary.load_state_dict(state["adversary"])
    restore_rng(state["rng"])
    return state["epoch"], list(state["history"])

# ---- outputs ------------------------------------------------------------------------------------


def write_outputs(
    out_dir: Path, model: VAE, params: Params, actor: str, data: Path, history: list[dict[str, float]]
) -> dict[str, Any]:
    crop = crop_geometry(data)
    save_model(out_dir / MODEL_FILE, model, actor, crop=crop, transfer=fit_transfer_payload(model, data, params, crop))
    write_json(out_dir / "config.json", {"actor": actor, "data": str(data), "params": params.model_dump(mode="json")})
    metrics = final_metrics(history, params.model)
    write_json(out_dir / "metrics.json", metrics)
    write_history_csv(out_dir / "history.csv", history)
    return metrics


def fit_transfer_payload(model: VAE, data: Path, params: Params, crop: dict[str, Any] | None) -> dict[str, Any]:
    """The driving modes' actor statistics and landmark head (facevae.transfer.drive), fitted on the
    trained model and the actor's own frames; stored in model.pt."""

    geometry = CropGeometry(**crop) if crop else CropGeometry(params.model.image_size, params.extract.coverage)
    return fit_transfer_from_dataset(ActorModel(model, geometry), data, params.transfer,
                                     params.extract.occlusion_thresholds).to_payload()


def final_metrics(history: list[dict[str, float]], cfg: ModelConfig) -> dict[str, Any]:
    last = history[-1] if history else {}
    speeds = [row["images_per_s"] for row in history[1:] or history]  # epoch 1 includes warm-up
    metrics: dict[str, Any] = {k: json_number(last.get(k)) for k in HISTORY_COLUMNS if k not in ("epoch", "images_per_s")}
    metrics["epochs"] = int(last.get("epoch", 0))
    metrics["images_per_s"] = json_number(statistics.median(speeds)) if speeds else None
    metrics["gflop_per_train_image"] = flops_per_image(cfg)["train"] / 1e9
    return metrics


def json_number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def write_history_csv(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        columns = HISTORY_COLUMNS + [c for c in ADVERSARIAL_COLUMNS if any(c in row for row in history)]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


