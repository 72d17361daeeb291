"""The Python API: ``fit`` trains DivideMix or MLNT on an image folder + labels CSV and returns a ``Run``.

Examples
--------
>>> import labelclean                                                  # doctest: +SKIP
>>> run = labelclean.fit("images/", "labels.csv", out="run", epochs=30, warmup=5)
>>> suspects = run.export(threshold=0.5, only_noisy=True, sort="clean_prob")
>>> run.predict(["new_images/"]).head()
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import distributed, dividemix, mlnt
from . import run as rundir
from .augment import Augment, crop_padding
from .auto import threshold_hint
from .cache import decode_cached
from .config import FitConfig
from .data import (
    MAX_LISTED,
    LabeledImages,
    channel_stats,
    decode_images,
    has_colour,
    list_images,
    median_side,
    read_labels,
    to_channels,
)
from .errors import LabelcleanError
from .export import review_table, select_rows
from .models import build_model, default_arch, load_initial_weights
from .training import (
    EpochReport,
    Interrupted,
    TrainingData,
    TrainingState,
    make_optimizer,
    predict_logits,
    stop_on_ctrl_c,
)

log = logging.getLogger("labelclean")

Progress = Callable[[str, int, int], None]  # (task, done, total)
CPU_MAX_IMAGE_SIZE = 32  # default cap on CPU: a small-CNN step at 54 px costs ~3x one at 32 px (measured)
# Each method trains two networks with ``train(nets, optimizers, data, cfg, state, on_epoch, after_epoch)``
# and returns the per-sample results with ``evaluate(nets, data, cfg, state)``; MLNT's pair is (student, teacher).
METHODS = {"dividemix": dividemix, "mlnt": mlnt}


def with_image_settings(cfg: FitConfig, files: Sequence[Path], device: torch.device) -> FitConfig:
    """``cfg`` with its image size and network fixed: by default the median shorter side of the
    images (at most 32 px on CPU, 224 on GPU) and the network that suits the device and size."""
    size = cfg.image_size or min(median_side(files, seed=cfg.seed), 224 if device.type == "cuda" else CPU_MAX_IMAGE_SIZE)
    return replace(cfg, image_size=size, arch=cfg.arch if cfg.arch != "auto" else default_arch(device, size))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LabelcleanError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu.")
    return torch.device(name)


def _place_images(images: np.ndarray, device: torch.device, max_ram_gb: float | None) -> torch.Tensor:
    """Put the decoded uint8 images where training reads them fastest, reading the cache file once.

    On a GPU with room for them (under half of its free memory) they move there. Otherwise they are
    loaded into RAM (pinned, for fast copies to a GPU) when they fit under ``max_ram_gb``, by default
    half of the RAM, shared by the processes of this machine. Larger ones stay memory-mapped and each
    batch reads only its own rows from disk, so the data set may be larger than RAM.
    """
    tensor = torch.from_numpy(images)
    if device.type == "cuda" and images.nbytes < torch.cuda.mem_get_info(device)[0] // 2:
        return tensor.to(device)
    ram = max_ram_gb * 1e9 if max_ram_gb is not None else _memory_size() / 2
    ram /= distributed.local_processes()  # each process of this machine loads its own copy
    if images.nbytes > ram:
        log.info("The decoded images (%.2f GB) are over the %.2f GB to load into RAM (--max-ram-gb); "
                 "batches are read from the memory-mapped file.", images.nbytes / 1e9, ram / 1e9)
        return tensor
    if device.type == "cuda":
        log.info("Images (%.1f GB) stay in CPU memory; batches are copied to the GPU.", images.nbytes / 1e9)
        return tensor.pin_memory()
    return tensor.clone()


def _memory_size() -> float:
    """Bytes of RAM this process may use: the machine's, or its container's limit (cgroup v2) when
    that is lower; infinite where neither can be read."""
    sizes = [math.inf]
    with contextlib.suppress(AttributeError, ValueError, OSError):  # os.sysconf is POSIX-only
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ValueError, OSError):  # the file says 'max' when there is no limit
        sizes.append(int(Path("/sys/fs/cgroup/memory.max").read_text()))
    return min(sizes)


def _decode(labeled: LabeledImages, size: int, channels: int | None, skip_bad: bool, labels_csv: Path,
            cache_dir: Path | None, out: Path, progress: Progress | None) -> tuple[np.ndarray, LabeledImages]:
    """Decode the images, or map those an earlier fit decoded into ``cache_dir`` (default: ``out``);
    refuse unreadable ones (or drop them with ``skip_bad``)."""
    images, bad = decode_cached(labeled.files, size, channels, cache_dir or out,
                                progress=(lambda d, t: progress("decode", d, t)) if progress else None,
                                replace_older=cache_dir is None)
    if bad and not skip_bad:
        examples = "; ".join(f"'{labeled.paths[i]}': {why}" for i, why in bad[:3])
        raise LabelcleanError(
            f"{len(bad):,} image(s) listed in {labels_csv} cannot be read ({examples}). "
            f"Fix or remove them, or pass --skip-bad to leave them out."
        )
    if bad:
        keep = np.ones(len(labeled.paths), dtype=bool)
        keep[[i for i, _ in bad]] = False
        labeled = LabeledImages(
            paths=[p for p, k in zip(labeled.paths, keep) if k],
            files=[f for f, k in zip(labeled.files, keep) if k],
            labels=labeled.labels[keep],
            classes=labeled.classes,
            skipped=labeled.skipped + [(labeled.paths[i], why) for i, why in bad],
        )
        log.warning("Left out %d unreadable image(s); see skipped.csv in the run directory.", len(bad))
    return images, labeled


def _prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Check what ``out`` holds; return the saved config when resuming."""
    config_file = out / rundir.CONFIG
    if not config_file.exists():
        if resume:
            raise LabelcleanError(f"Nothing to resume: {out} holds no labelclean run. Drop --resume.")
        return None
    saved = rundir.read_json(config_file)
    if resume:
        if saved.get("status") == "complete":
            raise LabelcleanError(f"The run in {out} is already complete; nothing to resume.")
        if not (out / rundir.CHECKPOINT).exists():
            raise LabelcleanError(f"{out} has no checkpoint to resume from; start again with --overwrite.")
        return saved
    if not overwrite:
        state = "a finished run" if saved.get("status") == "complete" else "an unfinished run (add --resume to continue it)"
        raise LabelcleanError(f"{out} already holds {state}; pass --overwrite to replace it or choose another --out.")
    return None


