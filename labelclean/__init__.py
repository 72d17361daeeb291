"""labelclean: find and fix wrong labels in image classification data with DivideMix."""

from .api import Run, fit
from .config import FitConfig
from .errors import LabelcleanError
from .pretrain import PretrainConfig, pretrain

__all__ = ["FitConfig", "LabelcleanError", "PretrainConfig", "Run", "fit", "pretrain"]
