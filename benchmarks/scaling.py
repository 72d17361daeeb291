"""Scaling benchmark: images per second of a DivideMix epoch on 1, 2, … processes (torchrun + DDP),
and what that makes of a Clothing1M-size run.

For each process count N, torchrun starts N copies of this script (``--worker``). They build the same
synthetic images and time one DivideMix epoch of both networks with labelclean's own code, as a
distributed fit runs it: **co-divide** (each process evaluates its shard of the samples, the logits are
all-gathered, every process fits the GMM) and a **training pass** of each network (every process
computes 1/N of each batch; DDP averages the gradients). Half of the samples are labeled, so every
count runs the same steps. After an untimed round on a few batches, throughput = images / epoch seconds.

The Clothing1M-size projection (1M images, 224 px, ResNet-50) takes a one-process DivideMix epoch from a
``speed.py`` result for that network (``--speed``), re-projected to 1M images, and divides it by the
speed-up measured here. The speed-up belongs to the network and device measured here, not to ResNet-50.

Usage::

    python benchmarks/scaling.py --nproc 1,2 --device cpu --threads 1
    python benchmarks/scaling.py --nproc 1,2,4,8 --device cuda --arch resnet50 --image-size 224 \\
        --samples 16384 --batch-size 256 --speed benchmarks/results/speed-<gpu>-resnet50-224px.json

Results go to ``benchmarks/results/scaling-*.json`` and a table is printed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from common import RESULTS, record, rows
from rich.console import Console
from rich.table import Table
from speed import Parts, fixed_settings, project, slug, synthetic_images

from labelclean import distributed
from labelclean.augment import crop_padding
from labelclean.config import FitConfig
from labelclean.data import channel_stats
from labelclean.dividemix import co_divide, train_epoch
from labelclean.files import write_json
from labelclean.models import build_model
from labelclean.training import Loop, TrainingData, TrainingState, make_optimizer, place, resolve_device

console = Console(stderr=True, highlight=False, soft_wrap=True)
CLOTHING1M = 1_000_000  # images in Clothing1M's noisy training set, rounded


def dividemix_epoch(nets: list[torch.nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
                    cfg: FitConfig) -> dict[str, float]:
    """Seconds of co-divide and of training, both networks, every process done (barriers)."""
    distributed.barrier()
    start = time.perf_counter()
    for net in nets:
        co_divide(net, data, [], cfg, share=1.0, seed=cfg.seed)  # the paper's GMM split: no quota share
    distributed.barrier()
    divided = time.perf_counter()
    half = (torch.arange(len(data), device=data.device) % 2 == 0).float()  # a fixed split: the same steps for all N
    state = TrainingState()
    for k in (0, 1):
        train_epoch(nets[k], nets[1 - k], optimizers[k], data, half, cfg.warmup + math.ceil(cfg.rampup_epochs), cfg,
                    Loop(state, f"train {k + 1}", cfg.seed))
    distributed.barrier()
    end = time.perf_counter()
    return {"co_divide_seconds": divided - start, "train_seconds": end - divided, "epoch_seconds": end - start}


def worker(settings: dict[str, Any], samples: int, classes: int, out: Path) -> None:
    """One of the N processes: time an epoch; the main one writes the figures to ``out``."""
    cfg = FitConfig.from_dict(settings)
    device = distributed.init(resolve_device(cfg.device))
    raw, given, k = synthetic_images(samples, 3, cfg.image_size, classes)
    mean, std = channel_stats(raw)
    data = TrainingData.build(raw.to(device), given, k, mean, std, device, padding=crop_padding(cfg.image_size),
                              flip=cfg.flip)
    torch.manual_seed(cfg.seed)
    nets = [distributed.wrap(place(build_model(cfg.arch, 3, k, cfg.image_size), device), device) for _ in range(2)]
    optimizers = [make_optimizer(net, cfg) for net in nets]
    dividemix_epoch(nets, optimizers, rows(data, torch.arange(4 * cfg.batch_size)), cfg)  # untimed
    figures = dividemix_epoch(nets, optimizers, data, cfg)
    if distributed.is_main():
        write_json(out, {**figures, "images_per_second": samples / figures["epoch_seconds"],
                         "processes": distributed.world_size()})


def launch(nproc: int, args: list[str], threads: int) -> dict[str, Any]:
    """Run the worker on ``nproc`` processes through torchrun; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   __file__, *args, "--worker-out", str(out)]
        subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        return json.loads(out.read_text())