def _clear_run_dir(out: Path) -> None:
    """Remove the outputs of the run that ``--overwrite`` replaces."""
    for name in (rundir.CONFIG, rundir.HISTORY, rundir.SAMPLES, rundir.PROBS, rundir.CHECKPOINT,
                 rundir.MODEL, rundir.SKIPPED):
        (out / name).unlink(missing_ok=True)


def fit(
    images_dir: str | Path | None,
    labels_csv: str | Path | None,
    out: str | Path = "labelclean-run",
    *,
    config: FitConfig | None = None,
    path_column: str | None = None,
    label_column: str | None = None,
    keep_model: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    skip_missing: bool = False,
    skip_bad: bool = False,
    dedupe: bool = False,
    init_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    max_ram_gb: float | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_progress: Progress | None = None,
    **options: Any,
) -> Run:
    """Train ``config.method`` (DivideMix or MLNT) on ``images_dir`` + ``labels_csv``; write a run directory ``out``.

    Parameters
    ----------
    images_dir : folder the CSV's paths are relative to (None when resuming: the saved one)
    labels_csv : CSV with a path and a label column, auto-detected or named (None when resuming)
    out : run directory to create
    config : all hyper-parameters; ``**options`` override single fields (e.g. ``epochs=30, method="mlnt"``)
    keep_model : keep both networks so that ``Run.predict`` works
    resume : continue the unfinished run in ``out`` from its last checkpoint, with its saved settings
    overwrite : replace a run that ``out`` already holds
    skip_missing, skip_bad : leave out rows whose image is missing / unreadable (listed in skipped.csv)
    dedupe : keep the first of rows that repeat a path (the others are listed in skipped.csv)
    init_weights : a local state-dict file to start both networks from (matching layers only)
    cache_dir : folder for the decoded images (default ``out``, or the one a resumed run used); the next
        fit on the same, unchanged files maps them from there instead of decoding again
    max_ram_gb : load the decoded images into RAM only up to this size (default: half of the RAM);
        larger ones are read batch by batch from the memory-mapped file in ``cache_dir``
    on_epoch : called with an :class:`EpochReport` after every epoch
    on_progress : called as ``(task, done, total)`` during long non-epoch work (image decoding)

    Returns
    -------
    Run
    """
    started = time.perf_counter()
    out = Path(out)
    saved = _prepare_run_dir(out, resume, overwrite)
    if saved is not None:
        cfg = FitConfig.from_dict(saved["fit"]).validate()
        for given, name in [(images_dir, "images_dir"), (labels_csv, "labels_csv")]:
            if given is not None and Path(given).resolve() != Path(saved["data"][name]):
                raise LabelcleanError(f"--resume continues the run on {saved['data'][name]}, not {given}; "
                                      f"drop the argument or start a new run with another --out.")
        images_dir, labels_csv = saved["data"]["images_dir"], saved["data"]["labels_csv"]
        path_column, label_column = saved["data"]["path_column"], saved["data"]["label_column"]
        skip_missing, skip_bad, keep_model = saved["data"]["skip_missing"], saved["data"]["skip_bad"], saved["keep_model"]
        dedupe, cache_dir = saved["data"]["dedupe"], cache_dir or saved["data"].get("cache_dir")
    elif images_dir is None or labels_csv is None:
        raise LabelcleanError("Give the image folder and the labels CSV: labelclean fit IMAGES_DIR LABELS_CSV.")
    else:
        cfg = replace(config or FitConfig(), **options).validate()
    images_dir, labels_csv = Path(images_dir), Path(labels_csv)
    if max_ram_gb is not None and max_ram_gb < 0:
        raise LabelcleanError(f"The 'max_ram_gb' option must be at least 0. Got {max_ram_gb}.")
    if cfg.method == "mlnt" and distributed.started_processes() > 1:
        raise LabelcleanError("--method mlnt trains on one process; start it without torchrun or --nproc.")
    # Under torchrun, init waits for every process, so all have read `out` before the main one changes it.
    device = distributed.init(resolve_device(cfg.device))
    if saved is None and overwrite and distributed.is_main():
        _clear_run_dir(out)

    labeled = read_labels(images_dir, labels_csv, path_column=path_column, label_column=label_column,
                          skip_missing=skip_missing, dedupe=dedupe)
    if labeled.skipped:
        log.warning("Left out %d row(s) (missing images or repeated paths); see skipped.csv in the run "
                    "directory.", len(labeled.skipped))
    cfg = with_image_settings(cfg, labeled.files, device)
    size = cfg.image_size
    channels = saved["preprocessing"]["channels"] if saved else None
    if len(labeled.paths) < 2 * cfg.batch_size and cfg.batch_size > 1:
        raise LabelcleanError(
            f"{labels_csv} has {len(labeled.paths)} usable images, fewer than two batches of "
            f"{cfg.batch_size}; lower --batch-size (e.g. {max(1, len(labeled.paths) // 4)})."
        )
    if init_weights is not None and not Path(init_weights).is_file():
        raise LabelcleanError(f"Initial weights file {init_weights} does not exist.")
    decoded, labeled = distributed.main_first(
        lambda: _decode(labeled, size, channels, skip_bad, labels_csv, cache_dir and Path(cache_dir), out, on_progress))
    images = _place_images(decoded, device, max_ram_gb)
    mean, std = channel_stats(images)

    torch.manual_seed(cfg.seed)
    nets = [build_model(cfg.arch, images.shape[1], len(labeled.classes), size) for _ in range(2)]
    if init_weights is not None:
        loaded = [load_initial_weights(net, Path(init_weights)) for net in nets]
        log.info("Loaded %d tensors from %s into both networks.", loaded[0], init_weights)
    nets = [net.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)
            for net in nets]
    optimizers = [make_optimizer(net, cfg) for net in nets]
    augment = Augment(torch.tensor(mean, device=device).view(1, -1, 1, 1),
                      torch.tensor(std, device=device).view(1, -1, 1, 1), crop_padding(size), cfg.flip)
    data = TrainingData(images, torch.as_tensor(labeled.labels, device=device), len(labeled.classes), augment, device)

    run_config = saved or {
        "labelclean_version": version("labelclean"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": cfg.method,
        "status": "training",
        "fit": cfg.to_dict(),
        "data": {"images_dir": str(images_dir.resolve()), "labels_csv": str(labels_csv.resolve()),
                 "path_column": path_column, "label_column": label_column, "skip_missing": skip_missing, "dedupe": dedupe,
                 "skip_bad": skip_bad, "n_samples": len(labeled.paths), "n_skipped": len(labeled.skipped),
                 "cache_dir": str(Path(cache_dir).resolve()) if cache_dir else None},
        "classes": labeled.classes,
        "preprocessing": {"image_size": size, "channels": int(images.shape[1]), "mean": mean, "std": std},
        "keep_model": keep_model,
    }
    run_config["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    run_config["processes"] = distributed.world_size()
    if distributed.is_main():
        rundir.write_json(out / rundir.CONFIG, run_config)
        rundir.write_skipped(out / rundir.SKIPPED, labeled.skipped)

    state = TrainingState()
    if saved is not None:
        state = _restore(out / rundir.CHECKPOINT, nets, optimizers, device)
        log.info("Resuming %s after epoch %d.", out, state.epoch)
    nets = [distributed.wrap(net, device) for net in nets]

    def save_checkpoint(state: TrainingState) -> None:
        if not distributed.is_main():
            return
        rundir.save_torch(out / rundir.CHECKPOINT, {
            "epoch": state.epoch,
            "nets": [net.state_dict() for net in nets],
            "optimizers": [opt.state_dict() for opt in optimizers],
            "loss_history": state.loss_history,
            "history": state.history,
            "extra": state.extra,
            "partial": state.partial,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        })
        rundir.write_jsonl(out / rundir.HISTORY, state.history)

    method = METHODS[cfg.method]
    try:
        with stop_on_ctrl_c():
            method.train(nets, optimizers, data, cfg, state, on_epoch or (lambda report: None), save_checkpoint)
    except Interrupted:
        save_checkpoint(state)  # mid-epoch: state.partial says where the epoch stopped
        raise

    result = method.evaluate(nets, data, cfg, state)
    if distributed.is_main():
        samples = pd.DataFrame({
            "path": labeled.paths,
            "given_label": np.asarray(labeled.classes, dtype=object)[labeled.labels],
            "clean_prob_net1": result.clean_prob[0],
            "clean_prob_net2": result.clean_prob[1],
            "loss_net1": result.loss[0],
            "loss_net2": result.loss[1],
        })
        rundir.write_text(out / rundir.SAMPLES, samples.to_csv(index=False))
        rundir.write_npy(out / rundir.PROBS, result.probs.astype(np.float32))
        if keep_model:
            rundir.save_torch(out / rundir.MODEL, {"nets": [net.state_dict() for net in nets]})
        run_config.update(status="complete", fit_seconds=round(time.perf_counter() - started, 2), epochs=state.epoch,
                          auto={k: v for k, v in state.extra.get("auto", {}).items() if k != "best"},
                          threshold_hint=_threshold_hint(result.clean_prob.mean(0), result.probs.argmax(1) != labeled.labels))
        rundir.write_json(out / rundir.CONFIG, run_config)
        (out / rundir.CHECKPOINT).unlink(missing_ok=True)
    distributed.barrier()  # the others return the run once the main process has written it
    return Run(out)


def _threshold_hint(clean_prob: np.ndarray, disagrees: np.ndarray) -> float | None:
    """The export threshold to suggest, with a warning, when the final split flags far fewer labels
    than the networks disagree with (:func:`labelclean.auto.threshold_hint`); None when it is plausible."""
    hint = threshold_hint(clean_prob, float(np.mean(disagrees)))
    if hint is not None:
        log.warning("Only %.0f%% of the labels have clean_prob < 0.5, but the networks predict another class for "
                    "%.0f%%: at this much noise the GMM put most wrong labels on its clean side. clean_prob still "
                    "ranks them; export with --threshold %g to flag as many.",
                    100 * np.mean(clean_prob < 0.5), 100 * np.mean(disagrees), hint)
    return hint


def _restore(checkpoint: Path, nets: list[nn.Module], optimizers: list[torch.optim.Optimizer],
             device: torch.device) -> TrainingState:
    saved = rundir.load_torch(checkpoint)
    for net, opt, net_state, opt_state in zip(nets, optimizers, saved["nets"], saved["optimizers"]):
        net.load_state_dict(net_state)
        opt.load_state_dict(opt_state)
    torch.set_rng_state(saved["rng_cpu"])
    if device.type == "cuda" and saved["rng_cuda"] is not None:
        torch.cuda.set_rng_state(saved["rng_cuda"], device)
    return TrainingState(saved["epoch"], saved["loss_history"], saved["history"], saved.get("extra", {}),
                         saved.get("partial", {}))


class Run:
    """A finished fit, read back from its run directory.

    Attributes
    ----------
    directory : Path
    config : dict, the saved ``config.json``
    classes : list of str
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise LabelcleanError(f"Run directory {self.directory} does not exist; run 'labelclean fit' first "
                                  f"or pass the --out folder of an earlier fit.")
        self.config: dict[str, Any] = rundir.read_json(self.directory / rundir.CONFIG)
        if self.config.get("status") != "complete":
            raise LabelcleanError(
                f"The run in {self.directory} did not finish; continue it with 'labelclean fit ... "
                f"--out {self.directory} --resume'."
            )
        self.classes: list[str] = self.config["classes"]

    @classmethod
    def load(cls, directory: str | Path) -> Run:
        return cls(directory)

    @property
    def fit_config(self) -> FitConfig:
        return FitConfig.from_dict(self.config["fit"])

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch figures (see ``training.EpochReport``)."""
        return rundir.read_jsonl(self.directory / rundir.HISTORY)

    def samples(self) -> pd.DataFrame:
        """The raw per-sample results of the final evaluation, in input order."""
        try:
            return pd.read_csv(self.directory / rundir.SAMPLES, dtype={"path": str, "given_label": str},
                               keep_default_na=False)
        except FileNotFoundError:
            raise LabelcleanError(f"{self.directory} lacks {rundir.SAMPLES}; re-run 'labelclean fit'.") from None

    def probs(self) -> np.ndarray:
        """(n_samples, n_classes) mean softmax of the two networks."""
        try:
            return np.load(self.directory / rundir.PROBS, allow_pickle=False)
        except FileNotFoundError:
            raise LabelcleanError(f"{self.directory} lacks {rundir.PROBS}; re-run 'labelclean fit'.") from None

    def export(self, threshold: float = 0.5, *, only_noisy: bool = False, only_errors: bool = False,
               sort: str | None = None) -> pd.DataFrame:
        """The per-sample review table (see :mod:`labelclean.export` for its columns)."""
        samples = self.samples()
        index = {c: k for k, c in enumerate(self.classes)}
        given = samples["given_label"].map(index).to_numpy(dtype=np.int64)
        clean = samples[["clean_prob_net1", "clean_prob_net2"]].to_numpy().T
        table = review_table(samples["path"].tolist(), given, self.classes, clean, self.probs(), threshold)
        return select_rows(table, only_noisy, sort, only_errors)

    def load_networks(self, device: torch.device) -> list[nn.Module]:
        """Both trained networks, in eval mode, from ``model.pt`` (loaded with ``weights_only=True``)."""
        model_file = self.directory / rundir.MODEL
        if not model_file.exists():
            raise LabelcleanError(f"{self.directory} has no kept model (it was fitted with --no-keep-model); "
                                  f"fit again with --keep-model to predict.")
        saved = rundir.load_torch(model_file)
        prep, cfg = self.config["preprocessing"], self.fit_config
        nets = []
        for state in saved["nets"]:
            net = build_model(cfg.arch, prep["channels"], len(self.classes), prep["image_size"])
            net.load_state_dict(state)
            nets.append(net.to(device).eval())
        return nets

    def predict(self, inputs: Sequence[str | Path], *, top_k: int = 1, images_dir: str | Path | None = None,
                device: str = "auto", batch_size: int = 512, convert_channels: bool = False,
                on_progress: Progress | None = None) -> pd.DataFrame:
        """Classify new images with the two-network ensemble: the mean of their softmax, the rule the
        export's ``predicted_label`` uses, so a training image gets the same prediction from both
        (for an MLNT run the two networks are the student and its EMA teacher).

        Parameters
        ----------
        inputs : image files, folders (searched recursively) or CSVs with a path column
        top_k : how many classes to report per image, best first
        batch_size : images per forward pass
        convert_channels : convert colour images to grayscale for a run trained on grayscale. Without it
            they are an error: the model never saw colour, and such images are often from the wrong
            folder. Gray images for a run trained on colour are always converted, since nothing is lost.

        Returns
        -------
        DataFrame with ``path``, ``predicted_label``, ``confidence`` (and ``label_2``,
        ``confidence_2``, ... up to ``top_k``).
        """
        if not 1 <= top_k <= len(self.classes):
            raise LabelcleanError(f"The 'top_k' option must be in [1, {len(self.classes)}]. Got {top_k}.")
        if batch_size < 1:
            raise LabelcleanError(f"The 'batch_size' option must be at least 1. Got {batch_size}.")
        dev = resolve_device(device)
        nets = self.load_networks(dev)  # before decoding: a run without a model fails fast
        shown, files = list_images([Path(p) for p in inputs], Path(images_dir) if images_dir else None)
        prep = self.config["preprocessing"]
        rgb, bad = decode_images(files, prep["image_size"], 3,
                                 progress=(lambda d, t: on_progress("decode", d, t)) if on_progress else None)
        if bad:
            examples = "; ".join(f"'{shown[i]}': {why}" for i, why in bad[:3])
            raise LabelcleanError(f"{len(bad)} input image(s) cannot be read ({examples}); fix or remove them.")
        colour = has_colour(rgb.numpy())
        if prep["channels"] == 1 and colour.any() and not convert_channels:
            examples = ", ".join(f"'{shown[i]}'" for i in np.flatnonzero(colour)[:MAX_LISTED])
            raise LabelcleanError(
                f"{int(colour.sum())} of {len(files)} input image(s) are in colour (e.g. {examples}) but the run "
                f"in {self.directory} was trained on grayscale (1 channel); predict on grayscale images, or pass "
                f"--convert-channels to convert them."
            )
        images = to_channels(rgb.numpy(), prep["channels"], colour)
        augment = Augment(torch.tensor(prep["mean"], device=dev).view(1, -1, 1, 1),
                          torch.tensor(prep["std"], device=dev).view(1, -1, 1, 1), 0, False)
        data = TrainingData(images, None, len(self.classes), augment, dev)
        probs = torch.stack([torch.softmax(predict_logits(net, data, batch_size), dim=1) for net in nets]).mean(0)
        confidence, label = probs.topk(top_k, dim=1)
        names = np.asarray(self.classes, dtype=object)
        table = pd.DataFrame({"path": shown, "predicted_label": names[label[:, 0].cpu().numpy()],
                              "confidence": confidence[:, 0].cpu().numpy()})
        for k in range(1, top_k):
            table[f"label_{k + 1}"] = names[label[:, k].cpu().numpy()]
            table[f"confidence_{k + 1}"] = confidence[:, k].cpu().numpy()
        return table
