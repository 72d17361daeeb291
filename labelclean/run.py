"""The run directory: what a fit leaves behind, and the one module that reads and writes it.

:class:`RunDirectory` is the writer ``labelclean.fit`` uses (checks, config, checkpoints,
results); :class:`Run` is the read-only view of a finished fit that ``export``, ``predict``
and ``report`` use. Every file is written atomically (:mod:`labelclean.files`), so an
interrupted process never leaves a half-written output behind.

Layout::

    RUN_DIR/
      config.json      the declared options ("fit"), their effective values ("settings"), what the
                       rules chose from the data ("auto"), the class list, preprocessing, versions
      history.jsonl    one line of figures per epoch
      samples.csv      per-sample results of the final evaluation, in input order
      probs.npy        (n_samples, n_classes) two-network mean softmax of the final evaluation
      checkpoint.pt    while training: both networks, optimizers, RNG state, loss history and the
                       method's extra state (MLNT: frozen feature model, kept-sample mask)
      model.pt         after training (unless --no-keep-model): both networks' weights
      skipped.csv      rows left out by --skip-missing / --skip-bad / --dedupe, with the reason
      decoded-*.u8     the decoded images (uint8, memory-mapped) and their shape, kept for the
      decoded-*.json   next fit on the same files, unless --cache-dir puts them elsewhere (cache.py)
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import distributed
from .auto import network_hint
from .config import Decisions, FitConfig, Settings
from .data import LabeledImages, decode_for_prediction, list_images
from .errors import LabelcleanError
from .export import DEFAULT_THRESHOLD, review_table, select_rows, unpredicted_hint
from .files import (
    load_torch,
    read_json,
    read_jsonl,
    remove_stale_temps,
    save_torch,
    write_json,
    write_jsonl,
    write_npy,
    write_skipped,
    write_text,
)
from .models import build_model
from .review import CleanedLabels, apply_decisions, model_decisions
from .training import TrainingData, TrainingState, place, precision, predict_logits, resolve_device, threads

CONFIG = "config.json"
HISTORY = "history.jsonl"
SAMPLES = "samples.csv"
PROBS = "probs.npy"
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
SKIPPED = "skipped.csv"
OUTPUTS = (CONFIG, HISTORY, SAMPLES, PROBS, CHECKPOINT, MODEL, SKIPPED)  # what --overwrite replaces

log = logging.getLogger("labelclean")

Progress = Callable[[str, int, int], None]  # (task, done, total)


class Checkpoint:
    """The state a stopped job continues from: one file, written atomically at every epoch boundary, read
    back without executing code, removed once the job's output is written. A fit keeps it in its run
    directory (``checkpoint.pt``), ``labelclean pretrain`` next to its weights file."""

    def __init__(self, path: Path, job: str):
        self.path, self.job = path, job

    def check(self, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        """The saved state when resuming; refuse to start over an unfinished job without ``overwrite``."""
        if resume:
            if not self.path.exists():
                raise LabelcleanError(f"Nothing to resume: {self.path} does not exist. Drop --resume.")
            return self.load()
        if self.path.exists() and not overwrite:
            raise LabelcleanError(f"{self.path} holds an unfinished {self.job}; add --resume to continue it, or "
                                  f"--overwrite to start again.")
        return None

    def save(self, state: dict[str, Any]) -> None:
        save_torch(self.path, state)

    def load(self) -> dict[str, Any]:
        return load_torch(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class RunDirectory:
    """The run directory a fit writes. Only the main process of a multi-process fit writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.checkpoint = Checkpoint(self.path / CHECKPOINT, "fit")

    def check(self, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        """Check what the directory holds against ``resume``/``overwrite``; the saved config when resuming."""
        config_file = self.path / CONFIG
        if not config_file.exists():
            if resume:
                raise LabelcleanError(f"Nothing to resume: {self.path} holds no labelclean run. Drop --resume.")
            return None
        saved = read_json(config_file)
        if resume:
            if saved.get("status") == "complete":
                raise LabelcleanError(f"The run in {self.path} is already complete; nothing to resume.")
            if not self.checkpoint.path.exists():
                raise LabelcleanError(f"{self.path} has no checkpoint to resume from; start again with --overwrite.")
            if "auto" not in saved:  # its decisions were not recorded apart from its options
                raise LabelcleanError(f"The run in {self.path} was started by an older labelclean, which this one "
                                      f"cannot resume; start again with --overwrite.")
            return saved
        if not overwrite:
            state = ("a finished run" if saved.get("status") == "complete"
                     else "an unfinished run (add --resume to continue it)")
            raise LabelcleanError(f"{self.path} already holds {state}; pass --overwrite to replace it or choose "
                                  f"another --output.")
        return None

    def clear(self) -> None:
        """Remove the outputs of the run that ``--overwrite`` replaces (the decoded images stay)."""
        if distributed.is_main():
            for name in OUTPUTS:
                (self.path / name).unlink(missing_ok=True)

    def start(self, config: dict[str, Any], skipped: list[tuple[str, str]], device: torch.device,
              threads: int) -> None:
        """Write the config of a fit that starts (or resumes, perhaps elsewhere) and the rows it left out."""
        config.update(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                      processes=distributed.world_size(), precision=precision(device), threads=threads)
        if distributed.is_main():
            remove_stale_temps(self.path)  # of a fit killed while it saved a checkpoint
            write_json(self.path / CONFIG, config)
            write_skipped(self.path / SKIPPED, skipped)

    def save_checkpoint(self, state: TrainingState, nets: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                        device: torch.device) -> None:
        """Everything a resume needs: at an epoch boundary, or mid-epoch after Ctrl-C (``state.partial``)."""
        if not distributed.is_main():
            return
        self.checkpoint.save({
            "epoch": state.epoch,
            "nets": [net.state_dict() for net in nets],
            "optimizers": [opt.state_dict() for opt in optimizers],
            "loss_history": state.loss_history,
            "history": state.history,
            "extra": state.extra,
            "partial": state.partial,
            "decisions": state.decisions.to_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        })
        write_jsonl(self.path / HISTORY, state.history)

    def restore(self, nets: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                device: torch.device) -> TrainingState:
        """Load the checkpoint into ``nets`` and ``optimizers``; the training state to continue from."""
        saved = self.checkpoint.load()
        for net, opt, net_state, opt_state in zip(nets, optimizers, saved["nets"], saved["optimizers"]):
            net.load_state_dict(net_state)
            opt.load_state_dict(opt_state)
        torch.set_rng_state(saved["rng_cpu"])
        if device.type == "cuda" and saved["rng_cuda"] is not None:
            torch.cuda.set_rng_state(saved["rng_cuda"], device)
        return TrainingState(saved["epoch"], saved["loss_history"], saved["history"], saved["extra"],
                             saved["partial"], Decisions.from_dict(saved["decisions"]))

    def finish(self, config: dict[str, Any], samples: pd.DataFrame, probs: np.ndarray,
               nets: list[nn.Module] | None) -> None:
        """Write the results, the model (when kept) and the completed config; drop the checkpoint."""
        if not distributed.is_main():
            return
        write_text(self.path / SAMPLES, samples.to_csv(index=False))
        write_npy(self.path / PROBS, probs.astype(np.float32))
        if nets is not None:
            save_torch(self.path / MODEL, {"nets": [net.state_dict() for net in nets]})
        write_json(self.path / CONFIG, {**config, "status": "complete"})
        self.checkpoint.remove()


def new_config(cfg: FitConfig, decided: Decisions, inputs: dict[str, Any], labeled: LabeledImages,
               preprocessing: dict[str, Any], keep_model: bool) -> dict[str, Any]:
    """The ``config.json`` of a fit that starts: versions, declared options, what the data showed so far
    (``auto``: a resumed fit decides its image size and network from it again), its data, classes,
    preprocessing."""
    data = {**inputs, "images_dir": str(Path(inputs["images_dir"]).resolve()),
            "labels_csv": inputs["labels_csv"] and str(Path(inputs["labels_csv"]).resolve())}  # None: class folders
    return {
        "labelclean_version": version("labelclean"),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": cfg.method,
        "status": "training",
        "fit": cfg.to_dict(),
        "auto": decided.to_dict(),
        "data": {**data, "n_samples": len(labeled.paths), "n_skipped": len(labeled.skipped)},
        "classes": labeled.classes,
        "preprocessing": preprocessing,
        "keep_model": keep_model,
    }


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
                                  f"or pass the --output folder of an earlier fit.")
        self.config: dict[str, Any] = read_json(self.directory / CONFIG)
        if self.config.get("status") != "complete":
            raise LabelcleanError(
                f"The run in {self.directory} did not finish; continue it with 'labelclean fit ... "
                f"--output {self.directory} --resume'."
            )
        self.classes: list[str] = self.config["classes"]

    @classmethod
    def load(cls, directory: str | Path) -> Run:
        return cls(directory)

    @property
    def fit_config(self) -> FitConfig:
        """The options as declared (``None`` where the rules chose); :attr:`settings` has the effective ones."""
        return FitConfig.from_dict(self.config["fit"])

    @property
    def settings(self) -> Settings:
        """Every option's effective value (``config.json``'s ``settings``)."""
        return Settings(**self.config["settings"])

    @property
    def suggested_threshold(self) -> float:
        """The export threshold to use: the default, or the fit's ``threshold_hint`` when the final
        split flags far fewer labels than the networks disagree with (the fit warned about it)."""
        return self.config.get("threshold_hint") or DEFAULT_THRESHOLD

    @property
    def network_hint(self) -> str | None:
        """The fit's advice on the network (:func:`labelclean.auto.network_hint`), from what it recorded; None
        when it gave none (or estimated no noise: MLNT, or a fit stopped in warm-up)."""
        decided, plan = self.config.get("auto", {}), self.config["settings"]
        if not decided.get("noise"):
            return None
        return network_hint(plan["arch"], plan["image_size"], decided["n_samples"], decided["noise"]["rate"],
                            decided["start"]["kind"])

    def warnings(self, table: pd.DataFrame) -> list[str]:
        """What the end-of-fit summary and the report warn of, given the run's review ``table``: the advice
        on the network (:attr:`network_hint`), the classes no image is predicted as (:func:`unpredicted_hint`)."""
        return [text for text in (self.network_hint, unpredicted_hint(table)) if text]

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch figures (see ``training.EpochReport``)."""
        return read_jsonl(self.directory / HISTORY)

    def samples(self) -> pd.DataFrame:
        """The raw per-sample results of the final evaluation, in input order."""
        try:
            return pd.read_csv(self.directory / SAMPLES, dtype={"path": str, "given_label": str},
                               keep_default_na=False)
        except FileNotFoundError:
            raise LabelcleanError(f"{self.directory} lacks {SAMPLES}; re-run 'labelclean fit'.") from None

    def probs(self) -> np.ndarray:
        """(n_samples, n_classes) mean softmax of the two networks."""
        try:
            return np.load(self.directory / PROBS, allow_pickle=False)
        except FileNotFoundError:
            raise LabelcleanError(f"{self.directory} lacks {PROBS}; re-run 'labelclean fit'.") from None

    def export(self, threshold: float = DEFAULT_THRESHOLD, *, only_noisy: bool = False, only_errors: bool = False,
               sort: str | None = None) -> pd.DataFrame:
        """The per-sample review table (see :mod:`labelclean.export` for its columns)."""
        samples = self.samples()
        index = {c: k for k, c in enumerate(self.classes)}
        given = samples["given_label"].map(index).to_numpy(dtype=np.int64)
        clean = samples[["clean_prob_net1", "clean_prob_net2"]].to_numpy().T
        table = review_table(samples["path"].tolist(), given, self.classes, clean, self.probs(), threshold)
        return select_rows(table, only_noisy, sort, only_errors)

    def cleaned_labels(self, threshold: float = DEFAULT_THRESHOLD, *, action: str = "relabel") -> CleanedLabels:
        """The labels CSV the run was fitted on, with every ``is_error`` row relabeled to its suggested
        label (``action='relabel'``) or left out (``'drop'``), and a change log."""
        if action not in ("relabel", "drop"):
            raise LabelcleanError(f"The 'action' option must be relabel or drop. Got {action!r}.")
        data = self.config["data"]
        return apply_decisions(Path(data["labels_csv"] or data["images_dir"]), model_decisions(self.export(threshold)),
                               drop_rejected=action == "drop", path_column=data["path_column"],
                               label_column=data["label_column"])

    def load_networks(self, device: torch.device) -> list[nn.Module]:
        """Both trained networks, in eval mode, from ``model.pt`` (loaded with ``weights_only=True``)."""
        model_file = self.directory / MODEL
        if not model_file.exists():
            raise LabelcleanError(f"{self.directory} has no kept model (it was fitted with --no-keep-model); "
                                  f"fit again with --keep-model to predict.")
        saved = load_torch(model_file)
        prep, arch = self.config["preprocessing"], self.config["settings"]["arch"]
        nets = []
        for state in saved["nets"]:
            net = build_model(arch, prep["channels"], len(self.classes), prep["image_size"])
            net.load_state_dict(state)
            nets.append(place(net, device).eval())
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
        DataFrame (see :func:`prediction_table`) with ``path``, ``predicted_label``, ``predicted_confidence``
        (and ``predicted_label_2``, ``predicted_confidence_2``, ... up to ``top_k``).
        """
        if not 1 <= top_k <= len(self.classes):
            raise LabelcleanError(f"The 'top_k' option must be in [1, {len(self.classes)}]. Got {top_k}.")
        if batch_size < 1:
            raise LabelcleanError(f"The 'batch_size' option must be at least 1. Got {batch_size}.")
        dev = resolve_device(device)
        nets = self.load_networks(dev)  # before decoding: a run without a model fails fast
        shown, files = list_images([Path(p) for p in inputs], Path(images_dir) if images_dir else None)
        prep = self.config["preprocessing"]
        progress = on_progress and (lambda done, total: on_progress("decode", done, total))
        images = decode_for_prediction(files, shown, prep["image_size"], prep["channels"], convert_channels,
                                       self.directory, progress)
        data = TrainingData.build(images, None, len(self.classes), prep["mean"], prep["std"], dev)
        with threads(self.config.get("threads") or torch.get_num_threads()):  # the fit's: the same numerics
            probs = torch.stack([torch.softmax(predict_logits(net, data, batch_size), dim=1) for net in nets]).mean(0)
        confidence, label = probs.topk(top_k, dim=1)
        return prediction_table(shown, self.classes, label.cpu().numpy(), confidence.cpu().numpy())


