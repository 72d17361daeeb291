"""Plumbing every method shares: images and labels on the device, the fast path of the device
(precision, memory layout, threads), evaluation passes, the per-epoch report, the resumable training
state, the optimizer schedule and the cross-entropy warm-up epoch."""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .augment import Augment
from .config import DEVICES, Decisions, Settings
from .errors import LabelcleanError

log = logging.getLogger("labelclean")
T = TypeVar("T")


@dataclass
class TrainingData:
    """The decoded images and given labels, placed once for the whole fit.

    ``images`` stays uint8; it lives on the training device when it fits there, else in RAM,
    else memory-mapped from the decoded-image cache on disk, and :meth:`batch` moves only the
    rows a step needs.
    """

    images: torch.Tensor  # uint8 (n, c, h, w)
    labels: torch.Tensor | None  # int64 (n,) given labels on the training device; None to predict
    num_classes: int
    augment: Augment
    device: torch.device

    @classmethod
    def build(cls, images: torch.Tensor, labels: torch.Tensor | None, num_classes: int, mean: list[float],
              std: list[float], device: torch.device, padding: int = 0, flip: bool = False) -> TrainingData:
        """Images standardized with the fit's per-channel ``mean``/``std``; ``padding`` and ``flip``
        are the training augmentation (none to evaluate or predict)."""
        def stat(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, device=device).view(1, -1, 1, 1)

        labels = labels if labels is None else torch.as_tensor(labels, device=device)
        return cls(images, labels, num_classes, Augment(stat(mean), stat(std), padding, flip), device)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx.to(self.images.device)].to(self.device, non_blocking=True)

    def views(self, idx: torch.Tensor, count: int = 2) -> list[torch.Tensor]:
        """``count`` independent augmentations of the same samples."""
        raw = self.batch(idx)
        return [self.to_model(self.augment(raw)) for _ in range(count)]

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)

    def __len__(self) -> int:
        return len(self.images)


# ---------------------------------------------------------------------------------------------
# The device's fast path. Measured on a 2-core Xeon with AMX (docs/speed.md): bf16 + channels-last
# made a small-CNN training step 3.1x and an evaluation pass 3.4x faster than fp32 NCHW;
# channels-last alone 1.4x and 1.6x. torch.compile (``--compile``, :func:`compiled`) is off by
# default: on the CPU it took about a minute to compile and the compiled DivideMix step was 1.4x
# slower; on a GPU it has not been measured yet.


def resolve_device(name: str) -> torch.device:
    """The device a name asks for: 'auto' is CUDA when PyTorch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LabelcleanError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu.")
    if name not in DEVICES:
        raise LabelcleanError(f"The 'device' option must be one of {', '.join(DEVICES)}. Got {name!r}.")
    return torch.device(name)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX-512 BF16 or AMX). Elsewhere PyTorch
    emulates bf16 (oneDNN's AVX-512 path converts every tensor) and a step is slower than in fp32."""
    if hasattr(torch.cpu, "get_capabilities"):  # recent torch; older ones: read the flags ourselves
        capabilities = torch.cpu.get_capabilities()
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: no way to tell, stay in fp32
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_bf16(device: torch.device) -> bool:
    """bf16 autocast on CUDA (tensor cores, no loss scaling needed) and on CPUs with native bf16."""
    return device.type == "cuda" or (device.type == "cpu" and _cpu_has_fast_bf16())


@torch.compiler.assume_constant_result
def _cpu_has_fast_bf16() -> bool:
    """:func:`cpu_has_fast_bf16` as a constant to a compiled step, which would otherwise trace the question."""
    return cpu_has_fast_bf16()


def precision(device: torch.device) -> str:
    """The precision of the forward and backward passes on ``device``, as reports and benchmarks name it."""
    return "bf16 autocast" if uses_bf16(device) else "fp32"


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """Mixed precision where it is fast (:func:`uses_bf16`), full precision elsewhere. Weights,
    optimizer state, losses and every logit returned stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(device) else nullcontext()


def place(net: nn.Module, device: torch.device) -> nn.Module:
    """Move a network to ``device`` in channels-last layout, the one :meth:`TrainingData.to_model` feeds:
    faster on CUDA (tensor cores) and on the CPU (oneDNN's blocked kernels), in fp32 and bf16 alike."""
    return net.to(device, memory_format=torch.channels_last)


def cpu_threads(device: torch.device) -> int:
    """Threads for a fit's CPU kernels: ``OMP_NUM_THREADS`` where it is set, else every core this process
    may use; torch's default off the CPU. Taken from the machine, never from a timing: the thread count
    changes the float rounding, so a count that followed the momentary load would give two fits of the
    same command different exports. A resumed fit keeps the count saved with its run."""
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores))


