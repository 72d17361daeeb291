"""The ``labelclean`` command: parse options, call the API, draw progress, print results.

Data goes to stdout; progress, logs and errors go to stderr. Every LabelcleanError is
turned into ``error: <message>`` and exit status 1 in one place (:func:`command`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import pandas as pd
import torch
import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import api
from .config import FitConfig
from .demo import DEMO_SETTINGS, score, write_digits
from .errors import LabelcleanError
from .export import FORMATS, SORT_KEYS, format_from_suffix, write_table
from .training import EpochReport

app = typer.Typer(
    help="Find and fix wrong labels in an image classification dataset with DivideMix.\n\n"
         "Typical use: labelclean fit images/ labels.csv && labelclean export --only-noisy > suspects.csv",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)
DEFAULTS = FitConfig()
state = {"debug": False}


def command(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` as a subcommand whose user-facing errors become one line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LabelcleanError as e:
            if state["debug"]:
                raise
            stderr.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except torch.OutOfMemoryError:
            if state["debug"]:
                raise
            stderr.print("[bold red]error:[/] the GPU ran out of memory; try a smaller --batch-size or "
                         "--image-size, or --device cpu.", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            stderr.print("Interrupted.")
            raise typer.Exit(130) from None

    return app.command()(wrapper)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail to stderr.")] = False,
) -> None:
    state["debug"] = debug
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=stderr, show_time=False, show_path=False)], force=True)


@contextmanager
def progress_bars() -> Iterator[tuple[Callable[[EpochReport], None], Callable[[str, int, int], None]]]:
    """Rich progress on stderr: a bar for image decoding, one bar over epochs with live figures."""
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[figures]}"),
                    console=stderr, transient=False)
    tasks: dict[str, Any] = {}
    warned: set[str] = set()

    def on_progress(task: str, done: int, total: int) -> None:
        if task not in tasks:
            tasks[task] = bars.add_task(f"{task:>8}", total=total, figures="")
        bars.update(tasks[task], completed=done)

    def on_epoch(r: EpochReport) -> None:
        if "epochs" not in tasks:
            tasks["epochs"] = bars.add_task("  epochs", total=r.epochs, completed=r.epoch - 1, figures="")
        figures = f"{r.phase:7} loss {r.loss[0]:.3f}/{r.loss[1]:.3f}"
        if r.labeled is not None:
            figures += (f"  labeled {r.labeled[0]:,}/{r.labeled[1]:,}  noise≈{r.noise_estimate:.0%}"
                        f"  λu {r.lambda_u:.1f}")
            if 0 in r.labeled and "empty" not in warned:
                warned.add("empty")
                logging.getLogger("labelclean").warning(
                    "A network's labeled set is empty this epoch (its GMM put every sample on the noisy "
                    "side); training continues on the unlabeled loss only.")
        figures += f"  {r.seconds:.1f}s/epoch"
        bars.update(tasks["epochs"], completed=r.epoch, figures=figures)

    with bars:
        yield on_epoch, on_progress


Images = Annotated[Optional[Path], typer.Argument(help="Folder the CSV's image paths are relative to "
                                                     "(optional with --resume).", show_default=False)]
Labels = Annotated[Optional[Path], typer.Argument(help="CSV with one row per image: a path and a label column "
                                                       "(optional with --resume).", show_default=False)]
RunDir = Annotated[Path, typer.Argument(help="Run directory written by 'labelclean fit'.")]


@command
def fit(
    images_dir: Images = None,
    labels_csv: Labels = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")] = Path("labelclean-run"),
    path_column: Annotated[Optional[str], typer.Option(help="CSV column with image paths [default: auto-detect].",
                                                       show_default=False)] = None,
    label_column: Annotated[Optional[str], typer.Option(help="CSV column with labels [default: auto-detect].",
                                                        show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the data, warm-up included.")] = DEFAULTS.epochs,
    warmup: Annotated[int, typer.Option(help="Epochs of plain cross-entropy before the first split.")]
    = DEFAULTS.warmup,
    batch_size: Annotated[int, typer.Option(help="Labeled (and unlabeled) samples per step.")] = DEFAULTS.batch_size,
    lr: Annotated[float, typer.Option(help="SGD learning rate (÷10 after half the epochs).")] = DEFAULTS.lr,
    p_threshold: Annotated[float, typer.Option(help="Clean probability above which a sample is labeled.")]
    = DEFAULTS.p_threshold,
    lambda_u: Annotated[float, typer.Option(help="Weight of the unlabeled loss (paper: 0 for low noise, "
                                                 "25 at ~50%, 150 at ~90%).")] = DEFAULTS.lambda_u,
    temperature: Annotated[float, typer.Option(help="Sharpening temperature of refined/guessed labels.")]
    = DEFAULTS.temperature,
    alpha: Annotated[float, typer.Option(help="Mixup Beta(alpha, alpha) parameter.")] = DEFAULTS.alpha,
    noise_mode: Annotated[str, typer.Option(help="'sym', or 'asym' for class-pair noise (adds a confidence "
                                                 "penalty in warm-up).")] = DEFAULTS.noise_mode,
    loss_window: Annotated[int, typer.Option(help="Epochs of losses averaged before the GMM (5 helps at very "
                                                  "high noise).")] = DEFAULTS.loss_window,
    arch: Annotated[str, typer.Option(help="small_cnn, preact_resnet18, resnet18/34/50, or auto (by device "
                                           "and image size).")] = DEFAULTS.arch,
    image_size: Annotated[Optional[int], typer.Option(help="Image side in pixels [default: median of the data, "
                                                           "at most 64 on CPU].", show_default=False)] = None,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flips (turn off when "
                                                                "mirroring changes the class).")] = DEFAULTS.flip,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = DEFAULTS.device,
    seed: Annotated[int, typer.Option(help="Random seed.")] = DEFAULTS.seed,
    keep_model: Annotated[bool, typer.Option("--keep-model/--no-keep-model",
                                             help="Keep both networks for 'labelclean predict'.")] = True,
    init_weights: Annotated[Optional[Path], typer.Option(help="Local state-dict file to start both networks "
                                                              "from (matching layers).", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the unfinished run in --out from its last "
                                              "checkpoint, with its saved settings.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    skip_missing: Annotated[bool, typer.Option(help="Leave out rows whose image file is missing.")] = False,
    skip_bad: Annotated[bool, typer.Option(help="Leave out rows whose image cannot be decoded.")] = False,
) -> None:
    """Train DivideMix on IMAGES_DIR + LABELS_CSV and write per-sample clean probabilities to --out."""
    config = FitConfig(epochs=epochs, warmup=warmup, batch_size=batch_size, lr=lr, p_threshold=p_threshold,
                       lambda_u=lambda_u, temperature=temperature, alpha=alpha, noise_mode=noise_mode,
                       loss_window=loss_window, arch=arch, image_size=image_size, flip=flip, device=device,
                       seed=seed)
    with progress_bars() as (on_epoch, on_progress):
        run = api.fit(images_dir, labels_csv, out, config=config, path_column=path_column,
                      label_column=label_column, keep_model=keep_model, resume=resume, overwrite=overwrite,
                      skip_missing=skip_missing, skip_bad=skip_bad, init_weights=init_weights,
                      on_epoch=on_epoch, on_progress=on_progress)
    summarize(run)


def summarize(run: api.Run) -> None:
    table = run.export()
    noisy = int(table["is_noisy"].sum())
    stderr.print(f"Done in {run.config['fit_seconds']:.0f}s: {noisy:,} of {len(table):,} labels look wrong "
                 f"(clean_prob < 0.5). Review them with:\n  labelclean export {run.directory} --only-noisy "
                 f"--sort clean_prob", highlight=False)


@command
def export(
    run_dir: RunDir = Path("labelclean-run"),
    threshold: Annotated[float, typer.Option(help="Flag samples whose clean_prob is below this.")] = 0.5,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help=f"One of {', '.join(FORMATS)} "
                                               "[default: from the -o suffix, else csv].", show_default=False)]
    = None,
    only_noisy: Annotated[bool, typer.Option(help="Only the flagged rows.")] = False,
    sort: Annotated[Optional[str], typer.Option(help=f"Sort ascending by {', '.join(SORT_KEYS)} "
                                                     "(clean_prob: worst first).", show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write [default: stdout].",
                                                   show_default=False)] = None,
) -> None:
    """Write the per-sample review table: clean probability, refined and predicted labels, noisy flag."""
    table = api.Run.load(run_dir).export(threshold, only_noisy=only_noisy, sort=sort)
    write_table(table, format_from_suffix(output, fmt), output)


@command
def predict(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of a fit with a kept model.")],
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders, or CSVs with a path column.",
                                                 show_default=False)],
    images_dir: Annotated[Optional[Path], typer.Option(help="Folder that CSV paths are relative to "
                                                            "[default: the CSV's folder].", show_default=False)]
    = None,
    top_k: Annotated[int, typer.Option(help="Classes to report per image.")] = 1,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="csv or jsonl [default: from -o, else csv].",
                                               show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write [default: stdout].",
                                                   show_default=False)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Predict classes of new images with the run's two-network ensemble."""
    run = api.Run.load(run_dir)
    with progress_bars() as (_, on_progress):
        table = run.predict(inputs, top_k=top_k, images_dir=images_dir, device=device, on_progress=on_progress)
    write_table(table, format_from_suffix(output, fmt), output)


