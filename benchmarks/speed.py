"""Speed benchmark: how fast a DivideMix epoch runs on this hardware, part by part, and how long
a whole run would take.

After warm-up, a DivideMix epoch is, for each of the two networks, **co-divide** — an evaluation
pass over every sample plus a GMM on the per-sample losses — and a **training epoch** of
``ceil(n_labeled / B)`` steps, each on ``B`` labeled and ``B`` unlabeled samples in two augmented
views. A warm-up epoch is ``ceil(n / 2B)`` cross-entropy steps per network. Each part is timed with
labelclean's own functions (``warmup_epoch``, ``predict_logits``, ``clean_probability``,
``train_epoch``) on a limited number of batches, after untimed first calls, and extrapolated to
``n`` samples; the projected run uses the paper's CIFAR-10 schedule (300 epochs, 10 of warm-up).
Precision is labelclean's own: bf16 autocast on CUDA, fp32 on CPU.

Usage::

    python benchmarks/speed.py                        # synthetic CIFAR-10 shape: 50,000 × 3×32×32, 10 classes
    python benchmarks/speed.py --arch preact_resnet18 --device cuda
    python benchmarks/speed.py --images DIR --labels labels.csv --image-size 64   # your own data

Results go to ``benchmarks/results/speed-*.json`` and a table is printed.
"""

from __future__ import annotations

import math
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
import typer
from common import RESULTS, machine, place, rows
from rich.console import Console
from rich.table import Table
from torch import nn

from labelclean.augment import Augment, crop_padding
from labelclean.config import PAPER_SETTINGS, FitConfig, resolve_device
from labelclean.data import channel_stats, decode_images, read_labels
from labelclean.dividemix import clean_probability, normalized_loss, train_epoch, warmup_epoch
from labelclean.files import write_json
from labelclean.models import build_model, default_arch
from labelclean.training import TrainingData, make_optimizer, predict_logits

console = Console(stderr=True, highlight=False, soft_wrap=True)


