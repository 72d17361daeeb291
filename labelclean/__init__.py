"""labelclean: find and fix wrong labels in image classification data with DivideMix or MLNT."""

from .api import demo, fit
from .config import FitConfig
from .errors import LabelcleanError
from .pretrain import PretrainConfig, pretrain
from .run import Run

__all__ = ["FitConfig", "LabelcleanError", "PretrainConfig", "Run", "demo", "fit", "pretrain"]
