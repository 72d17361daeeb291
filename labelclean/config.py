"""Every hyper-parameter of a fit in one place, with its unit and reason, and the one step that
decides each setting's effective value.

``FitConfig`` holds what the user declared; ``None`` means "choose from the data". Two functions
fill those in, and nothing else does:

* :func:`for_device` — once, before training: image size and network, from the device and the images'
  median shorter side;
* :func:`resolve` — the schedule (from the data size) and DivideMix's λu, threshold and loss window
  (from the noise estimated after warm-up, by the rules in :mod:`labelclean.auto`), as far as decided.

The declared config and the effective one (``resolve``'s) are both saved in ``config.json``
(``fit`` and ``settings``). Nothing here depends on facts a user cannot know (such as the true
noise rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .auto import (
    CLEAN_SPLIT,
    CPU_MAX_IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    MAX_WARMUP_EPOCHS,
    MIN_WARMUP_EPOCHS,
    PRETRAINED_CPU_MAX_IMAGE_SIZE,
    default_arch,
    image_side,
    train_epochs,
)
from .errors import LabelcleanError

METHODS = ("dividemix", "mlnt")
MENTOR_FILTERS = ("disagree", "gmm", "none")
NOISE_MODES = ("auto", "sym", "asym")
SELECTIONS = ("gmm", "quota")
# What DivideMix uses for λu, threshold, loss window and selection with --no-auto: the paper's CIFAR-10
# settings at 50% noise (also the threshold with --auto, whose rules leave it at the paper's 0.5).
PAPER_SETTINGS = {"lambda_u": 25.0, "p_threshold": CLEAN_SPLIT, "loss_window": 1, "selection": "gmm"}
DEVICES = ("auto", "cpu", "cuda")
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50")  # --pretrained takes their ImageNet weights
ARCHS = ("auto", "small_cnn", "preact_resnet18", *TORCHVISION_ARCHS)  # built by models.build_model
IMAGE_SIZE_RULE = (f"median of the data, at most {CPU_MAX_IMAGE_SIZE} on CPU ({PRETRAINED_CPU_MAX_IMAGE_SIZE} "
                   f"with --pretrained), {MAX_IMAGE_SIZE} on GPU")  # auto.image_side, for --help
BASELINE_EPOCHS = 10  # MLNT's baseline without --warmup: the DivideMix paper's CIFAR warm-up


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
    #                            baseline); None: until the networks stop improving (auto.warmup_over)
    batch_size: int = 64  # labeled and unlabeled samples per step; warm-up uses twice this
    lr: float | None = None  # SGD learning rate, divided by 10 after half of the epochs; None: the paper's
    #                          0.02, or 0.002 for weights trained with labels on other images (auto.start_lr)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    start_blend: float | None = None  # share of each loaded layer's direction kept, the rest from a random
    #                                   start (models.blend_start); None: 0.5 from self-supervised weights,
    #                                   1 otherwise (auto.start_blend)

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
    first_order: bool = False  # ignore second-order terms of the meta-gradient (cheaper: docs/methods.md)

    # Data and network.
    arch: str = "auto"  # see models.ARCHS; 'auto' picks by device and image size
    pretrained: bool = False  # start from torchvision's ImageNet weights of `arch` (models.imagenet_weights)
    image_size: int | None = None  # side in pixels; None = median shorter side of the images, at most
    #                                auto.image_side's cap (32 px on CPU, 112 with `pretrained`; 224 on GPU)
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
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise bad(name, "greater than 0")
        if self.start_blend is not None and not 0 < self.start_blend <= 1:
            raise bad("start_blend", "in (0, 1]")
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


def for_device(cfg: FitConfig, device_type: str, median_side: int) -> FitConfig:
    """``cfg`` with its image size and network fixed: by default the images' median shorter side
    (``data.median_side``) up to the cap for the device and start (:func:`labelclean.auto.image_side`)
    and the network that suits them (:func:`labelclean.auto.default_arch`)."""
    size = cfg.image_size or image_side(median_side, device_type == "cuda", cfg.pretrained)
    arch = cfg.arch if cfg.arch != "auto" else default_arch(device_type, size, cfg.pretrained)
    return replace(cfg, image_size=size, arch=arch)


def warmup_limit(cfg: FitConfig) -> int:
    """Longest adaptive warm-up: MAX_WARMUP_EPOCHS, or a third of a given --epochs."""
    return MAX_WARMUP_EPOCHS if cfg.epochs is None else max(MIN_WARMUP_EPOCHS, cfg.epochs // 3)


def resolve(cfg: FitConfig, n_samples: int, decided: dict[str, Any] | None = None) -> FitConfig:
    """Every setting's effective value: the declared one, else what the rules decided from the data
    so far (``decided``: the fit's ``auto`` record), else the rule's default.

    * warm-up: DivideMix's adaptive warm-up (:mod:`labelclean.auto`) once it has ended, the longest it
      may take until then; MLNT's baseline is BASELINE_EPOCHS (a third of a short --epochs);
    * epochs: warm-up + ``auto.train_epochs`` (enough for 1,500 optimizer steps);
    * DivideMix's λu, threshold and loss window: chosen from the estimated noise with ``auto`` once
      warm-up has ended, the paper's 50%-noise settings (PAPER_SETTINGS) before that or with
      ``auto`` off; MLNT reads only the threshold (its ``'gmm'`` mentor filter).

    >>> resolve(FitConfig(warmup=5), n_samples=1_438).epochs  # 5 + 66 epochs of 23 steps
    71
    """
    decided = decided or {}
    if cfg.method == "mlnt":
        short = BASELINE_EPOCHS if cfg.epochs is None else min(BASELINE_EPOCHS, max(1, cfg.epochs // 3))
        warmup = cfg.warmup if cfg.warmup is not None else short
        settings = {"p_threshold": PAPER_SETTINGS["p_threshold"]}
    else:
        warmup = cfg.warmup if cfg.warmup is not None else decided.get("warmup", warmup_limit(cfg))
        settings = {**PAPER_SETTINGS, **decided.get("settings", {})} if cfg.auto else PAPER_SETTINGS
    epochs = cfg.epochs if cfg.epochs is not None else warmup + train_epochs(n_samples, cfg.batch_size)
    cfg.check_warmup(warmup, epochs)
    return replace(cfg, warmup=warmup, epochs=epochs,
                   **{name: value for name, value in settings.items() if getattr(cfg, name) is None})


@dataclass
class PretrainConfig:
    """Options of :func:`pretrain`; SimCLR's where they suit small data on a CPU (see docs/photos.md)."""

    epochs: int = 100  # passes over the images
    batch_size: int = 256  # N images per step, 2N views; the other 2N − 2 views are each view's negatives
    temperature: float = 0.5  # τ of NT-Xent (SimCLR's for CIFAR-10)
    lr: float = 0.3  # SGD learning rate at batch 256 (SimCLR: 0.3·N/256), cosine-annealed to 0 over all steps
    weight_decay: float = 1e-4
    projection_dim: int = 128  # output of the projection head g
    crop_scale: float | None = None  # a crop covers between this share and all of the image's area;
    #                                  None: by image size (auto.crop_scale: 0.2, 0.5 below 16 px)
    flip: bool = True  # random horizontal flips; turn off where mirroring changes the class
    arch: str = "auto"  # the network the fit will train (config.ARCHS); 'auto' chooses as fit does
    image_size: int | None = None  # None: as fit chooses (median shorter side, ≤ 32 px on CPU)
    device: str = "auto"
    seed: int = 0

    def validate(self) -> PretrainConfig:
        def bad(name: str, rule: str) -> LabelcleanError:
            return LabelcleanError(f"The '{name}' option must be {rule}. Got {getattr(self, name)!r}.")

        for name in ("epochs", "projection_dim"):
            if getattr(self, name) < 1:
                raise bad(name, "at least 1")
        if self.batch_size < 2:
            raise bad("batch_size", "at least 2 (each view needs other images as negatives)")
        for name in ("temperature", "lr"):
            if not getattr(self, name) > 0:
                raise bad(name, "greater than 0")
        if self.weight_decay < 0:
            raise bad("weight_decay", "at least 0")
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1:
            raise bad("crop_scale", "in (0, 1]")
        if self.arch not in ARCHS:
            raise bad("arch", f"one of {', '.join(ARCHS)}")
        FitConfig(image_size=self.image_size, device=self.device).validate()
        return self
