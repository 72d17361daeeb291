"""GPU check in one command: labelclean's main path measured on a GPU within a few minutes.

1. **side by side** — W warm-up + D DivideMix epochs of PreAct ResNet-18 on N random CIFAR-shaped
   images with labelclean (``speed.py epochs``), then, with ``--official PATH/run_official.py``,
   the official DivideMix code on the same images and settings, given whatever time is left of
   ``--budget`` (its test pass is not timed; it runs last, so that a slow official run costs only
   its own figures);
2. **end to end** — ``fit → export → predict`` through the Python API on a few thousand 28×28
   digits (``fit_time.py``'s images), checking that every output has one row per image;
3. **two processes** — the same fit with ``--nproc 2`` (nccl), when there are at least 2 GPUs;
4. peak GPU memory of each part. Everything goes to one JSON file.

Usage (one GPU; the defaults are the issue's sizes and take about 5 minutes plus the official run)::

    python benchmarks/gpu_check.py --official PATH/official-dividemix/run_official.py --out $OUT/gpu_check.json

The sizes are options, so the same logic runs on a CPU with tiny ones (tests/test_benchmarks.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import torch
import typer
from common import RESULTS, record
from fit_time import write_shifted_digits
from rich.console import Console
from speed import fixed_settings, run_official, side_by_side, synthetic_images, time_epochs, training_data

import labelclean
from labelclean.config import FitConfig
from labelclean.files import write_json
from labelclean.training import cpu_threads, precision, resolve_device

console = Console(stderr=True, highlight=False, soft_wrap=True)
FIT_SIZE = 28  # px of the end-to-end fit's digits


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset, then reset; None off CUDA."""
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def labelclean_epochs(samples: int, warmup: int, dividemix_epochs: int, arch: str, device: torch.device) -> dict[str, Any]:
    cfg = fixed_settings(device, epochs=warmup + dividemix_epochs, warmup=warmup, batch_size=64, image_size=32,
                         arch=arch, device=device.type, auto=False)
    data = training_data(*synthetic_images(samples, 3, 32, 10), cfg, device)
    epochs = time_epochs(data, cfg)
    return {"settings": cfg.to_dict(), "epochs": epochs, "peak_memory_mb": peak_memory_mb(device)}


def end_to_end(work: Path, samples: int, epochs: int, warmup: int, device: torch.device) -> dict[str, Any]:
    """fit → export → predict on ``samples`` digits; seconds of each and whether each gave every row."""
    images_dir, labels_csv, _ = write_shifted_digits(work, samples, FIT_SIZE, 0.2, "sym", seed=0)
    start = time.perf_counter()
    run = labelclean.fit(images_dir, labels_csv, work / "run", overwrite=True, epochs=epochs, warmup=warmup,
                         device=device.type)
    fitted = time.perf_counter()
    table = run.export()
    exported = time.perf_counter()
    predicted = run.predict([images_dir], device=device.type)
    done = time.perf_counter()
    return {"samples": samples, "epochs": epochs, "warmup": warmup, "arch": run.fit_config.arch,
            "precision": run.config["precision"], "fit_seconds": fitted - start, "export_seconds": exported - fitted,
            "predict_seconds": done - exported, "export_rows": len(table), "predict_rows": len(predicted),
            "ok": len(table) == len(predicted) == samples, "peak_memory_mb": peak_memory_mb(device)}


