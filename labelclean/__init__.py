"""labelclean: find and fix wrong labels in image classification data with DivideMix or MLNT."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .config import DataOptions, FitConfig, PretrainConfig
from .errors import LabelcleanError

__all__ = ["DataOptions", "FitConfig", "LabelcleanError", "PretrainConfig", "Run", "demo", "fit", "pretrain"]
_LAZY = {"Run": "run", "demo": "api", "fit": "api", "pretrain": "api"}  # these import torch: on first use


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'labelclean' has no attribute {name!r}")
    return getattr(import_module(f".{_LAZY[name]}", __name__), name)
