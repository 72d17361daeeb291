"""What both benchmarks share: the description of the machine saved with every result, and
``KEY=VALUE`` overrides of :class:`labelclean.FitConfig` given on the command line."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from dataclasses import fields, replace
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from labelclean.config import FitConfig
from labelclean.training import TrainingData

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """Where and with what a result was measured; timings mean nothing without it."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine slows every timing
        "torch": torch.__version__,
        "labelclean": version("labelclean"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


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
