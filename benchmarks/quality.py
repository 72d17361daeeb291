"""Quality benchmark: does labelclean find and repair wrong labels better than what a user would
do anyway — train once and look at the disagreements (plain cross-entropy), or run cleanlab's
``find_label_issues`` on K-fold out-of-fold probabilities?

Every method sees the same images, the same label noise (seeded), the same network and the same
augmentation. labelclean runs with its default flags (its schedule and settings chosen from the
data, see ``labelclean/auto.py``) unless ``--set`` changes them; the baselines train for
``--baseline-epochs`` (15: plain cross-entropy's better budget of 15 and 30, measured). The data is split once (stratified by the true label, fixed seed) into
training rows, whose labels are noisy and get cleaned, and held-out test rows with true labels,
on which the final classifier of each method is scored.

Figures per method (see :func:`labelclean.demo.score`): detection AUROC and average precision of
the suspicion score against the truly flipped labels; precision, recall and F1 of the flagged set;
accuracy of the given and of the repaired labels; held-out test accuracy; wall time. Mean ± std
(sample std) over seeds, all measured at one commit; each seed draws new noise and new initial weights.
Each result file records the commit, the machine, the command, the date and the seeds.

Usage::

    python benchmarks/quality.py                                   # digits: sym 20/40/60/80 %, asym 40 %
    python benchmarks/quality.py --setting asym:0.4 --variant lambda_u=0
    python benchmarks/quality.py --setting idn:0.4 --setting confusion:0.4 --setting idn:0.4:lt10
    python benchmarks/quality.py --setting sym:0.4 --seeds 2 --first-seed 3    # adds seeds 3, 4 (same commit only)
    python benchmarks/quality.py --setting sym:0.8 --methods labelclean,ssl     # random vs self-supervised start
    python benchmarks/quality.py --images DIR --labels labels.csv --truth truth.csv   # your own data

The results go to ``benchmarks/results/quality-*.json`` (one file per setting) and a table is
printed. cleanlab is an optional extra: ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import torch
import typer
from common import RESULTS, parse_overrides, record, rows, same_commit, split_by_source
from noise import MAKERS, long_tailed
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sklearn.datasets import load_digits
from sklearn.model_selection import StratifiedKFold
from torch import nn

import labelclean
from labelclean.augment import crop_padding
from labelclean.config import Decisions, FitConfig, PretrainConfig, settings
from labelclean.data import channel_stats, decode_images, median_side, read_csv_table, read_labels
from labelclean.demo import flip_labels, score, write_digits
from labelclean.dividemix import warmup_epoch
from labelclean.files import write_json, write_text
from labelclean.models import build_model
from labelclean.training import (
    TrainingData,
    learning_rate,
    make_optimizer,
    place,
    predict_logits,
    resolve_device,
    set_learning_rate,
)

METHODS = ("labelclean", "ssl", "plain_ce", "cleanlab")  # ssl: labelclean from `labelclean pretrain`'s weights
DEFAULT_METHODS = ("labelclean", "plain_ce", "cleanlab")
DIGITS_SETTINGS = ["sym:0.2", "sym:0.4", "sym:0.6", "sym:0.8", "asym:0.4"]
FIGURES = ("auroc", "average_precision", "precision", "recall", "f1", "given_accuracy", "refined_accuracy",
           "test_accuracy", "seconds")
SPLIT_SEED = 0  # the train/test split is the same for every seed and method
FLAG_THRESHOLD = 0.5

console = Console(stderr=True, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# Data: a noisy labeled set with known truth, split into training and held-out test rows.


@dataclass
class Benchmark:
    """One noisy dataset with known truth, split into training rows and held-out test rows."""

    images_dir: Path
    train_csv: Path  # path,label: the given (possibly wrong) labels of the training rows
    test_csv: Path  # path,label: the true labels of the held-out rows
    truth: pd.DataFrame  # path, true_label (str) of the training rows
    test_labels: np.ndarray  # (n_test,) str, true labels in test_csv order


def split(images_dir: Path, labels_csv: Path, truth_csv: Path, work: Path, test_fraction: float) -> Benchmark:
    """Hold out a stratified ``test_fraction`` of the rows (by true label) with their true labels. Where
    ``truth_csv`` has a ``source`` column (copies of one image), a source's rows stay on one side."""
    labeled = read_labels(images_dir, labels_csv)
    given = pd.DataFrame({"path": labeled.paths, "label": np.asarray(labeled.classes, dtype=object)[labeled.labels]})
    truth = read_csv_table(truth_csv)
    if not {"path", "true_label"} <= set(truth.columns):
        raise typer.BadParameter(f"{truth_csv} needs the columns 'path' and 'true_label' "
                                 f"(found {', '.join(truth.columns)}).")
    with_truth = given.merge(truth[["path", "true_label"]], on="path", how="left")
    if with_truth["true_label"].isna().any():
        missing = with_truth.loc[with_truth["true_label"].isna(), "path"].iloc[0]
        raise typer.BadParameter(f"{truth_csv} has no true label for some rows of {labels_csv} (e.g. '{missing}').")
    sources = with_truth["path"] if "source" not in truth.columns else \
        with_truth[["path"]].merge(truth[["path", "source"]], on="path", how="left")["source"]
    train_rows, test_rows = split_by_source(sources.to_numpy(), with_truth["true_label"].to_numpy(),
                                            test_fraction, SPLIT_SEED)
    train, test = with_truth.iloc[train_rows], with_truth.iloc[test_rows]
    work.mkdir(parents=True, exist_ok=True)
    write_text(work / "train.csv", train[["path", "label"]].to_csv(index=False))
    write_text(work / "test.csv", test[["path", "true_label"]].rename(columns={"true_label": "label"})
               .to_csv(index=False))
    return Benchmark(images_dir, work / "train.csv", work / "test.csv",
                     train[["path", "true_label"]].reset_index(drop=True), test["true_label"].to_numpy())


