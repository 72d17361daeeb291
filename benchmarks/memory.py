"""Memory benchmark: peak memory of ``labelclean.fit`` with the decoded images loaded into RAM and
with them memory-mapped from the decoded-image cache (``--max-ram-gb 0``).

It writes a synthetic image folder — ``--images`` random-noise RGB PNGs of side ``--image-size`` and a
labels CSV of ``--classes`` random labels — and decodes it once into a cache folder. Only
``--distinct`` different PNGs are encoded, each written under many names: every file is still opened
and decoded on its own into its own row of the cache, so the cache's size and the fit's memory are
those of as many distinct images; only the pixels repeat, which no figure here depends on.

Then two child processes run ``labelclean.fit`` on that folder with the same cache: one with the
default cap (half of the RAM, so the images are copied into RAM) and one with ``max_ram_gb=0`` (each
batch reads its rows from the memory-mapped file). Neither decodes again. A DivideMix epoch over a
few hundred MB of images takes many minutes on a CPU, so each child stops after ``--steps`` warm-up
steps, as Ctrl-C stops a fit (at a step boundary, with a checkpoint); ``--steps 0`` runs the whole fit
(2 epochs, 1 of warm-up, then the final evaluation pass). Placement, channel statistics and the
first steps have run by then: the copy into RAM, the largest allocation that the cap decides, is
made before the first step and kept to the end.

Each child's memory is measured from outside: its peak resident set (``ru_maxrss`` from ``wait4``)
and, sampled every 20 ms from ``/proc/PID/status`` (Linux), the peaks of its anonymous memory
(``RssAnon``: the copy in RAM, tensors, activations; not reclaimable without swap) and of its
file-backed memory (``RssFile``, chiefly the mapped cache). Resident set size counts a memory-mapped
file's pages only once they are touched and while they stay in memory: the channel statistics read
the whole cache, so both modes show it in ``RssFile``, but those pages are the kernel's page cache,
which it drops under memory pressure and reads again from disk. The copy in RAM is anonymous memory
on top of them. MB = 10⁶ bytes.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/memory.py          # 12,000 images at 96 px: a 332 MB cache
    python benchmarks/memory.py --images 100000 --image-size 32 --steps 5

Results go to ``benchmarks/results/memory-cpu-<size>px.json`` and a table is printed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from common import RESULTS, record
from PIL import Image
from rich.console import Console
from rich.table import Table

import labelclean
from labelclean import training
from labelclean.cache import decode_cached
from labelclean.data import read_labels
from labelclean.files import write_json

console = Console(stderr=True, highlight=False, soft_wrap=True)
MB = 1e6
MODES = {  # name → max_ram_gb given to fit (None: the default cap, half of the RAM)
    "in RAM (default cap)": None,
    "memory-mapped (--max-ram-gb 0)": 0.0,
}


def write_folder(root: Path, images: int, distinct: int, size: int, classes: int, seed: int = 0) -> int:
    """``images`` noise PNGs under ``root/images`` (``distinct`` different ones, repeated under new
    names) and ``root/labels.csv`` with random labels; the bytes of PNG written."""
    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(min(distinct, images)):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG", compress_level=1)
        blobs.append(buffer.getvalue())
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i // 1000:03d}/{i:06d}.png" for i in range(images)]  # a thousand files per folder
    written = 0
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(exist_ok=True)
        written += path.write_bytes(blobs[i % len(blobs)])
    labels = rng.integers(0, classes, images)
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{n},class_{k}\n" for n, k in zip(names, labels)))
    return written


def decode_once(root: Path, size: int, cache_dir: Path) -> tuple[int, float]:
    """Decode the folder into ``cache_dir`` as ``fit`` would, so that both children only map it;
    the cache's bytes and the seconds it took."""
    start = time.perf_counter()
    labeled = read_labels(root / "images", root / "labels.csv")
    images, bad = decode_cached(labeled.files, size, None, cache_dir)
    if bad:
        raise RuntimeError(f"{len(bad)} synthetic PNG(s) cannot be decoded, e.g. {bad[0]}.")
    return images.nbytes, time.perf_counter() - start


def stop_after(steps: int) -> None:
    """Stop the fit as Ctrl-C does once ``steps`` optimizer steps have run: at the next step
    boundary, with a checkpoint, by raising ``training.Interrupted`` out of ``fit``."""
    original = training.Loop.steps
    done = 0

    def steps_then_stop(self: training.Loop, count: int, totals: torch.Tensor):
        nonlocal done
        for step in original(self, count, totals):
            yield step
            done += 1
            if done >= steps:
                training.STOP.set()

    training.Loop.steps = steps_then_stop  # type: ignore[method-assign]


def worker(root: Path, cache_dir: Path, max_ram_gb: float | None, settings: dict[str, Any], out: Path) -> None:
    """One child: fit, then write what it did (placement, reused cache, steps) to ``out``."""
    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logging.getLogger("labelclean").addHandler(Keep())
    logging.getLogger("labelclean").setLevel(logging.INFO)
    if settings["steps"]:
        stop_after(settings["steps"])
    run_dir = root / f"run-{'ram' if max_ram_gb is None else 'mmap'}"
    before = proc_status(os.getpid())  # python, torch and labelclean imported; no images yet
    start = time.perf_counter()
    try:
        labelclean.fit(root / "images", root / "labels.csv", run_dir, cache_dir=cache_dir, max_ram_gb=max_ram_gb,
                       overwrite=True, keep_model=False, epochs=2, warmup=1, device="cpu", arch=settings["arch"],
                       image_size=settings["image_size"], batch_size=settings["batch_size"])
        stopped = None
    except training.Interrupted as stop:
        stopped = str(stop)
    write_json(out, {
        "fit_seconds": time.perf_counter() - start,
        "stopped": stopped,  # None: the whole fit ran
        "placement": "memory-mapped" if any("memory-mapped file" in m for m in messages) else "RAM",
        "reused_cache": any(m.startswith("Reusing decoded images") for m in messages),
        "start_anon_mb": before["RssAnon"] / MB if before else None,
        "start_file_mb": before["RssFile"] / MB if before else None,
    })