def prediction_table(paths: list[str], classes: list[str], label: np.ndarray, confidence: np.ndarray) -> pd.DataFrame:
    """``path``, ``predicted_label``, ``predicted_confidence`` (the export's names), then the K-th best
    class as ``predicted_label_K``, ``predicted_confidence_K``, from (n, top_k) class indices and
    probabilities; then the old names of the confidences and K-th labels (deprecated, with a warning).

    Examples
    --------
    >>> table = prediction_table(["a.png"], ["cat", "dog"], np.array([[1, 0]]), np.array([[0.7, 0.3]]))
    >>> table.columns.tolist()[:5]
    ['path', 'predicted_label', 'predicted_confidence', 'predicted_label_2', 'predicted_confidence_2']
    >>> table.columns.tolist()[5:]
    ['confidence', 'label_2', 'confidence_2']
    """
    names = np.asarray(classes, dtype=object)
    table = pd.DataFrame({"path": paths, "predicted_label": names[label[:, 0]],
                          "predicted_confidence": confidence[:, 0]})
    for k in range(2, label.shape[1] + 1):
        table[f"predicted_label_{k}"] = names[label[:, k - 1]]
        table[f"predicted_confidence_{k}"] = confidence[:, k - 1]
    # Until labelclean 0.2 the old names (confidence, label_K, confidence_K) stay: a user's script may read them.
    old = {c: c.removeprefix("predicted_") for c in table.columns[2:]}  # predicted_confidence, predicted_label_2, ...
    log.warning("predict's columns now carry the export's names (predicted_confidence, predicted_label_K, "
                "predicted_confidence_K); the old ones (%s) are still written until labelclean 0.2.",
                ", ".join(old.values()))
    return table.assign(**{name: table[column] for column, name in old.items()})