NOISE_MODES = ("sym", "asym", *MAKERS)


def parse_setting(text: str) -> tuple[str, float, float | None]:
    """``"asym:0.4"`` → ``("asym", 0.4, None)``; ``"idn:0.4:lt10"`` → ``("idn", 0.4, 10.0)`` (long-tailed)."""
    mode, _, rest = text.partition(":")
    rate, _, tail = rest.partition(":")
    try:
        if mode not in NOISE_MODES or (tail and not tail.startswith("lt")):
            raise ValueError
        return mode, float(rate), float(tail[2:]) if tail else None
    except ValueError:
        raise typer.BadParameter(f"'{text}' is not MODE:RATE[:ltRATIO] with MODE one of {', '.join(NOISE_MODES)}, "
                                 f"e.g. sym:0.4, idn:0.4 or confusion:0.4:lt10.") from None


def setting_name(mode: str, rate: float, imbalance: float | None) -> str:
    return f"digits-{mode}{round(rate * 100)}" + (f"-lt{imbalance:g}" if imbalance else "")


def noisy_digits(seed: int, work: Path, *, mode: str, rate: float, subset: int | None,
                 test_fraction: float, imbalance: float | None = None) -> Benchmark:
    """scikit-learn's digits with ``rate`` of the labels flipped (noise drawn with ``seed``); with
    ``imbalance``, the training rows of a long-tailed subset (:func:`noise.long_tailed`)."""
    indices = None if subset is None else np.sort(np.random.default_rng(SPLIT_SEED).permutation(1797)[:subset])
    if mode in ("sym", "asym") and imbalance is None:
        digits = write_digits(work / "data", noise=rate, mode=mode, seed=seed, indices=indices)
        return split(digits.images_dir, digits.labels_csv, digits.truth_csv, work, test_fraction)
    return digits_following_images(seed, work, mode, rate, indices, test_fraction, imbalance)