def clothing1m(speed_file: Path, speedups: dict[int, float]) -> dict[str, Any]:
    """A one-process DivideMix epoch on 1M images from a speed.py result, and with N processes."""
    speed = json.loads(speed_file.read_text())
    measured = speed["measured"]
    parts = Parts(measured["warmup_step_seconds"], measured["eval_images_per_second"],
                  measured["gmm_seconds"] * CLOTHING1M / speed["samples"], measured["train_step_seconds"])
    cfg = replace(FitConfig.from_dict(speed["settings"]), epochs=1, warmup=0)
    epoch = project(parts, CLOTHING1M, cfg, 0.5)["epoch_seconds"]
    return {"from": str(speed_file), "arch": speed["settings"]["arch"], "image_size": speed["settings"]["image_size"],
            "device": speed["machine"]["device"], "samples": CLOTHING1M, "labeled_fraction": 0.5,
            "epoch_hours": {n: epoch / s / 3600 for n, s in speedups.items()}}


def print_table(result: dict[str, Any]) -> None:
    s = result["settings"]
    table = Table(title=f"DivideMix epoch on {result['samples']:,} images: {result['machine']['device']}, {s['arch']}, "
                        f"{s['image_size']}px, batch {s['batch_size']}, {result['threads']} thread(s) per process")
    for column in ("processes", "co-divide s", "training s", "epoch s", "images/s", "speed-up", "efficiency"):
        table.add_column(column, justify="right")
    for n, r in result["runs"].items():
        table.add_row(n, f"{r['co_divide_seconds']:.1f}", f"{r['train_seconds']:.1f}", f"{r['epoch_seconds']:.1f}",
                      f"{r['images_per_second']:,.0f}", f"{r['speedup']:.2f}×", f"{r['speedup'] / int(n):.0%}")
    Console(width=120).print(table)
    if "clothing1m" in result:
        c = result["clothing1m"]
        console.print(f"Projected DivideMix epoch on 1M images ({c['arch']}, {c['image_size']}px, {c['device']}): "
                      + ", ".join(f"{h:,.1f} h with {n}" for n, h in c["epoch_hours"].items()))


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    nproc: Annotated[str, typer.Option(help="Process counts to compare, comma-separated.")] = "1,2",
    arch: Annotated[str, typer.Option(help="Network; auto = labelclean's choice for the device.")] = "auto",
    image_size: Annotated[int, typer.Option(min=4, help="Side in pixels.")] = 32,
    samples: Annotated[int, typer.Option(min=1, help="Synthetic images per epoch.")] = 2048,
    classes: Annotated[int, typer.Option(min=2)] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Global batch: labeled (and unlabeled) samples per step.")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads per process.")] = 1,
    speed: Annotated[Path | None, typer.Option(help="A speed.py result to project a 1M-image epoch from.")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/scaling-….json).")] = None,
    worker_out: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Time a DivideMix epoch with each process count and compare their throughput."""
    dev = resolve_device(device)
    cfg = fixed_settings(dev, epochs=1, warmup=0, batch_size=batch_size, image_size=image_size, device=device,
                         arch=arch)
    if worker_out is not None:
        torch.set_num_threads(threads)
        worker(cfg.to_dict(), samples, classes, worker_out)
        return
    args = [f"--arch={cfg.arch}", f"--image-size={image_size}", f"--samples={samples}", f"--classes={classes}",
            f"--batch-size={batch_size}", f"--device={device}", f"--threads={threads}"]
    runs = {}
    for n in [int(n) for n in nproc.split(",")]:
        console.print(f"Timing a DivideMix epoch of {cfg.arch} at {image_size}px on {n} process(es)…")
        runs[str(n)] = launch(n, args, threads)
    base = runs[min(runs, key=int)]["images_per_second"] / int(min(runs, key=int))
    for r in runs.values():
        r["speedup"] = r["images_per_second"] / base
    result = {"benchmark": "scaling", **record(dev, seeds=[cfg.seed]), "data": "synthetic", "samples": samples,
              "threads": threads, "settings": cfg.to_dict(), "runs": runs}
    if speed is not None:
        result["clothing1m"] = clothing1m(speed, {int(n): r["speedup"] for n, r in runs.items()})
    default_name = f"scaling-{slug(result['machine']['device'])}-{cfg.arch}-{image_size}px.json"
    write_json(out or RESULTS / default_name, result)
    print_table(result)


if __name__ == "__main__":
    app()
