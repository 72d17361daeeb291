"""Pretraining benchmark: how good are the features that ``labelclean pretrain`` learns, per
setting, and what do they cost?

The data is scikit-learn's digits, split as the quality benchmark splits it (20% held out,
stratified, seed 0). Each setting pretrains on the training rows without their labels, then the
encoder's features of the un-augmented images are scored with the usual probe of self-supervised
features: a k-nearest-neighbour classifier (k = 20, cosine distance) fitted on the training rows'
true labels and scored on the held-out rows. The first row is the same probe on a randomly
initialized encoder: what pretraining adds.

``--images DIR --truth CSV`` (columns ``path,true_label``, and ``source`` where several images are copies
of one, as in ``fit_time.write_shifted_digits``: a source's copies stay on one side) probes your own
images instead, at their median side up to the CPU fit's 32 px (``--image-size`` sets it).

Usage::

    python benchmarks/pretrain.py --threads 1                                  # the default settings
    python benchmarks/pretrain.py --setting "" --setting temperature=0.2 --setting epochs=200
    python benchmarks/pretrain.py --images /tmp/d28/images --truth /tmp/d28/truth.csv --setting flip=False

Results go to ``benchmarks/results/pretrain-digits.json`` (``pretrain-NAME.json`` for ``--images NAME``;
``--tag`` adds a suffix) and a table is printed.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from common import RESULTS, parse_overrides, record, split_by_source
from rich.console import Console
from rich.table import Table
from sklearn.neighbors import KNeighborsClassifier

import labelclean
from labelclean.api import resolve_device
from labelclean.auto import image_side
from labelclean.config import PretrainConfig
from labelclean.data import LabeledImages, channel_stats, decode_images, median_side, read_csv_table, read_labels
from labelclean.demo import write_digits
from labelclean.run import write_json, write_text
from labelclean.simclr import encoder

console = Console(stderr=True, highlight=False, soft_wrap=True)


def features(weights: dict[str, torch.Tensor] | None, cfg: PretrainConfig, images: torch.Tensor,
             mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """The encoder's features (n, d) of standardized, un-augmented images; random weights when None."""
    torch.manual_seed(cfg.seed)
    net, _ = encoder(cfg.arch, images.shape[1], cfg.image_size)
    if weights is not None:
        net.load_state_dict(weights)
    with torch.inference_mode():
        return net.eval()((images.float() / 255 - mean) / std).numpy()


def knn_accuracy(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray) -> float:
    probe = KNeighborsClassifier(n_neighbors=20, metric="cosine").fit(train, train_labels)
    return float(probe.score(test, test_labels))


def probe_data(images: Path | None, truth: Path | None, work: Path) -> tuple[Path, LabeledImages, np.ndarray]:
    """The images to probe, their true labels and their sources (the ``source`` column of ``truth``
    where it has one, else each image its own): scikit-learn's digits, or ``images`` with ``truth``."""
    if images is None or truth is None:
        digits = write_digits(work / "data", noise=0.0)
        labeled = read_labels(digits.images_dir, digits.labels_csv)
        return digits.images_dir, labeled, np.asarray(labeled.paths)
    labeled = read_labels(images, truth, path_column="path", label_column="true_label")
    table = read_csv_table(truth)
    if "source" not in table.columns:
        return images, labeled, np.asarray(labeled.paths)
    source = dict(zip(table["path"].astype(str), table["source"].astype(str)))
    return images, labeled, np.asarray([source[p] for p in labeled.paths])


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    setting: Annotated[list[str], typer.Option(help="PretrainConfig overrides, e.g. temperature=0.2; repeat it "
                                                    "(an empty one: the defaults).")] = [""],  # noqa: B006
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (1 on a shared machine).")] = None,
    results: Annotated[Path, typer.Option(help="Folder for the JSON results.")] = RESULTS,
    tag: Annotated[str, typer.Option(help="Suffix of the JSON file name.")] = "",
    images: Annotated[Path | None, typer.Option(help="Your own image folder (instead of digits).")] = None,
    truth: Annotated[Path | None, typer.Option(help="CSV with columns path,true_label for those images.")] = None,
    image_size: Annotated[int | None, typer.Option(min=4, help="Side in px (default: digits 8, "
                                                               "else the median side up to 32).")] = None,
) -> None:
    """Score the features of labelclean pretrain on digits (or your images) with a k-NN probe."""
    if (images is None) != (truth is None):
        raise typer.BadParameter("Your own images need both --images and --truth.")
    if threads is not None:
        torch.set_num_threads(threads)
    rows: list[dict[str, Any]] = []
    name = images.resolve().name if images is not None else "digits"
    out = results / f"pretrain-{name}{'-' + tag if tag else ''}.json"
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        images_dir, labeled, sources = probe_data(images, truth, work)
        train, test = split_by_source(sources, labeled.labels, 0.2, seed=0)
        write_text(work / "train.csv", "path,label\n" + "".join(f"{labeled.paths[i]},{labeled.classes[labeled.labels[i]]}\n"
                                                               for i in sorted(train)))
        size = image_size or (image_side(median_side(labeled.files), cuda=False, pretrained=False)
                              if images is not None else 8)  # as a CPU fit chooses; digits at their 8 px
        base = PretrainConfig(device="cpu", arch="small_cnn", image_size=size)
        decoded, _ = decode_images(labeled.files, base.image_size)
        mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in channel_stats(decoded[np.sort(train)]))

        def probe(weights: dict[str, torch.Tensor] | None, cfg: PretrainConfig) -> float:
            feats = features(weights, cfg, decoded, mean, std)
            return knn_accuracy(feats[train], labeled.labels[train], feats[test], labeled.labels[test])

        rows.append({"setting": "random encoder", "knn_accuracy": probe(None, base), "seconds": 0.0})
        for text in setting:
            cfg = PretrainConfig(**{**asdict(base), **parse_overrides(text, PretrainConfig)}).validate()
            started = time.perf_counter()
            weights_file = labelclean.pretrain(images_dir, work / "train.csv", work / "ssl.pt", config=cfg,
                                               overwrite=True)
            seconds = time.perf_counter() - started
            rows.append({"setting": text or "defaults", "settings": asdict(cfg), "seconds": seconds,
                         "knn_accuracy": probe(torch.load(weights_file, weights_only=True), cfg)})
            console.print(f"{rows[-1]['setting']}: k-NN accuracy {rows[-1]['knn_accuracy']:.3f} ({seconds:.0f} s)")
            write_json(out, {"benchmark": "pretrain", **record(resolve_device("cpu"), seeds=[base.seed]),
                             "data": {"images": str(images or "digits"), "image_size": size, "n_train": len(train),
                                      "n_test": len(test), "split_seed": 0}, "rows": rows})
    table = Table(title=f"labelclean pretrain on {name} ({size} px, small_cnn): k-NN probe on held-out rows")
    for column in ("setting", "k-NN accuracy", "seconds"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in rows:
        table.add_row(row["setting"], f"{row['knn_accuracy']:.3f}", f"{row['seconds']:.0f}")
    Console().print(table)


if __name__ == "__main__":
    app()
