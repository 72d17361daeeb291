"""Whole-fit time: how long a default ``labelclean fit`` takes on a few thousand small grayscale
images, phase by phase, and how well it found the flipped labels.

The images are scikit-learn's bundled digits (no download), each upscaled from 8×8 to 20×20 and
placed at a random offset in a 28×28 frame (MNIST-sized); a known share of their labels is flipped.
Up to 1,797 images every one is a different digit; beyond, each digit is used as often as every
other (4,000 images: each twice or three times, at different offsets), and ``truth.csv`` names the
source digit of every image, so that a split keeps a source's copies on one side. The fit runs
with labelclean's defaults (``--set`` overrides single settings, e.g. to try another schedule). The
phases: decoding and set-up, the warm-up epochs, the DivideMix epochs (with their steps), the final
evaluation pass.

Usage::

    python benchmarks/fit_time.py                          # 4,000 images, 28 px, 20 % symmetric noise
    python benchmarks/fit_time.py --samples 1000 --set epochs=20,warmup=5

The result goes to ``benchmarks/results/fit-time-….json`` and a table is printed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from common import RESULTS, parse_overrides, record
from PIL import Image
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

import labelclean
from labelclean.demo import flip_labels, score
from labelclean.files import write_json, write_text
from labelclean.training import EpochReport, resolve_device

console = Console(stderr=True, highlight=False, soft_wrap=True)
DIGIT_SIDE = 20  # px of an upscaled digit inside the frame


def write_shifted_digits(out: Path, samples: int, size: int, noise: float, mode: str, seed: int) -> tuple[Path, Path, Path]:
    """``samples`` PNGs of digits upscaled and shifted at random in a ``size``×``size`` frame, a
    labels CSV with a share ``noise`` of them flipped, and a truth CSV (path, true_label, given_label,
    source: the digit's index in scikit-learn's set); their paths. Sources are drawn without
    replacement, a full pass over the 1,797 digits before any repeats."""
    rng = np.random.default_rng(seed)
    digits = load_digits()
    passes = -(-samples // len(digits.target))
    picked = np.concatenate([rng.permutation(len(digits.target)) for _ in range(passes)])[:samples]
    offsets = rng.integers(0, size - DIGIT_SIDE + 1, size=(samples, 2))
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (i, (top, left)) in enumerate(zip(picked, offsets)):
        digit = Image.fromarray(np.clip(digits.images[i] * 16, 0, 255).astype(np.uint8), mode="L")
        frame = Image.new("L", (size, size))
        frame.paste(digit.resize((DIGIT_SIDE, DIGIT_SIDE), Image.BILINEAR), (int(left), int(top)))
        paths.append(f"{k:05d}.png")
        frame.save(images_dir / paths[-1])
    truth = digits.target[picked]
    given = flip_labels(truth, noise, mode, 10, rng)
    labels_csv, truth_csv = out / "labels.csv", out / "truth.csv"
    write_text(labels_csv, pd.DataFrame({"path": paths, "label": given}).to_csv(index=False))
    write_text(truth_csv, pd.DataFrame({"path": paths, "true_label": truth, "given_label": given,
                                        "source": picked}).to_csv(index=False))
    return images_dir, labels_csv, truth_csv


def phases(reports: list[EpochReport], fit_seconds: float, batch_size: int, samples: int) -> dict[str, Any]:
    """Seconds of each phase of a fit from its epoch reports; set-up and final evaluation are the rest."""
    warm = [r for r in reports if r.phase == "warm-up"]
    train = [r for r in reports if r.phase == "train"]
    steps = sum(-(-n // batch_size) for r in train for n in r.labeled)
    train_seconds = sum(r.seconds for r in train)
    return {
        "fit_seconds": fit_seconds,
        "warmup_epochs": len(warm),
        "warmup_seconds": sum(r.seconds for r in warm),
        "dividemix_epochs": len(train),
        "dividemix_seconds": train_seconds,
        "dividemix_steps": steps,
        "dividemix_seconds_per_step": train_seconds / max(steps, 1),
        "setup_and_final_eval_seconds": fit_seconds - sum(r.seconds for r in reports),
        "warmup_step_seconds": sum(r.seconds for r in warm) / max(1, len(warm) * 2 * -(-samples // (2 * batch_size))),
    }


def print_table(result: dict[str, Any]) -> None:
    p, q = result["phases"], result["quality"]
    table = Table(title=f"labelclean fit on {result['samples']:,} digits at {result['image_size']}px "
                        f"({result['noise']:.0%} {result['noise_mode']} noise): {result['machine']['cpu']}, "
                        f"{result['machine']['torch_threads']} thread(s), {result['precision']}")
    table.add_column("phase")
    table.add_column("value", justify="right")
    for name, value in [
        ("whole fit", f"{p['fit_seconds'] / 60:.1f} min"),
        ("set-up (decoding) and final evaluation", f"{p['setup_and_final_eval_seconds']:.0f} s"),
        ("warm-up", f"{p['warmup_epochs']} epochs, {p['warmup_seconds']:.0f} s ({p['warmup_step_seconds']:.3f} s/step)"),
        ("DivideMix", (f"{p['dividemix_epochs']} epochs, {p['dividemix_steps']:,} steps, {p['dividemix_seconds']:.0f} s "
                       f"({p['dividemix_seconds_per_step']:.3f} s/step)")),
        ("flipped labels found: AUROC / F1", f"{q['auroc']:.3f} / {q['f1']:.3f}"),
        ("labels right: given → refined", f"{q['given_accuracy']:.3f} → {q['refined_accuracy']:.3f}"),
    ]:
        table.add_row(name, value)
    Console(width=140).print(table)


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    samples: Annotated[int, typer.Option(min=100, help="Images.")] = 4000,
    image_size: Annotated[int, typer.Option(min=DIGIT_SIDE, help="Side of the frame in pixels.")] = 28,
    noise: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of labels flipped.")] = 0.2,
    noise_mode: Annotated[str, typer.Option(help="sym or asym (class pairs).")] = "sym",
    seed: Annotated[int, typer.Option(help="Seed of the images, the noise and the fit.")] = 0,
    overrides: Annotated[str, typer.Option("--set", help="FitConfig overrides, e.g. epochs=20,warmup=5.")] = "",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    workdir: Annotated[Path | None, typer.Option(help="Keep the images and the run here (default: a temp folder).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file (default: benchmarks/results/fit-time-….json).")] = None,
) -> None:
    """Time a default fit phase by phase and score what it found."""
    settings = {"device": device, "seed": seed, **parse_overrides(overrides)}
    with tempfile.TemporaryDirectory() as tmp:
        work = workdir or Path(tmp)
        images_dir, labels_csv, truth_csv = write_shifted_digits(work, samples, image_size, noise, noise_mode, seed)
        reports: list[EpochReport] = []

        def on_epoch(report: EpochReport) -> None:  # progress, so that a stopped run still tells its pace
            reports.append(report)
            console.print(f"epoch {report.epoch}/{report.epochs} {report.phase}: {report.seconds:.0f} s"
                          + (f", labeled {report.labeled}" if report.labeled else ""))

        console.print(f"Fitting {samples:,} digits at {image_size}px with {settings}…")
        start = time.perf_counter()
        run = labelclean.fit(images_dir, labels_csv, work / "run", overwrite=True, on_epoch=on_epoch, **settings)
        fit_seconds = time.perf_counter() - start
        quality = score(run.export(), pd.read_csv(truth_csv))
        cfg = run.fit_config
    stamp = record(resolve_device(device), seeds=[seed])
    stamp["machine"]["torch_threads"] = run.config["threads"]
    result = {"benchmark": "fit time", **stamp,
              "precision": run.config["precision"], "samples": samples,
              "image_size": image_size, "noise": noise, "noise_mode": noise_mode, "settings": settings,
              "arch": cfg.arch, "phases": phases(reports, fit_seconds, cfg.batch_size, samples), "quality": quality,
              "epochs": [r.__dict__ for r in reports]}
    name = f"fit-time-{samples}-{image_size}px-{noise_mode}{round(noise * 100)}{'-' + overrides if overrides else ''}.json"
    write_json(out or RESULTS / name.replace("=", "").replace(",", "-"), result)
    print_table(result)


if __name__ == "__main__":
    app()
