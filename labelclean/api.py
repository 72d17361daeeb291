"""The Python API: ``fit`` trains DivideMix or MLNT on an image folder + labels CSV and returns a ``Run``;
``demo`` does it on digits with known label noise and scores the result.

Example (``examples/python_api.py`` runs the same on digits)::

    import labelclean
    run = labelclean.fit("images/", "labels.csv", out="run", flip=False)
    suspects = run.export(only_errors=True, sort="clean_prob")
    run.predict(["new_images/"]).head()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import distributed, dividemix, files, mlnt, simclr
from .augment import crop_padding, imagenet_stats
from .auto import crop_scale, start_kind, threshold_hint
from .config import DataOptions, Decisions, FitConfig, PretrainConfig, Settings, Start, settings
from .data import LabeledImages, channel_stats, median_side, read_labels
from .demo import DEMO_SETTINGS, DigitsDataset, score, write_digits
from .distributed import barrier, is_main, local_processes, record_error, started_processes, world_size
from .errors import LabelcleanError
from .export import DEFAULT_THRESHOLD
from .images import decode_listed, place_images
from .models import blend_start, build_model, imagenet_weights, load_weights, read_weights
from .run import Progress, Run, RunDirectory, new_config
from .training import (
    EpochReport,
    Interrupted,
    TrainingData,
    TrainingState,
    check_two_batches,
    cpu_threads,
    make_optimizer,
    place,
    resolve_device,
    stop_on_ctrl_c,
    threads,
)

__all__ = ["DataOptions", "DemoResult", "EpochReport", "Interrupted", "PretrainConfig", "Run", "barrier", "demo", "fit",
           "is_main", "launch_processes", "local_processes", "pretrain", "record_error", "started_processes",
           "world_size"]  # barrier … world_size: the processes of a multi-process fit, for the command line

log = logging.getLogger("labelclean")

# Each method trains two networks with ``train(nets, optimizers, data, cfg, state, on_epoch, after_epoch)``
# and returns the per-sample results with ``evaluate(nets, data, cfg, state)``; MLNT's pair is (student, teacher).
METHODS = {"dividemix": dividemix, "mlnt": mlnt}


def fit(
    images_dir: str | Path | None,
    labels_csv: str | Path | None = None,
    out: str | Path = "labelclean-run",
    *,
    config: FitConfig | None = None,
    data: DataOptions | None = None,
    keep_model: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    init_weights: str | Path | None = None,
    max_ram_gb: float | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_progress: Progress | None = None,
    **options: Any,
) -> Run:
    """Train ``config.method`` (DivideMix or MLNT) on ``images_dir`` + ``labels_csv``; write a run directory ``out``.

    Parameters
    ----------
    images_dir : folder the CSV's paths are relative to (None when resuming: the saved one)
    labels_csv : CSV with a path and a label column, auto-detected or named; None: the labels are the names
        of ``images_dir``'s class folders (``images_dir/CLASS/IMAGE``), or, when resuming, as the run read them
    out : run directory to create
    config : all hyper-parameters
    data : how the images and labels are read (:class:`DataOptions`: CSV columns, ``skip_missing``,
        ``skip_bad``, ``dedupe``, ``cache_dir``; left-out rows are listed in skipped.csv). With ``resume``,
        the run's own, but for a new ``cache_dir``. The decoded images stay in ``cache_dir`` (default ``out``);
        the next fit on the same, unchanged files maps them from there instead of decoding again
    **options : override single fields of ``config`` or ``data`` (e.g. ``epochs=30, skip_missing=True``)
    keep_model : keep both networks so that ``Run.predict`` works
    resume : continue the unfinished run in ``out`` from its last checkpoint, with its saved settings
    overwrite : replace a run that ``out`` already holds
    init_weights : a local state-dict file to start both networks from (matching layers only)
    max_ram_gb : load the decoded images into RAM only up to this size (default: half of the RAM);
        larger ones are read batch by batch from the memory-mapped file in ``cache_dir``
    on_epoch : called with an :class:`EpochReport` after every epoch
    on_progress : called as ``(task, done, total)`` during long non-epoch work (image decoding)

    Returns
    -------
    Run
    """
    started = time.perf_counter()
    directory = RunDirectory(out)
    saved = directory.check(resume, overwrite)
    data, options = DataOptions.taken_from(options, data)
    inputs = _inputs(saved, images_dir, labels_csv, data)
    keep_model = saved["keep_model"] if saved else keep_model
    cfg = FitConfig.from_dict(saved["fit"]) if saved else replace(config or FitConfig(), **options)
    _check_options(cfg.validate(), max_ram_gb, init_weights)
    # Under torchrun, init waits for every process, so all have read `out` before the main one changes it.
    device = distributed.init(resolve_device(cfg.device))
    # From the machine, not its load; a resumed fit keeps its threads, so it ends as an uninterrupted one.
    kernel_threads = saved["threads"] if saved and saved.get("threads") else cpu_threads(device)
    if saved is None and overwrite:
        directory.clear()
    labeled = _read(inputs)
    decided = Decisions.from_dict(saved["auto"]) if saved else _first_look(cfg, labeled, device)
    plan = settings(cfg, decided)
    check_two_batches(len(labeled.paths), plan.batch_size, inputs["labels_csv"] or inputs["images_dir"], smallest=1)
    _log_plan(cfg, plan, len(labeled.paths), device)
    # Before decoding, to fail fast; the main process first, so that the others find its download.
    start = distributed.main_first(lambda: _start_weights(plan, init_weights)) if saved is None else None
    channels = saved["preprocessing"]["channels"] if saved else None
    images, labeled = distributed.main_first(
        lambda: decode_listed(labeled, plan.image_size, channels, inputs, directory.path, on_progress))
    decided.n_samples = len(labeled.paths)  # less the images that could not be decoded
    data, preprocessing = _training_data(images, labeled, plan, device, max_ram_gb)
    nets, optimizers = _networks(cfg, decided, data, start, device)

    run_config = saved or new_config(cfg, decided, inputs, labeled, preprocessing, keep_model)
    directory.start(run_config, labeled.skipped, device, kernel_threads)
    state = directory.restore(nets, optimizers, device) if saved else TrainingState(decisions=decided)
    if saved:
        log.info("Resuming %s after epoch %d.", directory.path, state.epoch)
    nets = [distributed.wrap(net, device) for net in nets]
    with threads(kernel_threads):
        result = _train(nets, optimizers, data, cfg, state, directory, device, on_epoch)

    samples = pd.DataFrame({
        "path": labeled.paths,
        "given_label": np.asarray(labeled.classes, dtype=object)[labeled.labels],
        "clean_prob_net1": result.clean_prob[0],
        "clean_prob_net2": result.clean_prob[1],
        "loss_net1": result.loss[0],
        "loss_net2": result.loss[1],
    })
    run_config.update(fit_seconds=round(time.perf_counter() - started, 2), epochs=state.epoch,
                      settings=settings(cfg, state.decisions).to_dict(), auto=state.decisions.to_dict(),
                      threshold_hint=_threshold_hint(result.clean_prob.mean(0),
                                                     result.probs.argmax(1) != labeled.labels))
    directory.finish(run_config, samples, result.probs, nets if keep_model else None)
    distributed.barrier()  # the others return the run once the main process has written it
    return Run(directory.path)


def _inputs(saved: dict[str, Any] | None, images_dir: str | Path | None, labels_csv: str | Path | None,
            data: DataOptions) -> dict[str, Any]:
    """What the fit or pretraining reads and how (``config.json``'s ``data``): as given, or as the resumed run
    read it, with a new ``cache_dir`` if one is given. ``labels`` records where the labels come from: the labels
    CSV, or (without one) the class folders."""
    data.validate()
    if saved is None:
        if images_dir is None:
            raise LabelcleanError("Give the image folder and the labels CSV (labelclean fit IMAGES_DIR LABELS_CSV), "
                                  "or a folder of class folders alone (labelclean fit IMAGES_DIR).")
        return {"images_dir": str(images_dir), "labels_csv": None if labels_csv is None else str(labels_csv),
                "labels": "class folders" if labels_csv is None else "csv", **data.to_dict()}
    for given, name in [(images_dir, "images_dir"), (labels_csv, "labels_csv")]:
        was = saved["data"].get(name) or f"the class folders of {saved['data']['images_dir']}"
        if given is not None and Path(given).resolve() != Path(was):
            raise LabelcleanError(f"--resume continues the run on {was}, not {given}; "
                                  f"drop the argument or start a new run with another --output.")
    return {**saved["data"], "cache_dir": data.cache_dir or saved["data"].get("cache_dir")}


def _read(inputs: dict[str, Any], listed: str = "; see skipped.csv in the run directory") -> LabeledImages:
    """The labels CSV's rows, less those left out (missing images, repeated paths: ``listed`` says where)."""
    labeled = read_labels(inputs["images_dir"], inputs["labels_csv"], path_column=inputs["path_column"],
                          label_column=inputs["label_column"], skip_missing=inputs["skip_missing"],
                          dedupe=inputs["dedupe"])
    if labeled.skipped:
        log.warning("Left out %d row(s) (missing images or repeated paths)%s.", len(labeled.skipped), listed)
    return labeled


def _first_look(cfg: FitConfig, labeled: LabeledImages, device: torch.device) -> Decisions:
    """What the listed images and the device show before training: the facts the image size, network and
    schedule are decided from (:func:`labelclean.config.settings`)."""
    side = median_side(labeled.files, seed=cfg.seed) if cfg.image_size is None else None
    return Decisions(n_samples=len(labeled.paths), median_side=side, device=device.type)


def _check_options(cfg: FitConfig, max_ram_gb: float | None, init_weights: str | Path | None) -> None:
    """Refuse options that cannot work together, before any work starts."""
    if max_ram_gb is not None and max_ram_gb < 0:
        raise LabelcleanError(f"The 'max_ram_gb' option must be at least 0. Got {max_ram_gb}.")
    if cfg.method == "mlnt" and distributed.started_processes() > 1:
        raise LabelcleanError("--method mlnt trains on one process; start it without torchrun or --nproc.")
    if init_weights is not None and cfg.pretrained:
        raise LabelcleanError("Give either --pretrained (torchvision's ImageNet weights) or --init-weights FILE, "
                              "not both.")
    if init_weights is not None and not Path(init_weights).is_file():
        raise LabelcleanError(f"Initial weights file {init_weights} does not exist.")
    if cfg.start_blend is not None and init_weights is None and not cfg.pretrained:
        raise LabelcleanError("--start-blend blends loaded weights with each network's random start; give "
                              "--init-weights FILE or --pretrained, or drop --start-blend.")


def _training_data(images: np.ndarray, labeled: LabeledImages, cfg: Settings, device: torch.device,
                   max_ram_gb: float | None) -> tuple[TrainingData, dict[str, Any]]:
    """The images where training reads them fastest, their statistics and the training augmentation."""
    placed = place_images(images, device, max_ram_gb)
    mean, std = imagenet_stats(placed.shape[1]) if cfg.pretrained else channel_stats(placed)  # as the weights expect
    data = TrainingData.build(placed, labeled.labels, len(labeled.classes), mean, std, device,
                              padding=crop_padding(cfg.image_size), flip=cfg.flip)
    return data, {"image_size": cfg.image_size, "channels": int(placed.shape[1]), "mean": mean, "std": std}


def _start_weights(cfg: Settings, init_weights: str | Path | None) -> tuple[dict[str, torch.Tensor], str] | None:
    """The weights both networks start from, and where they come from: a local file
    (``init_weights``), torchvision's ImageNet weights (``cfg.pretrained``), or None (random)."""
    if init_weights is not None:
        return read_weights(Path(init_weights)), str(init_weights)
    if cfg.pretrained:
        return imagenet_weights(cfg.arch), f"torchvision's ImageNet weights of {cfg.arch}"
    return None


def _networks(cfg: FitConfig, decided: Decisions, data: TrainingData, start: tuple[dict[str, torch.Tensor], str] | None,
              device: torch.device) -> tuple[list[nn.Module], list[torch.optim.Optimizer]]:
    """The two networks on the device and their optimizers; a fresh fit starts them from ``start``
    (:func:`_load_start`), and the learning rate is the one for that start."""
    plan = settings(cfg, decided)
    torch.manual_seed(plan.seed)
    nets = [build_model(plan.arch, data.images.shape[1], data.num_classes, plan.image_size) for _ in range(2)]
    if start is not None:
        plan = _load_start(nets, start, cfg, decided)
    if start is not None and cfg.pretrained:
        log.info("Images at %d px: ImageNet weights take the images' median side up to 224 px on a GPU, 112 px "
                 "on a CPU (see docs/photos.md for the cost; --image-size sets it).", plan.image_size)
    nets = [place(net, device) for net in nets]
    return nets, [make_optimizer(net, plan) for net in nets]


def _load_start(nets: list[nn.Module], start: tuple[dict[str, torch.Tensor], str], cfg: FitConfig,
                decided: Decisions) -> Settings:
    """Load the ``start`` weights into both networks, record the kind of start in ``decided`` and blend
    each loaded layer with the network's random start (``start_blend``, decided by the kind); the
    settings for that start."""
    fresh = [{k: v.clone() for k, v in net.state_dict().items()} for net in nets]
    loaded = [load_weights(net, *start) for net in nets]
    log.info(loaded[0].describe(start[1]))
    decided.start = Start(start_kind(True, loaded[0].with_classifier), start[1], loaded[0].count, loaded[0].new)
    plan = settings(cfg, decided)
    blended = ""
    if plan.start_blend < 1:
        for net, own, done in zip(nets, fresh, loaded, strict=True):
            blend_start(net, own, done, plan.start_blend)
        blended = (f"; each loaded layer keeps {plan.start_blend:g} of its direction and takes the rest from the "
                   f"network's random start (--start-blend)")
    log.info("Networks start from %s weights: learning rate %g%s.", decided.start.kind, plan.lr, blended)
    return plan


def _train(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData, cfg: FitConfig,
           state: TrainingState, directory: RunDirectory, device: torch.device,
           on_epoch: Callable[[EpochReport], None] | None) -> Any:
    """Train with a checkpoint at every epoch boundary and on Ctrl-C; the method's final evaluation."""
    method = METHODS[cfg.method]

    def checkpoint(state: TrainingState) -> None:
        directory.save_checkpoint(state, nets, optimizers, device)

    try:
        with stop_on_ctrl_c():
            method.train(nets, optimizers, data, cfg, state, _estimating(on_epoch or (lambda report: None)), checkpoint)
    except Interrupted:
        checkpoint(state)  # mid-epoch: state.partial says where the epoch stopped
        raise
    return method.evaluate(nets, data, cfg, state)


def _log_plan(cfg: FitConfig, plan: Settings, images: int, device: torch.device) -> None:
    """The fit's first line, before decoding: network, images, device and the epochs planned."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    warmup = (f"{plan.warmup} of warm-up" if cfg.warmup is not None or cfg.method == "mlnt"
              else f"warm-up until the networks stop improving, at most {plan.warmup}")
    log.info("Training %s (%s) on %s images of %d px on %s: %d epochs planned (%s).", plan.method, plan.arch,
             f"{images:,}", plan.image_size, where, plan.epochs, warmup)


def _estimating(on_epoch: Callable[[EpochReport], None]) -> Callable[[EpochReport], None]:
    """``on_epoch``, after a log line estimating the time left once the first epoch of each kind has ended
    (a DivideMix epoch costs several warm-up epochs)."""
    paces: dict[str, float] = {}

    def report(r: EpochReport) -> None:
        if r.phase not in paces and r.epoch < r.epochs:
            paces[r.phase] = r.seconds
            log.info("Epoch %d (%s) took %.1f s: the %d epoch(s) left take about %s at this pace%s.", r.epoch,
                     r.phase, r.seconds, r.epochs - r.epoch, duration((r.epochs - r.epoch) * r.seconds),
                     "" if len(paces) > 1 else " (estimated again after the first epoch of the next kind)")
        on_epoch(r)

    return report


def duration(seconds: float) -> str:
    """A time to wait, rounded as a person would say it.

    >>> duration(42.4), duration(3_000), duration(20_000)
    ('42 s', '50 min', '5.6 h')
    """
    return (f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 90 * 60
            else f"{seconds / 3600:.1f} h")


def pretrain(
    images_dir: str | Path,
    labels_csv: str | Path | None = None,
    out: str | Path = "pretrained.pt",
    *,
    config: PretrainConfig | None = None,
    data: DataOptions | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_progress: Progress | None = None,
    **options: Any,
) -> Path:
    """Learn the fit's network from the images listed in ``labels_csv`` or, without one, in ``images_dir``'s
    class folders (their labels are not used) with
    SimCLR (:mod:`labelclean.simclr`) and save its weights without the classifier to ``out``, for
    ``fit(..., init_weights=out)``.

    ``images_dir``, ``labels_csv``, ``data`` and ``**options`` are :func:`fit`'s, read the same way. A checkpoint
    next to ``out`` is written after each epoch; ``resume`` continues from it with its saved settings. The decoded
    images are kept in ``data.cache_dir`` (default: the folder of ``out``); a fit given the same one reuses them.
    """
    out = Path(out)
    saved = simclr.check_out(out, resume, overwrite)
    data, options = DataOptions.taken_from(options, data)
    cfg = (PretrainConfig(**saved["settings"]) if saved else replace(config or PretrainConfig(), **options)).validate()
    inputs = _inputs(None, images_dir, labels_csv, replace(data, cache_dir=data.cache_dir or out.parent))
    device = resolve_device(cfg.device)
    labeled = _read(inputs, listed="")
    fit_like = FitConfig(arch=cfg.arch, image_size=cfg.image_size, seed=cfg.seed)
    plan = settings(fit_like, _first_look(fit_like, labeled, device))  # the network and size the fit will take
    cfg = replace(cfg, arch=plan.arch, image_size=plan.image_size,
                  crop_scale=cfg.crop_scale or crop_scale(plan.image_size))
    check_two_batches(len(labeled.paths), cfg.batch_size, labels_csv or images_dir, smallest=2)
    decoded, labeled = decode_listed(labeled, cfg.image_size, saved["channels"] if saved else None, inputs, out.parent,
                                     on_progress)
    weights = simclr.train(place_images(decoded, device, None), cfg, device, out, saved, on_epoch)
    files.save_torch(out, weights)
    simclr.checkpoint_of(out).remove()
    log.info("Saved the %s encoder (%d tensors, projection head dropped) to %s; start a fit from it with "
             "--init-weights %s --arch %s.", cfg.arch, len(weights), out, out, cfg.arch)
    return out


def launch_processes(nproc: int, device: str, entrypoint: Callable[[list[str]], None],
                     argv: list[str]) -> tuple[int, list[str]]:
    """Run ``entrypoint(argv)`` as ``nproc`` processes of this machine, one per GPU on CUDA; their exit
    status and the distinct errors they recorded (:func:`labelclean.distributed.launch`)."""
    if resolve_device(device).type == "cuda" and nproc > torch.cuda.device_count():
        raise LabelcleanError(f"--nproc {nproc} asks for one process per GPU but PyTorch sees "
                              f"{torch.cuda.device_count()}; lower --nproc or pass --device cpu.")
    return distributed.launch(nproc, entrypoint, argv)


def _threshold_hint(clean_prob: np.ndarray, disagrees: np.ndarray) -> float | None:
    """The export threshold to suggest, with a warning, when the final split flags far fewer labels
    than the networks disagree with (:func:`labelclean.auto.threshold_hint`); None when it is plausible."""
    hint = threshold_hint(clean_prob, float(np.mean(disagrees)), DEFAULT_THRESHOLD)
    if hint is not None:
        log.warning("Only %.0f%% of the labels have clean_prob < %g, but the networks predict another class for "
                    "%.0f%%: at this much noise the GMM put most wrong labels on its clean side. clean_prob still "
                    "ranks them; export with --threshold %g to flag as many.",
                    100 * np.mean(clean_prob < DEFAULT_THRESHOLD), DEFAULT_THRESHOLD, 100 * np.mean(disagrees), hint)
    return hint


@dataclass
class DemoResult:
    """A demo fit on digits with known truth, and how well it found and fixed the flipped labels."""

    dataset: DigitsDataset
    run: Run
    figures: dict[str, float]  # demo.score of the export at the default threshold ...
    errors: dict[str, float]  # ... and of its sharper decision: is_error flags, suggested labels
    seconds: float


def demo(out: str | Path = "labelclean-demo", *, noise: float = 0.4, noise_mode: str = "sym", seed: int = 0,
         device: str = "auto", method: str = "dividemix", on_epoch: Callable[[EpochReport], None] | None = None,
         on_progress: Progress | None = None) -> DemoResult:
    """Flip a share of the labels of scikit-learn's bundled digits, fit with the demo's settings
    (``demo.DEMO_SETTINGS``; the noise kind is detected, not told) and score the export against the truth."""
    started = time.perf_counter()
    dataset = write_digits(out, noise=noise, mode=noise_mode, seed=seed)
    log.info("Wrote %s and %s (%.1f%% of labels flipped; truth in %s).", dataset.images_dir, dataset.labels_csv,
             100 * dataset.noise_rate, dataset.truth_csv)
    run = fit(dataset.images_dir, dataset.labels_csv, Path(out) / "run", overwrite=True, on_epoch=on_epoch,
              on_progress=on_progress, **{**DEMO_SETTINGS, "seed": seed, "device": device, "method": method})
    table, truth = run.export(), pd.read_csv(dataset.truth_csv, dtype=str)
    errors = table.assign(is_noisy=table["is_error"], refined_label=table["suggested_label"])
    return DemoResult(dataset, run, score(table, truth), score(errors, truth), time.perf_counter() - started)
