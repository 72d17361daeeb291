"""Self-supervised pretraining on the user's own images (``labelclean pretrain``, whose steps are
:func:`labelclean.api.pretrain`): SimCLR (Chen et al., ICML 2020), as C2D ("Contrast to Divide",
Zheltonozhskii et al., WACV 2022) uses it to start DivideMix.

No label is used. Every step takes N images and makes two random views of each (:func:`views`:
a random resized crop, a flip, colour distortion). The encoder f — the network ``labelclean fit``
trains, without its classifier — and a projection head g (Linear–ReLU–Linear to 128 dimensions)
map each view to ``z = g(f(x))``; the NT-Xent loss (:func:`nt_xent`) asks each view to pick out
its partner among the other 2N − 1 views by cosine similarity / τ. The paper finds the features
before g the ones that transfer, so g is dropped and f is saved, keyed as the fit's network:
``labelclean fit --init-weights`` loads all of it and gives it a new classifier.

SimCLR trains with large batches (256–8192) for hundreds of epochs, with LARS; here plain SGD with
momentum and a cosine schedule, on batches small enough for a CPU (see docs/photos.md for the
settings measured and what they cost).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import colour_jitter, random_gray, random_resized_crop
from .config import PretrainConfig
from .data import channel_stats
from .errors import LabelcleanError
from .models import build_model, classifier_name
from .run import Checkpoint
from .training import EpochReport, TrainingData, autocast, stable_seed

log = logging.getLogger("labelclean")


# ---------------------------------------------------------------------------------------------
# The method.


def views(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, cfg: PretrainConfig) -> torch.Tensor:
    """One random view of each uint8 image (n, c, h, w), standardized: SimCLR's random resized crop
    and flip, colour distortion (strength 0.4, hue 0.1, for 80% of the images) and, for colour
    images, 20% turned gray."""
    x = random_resized_crop(images.float().div_(255), (cfg.crop_scale, 1.0), cfg.flip)
    x = colour_jitter(x, strength=0.4, hue=0.1, p=0.8)
    if x.shape[1] == 3:
        x = random_gray(x, p=0.2)
    return (x - mean) / std


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalized temperature-scaled cross-entropy for N pairs of projections (N, d).

    Each of the 2N views is classified among the other 2N − 1 by cosine similarity / τ; the
    right class is its partner view of the same image.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    similarity = (z @ z.T / temperature).fill_diagonal_(-math.inf)
    n = len(z1)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, partner)


def encoder(arch: str, channels: int, image_size: int) -> tuple[nn.Module, int]:
    """The fit's network with its classifier replaced by the identity, and its feature size."""
    net = build_model(arch, channels, 2, image_size)
    name = classifier_name(net)
    parent, _, child = name.rpartition(".")
    features = net.get_submodule(name).in_features
    setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return net, features


def projection_head(features: int, out: int) -> nn.Sequential:
    """SimCLR's g: a hidden layer as wide as the features, ReLU, then ``out`` dimensions."""
    return nn.Sequential(nn.Linear(features, features), nn.ReLU(inplace=True), nn.Linear(features, out))


@dataclass
class Pretraining:
    """The images and everything trained, with what a checkpoint needs to continue."""

    images: torch.Tensor  # uint8 (n, c, h, w), where images.place_images put them
    mean: torch.Tensor  # (1, c, 1, 1) on the device
    std: torch.Tensor
    encoder: nn.Module
    head: nn.Module
    optimizer: torch.optim.SGD
    cfg: PretrainConfig
    device: torch.device
    epoch: int = 0  # epochs finished
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, lr, seconds

    def steps_per_epoch(self) -> int:
        return len(self.images) // self.cfg.batch_size  # full batches: every view gets 2N − 2 negatives

    def lr(self, step: int) -> float:
        """Cosine annealing from ``cfg.lr`` to 0 over every step of the run."""
        total = self.cfg.epochs * self.steps_per_epoch()
        return 0.5 * self.cfg.lr * (1 + math.cos(math.pi * step / total))