def two_processes(work: Path, epochs: int, warmup: int) -> dict[str, Any]:
    """The end-to-end fit's data fitted again by 2 processes (one per GPU, nccl) through the CLI."""
    command = [sys.executable, "-m", "labelclean", "fit", str(work / "images"), str(work / "labels.csv"),
               "--output", str(work / "run2"), "--overwrite", "--epochs", str(epochs), "--warmup", str(warmup),
               "--device", "cuda", "--nproc", "2"]
    start = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    return {"command": " ".join(command), "exit_code": done.returncode, "seconds": time.perf_counter() - start,
            "stderr_tail": done.stderr[-2000:], "ok": done.returncode == 0 and (work / "run2" / "samples.csv").exists()}


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    samples: Annotated[int, typer.Option(min=5, help="Images of the side-by-side epochs.")] = 50_000,
    warmup: Annotated[int, typer.Option(min=1, help="W: warm-up epochs of the side by side.")] = 2,
    dividemix_epochs: Annotated[int, typer.Option(min=1, help="D: its DivideMix epochs.")] = 2,
    arch: Annotated[str, typer.Option(help="Network of the side by side (the official code's: preact_resnet18).")] = "preact_resnet18",
    fit_samples: Annotated[int, typer.Option(min=100, help="Images of the end-to-end fit.")] = 4000,
    fit_epochs: Annotated[int, typer.Option(min=2, help="Its epochs.")] = 6,
    fit_warmup: Annotated[int, typer.Option(min=1, help="Its warm-up epochs.")] = 2,
    official: Annotated[Path | None, typer.Option(help="The official code's harness, run_official.py.")] = None,
    official_workers: Annotated[int, typer.Option(min=0, help="Its DataLoader workers (upstream: 5).")] = 5,
    official_test: Annotated[int, typer.Option(min=1, help="Its test images (not timed).")] = 1000,
    budget: Annotated[float, typer.Option(help="Seconds the whole check may take; the official run gets what is left.")] = 480,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/gpu-check-….json).")] = None,
) -> None:
    """Side by side with the official code, fit → export → predict, 2 processes, peak memory; JSON out."""
    start = time.perf_counter()
    dev = resolve_device(device)
    torch.set_num_threads(cpu_threads(dev))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
    result: dict[str, Any] = {"benchmark": "gpu check", **record(dev, seeds=[0]), "precision": precision(dev)}
    result["machine"]["gpus"] = gpus
    console.print(f"1/4 labelclean: {warmup} + {dividemix_epochs} epochs of {arch} on {samples:,} images…")
    result["labelclean"] = labelclean_epochs(samples, warmup, dividemix_epochs, arch, dev)
    with tempfile.TemporaryDirectory() as tmp:
        console.print(f"2/4 fit → export → predict on {fit_samples:,} digits…")
        try:  # a failure here is a finding; the official figures still count
            result["end_to_end"] = end_to_end(Path(tmp), fit_samples, fit_epochs, fit_warmup, dev)
        except Exception as failed:  # noqa: BLE001
            result["end_to_end"] = {"ok": False, "failed": traceback.format_exc()[-3000:]}
            console.print(f"end to end failed: {failed!r}")
        if gpus >= 2:
            console.print("3/4 the same fit on 2 processes (nccl)…")
            result["two_processes"] = two_processes(Path(tmp), fit_epochs, fit_warmup)
        else:
            result["two_processes"] = {"skipped": f"{gpus} GPU(s); needs 2"}
    if official is not None:
        left = budget - (time.perf_counter() - start)
        console.print(f"4/4 the official code, the same epochs, within {left:.0f} s…")
        cfg = FitConfig.from_dict(result["labelclean"]["settings"])
        try:
            result["official"] = run_official(official, samples, official_test, cfg, official_workers, max(left, 60))
        except SystemExit as failed:  # a timeout or a crash: the rest of the check still counts
            result["official"] = {"failed": str(failed)[-2000:]}
    measured = result.get("official", {})
    result["side_by_side"] = side_by_side(result["labelclean"]["epochs"],
                                          measured if "warmup_epoch_s" in measured else None)
    result["seconds"] = time.perf_counter() - start
    result["load_average_1min_end"] = os.getloadavg()[0]
    name = f"gpu-check-{'cuda' if gpus else 'cpu'}-{samples}.json"
    write_json(out or RESULTS / name, result)
    console.print(pd.DataFrame(result["side_by_side"]).T.to_string())
    console.print(f"end to end: {result['end_to_end']}\n2 processes: {result['two_processes']}\n"
                  f"{result['seconds']:.0f} s in all")


if __name__ == "__main__":
    app()