def digits_following_images(seed: int, work: Path, mode: str, rate: float, indices: np.ndarray | None,
                            test_fraction: float, imbalance: float | None) -> Benchmark:
    """The same held-out rows as :func:`split` gives the digits; noise drawn on the training rows only,
    from their images (:mod:`noise`) or by :func:`labelclean.demo.flip_labels`; ``imbalance``: the
    training rows cut to a long-tailed subset (the same rows for every seed), the held-out rows balanced."""
    source = load_digits()
    idx = np.arange(len(source.target)) if indices is None else indices
    digits = write_digits(work / "data", noise=0.0, indices=idx)
    truth = source.target[idx]
    paths = np.asarray([f"{i:04d}.png" for i in idx])
    train, test = split_by_source(paths, truth.astype(str), test_fraction, SPLIT_SEED)
    if imbalance is not None:
        train = train[long_tailed(truth[train], imbalance, 10, np.random.default_rng(SPLIT_SEED))]
    rng = np.random.default_rng(seed)
    given = (MAKERS[mode](truth[train], source.images[idx][train], rate, 10, rng) if mode in MAKERS
             else flip_labels(truth[train], rate, mode, 10, rng))
    work.mkdir(parents=True, exist_ok=True)
    write_text(work / "train.csv", pd.DataFrame({"path": paths[train], "label": given}).to_csv(index=False))
    write_text(work / "test.csv", pd.DataFrame({"path": paths[test], "label": truth[test]}).to_csv(index=False))
    return Benchmark(digits.images_dir, work / "train.csv", work / "test.csv",
                     pd.DataFrame({"path": paths[train], "true_label": truth[train].astype(str)}),
                     truth[test].astype(str))


@dataclass
class Images:
    """The benchmark's images decoded once for the baselines, as labelclean's fit decodes them."""

    train: TrainingData  # given labels
    test: TrainingData  # no labels
    classes: list[str]


def decode(bench: Benchmark, cfg: FitConfig) -> Images:
    """Decode, normalize and augment as ``labelclean.fit`` does, so the baselines see the same inputs."""
    device = resolve_device(cfg.device)
    train, test = read_labels(bench.images_dir, bench.train_csv), read_labels(bench.images_dir, bench.test_csv)
    images, bad = decode_images(train.files, cfg.image_size)
    if bad:
        raise typer.BadParameter(f"{len(bad)} training image(s) cannot be read (e.g. '{train.paths[bad[0][0]]}').")
    test_images, _ = decode_images(test.files, cfg.image_size, images.shape[1])
    mean, std = channel_stats(images)
    k = len(train.classes)
    data = TrainingData.build(images.to(device), train.labels, k, mean, std, device,
                              padding=crop_padding(cfg.image_size), flip=cfg.flip)
    return Images(data, TrainingData(test_images.to(device), None, k, data.augment, device), train.classes)


# ---------------------------------------------------------------------------------------------
# Methods. Each returns one or more named outcomes: a review table and the test accuracy.


@dataclass
class Outcome:
    table: pd.DataFrame  # path, given_label, score (lower = more likely wrong), is_noisy, refined_label
    test_accuracy: float
    details: dict[str, Any] = field(default_factory=dict)  # labelclean: what --auto chose, epochs run


def accuracy(predicted: np.ndarray, bench: Benchmark) -> float:
    return float((np.asarray(predicted, dtype=str) == bench.test_labels.astype(str)).mean())