@contextmanager
def threads(count: int) -> Iterator[None]:
    """Run the block's CPU kernels on ``count`` threads, then restore the caller's setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def predict_logits(net: nn.Module, data: TrainingData, batch_size: int) -> torch.Tensor:
    """Float32 logits (n, k) of the un-augmented images, in eval mode.

    With several processes each computes its shard of the samples and every process gets all logits.
    """
    net = distributed.unwrap(net)
    distributed.sync_buffers(net)
    rows = distributed.shard(len(data))
    was_training = net.training
    net.eval()
    out = torch.empty(len(rows), data.num_classes, device=data.device)
    with torch.inference_mode(), autocast(data.device):
        for start in range(rows.start, rows.stop, batch_size):
            x = data.images[start:min(start + batch_size, rows.stop)].to(data.device, non_blocking=True)
            out[start - rows.start:start - rows.start + len(x)] = net(data.to_model(data.augment.plain(x))).float()
    net.train(was_training)
    return distributed.gather_rows(out, len(data))


# ---------------------------------------------------------------------------------------------
# A training step without per-step overhead: its scalars on the device, fixed shapes, compiled.


def per_step(values: Sequence[float] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """An epoch's per-step scalars (mixup's λ, the ramp of λu) as one float32 tensor on ``device``, moved
    once per epoch: a step reads its element, a device tensor, so it neither waits for the host nor, once
    compiled, is compiled again for every new value (a Python number is a constant to torch.compile)."""
    return torch.as_tensor(values, dtype=torch.float32).to(device)


def batches(order: torch.Tensor, size: int, full: bool = False) -> tuple[torch.Tensor, ...]:
    """``order`` in batches of ``size``, the last one shorter. With ``full`` the last one is filled to
    ``size`` by wrapping around to the start of ``order`` (those samples are seen twice in the epoch):
    every step has the same shapes, which a compiled step needs to run without compiling again."""
    if full and len(order) % size:
        total = math.ceil(len(order) / size) * size
        order = order.repeat(math.ceil(total / len(order)))[:total]
    return order.split(size)


@functools.cache
def _compile(step: Callable[..., T], device_type: str) -> Callable[..., T]:
    return torch.compile(step, dynamic=False, mode="reduce-overhead" if device_type == "cuda" else None)


def compiled(step: Callable[..., T], data: TrainingData) -> Callable[..., T]:
    """``step`` (a whole training step on ``data``: forward, loss, backward, optimizer step) compiled by
    torch.compile for fixed shapes (``dynamic=False``; feed it :func:`batches` with ``full``), and on CUDA
    replayed as CUDA graphs (``mode='reduce-overhead'``), which leaves no per-kernel launch overhead.
    Compiled once per process and device type. ``data``'s images and labels are marked as staying at
    their address, so that a graph reads them in place instead of copying them in at every step. The
    compiled step draws its random numbers in its own kernels, so its results are not bit-identical
    to the eager step's."""
    for tensor in (data.images, data.labels):
        torch._dynamo.mark_static_address(tensor)
    fast = _compile(step, data.device.type)

    def run(*args: Any, **kwargs: Any) -> T:
        torch.compiler.cudagraph_mark_step_begin()  # a new step: the last step's graph outputs may be reused
        return fast(*args, **kwargs)

    return run


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
    agreement: list[float] | None = None  # DivideMix, per network: share of samples whose given label it predicts
    note: str | None = None  # a decision taken this epoch (warm-up ended, settings chosen, guard fired)
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
    # Inside an epoch stopped by Ctrl-C: what it computed once (see :func:`once`) and where its
    # current step loop stopped (see :class:`Loop`). Empty at epoch boundaries.
    partial: dict[str, Any] = field(default_factory=dict)
    decisions: Decisions = field(default_factory=Decisions)  # what the data showed and the rules decided


# ---------------------------------------------------------------------------------------------
# Stopping at a step boundary and resuming there.

STOP = threading.Event()  # set on Ctrl-C (see api.fit): stop at the next step boundary


class Interrupted(KeyboardInterrupt):
    """Raised at a step boundary once STOP is set; ``TrainingState.partial`` then says where."""


@contextmanager
def stop_on_ctrl_c() -> Iterator[None]:
    """While training: the first Ctrl-C sets STOP (the fit stops at the next step boundary and
    checkpoints there); a second one interrupts at once. Only the main thread can take signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if STOP.is_set():
            raise KeyboardInterrupt
        STOP.set()
        log.warning("Stopping after the current step to save it (press Ctrl-C again to stop at once).")

    previous = signal.signal(signal.SIGINT, handler)
    STOP.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        STOP.clear()


def stable_seed(*parts: object) -> int:
    """A seed from its parts that is the same in every process (``hash`` of a str is not)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def once(state: TrainingState, name: str, compute: Callable[[], T]) -> T:
    """``compute()``'s result, computed once per epoch: an epoch resumed after Ctrl-C reuses what it
    had computed before (a split made by networks that have trained since, a finished loop)."""
    done = state.partial.setdefault("done", {})
    if name not in done:
        done[name] = compute()
    return done[name]


