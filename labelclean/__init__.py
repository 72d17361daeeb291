"""labelclean: find and fix wrong labels in image classification data with DivideMix or MLNT."""

from .api import demo, fit
from .config import FitConfig
from .errors import LabelcleanError
from .run import Run

__all__ = ["FitConfig", "LabelcleanError", "Run", "demo", "fit"]