def train_epoch(p: Pretraining) -> float:
    """One pass over the images in random batches; the mean NT-Xent loss. Seeded by (seed, epoch),
    so a resumed run draws what an uninterrupted one would."""
    torch.manual_seed(stable_seed(p.cfg.seed, p.epoch, "pretrain"))
    order = torch.randperm(len(p.images))
    total = torch.zeros((), device=p.device)
    steps = p.steps_per_epoch()
    p.encoder.train()
    p.head.train()
    for step in range(steps):
        idx = order[step * p.cfg.batch_size:(step + 1) * p.cfg.batch_size]
        batch = p.images[idx.to(p.images.device)].to(p.device, non_blocking=True)
        for group in p.optimizer.param_groups:
            group["lr"] = p.lr(p.epoch * steps + step)
        with autocast(p.device):
            z = p.head(p.encoder(torch.cat([views(batch, p.mean, p.std, p.cfg) for _ in range(2)])))
        loss = nt_xent(z[:len(idx)], z[len(idx):], p.cfg.temperature)
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        p.optimizer.step()
        total += loss.detach()
    return (total / steps).item()


# ---------------------------------------------------------------------------------------------
# The command: files in, weights out, resumable.


def checkpoint_of(out: Path) -> Checkpoint:
    """Where an unfinished pretraining keeps its state: next to the weights file."""
    return Checkpoint(out.with_name(out.stem + ".checkpoint.pt"), "pretraining")


def check_out(out: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check what ``out`` and its checkpoint hold; the checkpoint when resuming."""
    saved = checkpoint_of(out).check(resume, overwrite)
    if saved is None and out.exists() and not overwrite:
        raise LabelcleanError(f"{out} already exists; pass --overwrite to replace it or choose another --output.")
    return saved


def train(images: torch.Tensor, cfg: PretrainConfig, device: torch.device, out: Path, saved: dict[str, Any] | None,
          on_epoch: Callable[[EpochReport], None] | None) -> dict[str, torch.Tensor]:
    """Pretrain on the placed uint8 ``images`` from ``saved`` (or a fresh start), with a checkpoint next to
    ``out`` after each epoch; the encoder's weights, without the projection head."""
    p = start(images, cfg, device, saved)
    log.info("Pretraining %s at %d px on %d images (SimCLR, batch %d, τ %g, crops of %g-1 of the area) for %d "
             "epochs.", cfg.arch, cfg.image_size, len(p.images), cfg.batch_size, cfg.temperature, cfg.crop_scale,
             cfg.epochs)
    while p.epoch < cfg.epochs:
        started = time.perf_counter()
        loss = train_epoch(p)
        p.epoch += 1
        p.history.append({"epoch": p.epoch, "loss": loss, "lr": p.lr(p.epoch * p.steps_per_epoch()),
                          "seconds": time.perf_counter() - started})
        checkpoint_of(out).save(state_of(p))
        if on_epoch:
            on_epoch(EpochReport(p.epoch, cfg.epochs, "pretrain", p.history[-1]["lr"], p.history[-1]["seconds"],
                                 loss=[loss]))
    return {k: v.detach().cpu() for k, v in p.encoder.state_dict().items()}


def start(images: torch.Tensor, cfg: PretrainConfig, device: torch.device,
          saved: dict[str, Any] | None) -> Pretraining:
    """Build the encoder, head and optimizer; restore them from a checkpoint when resuming."""
    torch.manual_seed(cfg.seed)
    net, features = encoder(cfg.arch, images.shape[1], cfg.image_size)
    head = projection_head(features, cfg.projection_dim)
    net, head = net.to(device), head.to(device)
    optimizer = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=cfg.lr, momentum=0.9,
                                weight_decay=cfg.weight_decay)
    standardize = TrainingData.build(images, None, 0, *channel_stats(images), device).augment  # as the fit does
    p = Pretraining(images, standardize.mean, standardize.std, net, head, optimizer, cfg, device)
    if saved is not None:
        net.load_state_dict(saved["encoder"])
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        p.epoch, p.history = saved["epoch"], saved["history"]
        log.info("Resuming the pretraining after epoch %d.", p.epoch)
    return p


def state_of(p: Pretraining) -> dict[str, Any]:
    """What a checkpoint holds: the settings and everything trained so far."""
    return {"settings": asdict(p.cfg), "channels": int(p.images.shape[1]), "epoch": p.epoch, "history": p.history,
            "encoder": p.encoder.state_dict(), "head": p.head.state_dict(), "optimizer": p.optimizer.state_dict()}