@dataclass
class Loop:
    """One pass of optimizer steps inside an epoch (a network's warm-up or training pass).

    Every random draw of the pass is seeded from (seed, epoch, name) before its first step and
    from (seed, epoch, name, step) before each step, so a pass resumed at step ``s`` draws exactly
    what an uninterrupted one would, without replaying steps ``0..s-1``. With several processes, all
    draw the same plan (the batches) and each its own augmentations (the rank joins the step's seed);
    a Ctrl-C on any of them stops all at the same step.
    """

    state: TrainingState
    name: str
    seed: int

    def __post_init__(self) -> None:
        torch.manual_seed(stable_seed(self.seed, self.state.epoch, self.name))

    def steps(self, count: int, totals: torch.Tensor) -> Iterator[int]:
        """Step indices to run, from where a checkpoint stopped; ``totals`` (the caller's running
        sums, updated in place) is restored from and saved with the position."""
        saved = self.state.partial.get("loop")
        start = 0
        if saved is not None and saved["name"] == self.name:
            start = saved["step"]
            totals.copy_(saved["totals"])
        for step in range(start, count):
            if distributed.any_process(STOP.is_set()):
                self.state.partial["loop"] = {"name": self.name, "step": step, "totals": totals.clone()}
                raise Interrupted(f"after {step} of {count} steps ({self.name}) in epoch {self.state.epoch + 1}")
            torch.manual_seed(stable_seed(self.seed, self.state.epoch, self.name, step, *distributed.seed_parts()))
            yield step


def run_epochs(state: TrainingState, epochs: Callable[[], int], one_epoch: Callable[[int], EpochReport],
               on_epoch: Callable[[EpochReport], None], after_epoch: Callable[[TrainingState], None]) -> None:
    """The loop every method shares: ``one_epoch(epoch)`` (0-based) from ``state.epoch`` to ``epochs()``.

    ``epochs()`` is asked again after every epoch: an adaptive warm-up decides the length only
    when it ends. Each epoch is timed and its report appended to ``state.history``; then ``after_epoch(state)``
    runs (the caller checkpoints there) and ``on_epoch(report)`` (the caller shows progress).
    """
    while state.epoch < epochs():
        start = time.perf_counter()
        report = one_epoch(state.epoch)
        report.seconds = time.perf_counter() - start
        refuse_divergence(report)
        state.epoch += 1
        state.partial = {}
        state.history.append(report.__dict__.copy())
        after_epoch(state)
        on_epoch(report)


def refuse_divergence(report: EpochReport) -> None:
    """Stop a fit whose loss stopped being a number, before its weights are checkpointed: every
    later epoch would train on NaN and the GMM would fail on NaN losses."""
    losses = [*report.loss, *(report.loss_u or [])]
    if not all(math.isfinite(v) for v in losses):
        raise LabelcleanError(
            f"Training diverged in epoch {report.epoch} (loss {', '.join(f'{v:.4g}' for v in losses)}, lr {report.lr:g}) and "
            "stopped before saving it. Start again with a lower --lr and --overwrite.")


def check_two_batches(n_images: int, batch_size: int, labels_csv: str | Path, smallest: int) -> None:
    """Refuse fewer images than two batches (a step needs a batch, an epoch more than one step); the fix
    names a batch size of at least ``smallest`` that fits."""
    if n_images < 2 * batch_size and batch_size > 1:
        raise LabelcleanError(f"{labels_csv} has {n_images} usable images, fewer than two batches of {batch_size}; "
                              f"lower --batch-size (e.g. {max(smallest, n_images // 4)}).")


def make_optimizer(net: nn.Module, cfg: Settings) -> torch.optim.SGD:
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def step_decay(lr: float, done: int, length: int) -> float:
    """``lr`` for the first half of a stage of ``length`` epochs, ``lr/10`` after ``done`` reaches half."""
    return lr / 10 if done >= length // 2 else lr


def learning_rate(epoch: int, cfg: Settings) -> float:
    """DivideMix's step schedule: ``lr`` for the first half of the epochs, ``lr/10`` after."""
    return step_decay(cfg.lr, epoch, cfg.epochs)


def set_learning_rate(optimizers: list[torch.optim.Optimizer], lr: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr


# ---------------------------------------------------------------------------------------------
# The warm-up both methods start with (DivideMix's warm-up, MLNT's baseline).


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean of Σ p·log p; added to the warm-up loss under class-pair noise to penalize confidence."""
    return (torch.softmax(logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def warmup_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
                 cfg: Settings, loop: Loop | None = None) -> torch.Tensor:
    """One pass of cross-entropy on all given labels (+ confidence penalty for 'asym' noise).

    Returns the mean loss as a device tensor (no host sync inside the loop). Within a fit,
    ``loop`` makes the pass stoppable and resumable at a step boundary.
    """
    net.train()
    total = torch.zeros((), device=data.device)
    batches = torch.randperm(len(data), device=data.device).split(2 * cfg.batch_size)
    for step in loop.steps(len(batches), total) if loop else range(len(batches)):
        idx = distributed.part(batches[step])
        x = data.views(idx, 1)[0]
        with autocast(data.device):
            logits = net(x).float()
        loss = F.cross_entropy(logits, data.labels[idx])
        objective = loss + negative_entropy(logits) if cfg.noise_mode == "asym" else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total += loss.detach()
    return distributed.average(total) / len(batches)