def synthetic_images(samples: int, channels: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random uint8 images and random labels: the cost of a step does not depend on the pixels."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (samples, channels, size, size), dtype=torch.uint8, generator=generator)
    return images, torch.randint(0, classes, (samples,), generator=generator), classes


def folder_images(images_dir: Path, labels_csv: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    labeled = read_labels(images_dir, labels_csv)
    images, bad = decode_images(labeled.files, size)
    if bad:
        raise typer.BadParameter(f"{len(bad)} image(s) cannot be read (e.g. '{labeled.paths[bad[0][0]]}').")
    return images, torch.as_tensor(labeled.labels), len(labeled.classes)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall seconds of ``work()`` with the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return time.perf_counter() - start, result


@dataclass
class Parts:
    """Measured seconds of each part of an epoch, for the sizes it was measured on."""

    warmup_step: float  # one cross-entropy step on 2B samples
    eval_rate: float  # images per second of the evaluation pass
    gmm: float  # one GMM fit on n losses
    train_step: float  # one DivideMix step on B labeled + B unlabeled samples


def time_parts(nets: list[nn.Module], optimizer: torch.optim.Optimizer, data: TrainingData, cfg: FitConfig,
               steps: int, eval_batches: int) -> Parts:
    """Time each part on the first samples of ``data``: ``steps`` training steps, ``eval_batches`` batches."""
    device, batch = data.device, cfg.batch_size

    def first(count: int) -> TrainingData:
        return rows(data, torch.arange(count))

    warm_seconds, _ = timed(lambda: warmup_epoch(nets[0], optimizer, first(2 * batch * steps), cfg), device)
    eval_data = first(min(cfg.eval_batch_size * eval_batches, len(data)))
    eval_seconds, logits = timed(lambda: predict_logits(nets[0], eval_data, cfg.eval_batch_size), device)
    losses = F.cross_entropy(logits, eval_data.labels, reduction="none")  # as co_divide does
    all_losses = normalized_loss(losses)[torch.randint(len(losses), (len(data),), device=device)].cpu().numpy()
    gmm_seconds, _ = timed(lambda: clean_probability(all_losses, seed=cfg.seed), device)
    labeled_first = (torch.arange(2 * batch * steps, device=device) < batch * steps).float()  # B labeled + B not
    full_weight = cfg.warmup + math.ceil(cfg.rampup_epochs)  # λu ramped up, as in most epochs
    train_seconds, _ = timed(lambda: train_epoch(nets[0], nets[1], optimizer, first(2 * batch * steps),
                                                 labeled_first, full_weight, cfg), device)
    return Parts(warm_seconds / steps, len(eval_data) / eval_seconds, gmm_seconds, train_seconds / steps)


def measure(data: TrainingData, cfg: FitConfig, steps: int, eval_batches: int) -> Parts:
    """Time the parts after one untimed round of single steps (allocation, kernel selection, caches)."""
    nets = [place(build_model(cfg.arch, data.images.shape[1], data.num_classes, cfg.image_size), data.device)
            for _ in range(2)]
    optimizer = make_optimizer(nets[0], cfg)
    time_parts(nets, optimizer, data, cfg, 1, 1)
    return time_parts(nets, optimizer, data, cfg, steps, eval_batches)


def project(parts: Parts, samples: int, cfg: FitConfig, labeled_fraction: float) -> dict[str, float]:
    """Seconds of a warm-up epoch, a DivideMix epoch and the whole run for ``samples`` images."""
    warmup_epoch_s = 2 * math.ceil(samples / (2 * cfg.batch_size)) * parts.warmup_step
    divide_s = 2 * (samples / parts.eval_rate + parts.gmm)
    train_s = 2 * math.ceil(labeled_fraction * samples / cfg.batch_size) * parts.train_step
    epoch_s = divide_s + train_s
    return {
        "warmup_epoch_seconds": warmup_epoch_s,
        "co_divide_seconds": divide_s,
        "train_seconds": train_s,
        "epoch_seconds": epoch_s,
        "epoch_images_per_second": samples / epoch_s,
        "run_seconds": cfg.warmup * warmup_epoch_s + (cfg.epochs - cfg.warmup) * epoch_s,
    }


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process (Linux reports KiB) and, on CUDA, peak allocated tensors."""
    memory = {"cpu_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return memory


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def print_table(result: dict[str, Any]) -> None:
    s, m, p = result["settings"], result["measured"], result["projected"]
    table = Table(title=f"DivideMix speed: {result['machine']['device']}, {s['arch']}, {s['image_size']}px, "
                        f"batch {s['batch_size']}, {result['precision']}, torch {result['machine']['torch']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in [
        ("warm-up step (2B samples)", f"{m['warmup_step_seconds'] * 1000:.1f} ms"),
        ("eval pass", f"{m['eval_images_per_second']:,.0f} images/s"),
        (f"GMM on {result['samples']:,} losses", f"{m['gmm_seconds']:.2f} s"),
        ("DivideMix step (B labeled + B unlabeled)", f"{m['train_step_seconds'] * 1000:.1f} ms"),
        ("warm-up epoch (2 networks)", f"{p['warmup_epoch_seconds']:,.1f} s"),
        ("DivideMix epoch: co-divide (2 networks)", f"{p['co_divide_seconds']:,.1f} s"),
        ("DivideMix epoch: training (2 networks)", f"{p['train_seconds']:,.1f} s"),
        ("DivideMix epoch", f"{p['epoch_seconds']:,.1f} s = {p['epoch_images_per_second']:,.0f} images/s"),
        (f"projected run ({s['epochs']} epochs, {s['warmup']} warm-up)", f"{p['run_seconds'] / 3600:,.1f} h"),
        ("peak CPU memory (RSS)", f"{result['memory']['cpu_peak_rss_mb']:,.0f} MB"),
        *([("peak CUDA memory allocated", f"{result['memory']['cuda_max_allocated_mb']:,.0f} MB")]
          if "cuda_max_allocated_mb" in result["memory"] else []),
    ]:
        table.add_row(name, value)
    Console().print(table)


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    arch: Annotated[str, typer.Option(help="Network; auto = labelclean's choice for the device.")] = "auto",
    image_size: Annotated[int, typer.Option(min=4, help="Side in pixels.")] = 32,
    samples: Annotated[int, typer.Option(min=1, help="Synthetic images (projection size).")] = 50_000,
    channels: Annotated[int, typer.Option(min=1, max=3, help="Synthetic image channels.")] = 3,
    classes: Annotated[int, typer.Option(min=2, help="Synthetic classes.")] = 10,
    images: Annotated[Path | None, typer.Option(help="Your own image folder instead of synthetic images.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Its labels CSV.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="B: labeled (and unlabeled) samples per step.")] = 64,
    eval_batch_size: Annotated[int, typer.Option(min=1)] = 512,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps of warm-up and of DivideMix training.")] = 20,
    eval_batches: Annotated[int, typer.Option(min=1, help="Timed batches of the evaluation pass.")] = 8,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the projected run.")] = 300,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up epochs of the projected run.")] = 10,
    labeled_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "Share of samples in the labeled set, which sets the steps per epoch (1 = upper bound)."))] = 1.0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (1 on a shared machine).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/speed-….json).")] = None,
) -> None:
    """Time the parts of a DivideMix epoch and project the time of a full run."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if (images is None) != (labels is None):
        raise typer.BadParameter("Your own data needs both --images and --labels.")
    raw, given, k = (synthetic_images(samples, channels, image_size, classes) if images is None
                  else folder_images(images, labels, image_size))
    cfg = FitConfig(epochs=epochs, warmup=warmup, batch_size=batch_size, eval_batch_size=eval_batch_size,
                    image_size=image_size, device=device, **PAPER_SETTINGS,
                    arch=default_arch(dev.type, image_size) if arch == "auto" else arch).validate()
    mean, std = channel_stats(raw)
    augment = Augment(torch.tensor(mean, device=dev).view(1, -1, 1, 1), torch.tensor(std, device=dev).view(1, -1, 1, 1),
                      crop_padding(image_size), cfg.flip)
    data = TrainingData(raw.to(dev), given.to(dev), k, augment, dev)
    if len(data) < 2 * batch_size * steps:
        raise typer.BadParameter(f"{len(data)} images are too few to time {steps} steps of batch {batch_size}; "
                                 f"lower --steps or --batch-size.")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    console.print(f"Timing {cfg.arch} at {image_size}px on {dev} ({steps} steps per part)…")
    parts = measure(data, cfg, steps, eval_batches)
    result = {
        "benchmark": "speed",
        "machine": machine(dev),
        "data": "synthetic" if images is None else str(images),
        "samples": len(data),
        "precision": "bf16 autocast" if dev.type == "cuda" else "fp32",
        "settings": {**cfg.to_dict(), "steps": steps, "eval_batches": eval_batches,
                     "labeled_fraction": labeled_fraction},
        "measured": {"warmup_step_seconds": parts.warmup_step, "eval_images_per_second": parts.eval_rate,
                     "gmm_seconds": parts.gmm, "train_step_seconds": parts.train_step},
        "projected": project(parts, len(data), cfg, labeled_fraction),
        "memory": peak_memory_mb(dev),
    }
    default_name = f"speed-{slug(result['machine']['device'])}-{cfg.arch}-{image_size}px.json"
    write_json(out or RESULTS / default_name, result)
    print_table(result)


if __name__ == "__main__":
    app()
