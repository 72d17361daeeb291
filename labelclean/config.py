"""Every hyper-parameter of a fit in one place, with its unit and reason.

The config is saved as ``config.json`` in the run directory and in every checkpoint, so a
run can be resumed and its results explained. Nothing here depends on facts a user cannot
know (such as the true noise rate): a ``None`` value is chosen from the data by the rules in
:mod:`labelclean.auto` (the schedule always; λu, the threshold and the loss window with ``auto``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import LabelcleanError
from .models import ARCHS

METHODS = ("dividemix", "mlnt")
MENTOR_FILTERS = ("disagree", "gmm", "none")
NOISE_MODES = ("auto", "sym", "asym")
SELECTIONS = ("gmm", "quota")
# What DivideMix uses for λu, threshold, loss window and selection with --no-auto: the paper's CIFAR-10
# settings at 50% noise (also the threshold with --auto, whose rules leave it at the paper's 0.5).
PAPER_SETTINGS = {"lambda_u": 25.0, "p_threshold": 0.5, "loss_window": 1, "selection": "gmm"}
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class FitConfig:
    """Options of ``labelclean.fit``: the DivideMix paper's settings where they do not depend on the
    data; ``None`` where they do (chosen by :mod:`labelclean.auto`); for MLNT, those of the MLNT
    paper and its official code (``LiJunnan1992/MLNT``, ``main.py``).

    Examples
    --------
    >>> FitConfig(epochs=30, warmup=5).validate().lambda_u is None  # chosen after warm-up
    True
    """

    method: str = "dividemix"  # 'dividemix' (dividemix.py) or 'mlnt' (mlnt.py)

    # Schedule and optimizer (official code: SGD, momentum 0.9, weight decay 5e-4, lr ÷10 at half).
    epochs: int | None = None  # passes over the data, warm-up included; None: auto.train_epochs after warm-up
    warmup: int | None = None  # epochs of plain cross-entropy on all samples (DivideMix's warm-up, MLNT's
    #                            baseline); None: until the networks stop improving (auto.best_warmup_epoch)
    batch_size: int = 64  # labeled and unlabeled samples per step; warm-up uses twice this
    lr: float = 0.02  # SGD learning rate, divided by 10 after half of the epochs
    momentum: float = 0.9
    weight_decay: float = 5e-4

    # DivideMix.
    auto: bool = True  # choose None-valued lambda_u, loss_window, selection from the estimated noise
    #                    (auto.choose_settings) and guard against locked or lenient splits; off: PAPER_SETTINGS
    p_threshold: float | None = None  # clean probability above which a sample joins the labeled set
    lambda_u: float | None = None  # weight of the unlabeled (MSE) loss once ramped up
    rampup_epochs: float = 16.0  # epochs over which lambda_u ramps linearly from 0 after warm-up
    temperature: float = 0.5  # sharpening temperature T of refined and guessed labels
    alpha: float = 4.0  # mixup: lambda ~ Beta(alpha, alpha), then max(lambda, 1 - lambda)
    noise_mode: str = "auto"  # 'asym': class-pair noise (confidence penalty in warm-up, λu 0 with auto);
    #                           'sym': any other class; 'auto': detected after warm-up (auto.estimate_noise)
    loss_window: int | None = None  # epochs of normalized losses averaged before the GMM (paper: 5 at 90%)
    selection: str | None = None  # labeled set: 'gmm' (the paper: clean_prob > p_threshold from the GMM) or
    #                               'quota' (per class, the lowest losses, as many as the network predicts the
    #                               given label for; auto.class_quota); None: --auto ('quota' at high noise)

    # MLNT (defaults of the official main.py). Its meta epochs (after the baseline) are split evenly
    # into `rounds`; each round has its own lr step (÷10 at half), meta-weight ramp and EMA schedule.
    meta_sets: int = 10  # M synthetic noisy label sets per mini-batch, one fast-weight step each
    perturb_ratio: float = 0.5  # ρ: fraction of a batch whose label each synthetic set replaces
    neighbours: int = 10  # k: a replaced label comes from one of the k nearest samples in the batch
    meta_lr: float = 0.02  # α: step size of the inner SGD step that gives the fast weights
    meta_weight: float = 1.0  # weight of the consistency (meta) loss once ramped up
    meta_rampup: float = 5.0  # epochs from a round's start over which the meta weight ramps up as
    #                           exp(-5(1-t)^2) and the teacher's EMA decay stays at `ema_decay`
    ema_decay: float = 0.99  # teacher = EMA of the student's weights, per step, during the ramp
    ema_decay_late: float = 0.999  # EMA decay after the ramp (official code: 0.99 → 0.999)
    rounds: int = 2  # training rounds; each after the first restarts from the previous teacher (the
    #                  mentor) and leaves out the samples it considers mislabeled:
    mentor_filter: str = "disagree"  # 'disagree': it predicts another class than the given label;
    #   'gmm': its GMM clean probability is ≤ p_threshold (can drop whole classes under class-pair
    #   noise, see mlnt.py); 'none': keep every sample
    first_order: bool = False  # ignore second-order terms of the meta-gradient (cheaper, see README)

    # Data and network.
    arch: str = "auto"  # see models.ARCHS; 'auto' picks by device and image size
    image_size: int | None = None  # side in pixels; None = median shorter side of the images (≤ 32 on CPU, ≤ 224 on GPU)
    flip: bool = True  # random horizontal flips; turn off where mirroring changes the class
    device: str = "auto"  # 'auto' = CUDA when available
    seed: int = 0
    eval_batch_size: int = 512  # samples per forward pass in evaluation (no gradients kept)

    def validate(self) -> FitConfig:
        """Check every value before any work starts; raise LabelcleanError naming the option."""

        def bad(name: str, rule: str) -> LabelcleanError:
            return LabelcleanError(f"The '{name}' option must be {rule}. Got {getattr(self, name)!r}.")

        if self.method not in METHODS:
            raise bad("method", f"one of {', '.join(METHODS)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "loss_window", "meta_sets", "neighbours",
                     "rounds"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise bad(name, "at least 1")
        if self.epochs is not None and self.warmup is None and self.epochs < 3:
            raise LabelcleanError(f"With --epochs {self.epochs} also set --warmup: choosing the warm-up needs at "
                                  f"least 2 warm-up epochs and 1 more to train.")
        if self.warmup is not None and self.epochs is not None:
            self.check_warmup(self.warmup, self.epochs)
        for name in ("lr", "alpha", "temperature", "meta_lr"):
            if not getattr(self, name) > 0:
                raise bad(name, "greater than 0")
        for name in ("momentum", "p_threshold", "perturb_ratio", "ema_decay", "ema_decay_late"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) <= 1:
                raise bad(name, "in [0, 1]")
        for name in ("weight_decay", "lambda_u", "rampup_epochs", "meta_weight", "meta_rampup"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise bad(name, "at least 0")
        if self.mentor_filter not in MENTOR_FILTERS:
            raise bad("mentor_filter", f"one of {', '.join(MENTOR_FILTERS)}")
        if self.selection is not None and self.selection not in SELECTIONS:
            raise bad("selection", f"one of {', '.join(SELECTIONS)}")
        if self.noise_mode not in NOISE_MODES:
            raise bad("noise_mode", f"one of {', '.join(NOISE_MODES)}")
        if self.arch not in ARCHS:
            raise bad("arch", f"one of {', '.join(ARCHS)}")
        if self.device not in DEVICES:
            raise bad("device", f"one of {', '.join(DEVICES)}")
        if self.image_size is not None and not 4 <= self.image_size <= 1024:
            raise bad("image_size", "between 4 and 1024 pixels")
        return self

    def check_warmup(self, warmup: int, epochs: int) -> None:
        """Warm-up against the epoch budget, once both are known (given, or chosen by the rules)."""
        if self.method == "mlnt" and not 1 <= warmup <= epochs - self.rounds:
            raise LabelcleanError(
                f"With --method mlnt the 'warmup' option must be in [1, epochs - rounds]: the baseline "
                f"model (also the frozen feature model) needs at least one epoch, and every round at "
                f"least one. Got warmup={warmup}, epochs={epochs}, rounds={self.rounds}."
            )
        if not 0 <= warmup < epochs:
            raise LabelcleanError(
                f"The 'warmup' option must be in [0, epochs) so that DivideMix trains after warm-up. "
                f"Got warmup={warmup}, epochs={epochs}."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