@command
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the digits images, CSVs and run.")]
    = Path("labelclean-demo"),
    noise: Annotated[float, typer.Option(help="Fraction of labels to flip.")] = 0.4,
    noise_mode: Annotated[str, typer.Option(help="'sym' (any other class) or 'asym' (2→7, 3→8, 5↔6, 7→1).")]
    = "sym",
    seed: Annotated[int, typer.Option(help="Seed of the label noise and of training.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Flip labels of scikit-learn's bundled digits, clean them, and score against the truth."""
    started = time.perf_counter()
    dataset = write_digits(out, noise=noise, mode=noise_mode, seed=seed)
    stderr.print(f"Wrote {dataset.images_dir} and {dataset.labels_csv} "
                 f"({dataset.noise_rate:.1%} of labels flipped; truth in {dataset.truth_csv}).", highlight=False)
    settings = {**DEMO_SETTINGS, "noise_mode": noise_mode, "seed": seed, "device": device}
    with progress_bars() as (on_epoch, on_progress):
        run = api.fit(dataset.images_dir, dataset.labels_csv, out / "run", overwrite=True,
                      on_epoch=on_epoch, on_progress=on_progress, **settings)
    figures = score(run.export(0.5), pd.read_csv(dataset.truth_csv, dtype=str))
    table = Table(title=f"labelclean demo: digits, {noise:.0%} {noise_mode} noise")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in [
        ("samples", f"{figures['n_samples']:,}"),
        ("labels flipped", f"{figures['noise_rate']:.1%}"),
        ("detection AUROC", f"{figures['auroc']:.3f}"),
        ("average precision", f"{figures['average_precision']:.3f}"),
        ("precision @0.5", f"{figures['precision']:.3f}"),
        ("recall @0.5", f"{figures['recall']:.3f}"),
        ("F1 @0.5", f"{figures['f1']:.3f}"),
        ("accuracy of given labels", f"{figures['given_accuracy']:.3f}"),
        ("accuracy of refined labels", f"{figures['refined_accuracy']:.3f}"),
        ("wall time", f"{time.perf_counter() - started:.0f} s"),
    ]:
        table.add_row(name, value)
    Console().print(table)
    stderr.print(f"Next: labelclean export {run.directory} --only-noisy --sort clean_prob | head", highlight=False)


def main() -> None:
    app()
