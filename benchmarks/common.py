"""What the benchmarks share: the record saved with every result (commit, machine, command, date,
seeds: :func:`record`), the check that merged seeds come from one commit, the split of a data set by
source image, and ``KEY=VALUE`` overrides of :class:`labelclean.FitConfig` given on the command line."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from dataclasses import fields, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import typer
from sklearn.model_selection import train_test_split

from labelclean.config import FitConfig
from labelclean.training import TrainingData

RESULTS = Path(__file__).resolve().parent / "results"
REPOSITORY = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git(*args: str) -> str | None:
    """The output of a git command in this checkout, or None where there is no git or no repository."""
    try:
        done = subprocess.run(["git", "-C", str(REPOSITORY), *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> tuple[str | None, bool | None]:
    """The checked-out commit and whether tracked files differ from it (None, None outside a git checkout).
    Untracked files and ``benchmarks/results/`` do not count: the result files that earlier runs rewrote
    are outputs, not the code being measured."""
    head = git("rev-parse", "HEAD")
    results = f":(exclude){RESULTS.relative_to(REPOSITORY).as_posix()}"
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", results) if head else None
    return head, None if status is None else bool(status)


def installed_version(package: str) -> str | None:
    """The package's installed version; None when it runs from a checkout that was not pip-installed
    (a device machine that cannot reach PyPI): the commit then says what ran."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine(device: torch.device) -> dict[str, Any]:
    """The machine and software a result was measured with; timings mean nothing without it."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine slows every timing
        "torch": torch.__version__,
        "labelclean": installed_version("labelclean"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def record(device: torch.device, seeds: list[int] | None = None) -> dict[str, Any]:
    """What every result file starts with: the commit measured (and whether the tree had uncommitted
    changes), the command, the date, the seeds and :func:`machine`."""
    head, dirty = commit()
    return {"commit": head, "dirty": dirty, "command": shlex.join(["python", *sys.argv]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seeds": seeds,
            "machine": machine(device)}


def same_commit(earlier: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse to merge seeds into ``path`` unless both runs measured the same committed code."""
    if earlier.get("commit") is None or earlier.get("dirty") or now["dirty"] or earlier["commit"] != now["commit"]:
        def name(r: dict[str, Any]) -> str:
            return "no recorded commit" if r.get("commit") is None else r["commit"][:12] + " (dirty)" * bool(r["dirty"])
        raise typer.BadParameter(f"{path} was measured at {name(earlier)}, this run at {name(now)}: seeds are "
                                 f"merged only within one clean commit; write to a new --results folder or --tag.")


def split_by_source(sources: np.ndarray, labels: np.ndarray, test_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of a training part and a held-out part that share no source image (copies of one
    source, e.g. shifted twins, stay together), stratified by label, ``test_fraction`` of the sources held out.
    With every row its own source this is ``train_test_split`` of the rows."""
    group, _ = pd.factorize(pd.Series(sources))  # sources numbered in the order they first appear
    first = np.unique(group, return_index=True)[1]
    _, test = train_test_split(np.arange(len(first)), test_size=int(test_fraction * len(first)),
                               stratify=np.asarray(labels)[first], random_state=seed)
    is_test = np.isin(group, test)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def rows(data: TrainingData, idx: np.ndarray | torch.Tensor) -> TrainingData:
    """The samples ``idx`` of ``data`` as a TrainingData of their own (a K-fold part, a timing batch)."""
    index = torch.as_tensor(idx, device=data.images.device)
    labels = None if data.labels is None else data.labels[index.to(data.device)]
    return replace(data, images=data.images[index], labels=labels)


def parse_overrides(text: str, config: type = FitConfig) -> dict[str, Any]:
    """``"epochs=2,lambda_u=0"`` → ``{"epochs": 2, "lambda_u": 0.0}``, typed by the annotations of the fields of
    ``config`` (a dataclass: FitConfig, PretrainConfig), e.g. 'float | None' for a rule-chosen value."""
    annotations = {f.name: str(f.type) for f in fields(config)}
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in annotations:
            raise typer.BadParameter(f"'{item}' is not KEY=VALUE with KEY a {config.__name__} field "
                                     f"({', '.join(sorted(annotations))}).")
        annotation = annotations[key]
        kind = str if "str" in annotation else float if "float" in annotation else int
        try:
            overrides[key] = value.lower() in ("1", "true", "yes") if annotation == "bool" else kind(value)
        except ValueError:
            raise typer.BadParameter(f"'{item}': {key} must be {kind.__name__}.") from None
    return overrides