def labelclean_method(bench: Benchmark, cfg: FitConfig, work: Path,
                      init_weights: Path | None = None) -> dict[str, Outcome]:
    """labelclean itself, through its public API: fit, export at threshold 0.5, predict the test rows.

    Scores both decisions of the export: ``is_noisy`` with ``refined_label`` (the GMM split, built
    to pick a clean training set) and ``is_error`` with ``suggested_label`` (the sharper one); and
    ``is_error`` at the threshold the fit suggests when the split at 0.5 flags far too few
    (``threshold_hint``; 0.5 when it suggests none): what the fit's summary tells a user to review.
    """
    run = labelclean.fit(bench.images_dir, bench.train_csv, work, config=cfg, overwrite=True, init_weights=init_weights)
    predicted = run.predict([bench.test_csv], images_dir=bench.images_dir, device=cfg.device)["predicted_label"]
    test = accuracy(predicted.to_numpy(), bench)
    chosen = {k: v for k, v in run.config.get("auto", {}).items() if k in ("start", "warmup", "noise", "chosen")}
    details = {"epochs": run.config["epochs"], "auto": chosen, "threshold_hint": run.config["threshold_hint"]}

    def exported(threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        table = run.export(threshold=threshold).assign(score=lambda t: t["clean_prob"])
        return table, table.assign(is_noisy=table["is_error"], refined_label=table["suggested_label"])

    table, errors = exported(FLAG_THRESHOLD)
    _, hinted = exported(run.config["threshold_hint"] or FLAG_THRESHOLD)
    return {"": Outcome(table, test, details), " is_error": Outcome(errors, test, details),
            " is_error@hint": Outcome(hinted, test, details)}


def ssl_method(bench: Benchmark, cfg: FitConfig, work: Path, pretrain: dict[str, Any]) -> dict[str, Outcome]:
    """labelclean started from the weights ``labelclean pretrain`` learns on the training rows' images
    (their labels unused; its default settings, changed by ``pretrain``); the method's seconds include
    the pretraining."""
    started = time.perf_counter()
    weights = labelclean.pretrain(bench.images_dir, bench.train_csv, work / "ssl.pt", arch=cfg.arch,
                                  image_size=cfg.image_size, flip=cfg.flip, device=cfg.device, seed=cfg.seed,
                                  overwrite=True, **pretrain)
    seconds = time.perf_counter() - started
    outcomes = labelclean_method(bench, cfg, work, init_weights=weights)
    for outcome in outcomes.values():
        outcome.details["pretrain_seconds"] = seconds
    return outcomes


def train_cross_entropy(data: TrainingData, cfg: FitConfig) -> nn.Module:
    """One network trained with labelclean's warm-up epoch (cross-entropy on every given label)
    for the whole epoch budget, with the same optimizer and learning-rate schedule as DivideMix."""
    plan = settings(cfg, Decisions(n_samples=len(data), device=data.device.type))  # the lr and epochs a fit takes
    plain = replace(plan, noise_mode="sym")  # 'asym' would add DivideMix's confidence penalty
    torch.manual_seed(cfg.seed)
    net = place(build_model(plan.arch, data.images.shape[1], data.num_classes, plan.image_size), data.device)
    optimizer = make_optimizer(net, plan)
    for epoch in range(plan.epochs):
        set_learning_rate([optimizer], learning_rate(epoch, plan))
        warmup_epoch(net, optimizer, data, plain)
    return net


def class_probs(net: nn.Module, data: TrainingData, cfg: FitConfig) -> np.ndarray:
    """(n, k) float64 softmax of un-augmented images."""
    return torch.softmax(predict_logits(net, data, cfg.eval_batch_size), dim=1).double().cpu().numpy()


def review(bench: Benchmark, images: Images, suspicion: np.ndarray, flagged: np.ndarray,
           repaired: np.ndarray) -> pd.DataFrame:
    """A baseline's answer in the columns :func:`labelclean.demo.score` reads."""
    names = np.asarray(images.classes, dtype=object)
    given = images.train.labels.cpu().numpy()
    return pd.DataFrame({"path": bench.truth["path"], "given_label": names[given], "score": suspicion,
                         "is_noisy": flagged, "refined_label": names[repaired]})


def plain_ce(bench: Benchmark, cfg: FitConfig, work: Path) -> dict[str, Outcome]:
    """Train once on the noisy labels; flag = prediction ≠ given label, suspicion = 1 − p(given)."""
    images = decode(bench, cfg)
    net = train_cross_entropy(images.train, cfg)
    probs = class_probs(net, images.train, cfg)
    given, predicted = images.train.labels.cpu().numpy(), probs.argmax(1)
    table = review(bench, images, probs[np.arange(len(given)), given], predicted != given, predicted)
    test = accuracy(np.asarray(images.classes)[class_probs(net, images.test, cfg).argmax(1)], bench)
    return {"": Outcome(table, test)}


def out_of_fold_probs(data: TrainingData, cfg: FitConfig, folds: int) -> np.ndarray:
    """(n, k) probabilities of every sample from a network that did not train on it (K-fold)."""
    labels = data.labels.cpu().numpy()
    probs = np.zeros((len(labels), data.num_classes))
    for fit_idx, held_idx in StratifiedKFold(folds, shuffle=True, random_state=cfg.seed).split(labels, labels):
        probs[held_idx] = class_probs(train_cross_entropy(rows(data, fit_idx), cfg), rows(data, held_idx), cfg)
    return probs


def cleanlab_method(bench: Benchmark, cfg: FitConfig, work: Path, folds: int) -> dict[str, Outcome]:
    """cleanlab's confident learning: ``find_label_issues`` on out-of-fold probabilities; repaired
    label = the out-of-fold prediction of flagged rows; final classifier retrained without them
    (what ``cleanlab.classification.CleanLearning`` does)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    images = decode(bench, cfg)
    given = images.train.labels.cpu().numpy()
    probs = out_of_fold_probs(images.train, cfg, folds)
    issues = find_label_issues(given, probs, n_jobs=1)
    table = review(bench, images, get_label_quality_scores(given, probs), issues,
                   np.where(issues, probs.argmax(1), given))
    net = train_cross_entropy(rows(images.train, np.flatnonzero(~issues)), cfg)
    test = accuracy(np.asarray(images.classes)[class_probs(net, images.test, cfg).argmax(1)], bench)
    return {"": Outcome(table, test)}


# ---------------------------------------------------------------------------------------------
# Running settings × seeds × methods, summarizing, writing.


Method = Callable[[Benchmark, FitConfig, Path], dict[str, Outcome]]


def method_table(methods: list[str], variants: list[str], folds: int, baseline_epochs: int,
                 pretrain: dict[str, Any]) -> dict[str, tuple[Method, dict[str, Any]]]:
    """Name → (method, FitConfig overrides); each ``--variant`` adds a run of labelclean (and of ssl, when
    chosen) with its overrides."""
    table: dict[str, tuple[Method, dict[str, Any]]] = {}
    for name in methods:
        if name in ("labelclean", "ssl"):
            method = labelclean_method if name == "labelclean" else partial(ssl_method, pretrain=pretrain)
            table[name] = (method, {})
            table.update({f"{name}[{v}]": (method, parse_overrides(v)) for v in variants})
        elif name == "plain_ce":
            table[name] = (plain_ce, {"epochs": baseline_epochs})
        else:
            table[name] = (partial(cleanlab_method, folds=folds), {"epochs": baseline_epochs})
    return table


def mean_std(values: pd.Series) -> dict[str, float]:
    """Mean, sample standard deviation (0 for a single seed) and count."""
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Method → figure → mean, std and n over seeds, methods in the order they ran."""
    return {method: {f: mean_std(group[f]) for f in FIGURES}
            for method, group in pd.DataFrame(runs).groupby("method", sort=False)}


def earlier_result(out: Path, now: dict[str, Any], seeds: range) -> dict[str, Any] | None:
    """The result at ``out`` that a run from ``--first-seed`` > 0 adds its seeds to; only one measured
    at the same clean commit as this run, without these seeds."""
    if seeds.start == 0 or not out.exists():
        return None
    earlier = json.loads(out.read_text())
    same_commit(earlier, now, out)
    if overlap := sorted(set(earlier["seeds"]) & set(seeds)):
        raise typer.BadParameter(f"{out} already has seed(s) {', '.join(map(str, overlap))}; "
                                 f"start --first-seed after {max(earlier['seeds'])}.")
    return earlier


def run_setting(name: str, make: Callable[[int, Path], Benchmark], base: FitConfig, methods: dict,
                seeds: range, work: Path, out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Every seed × method of one setting, added to the runs of an earlier result of the same commit
    (:func:`earlier_result`); the JSON is rewritten after each seed so a long run can be watched."""
    earlier = earlier_result(out, info, seeds)
    runs: list[dict[str, Any]] = list(earlier["runs"]) if earlier else []
    done: list[int] = list(earlier["seeds"]) if earlier else []
    runs_before = [] if earlier is None else [*earlier.get("runs_before", []), {
        k: earlier[k] for k in ("command", "date", "seeds")}]
    result: dict[str, Any] = {}
    for seed in seeds:
        bench = make(seed, work / f"{name}-seed{seed}")
        listed = read_labels(bench.images_dir, bench.train_csv)
        plan = settings(replace(base, seed=seed), Decisions(len(listed.paths), median_side(listed.files, seed=seed),
                                                            resolve_device(base.device).type))
        cfg = replace(base, seed=seed, image_size=plan.image_size, arch=plan.arch)  # fixed once: for every method
        for method, (fn, overrides) in methods.items():
            options = replace(cfg, **overrides).validate()
            started = time.perf_counter()
            outcomes = fn(bench, options, work / f"{name}-seed{seed}" / method)
            seconds = time.perf_counter() - started
            for suffix, outcome in outcomes.items():
                figures = score(outcome.table, bench.truth.astype(str), suspicion="score")
                runs.append({"method": method + suffix, "seed": seed, **figures,
                             "test_accuracy": outcome.test_accuracy, "seconds": seconds, **outcome.details})
                console.print(f"{name} seed {seed} {method + suffix}: AUROC {figures['auroc']:.3f} "
                              f"F1 {figures['f1']:.3f} refined {figures['refined_accuracy']:.3f} "
                              f"test {outcome.test_accuracy:.3f} ({seconds:.0f} s)", markup=False)
        done.append(seed)
        result = {"benchmark": "quality", "setting": name, **info, "seeds": done, "runs_before": runs_before,
                  "data": {"n_train": len(bench.truth), "n_test": len(bench.test_labels), "split_seed": SPLIT_SEED},
                  "settings": cfg.to_dict(), "methods": {m: o for m, (_, o) in methods.items()},
                  "flag_threshold": FLAG_THRESHOLD, "summary": summarize(runs), "runs": runs}
        write_json(out, result)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    """One table per setting: a row per method, mean ± std of every figure."""
    out = Console()
    if not out.is_terminal:
        out.width = 160  # a log file has no width; keep each row on one line
    headers = ["AUROC", "AP", "precision", "recall", "F1", "given acc.", "refined acc.", "test acc.", "seconds"]
    for result in results:
        table = Table(title=f"{result['setting']}: mean ± std over {len(result['seeds'])} seed(s)")
        table.add_column("method")
        for header in headers:
            table.add_column(header, justify="right")
        for method, figures in result["summary"].items():
            cells = [f"{figures[f]['mean']:.3f}±{figures[f]['std']:.3f}" for f in FIGURES[:-1]]
            table.add_row(escape(method), *cells, f"{figures['seconds']['mean']:.0f}±{figures['seconds']['std']:.0f}")
        out.print(table)


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])


@app.command()
def main(
    setting: Annotated[list[str], typer.Option(help="Digits noise as MODE:RATE[:ltRATIO], MODE sym, asym, idn "
                                                    "or confusion, ltRATIO long-tailed classes; repeat it.")]
    = DIGITS_SETTINGS,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1: noise draw and initial weights.")] = 3,
    first_seed: Annotated[int, typer.Option(min=0, help="Start at this seed instead of 0: adds seeds to the result "
                                                        "file of an earlier run of the same commit.")] = 0,
    methods: Annotated[str, typer.Option(help=f"Comma-separated, from {', '.join(METHODS)}.")]
    = ",".join(DEFAULT_METHODS),
    set_: Annotated[str, typer.Option("--set", help="FitConfig overrides for every method, e.g. epochs=2,warmup=1.")]
    = "",
    pretrain_set: Annotated[str, typer.Option(help="PretrainConfig overrides for the ssl method, e.g. epochs=50.")]
    = "",
    variant: Annotated[list[str], typer.Option(help="Extra DivideMix run with these overrides, e.g. lambda_u=0.")]
    = [],  # noqa: B006 (typer reads the default)
    folds: Annotated[int, typer.Option(min=2, help="cleanlab's K for out-of-fold probabilities.")] = 5,
    baseline_epochs: Annotated[int, typer.Option(min=1, help="Epochs of plain cross-entropy and of each "
                                                             "cleanlab fold.")] = 15,
    test_fraction: Annotated[float, typer.Option(min=0.05, max=0.5, help="Held-out share of the rows.")] = 0.2,
    subset: Annotated[int | None, typer.Option(min=50, max=1797, help="Use this many digits (for a quick check).")]
    = None,
    images: Annotated[Path | None, typer.Option(help="Your own image folder (instead of digits).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Its labels CSV, with the noisy labels.")] = None,
    truth: Annotated[Path | None, typer.Option(help="CSV with columns path,true_label for the same images.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (1 on a shared machine).")] = None,
    results: Annotated[Path, typer.Option(help="Folder for the JSON results.")] = RESULTS,
    tag: Annotated[str, typer.Option(help="Suffix of the JSON file names, e.g. 15ep for a --set epochs=15 run.")]
    = "",
    work: Annotated[Path | None, typer.Option(help="Folder for images and runs (default: a temp folder).")] = None,
) -> None:
    """Score labelclean against plain cross-entropy and cleanlab on data with known label noise."""
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    if unknown := sorted(set(chosen) - set(METHODS)):
        raise typer.BadParameter(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    if "cleanlab" in chosen:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            raise typer.BadParameter("cleanlab is not installed: pip install -e '.[bench]', "
                                     "or leave it out of --methods.") from None
    if threads is not None:
        torch.set_num_threads(threads)
    base = FitConfig(**{"device": device, **parse_overrides(set_)}).validate()
    table = method_table(chosen, variant, folds, baseline_epochs, parse_overrides(pretrain_set, PretrainConfig))
    info = record(resolve_device(device))
    suffix = f"-{tag}" if tag else ""
    chosen_seeds = range(first_seed, first_seed + seeds)
    with tempfile.TemporaryDirectory() as scratch:
        root = work or Path(scratch)
        if images is not None or labels is not None or truth is not None:
            if images is None or labels is None or truth is None:
                raise typer.BadParameter("Your own data needs all three of --images, --labels and --truth.")
            name = images.resolve().name
            outcomes = [run_setting(name, lambda seed, w: split(images, labels, truth, w, test_fraction), base,
                                    table, chosen_seeds, root, results / f"quality-{name}{suffix}.json", info)]
        else:
            outcomes = []
            for mode, rate, imbalance in map(parse_setting, setting):
                name = setting_name(mode, rate, imbalance)
                make = partial(noisy_digits, mode=mode, rate=rate, subset=subset, test_fraction=test_fraction,
                               imbalance=imbalance)
                outcomes.append(run_setting(name, make, base, table, chosen_seeds, root,
                                            results / f"quality-{name}{suffix}.json", info))
    print_table(outcomes)


if __name__ == "__main__":
    app()
