"""Every hyper-parameter of a fit in one place, with its unit and reason.

The config is saved as ``config.json`` in the run directory and in every checkpoint, so a
run can be resumed and its results explained. Nothing here depends on facts a user cannot
know (such as the true noise rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import LabelcleanError
from .models import ARCHS

NOISE_MODES = ("sym", "asym")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FitConfig:
    """Options of ``labelclean.fit``; the defaults are the DivideMix paper's CIFAR-10 settings.

    Examples
    --------
    >>> FitConfig(epochs=30, warmup=5).validate().lambda_u
    25.0
    """

    # Schedule and optimizer (official code: SGD, momentum 0.9, weight decay 5e-4, lr ÷10 at half).
    epochs: int = 300  # passes over the data, warm-up included
    warmup: int = 10  # epochs of plain cross-entropy on all samples before the first split
    batch_size: int = 64  # labeled and unlabeled samples per step; warm-up uses twice this
    lr: float = 0.02  # SGD learning rate, divided by 10 after half of the epochs
    momentum: float = 0.9
    weight_decay: float = 5e-4

    # DivideMix.
    p_threshold: float = 0.5  # clean probability above which a sample joins the labeled set
    lambda_u: float = 25.0  # weight of the unlabeled (MSE) loss once ramped up
    rampup_epochs: float = 16.0  # epochs over which lambda_u ramps linearly from 0 after warm-up
    temperature: float = 0.5  # sharpening temperature T of refined and guessed labels
    alpha: float = 4.0  # mixup: lambda ~ Beta(alpha, alpha), then max(lambda, 1 - lambda)
    noise_mode: str = "sym"  # 'asym' adds the confidence penalty during warm-up (class-pair noise)
    loss_window: int = 1  # epochs of normalized losses averaged before the GMM (paper: 5 at 90% noise)

    # Data and network.
    arch: str = "auto"  # see models.ARCHS; 'auto' picks by device and image size
    image_size: int | None = None  # side in pixels; None = median shorter side of the images (≤ 64 on CPU)
    flip: bool = True  # random horizontal flips; turn off where mirroring changes the class
    device: str = "auto"  # 'auto' = CUDA when available
    seed: int = 0
    eval_batch_size: int = 512  # samples per forward pass in evaluation (no gradients kept)

    def validate(self) -> FitConfig:
        """Check every value before any work starts; raise LabelcleanError naming the option."""

        def bad(name: str, rule: str) -> LabelcleanError:
            return LabelcleanError(f"The '{name}' option must be {rule}. Got {getattr(self, name)!r}.")

        for name in ("epochs", "batch_size", "eval_batch_size", "loss_window"):
            if getattr(self, name) < 1:
                raise bad(name, "at least 1")
        if not 0 <= self.warmup < self.epochs:
            raise LabelcleanError(
                f"The 'warmup' option must be in [0, epochs) so that DivideMix trains after warm-up. "
                f"Got warmup={self.warmup}, epochs={self.epochs}."
            )
        for name in ("lr", "alpha", "temperature"):
            if not getattr(self, name) > 0:
                raise bad(name, "greater than 0")
        for name in ("momentum", "p_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, "in [0, 1]")
        for name in ("weight_decay", "lambda_u", "rampup_epochs"):
            if getattr(self, name) < 0:
                raise bad(name, "at least 0")
        if self.noise_mode not in NOISE_MODES:
            raise bad("noise_mode", f"one of {', '.join(NOISE_MODES)}")
        if self.arch not in ARCHS:
            raise bad("arch", f"one of {', '.join(ARCHS)}")
        if self.device not in DEVICES:
            raise bad("device", f"one of {', '.join(DEVICES)}")
        if self.image_size is not None and not 4 <= self.image_size <= 1024:
            raise bad("image_size", "between 4 and 1024 pixels")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
