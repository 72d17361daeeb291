"""Plumbing every method shares: images and labels on the device, mixed precision, evaluation
passes, the per-epoch report, the resumable training state and the optimizer schedule."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augment
from .config import FitConfig


@dataclass
class TrainingData:
    """The decoded images and given labels, placed once for the whole fit.

    ``images`` stays uint8; it lives on the training device when it fits there, else on
    the CPU, and :meth:`batch` moves only the rows a step needs.
    """

    images: torch.Tensor  # uint8 (n, c, h, w)
    labels: torch.Tensor | None  # int64 (n,) given labels on the training device; None to predict
    num_classes: int
    augment: Augment
    device: torch.device

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx.to(self.images.device)].to(self.device, non_blocking=True)

    def views(self, idx: torch.Tensor, count: int = 2) -> list[torch.Tensor]:
        """``count`` independent augmentations of the same samples."""
        raw = self.batch(idx)
        return [self.to_model(self.augment(raw)) for _ in range(count)]

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    def __len__(self) -> int:
        return len(self.images)


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA (fast tensor cores, no loss scaling needed); full precision on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def predict_logits(net: nn.Module, data: TrainingData, batch_size: int) -> torch.Tensor:
    """Float32 logits (n, k) of the un-augmented images, in eval mode."""
    images = data.images
    was_training = net.training
    net.eval()
    out = torch.empty(len(images), data.num_classes, device=data.device)
    with torch.inference_mode(), autocast(data.device):
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(data.device, non_blocking=True)
            out[start:start + batch_size] = net(data.to_model(data.augment.plain(x))).float()
    net.train(was_training)
    return out


def per_sample_loss(net: nn.Module, data: TrainingData, batch_size: int) -> torch.Tensor:
    """Cross-entropy of every sample against its given label, (n,), on un-augmented images."""
    return F.cross_entropy(predict_logits(net, data, batch_size), data.labels, reduction="none")


# ---------------------------------------------------------------------------------------------
# Training.


@dataclass
class EpochReport:
    """Figures of one finished epoch, passed to the ``on_epoch`` callback and saved in history."""

    epoch: int  # 1-based
    epochs: int
    phase: str  # DivideMix: 'warm-up' or 'train'; MLNT: 'baseline' or 'meta'
    lr: float
    seconds: float
    loss: list[float]  # per trained network: warm-up / baseline CE, or DivideMix's labeled (soft CE) loss
    loss_u: list[float] | None = None  # DivideMix, per network: unlabeled MSE loss
    labeled: list[int] | None = None  # DivideMix, per network: size of the labeled set it trained on
    noise_estimate: float | None = None  # fraction of samples the GMMs put in the noisy set (MLNT: left out)
    lambda_u: float | None = None
    gmm_converged: bool | None = None
    round: int | None = None  # MLNT: 1-based training round
    consistency: float | None = None  # MLNT: mean KL(teacher ‖ fast model) over the synthetic label sets
    meta_weight: float | None = None  # MLNT: weight of the consistency loss at the end of the epoch


@dataclass
class TrainingState:
    """Everything needed to continue a fit exactly where it stopped."""

    epoch: int = 0  # epochs finished
    loss_history: list[list[torch.Tensor]] = field(default_factory=lambda: [[], []])
    history: list[dict[str, Any]] = field(default_factory=list)
    # Method-specific state beyond the two networks and their optimizers, by name: state dicts or
    # tensors that ``torch.load(weights_only=True)`` reads back (MLNT: its frozen feature model).
    extra: dict[str, Any] = field(default_factory=dict)


def run_epochs(state: TrainingState, epochs: int, one_epoch: Callable[[int], EpochReport],
               on_epoch: Callable[[EpochReport], None], after_epoch: Callable[[TrainingState], None]) -> None:
    """The loop every method shares: ``one_epoch(epoch)`` (0-based) from ``state.epoch`` to ``epochs``.

    Each epoch is timed and its report appended to ``state.history``; then ``after_epoch(state)``
    runs (the caller checkpoints there) and ``on_epoch(report)`` (the caller shows progress).
    """
    for epoch in range(state.epoch, epochs):
        start = time.perf_counter()
        report = one_epoch(epoch)
        report.seconds = time.perf_counter() - start
        state.epoch = epoch + 1
        state.history.append(report.__dict__.copy())
        after_epoch(state)
        on_epoch(report)


def make_optimizer(net: nn.Module, cfg: FitConfig) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def step_decay(lr: float, done: int, length: int) -> float:
    """``lr`` for the first half of a stage of ``length`` epochs, ``lr/10`` after ``done`` reaches half."""
    return lr / 10 if done >= length // 2 else lr


def learning_rate(epoch: int, cfg: FitConfig) -> float:
    """DivideMix's step schedule: ``lr`` for the first half of the epochs, ``lr/10`` after."""
    return step_decay(cfg.lr, epoch, cfg.epochs)


def set_learning_rate(optimizers: list[torch.optim.Optimizer], lr: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr
