"""Speed benchmark: how fast DivideMix trains on this hardware, per step and per epoch, side by
side with the official code, and how long a whole run would take.

``epochs`` (the default command) runs real epochs with labelclean's own training loop
(``dividemix.train``: W warm-up and D DivideMix epochs, eval pass and GMM included) on random
CIFAR-shaped images drawn exactly as the official harness draws its training set, and reports
seconds per epoch and per optimizer step. A warm-up step is 2B samples of cross-entropy; a DivideMix
step is B labeled + B unlabeled samples, and an epoch has ``ceil(n_labeled / B)`` of them per
network, so per-step figures compare implementations whose GMMs kept different labeled sets.
With ``--official PATH/run_official.py`` it also runs that harness (the official DivideMix code,
https://github.com/LiJunnan1992/DivideMix) in the same run with the same images, batch size and
epochs, and prints both side by side with their ratio.

``parts`` times each part of an epoch (``warmup_epoch``, ``predict_logits``, ``clean_probability``,
``train_epoch``) on a few batches and projects a whole run (the paper's 300 epochs, 10 of warm-up).

Precision is labelclean's own: bf16 autocast on CUDA and on CPUs with native bf16 (AVX-512 BF16,
AMX), else fp32 (see ``labelclean.training.uses_bf16``).

Usage::

    python benchmarks/speed.py epochs --samples 512 --arch preact_resnet18 --official ../run_official.py
    python benchmarks/speed.py parts                  # synthetic CIFAR-10 shape: 50,000 × 3×32×32
    python benchmarks/speed.py parts --images DIR --labels labels.csv --image-size 64   # your own data
    python benchmarks/speed.py threads                # a step on 1 thread vs every core, idle and loaded
    python benchmarks/speed.py compile-step           # the DivideMix step eager vs compiled (fit --compile)

Results go to ``benchmarks/results/speed-*.json`` and a table is printed.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
import typer
from common import RESULTS, record, rows
from rich.console import Console
from rich.table import Table
from torch import nn

from labelclean import dividemix
from labelclean.augment import crop_padding
from labelclean.config import PAPER_SETTINGS, Decisions, FitConfig, Settings, settings
from labelclean.data import channel_stats, decode_images, read_labels
from labelclean.dividemix import train_epoch, warmup_epoch
from labelclean.evaluation import clean_probability, normalized_loss
from labelclean.files import write_json
from labelclean.models import build_model
from labelclean.training import (
    EpochReport,
    TrainingData,
    TrainingState,
    cpu_threads,
    make_optimizer,
    place,
    precision,
    predict_logits,
    resolve_device,
    threads,
    uses_bf16,
)

console = Console(stderr=True, highlight=False, soft_wrap=True)


def synthetic_images(samples: int, channels: int, size: int, classes: int,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random uint8 images and labels: the cost of a step does not depend on the pixels.

    Drawn as the official harness's ``make_fake_cifar.py`` draws its training set (numpy's
    ``default_rng(seed)``; five batches, each its pixels then its labels), so at 3×32×32 with
    10 classes both implementations train on the same images.
    """
    rng = np.random.default_rng(seed)
    pixels, labels = [], []
    for batch in range(5):
        n = samples // 5 + (batch < samples % 5)
        pixels.append(rng.integers(0, 256, size=(n, channels * size * size), dtype=np.uint8))
        labels.append(rng.integers(0, classes, size=n))
    images = torch.from_numpy(np.concatenate(pixels).reshape(samples, channels, size, size))
    return images, torch.from_numpy(np.concatenate(labels)), classes


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


def fixed_settings(dev: torch.device, **declared: Any) -> Settings:
    """The settings labelclean trains with for a timing: ``declared`` with the paper's fixed DivideMix
    settings (PAPER_SETTINGS), so that no rule reading the data changes the work being timed."""
    return settings(FitConfig(**PAPER_SETTINGS, **declared).validate(), Decisions(device=dev.type))


def training_data(raw: torch.Tensor, given: torch.Tensor, classes: int, cfg: FitConfig,
                  device: torch.device) -> TrainingData:
    """The images on ``device`` with labelclean's training transform for them, as ``labelclean.fit`` builds it."""
    mean, std = channel_stats(raw)
    return TrainingData.build(raw.to(device), given, classes, mean, std, device,
                              padding=crop_padding(cfg.image_size), flip=cfg.flip)


# ---------------------------------------------------------------------------------------------
# Whole epochs, side by side with the official code.


def warmup_steps(samples: int, batch_size: int) -> int:
    """Steps of a warm-up epoch, both networks: each makes one pass in batches of 2B."""
    return 2 * math.ceil(samples / (2 * batch_size))


def dividemix_steps(labeled: list[int], samples: int, batch_size: int) -> int:
    """Steps of a DivideMix epoch, both networks: one pass over each labeled set in batches of B
    (over the unlabeled set when the labeled one is empty, as ``train_epoch`` does)."""
    return sum(math.ceil((n or samples - n) / batch_size) for n in labeled)


def epoch_figures(report: EpochReport, samples: int, batch_size: int) -> dict[str, Any]:
    steps = (dividemix_steps(report.labeled, samples, batch_size) if report.phase == "train"
             else warmup_steps(samples, batch_size))
    return {"phase": report.phase, "seconds": report.seconds, "steps": steps,
            "seconds_per_step": report.seconds / steps, "labeled": report.labeled}


def time_epochs(data: TrainingData, cfg: FitConfig, compile_mode: str | None = None) -> list[dict[str, Any]]:
    """Train two fresh networks for ``cfg.epochs`` epochs (``cfg.warmup`` of warm-up) with labelclean's
    own loop, as ``labelclean.fit`` does without the checkpoints; the figures of every epoch, with the
    seconds of a DivideMix epoch's training passes (co-divide left out) timed apart.

    ``cfg.compile_step`` compiles DivideMix's whole training step as ``fit --compile`` does (full-size
    batches; CUDA graphs on CUDA); the first DivideMix epoch pays the compilation (:func:`compile_seconds`).
    With ``compile_mode`` ('default', 'reduce-overhead', …) the networks alone are torch.compile'd in that
    mode instead (an experiment; the first epochs of each kind pay the compilation)."""
    torch.manual_seed(cfg.seed)
    nets = [place(build_model(cfg.arch, data.images.shape[1], data.num_classes, cfg.image_size), data.device)
            for _ in range(2)]
    if compile_mode:
        for net in nets:
            net.compile(mode=None if compile_mode == "default" else compile_mode)
    optimizers = [make_optimizer(net, cfg) for net in nets]
    reports: list[EpochReport] = []
    passes: list[float] = []  # seconds of each network's training pass, in order

    def timed_train_epoch(*args: Any, **kwargs: Any) -> Any:
        seconds, result = timed(lambda: train_epoch(*args, **kwargs), data.device)
        passes.append(seconds)
        return result

    with mock.patch.object(dividemix, "train_epoch", timed_train_epoch):
        dividemix.train(nets, optimizers, data, cfg, TrainingState(), reports.append, lambda state: None)
    figures = [epoch_figures(r, len(data), cfg.batch_size) for r in reports]
    for epoch in (f for f in figures if f["phase"] == "train"):
        epoch["training_seconds"] = passes.pop(0) + passes.pop(0)
    return figures


def compile_seconds(figures: list[dict[str, Any]]) -> float | None:
    """What compiling cost: the first DivideMix epoch's training passes (which compile the step) less the
    last one's (compiled); None with fewer than two DivideMix epochs."""
    train = [e for e in figures if e["phase"] == "train"]
    return train[0]["training_seconds"] - train[-1]["training_seconds"] if len(train) > 1 else None


def compile_counters(clear: bool = False) -> dict[str, Any]:
    """What torch.compile did since the counters were last cleared (``clear``: clear them after reading):
    graphs compiled, graph breaks by reason, and graphs that ran without CUDA graphs in mode 'reduce-overhead'."""
    counters = torch._dynamo.utils.counters
    figures = {"graphs": counters["stats"]["unique_graphs"], "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
               "graph_breaks": {reason[:300]: n for reason, n in counters["graph_break"].items()}}
    if clear:
        counters.clear()
    return figures


def run_official(harness: Path, samples: int, test_samples: int, cfg: FitConfig, workers: int,
                 timeout: float) -> dict[str, Any]:
    """Run the official code's timing harness on the same images and settings; its JSON line, with
    the step counts of its last warm-up and DivideMix epochs added."""
    command = [sys.executable, str(harness), "--n-train", str(samples), "--n-test", str(test_samples),
               "--batch-size", str(cfg.batch_size), "--num-workers", str(workers),
               "--warmup-epochs", str(cfg.warmup), "--dividemix-epochs", str(cfg.epochs - cfg.warmup),
               "--timeout", str(timeout)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"The official harness failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["command"] = " ".join(command)
    result["warmup_steps"] = warmup_steps(samples, cfg.batch_size)
    result["dividemix_steps"] = dividemix_steps(result["dividemix_labeled_sizes"], samples, cfg.batch_size)
    return result


def side_by_side(ours: list[dict[str, Any]], official: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per kind of epoch (the last of each, as the harness reports): seconds, steps, seconds per step
    of labelclean and of the official code, and how many times faster labelclean is."""
    last = {e["phase"]: e for e in ours}
    warm, train = last["warm-up"], last["train"]
    figures = {
        "warm-up epoch": {"labelclean": warm["seconds"], "steps": [warm["steps"]]},
        "warm-up step (2B samples)": {"labelclean": warm["seconds_per_step"]},
        "DivideMix epoch (eval pass and GMM included)": {"labelclean": train["seconds"], "steps": [train["steps"]],
                                                         "labeled": [train["labeled"]]},
        "DivideMix step (B labeled + B unlabeled)": {"labelclean": train["seconds_per_step"]},
        "DivideMix step, training only (co-divide left out)": {"labelclean": train["training_seconds"] / train["steps"]},
    }
    if official is not None:
        for name, value in [("warm-up epoch", official["warmup_epoch_s"]),
                            ("warm-up step (2B samples)", official["warmup_epoch_s"] / official["warmup_steps"]),
                            ("DivideMix epoch (eval pass and GMM included)", official["dividemix_epoch_s"]),
                            ("DivideMix step (B labeled + B unlabeled)",
                             official["dividemix_epoch_s"] / official["dividemix_steps"]),
                            ("DivideMix step, training only (co-divide left out)",
                             official["dividemix_train_s"] / official["dividemix_steps"])]:
            figures[name].update(official=value, ratio=value / figures[name]["labelclean"])
        figures["warm-up epoch"]["steps"].append(official["warmup_steps"])
        figures["DivideMix epoch (eval pass and GMM included)"]["steps"].append(official["dividemix_steps"])
        figures["DivideMix epoch (eval pass and GMM included)"]["labeled"].append(official["dividemix_labeled_sizes"])
    return figures


def print_epochs(result: dict[str, Any]) -> None:
    s = result["settings"]
    table = Table(title=f"DivideMix per epoch and per step: {result['samples']:,} images, {result['machine']['device']} "
                        f"({result['machine']['torch_threads']} threads), {s['arch']}, {s['image_size']}px, batch "
                        f"{s['batch_size']}, λu {s['lambda_u']:g}, threshold {s['p_threshold']:g}; labelclean in "
                        f"{result['precision']}; last epoch of each kind")
    for column in ("figure (seconds)", "official", "labelclean", "labelclean is", "steps (labelclean, official)"):
        table.add_column(column, justify="left" if column.startswith("figure") else "right")
    for name, row in result["side_by_side"].items():
        table.add_row(name, f"{row['official']:.3f}" if "official" in row else "-", f"{row['labelclean']:.3f}",
                      f"{row['ratio']:.2f}× faster" if "ratio" in row else "-",
                      ", ".join(map(str, row.get("steps", []))) + (f" (labeled {row['labeled']})" if "labeled" in row else ""))
    Console(width=160).print(table)


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def epochs(
    samples: Annotated[int, typer.Option(min=5, help="Synthetic CIFAR-shaped training images.")] = 512,
    arch: Annotated[str, typer.Option(help="Network; the official code's is preact_resnet18.")] = "preact_resnet18",
    image_size: Annotated[int, typer.Option(min=4, help="Side in pixels (the official code: 32).")] = 32,
    channels: Annotated[int, typer.Option(min=1, max=3, help="Image channels (the official code: 3).")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="B: labeled (and unlabeled) samples per step.")] = 64,
    warmup: Annotated[int, typer.Option(min=1, help="W: warm-up epochs.")] = 1,
    dividemix_epochs: Annotated[int, typer.Option(min=1, help="D: DivideMix epochs after warm-up.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: labelclean's choice).")] = None,
    official: Annotated[Path | None, typer.Option(help=(
        "The official code's harness, run_official.py, to run in the same run with the same settings."))] = None,
    official_workers: Annotated[int, typer.Option(min=0, help="Its DataLoader workers (upstream: 5).")] = 2,
    official_test: Annotated[int, typer.Option(min=1, help="Its test images (its test pass is not timed).")] = 256,
    official_timeout: Annotated[float, typer.Option(help="Seconds before the official run is stopped.")] = 3600,
    compile_mode: Annotated[str | None, typer.Option("--compile", help=(
        "torch.compile labelclean's networks in this mode (default, reduce-overhead, …): an experiment."))] = None,
    compile_step: Annotated[bool, typer.Option("--compile-step", help=(
        "Compile labelclean's whole DivideMix step, as 'fit --compile' does."))] = False,
    cudnn_benchmark: Annotated[bool, typer.Option(help="Let cuDNN time its algorithms per shape (CUDA).")] = False,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/speed-epochs-….json).")] = None,
) -> None:
    """Time W warm-up and D DivideMix epochs of labelclean (and of the official code); per-step figures."""
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if official is not None and (arch, image_size, channels) != ("preact_resnet18", 32, 3):
        raise typer.BadParameter("The official code trains PreAct ResNet-18 on 3×32×32 images; compare with "
                                 "--arch preact_resnet18 --image-size 32 --channels 3.")
    dev = resolve_device(device)
    torch.set_num_threads(threads or cpu_threads(dev))
    cfg = fixed_settings(dev, epochs=warmup + dividemix_epochs, warmup=warmup, batch_size=batch_size,
                         image_size=image_size, arch=arch, device=device, auto=False, compile_step=compile_step)
    data = training_data(*synthetic_images(samples, channels, image_size, 10), cfg, dev)
    result: dict[str, Any] = {"benchmark": "speed epochs", **record(dev, seeds=[cfg.seed]), "samples": samples,
                              "precision": precision(dev), "settings": cfg.to_dict(), "load_average_1min": {},
                              "compile": compile_mode, "cudnn_benchmark": cudnn_benchmark}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    console.print(f"labelclean: {warmup} warm-up + {dividemix_epochs} DivideMix epoch(s) of {arch} on {samples:,} images…")
    result["load_average_1min"]["labelclean"] = result["machine"]["load_average_1min"]
    result["labelclean"] = time_epochs(data, cfg, compile_mode)
    result["memory"] = peak_memory_mb(dev)
    if official is not None:
        console.print(f"official code: the same epochs through {official}…")
        result["load_average_1min"]["official"] = os.getloadavg()[0]
        result["official"] = run_official(official, samples, official_test, cfg, official_workers, official_timeout)
    result["side_by_side"] = side_by_side(result["labelclean"], result.get("official"))
    name = f"speed-epochs-{slug(result['machine']['device'])}-{arch}-{samples}.json"
    write_json(out or RESULTS / name, result)
    print_epochs(result)


@app.command("compile-step")
def compile_step_side_by_side(
    samples: Annotated[int, typer.Option(min=5, help="Synthetic training images.")] = 256,
    arch: Annotated[str, typer.Option(help="Network.")] = "small_cnn",
    image_size: Annotated[int, typer.Option(min=4, help="Side in pixels.")] = 28,
    channels: Annotated[int, typer.Option(min=1, max=3, help="Image channels.")] = 1,
    batch_size: Annotated[int, typer.Option(min=1, help="B: labeled (and unlabeled) samples per step.")] = 32,
    dividemix_epochs: Annotated[int, typer.Option(min=2, help="DivideMix epochs after 1 warm-up epoch; the "
                                                  "first compiles, the last is timed.")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: labelclean's choice).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: results/speed-compile-step-….json).")] = None,
) -> None:
    """DivideMix epochs with the training step eager and compiled ('fit --compile'), one after the other in
    one run: seconds per training step of the last epoch, and the seconds the compilation cost."""
    dev = resolve_device(device)
    torch.set_num_threads(threads or cpu_threads(dev))
    cfg = fixed_settings(dev, epochs=1 + dividemix_epochs, warmup=1, batch_size=batch_size, image_size=image_size,
                         arch=arch, device=device, auto=False)
    data = training_data(*synthetic_images(samples, channels, image_size, 10), cfg, dev)
    result: dict[str, Any] = {"benchmark": "speed compile-step", **record(dev, seeds=[cfg.seed]), "samples": samples,
                              "precision": precision(dev), "settings": cfg.to_dict()}
    for name, compiled in (("eager", False), ("compiled", True)):
        console.print(f"{name} step: 1 warm-up + {dividemix_epochs} DivideMix epochs of {arch} on {samples:,} images…")
        compile_counters(clear=True)
        start = time.perf_counter()
        figures = time_epochs(data, replace(cfg, compile_step=compiled))
        last = [e for e in figures if e["phase"] == "train"][-1]
        result[name] = {"seconds": time.perf_counter() - start, "epochs": figures,
                        "train_step_seconds": last["training_seconds"] / last["steps"],
                        "compile_seconds": compile_seconds(figures) if compiled else None,
                        "torch_compile": compile_counters() if compiled else None}
    result["eager_over_compiled_step"] = result["eager"]["train_step_seconds"] / result["compiled"]["train_step_seconds"]
    name = f"speed-compile-step-{slug(result['machine']['device'])}-{arch}-{image_size}px-b{batch_size}.json"
    write_json(out or RESULTS / name, result)
    table = Table(title=f"DivideMix training step, {arch}, {image_size}px, batch {batch_size}, {samples:,} images, "
                        f"{result['machine']['device']}, {result['precision']}; last of {dividemix_epochs} epochs")
    for column in ("step", "s per training step", "compilation s", "whole run s"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name in ("eager", "compiled"):
        r = result[name]
        table.add_row(name, f"{r['train_step_seconds']:.4f}",
                      "-" if r["compile_seconds"] is None else f"{r['compile_seconds']:.1f}", f"{r['seconds']:.1f}")
    table.add_row("eager ÷ compiled", f"{result['eager_over_compiled_step']:.2f}", "", "")
    Console(width=140).print(table)


def print_parts(result: dict[str, Any]) -> None:
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


# ---------------------------------------------------------------------------------------------
# Precision and memory layout, one network step at a time.


def variant_step(arch: str, channels: int, size: int, batch: int, bf16: bool, layout: torch.memory_format,
                 compiled: bool) -> tuple[Callable[[bool], None], float]:
    """A function running one training step (``True``) or one evaluation pass (``False``) of a fresh
    network on ``batch`` random images in this precision and layout, and the seconds of its first
    training step (with ``compiled``, torch.compile's compilation)."""
    torch.manual_seed(0)
    net = build_model(arch, channels, 10, size).to(memory_format=layout)
    model = torch.compile(net) if compiled else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))

    def step(train: bool) -> None:
        with torch.set_grad_enabled(train), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).float()
        if train:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(logits, y).backward()
            optimizer.step()

    first, _ = timed(lambda: step(True), torch.device("cpu"))
    return step, first


@app.command()
def precision_layout(
    arch: Annotated[str, typer.Option(help="Network.")] = "small_cnn",
    image_size: Annotated[int, typer.Option(min=4, help="Side in pixels.")] = 28,
    channels: Annotated[int, typer.Option(min=1, max=3)] = 1,
    batch: Annotated[int, typer.Option(min=1, help="Images per step (a DivideMix step trains on 4B).")] = 256,
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds; each times every variant once, interleaved.")] = 5,
    compile_: Annotated[bool, typer.Option("--compile", help="Add torch.compile'd variants (slow to compile).")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: labelclean's choice).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/speed-precision-….json).")] = None,
) -> None:
    """Time a CPU training step and evaluation pass in fp32 and bf16, NCHW and channels-last (and compiled)."""
    torch.set_num_threads(threads or cpu_threads(torch.device("cpu")))
    variants = {(bf16, name, compiled): variant_step(arch, channels, image_size, batch, bf16, layout, compiled)
                for compiled in ([False, True] if compile_ else [False]) for bf16 in (False, True)
                for name, layout in (("NCHW", torch.contiguous_format), ("channels-last", torch.channels_last))}
    times: dict[tuple, list[float]] = {(v, train): [] for v in variants for train in (True, False)}
    for _ in range(repeats):  # interleaved, so that other jobs on the machine slow every variant alike
        for v, (step, _) in variants.items():
            for train in (True, False):
                times[(v, train)].append(timed(partial(step, train), torch.device("cpu"))[0])
    median = {key: float(np.median(t)) for key, t in times.items()}
    base = {train: median[((False, "NCHW", False), train)] for train in (True, False)}
    rows_out = [{"precision": "bf16 autocast" if bf16 else "fp32", "layout": name, "compiled": compiled,
                 "first_step_seconds": variants[(bf16, name, compiled)][1],
                 "train_step_seconds": median[((bf16, name, compiled), True)],
                 "eval_pass_seconds": median[((bf16, name, compiled), False)],
                 "train_speedup": base[True] / median[((bf16, name, compiled), True)],
                 "eval_speedup": base[False] / median[((bf16, name, compiled), False)]}
                for bf16, name, compiled in variants]
    result = {"benchmark": "speed precision-layout", **record(torch.device("cpu"), seeds=[0]), "arch": arch,
              "image_size": image_size, "channels": channels, "batch": batch, "repeats": repeats, "variants": rows_out}
    write_json(out or RESULTS / f"speed-precision-{arch}-{image_size}px-b{batch}.json", result)
    table = Table(title=f"{arch}, {image_size}px, {batch} images, {result['machine']['cpu']}, "
                        f"{result['machine']['torch_threads']} thread(s), median of {repeats}")
    for column in ("precision", "layout", "compiled", "first step s", "train step s", "eval pass s", "train ×", "eval ×"):
        table.add_column(column, justify="right")
    for r in rows_out:
        table.add_row(r["precision"], r["layout"], "yes" if r["compiled"] else "no", f"{r['first_step_seconds']:.2f}",
                      f"{r['train_step_seconds']:.3f}", f"{r['eval_pass_seconds']:.3f}", f"{r['train_speedup']:.2f}",
                      f"{r['eval_speedup']:.2f}")
    Console(width=140).print(table)


BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"


@app.command("threads")
def threads_under_load(
    arch: Annotated[str, typer.Option(help="Network.")] = "small_cnn",
    image_size: Annotated[int, typer.Option(min=4, help="Side in pixels.")] = 28,
    batch: Annotated[int, typer.Option(min=1, help="Images per step (a DivideMix step trains on 4B).")] = 256,
    repeats: Annotated[int, typer.Option(min=1, help="Timed rounds per load; 1 and all threads interleaved.")] = 5,
    load: Annotated[int | None, typer.Option(min=0, help="CPU-bound processes running beside the loaded round "
                                                          "(default: one per core).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: results/speed-threads-….json).")] = None,
) -> None:
    """Time a CPU training step on 1 thread and on every core, first on the machine as it is, then beside
    CPU-bound processes: what ``OMP_NUM_THREADS=1`` buys on a busy machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    load = cores if load is None else load
    step, _ = variant_step(arch, 1, image_size, batch, uses_bf16(torch.device("cpu")), torch.channels_last, False)
    counts = sorted({1, cores})

    def medians() -> dict[int, float]:
        times: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(repeats):  # interleaved, so that a change in the load slows both alike
            for n in counts:
                with threads(n):
                    times[n].append(timed(partial(step, True), torch.device("cpu"))[0])
        return {n: float(np.median(t)) for n, t in times.items()}

    stamp = record(torch.device("cpu"), seeds=[0])
    rounds = {"as it is": {"load_average_1min": os.getloadavg()[0], "step_seconds": medians()}}
    busy = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=600)]) for _ in range(load)]
    try:
        time.sleep(1)
        rounds[f"{load} CPU-bound process(es) beside"] = {"load_average_1min": os.getloadavg()[0],
                                                        "step_seconds": medians()}
    finally:
        for process in busy:
            process.kill()
            process.wait()
    for r in rounds.values():
        r["all_over_one"] = r["step_seconds"][counts[-1]] / r["step_seconds"][1]
    result = {"benchmark": "speed threads", **stamp, "arch": arch, "image_size": image_size, "batch": batch,
              "precision": precision(torch.device("cpu")), "cores": cores, "repeats": repeats, "rounds": rounds}
    write_json(out or RESULTS / f"speed-threads-{arch}-{image_size}px-b{batch}.json", result)
    table = Table(title=f"{arch} training step, {image_size}px, {batch} images, {result['machine']['cpu']}, "
                        f"{result['precision']}, median of {repeats}")
    for column in ("machine", "load avg", *(f"{n} thread(s) s" for n in counts), f"{counts[-1]} ÷ 1"):
        table.add_column(column, justify="right")
    for name, r in rounds.items():
        table.add_row(name, f"{r['load_average_1min']:.1f}", *(f"{r['step_seconds'][n]:.3f}" for n in counts),
                      f"{r['all_over_one']:.2f}")
    Console(width=140).print(table)


@app.command()
def parts(
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
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: labelclean's choice).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/speed-….json).")] = None,
) -> None:
    """Time the parts of a DivideMix epoch and project the time of a full run."""
    dev = resolve_device(device)
    torch.set_num_threads(threads or cpu_threads(dev))
    if (images is None) != (labels is None):
        raise typer.BadParameter("Your own data needs both --images and --labels.")
    raw, given, k = (synthetic_images(samples, channels, image_size, classes) if images is None
                  else folder_images(images, labels, image_size))
    cfg = fixed_settings(dev, epochs=epochs, warmup=warmup, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         image_size=image_size, device=device, arch=arch)
    data = training_data(raw, given, k, cfg, dev)
    if len(data) < 2 * batch_size * steps:
        raise typer.BadParameter(f"{len(data)} images are too few to time {steps} steps of batch {batch_size}; "
                                 f"lower --steps or --batch-size.")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    console.print(f"Timing {cfg.arch} at {image_size}px on {dev} ({steps} steps per part)…")
    parts = measure(data, cfg, steps, eval_batches)
    result = {
        "benchmark": "speed parts",
        **record(dev, seeds=[cfg.seed]),
        "data": "synthetic" if images is None else str(images),
        "samples": len(data),
        "precision": precision(dev),
        "settings": {**cfg.to_dict(), "steps": steps, "eval_batches": eval_batches,
                     "labeled_fraction": labeled_fraction},
        "measured": {"warmup_step_seconds": parts.warmup_step, "eval_images_per_second": parts.eval_rate,
                     "gmm_seconds": parts.gmm, "train_step_seconds": parts.train_step},
        "projected": project(parts, len(data), cfg, labeled_fraction),
        "memory": peak_memory_mb(dev),
    }
    default_name = f"speed-{slug(result['machine']['device'])}-{cfg.arch}-{image_size}px.json"
    write_json(out or RESULTS / default_name, result)
    print_parts(result)


if __name__ == "__main__":
    app()