def proc_status(pid: int) -> dict[str, int]:
    """Current VmRSS, RssAnon and RssFile of ``pid`` in bytes ({} where /proc cannot tell)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split() for line in lines if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")))
    return {parts[0].rstrip(":"): int(parts[1]) * 1024 for parts in fields}  # the file gives kB


def run_child(command: list[str], threads: int) -> dict[str, Any]:
    """Run ``command``, sampling its memory every 20 ms; its peaks (MB), wall seconds and exit code."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    peaks = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        for key, value in proc_status(child.pid).items():
            peaks[key] = max(peaks[key], value)
        time.sleep(0.02)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    max_rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)  # macOS gives bytes, Linux KiB
    return {"exit_code": child.returncode, "seconds": time.perf_counter() - start,
            "peak_rss_mb": max_rss / MB, "peak_anon_mb": peaks["RssAnon"] / MB or None,
            "peak_file_mb": peaks["RssFile"] / MB or None, "sampled_rss_mb": peaks["VmRSS"] / MB or None}


def print_table(result: dict[str, Any]) -> None:
    d, s = result["data"], result["settings"]
    table = Table(title=f"labelclean fit memory: {d['images']:,} images at {s['image_size']}px, {s['arch']}, "
                        f"batch {s['batch_size']}, {result['machine']['cpu_count']} CPUs, "
                        f"{s['steps'] or 'all'} steps")
    for column in ("mode", "cache MB", "peak RSS MB", "anon MB: start → peak", "file MB: start → peak", "seconds"):
        table.add_column(column, justify="left" if column == "mode" else "right")

    def rise(r: dict[str, Any], kind: str) -> str:
        start, peak = r[f"start_{kind}_mb"], r[f"peak_{kind}_mb"]
        return "–" if start is None or peak is None else f"{start:,.0f} → {peak:,.0f}"

    for mode, r in result["runs"].items():
        table.add_row(mode, f"{d['cache_mb']:,.0f}", f"{r['peak_rss_mb']:,.0f}", rise(r, "anon"), rise(r, "file"),
                      f"{r['seconds']:.1f}")
    Console(width=120).print(table)


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    images: Annotated[int, typer.Option(min=4, help="Synthetic images (the cache is images × 3 × size² bytes).")]
    = 12_000,
    image_size: Annotated[int, typer.Option(min=4, help="Side in pixels.")] = 96,
    classes: Annotated[int, typer.Option(min=2)] = 10,
    distinct: Annotated[int, typer.Option(min=1, help="Different PNGs, repeated under new names.")] = 256,
    arch: Annotated[str, typer.Option(help="Network.")] = "small_cnn",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    steps: Annotated[int, typer.Option(min=0, help="Warm-up steps before each fit stops (0: the whole fit).")] = 3,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads of each fit.")] = 1,
    workdir: Annotated[Path | None, typer.Option(help="Folder for the images, the cache and the runs, kept "
                                                      "(default: a temporary one, removed).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/memory-cpu-….json).")]
    = None,
    worker_out: Annotated[Path | None, typer.Option(hidden=True)] = None,
    worker_max_ram_gb: Annotated[float | None, typer.Option(hidden=True)] = None,
) -> None:
    """Measure the peak memory of a fit with the decoded images in RAM and memory-mapped."""
    settings = {"arch": arch, "image_size": image_size, "batch_size": batch_size, "steps": steps,
                "threads": threads, "epochs": 2, "warmup": 1}
    torch.set_num_threads(threads)
    if worker_out is not None:
        worker(workdir, workdir / "cache", worker_max_ram_gb, settings, worker_out)
        return
    root = Path(workdir or tempfile.mkdtemp(prefix="labelclean-memory-"))
    try:
        start = time.perf_counter()
        png_bytes = write_folder(root, images, distinct, image_size, classes)
        console.print(f"Wrote {images:,} PNGs ({png_bytes / MB:,.0f} MB) in {time.perf_counter() - start:.1f}s; "
                      f"decoding them once…")
        cache_bytes, decode_seconds = decode_once(root, image_size, root / "cache")
        runs = {}
        for mode, max_ram_gb in MODES.items():
            console.print(f"Fitting with the images {mode}…")
            command = [sys.executable, __file__, f"--workdir={root}", f"--arch={arch}", f"--image-size={image_size}",
                       f"--batch-size={batch_size}", f"--steps={steps}", f"--threads={threads}",
                       f"--worker-out={root / 'worker.json'}",
                       *([] if max_ram_gb is None else [f"--worker-max-ram-gb={max_ram_gb}"])]
            measured = run_child(command, threads)
            if measured["exit_code"] != 0:
                raise typer.Exit(measured["exit_code"])
            runs[mode] = {"max_ram_gb": max_ram_gb, **json.loads((root / "worker.json").read_text()), **measured}
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "memory",
        **record(torch.device("cpu"), seeds=[0]),
        "data": {"images": images, "distinct_pngs": min(distinct, images), "classes": classes,
                 "png_mb": png_bytes / MB, "cache_mb": cache_bytes / MB, "decode_seconds": decode_seconds},
        "settings": settings,
        "runs": runs,
    }
    write_json(out or RESULTS / f"memory-cpu-{image_size}px.json", result)
    print_table(result)


if __name__ == "__main__":
    app()
