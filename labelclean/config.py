"""Every hyper-parameter of a fit in one place, with its unit and reason, and the one function that
decides each setting's effective value. Imports no torch (``labelclean --help`` reads it).

* ``FitConfig`` holds what the user declared; ``None`` means "choose from the data";
* ``Decisions`` is what the data showed (size, image side, device, start) and what the rules decided
  from it during the fit (warm-up length, noise estimate, the guard's actions): a typed record;
* :func:`settings` turns the two into ``Settings``, every effective value with nothing left to choose.
  Nothing else decides a setting; training, evaluation and the outputs read ``Settings``;
* ``DataOptions`` is how ``fit`` and ``pretrain`` read the images and labels (the same object for both).

``config.json`` records all three: ``fit`` (declared), ``auto`` (decisions), ``settings`` (effective); its
``data`` records the ``DataOptions`` with the image folder and the labels CSV.
Nothing here depends on facts a user cannot know (such as the true noise rate).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .auto import (
    CLEAN_SPLIT,
    CPU_MAX_IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    MAX_WARMUP_EPOCHS,
    MIN_WARMUP_EPOCHS,
    PRETRAINED_CPU_MAX_IMAGE_SIZE,
    NoiseEstimate,
    default_arch,
    image_side,
    start_blend,
    start_lr,
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


if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self from Python 3.11 on


class Options:
    """Options that config.json records: to a dict and back, names this version does not know ignored."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # every subclass is a dataclass

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class FitConfig(Options):
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
    align: bool = False  # align the guessed labels to the unlabeled set's given-label distribution
    #                      (dividemix.align, dividemix.unlabeled_prior)
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
    compile_step: bool = False  # torch.compile DivideMix's training step (training.compiled; CUDA graphs on
    #                             CUDA), with fixed-size batches: the last labeled batch of an epoch is filled
    #                             by wrap-around. Off: not yet measured to pay on a GPU; slower on CPUs (docs/speed.md)

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
        if self.selection == "quota" and self.p_threshold not in (None, CLEAN_SPLIT):
            raise LabelcleanError(f"--selection quota labels each class's quota, the samples it puts above "
                                  f"{CLEAN_SPLIT:g}; drop --threshold {self.p_threshold:g} or use --selection gmm.")
        if self.noise_mode not in NOISE_MODES:
            raise bad("noise_mode", f"one of {', '.join(NOISE_MODES)}")
        if self.arch not in ARCHS:
            raise bad("arch", f"one of {', '.join(ARCHS)}")
        if self.device not in DEVICES:
            raise bad("device", f"one of {', '.join(DEVICES)}")
        if self.compile_step and self.method != "dividemix":
            raise LabelcleanError("--compile compiles DivideMix's training step; drop it with --method mlnt.")
        if self.image_size is not None and not 4 <= self.image_size <= 1024:
            raise bad("image_size", "between 4 and 1024 pixels")
        return self

    def check_warmup(self, warmup: int, epochs: int) -> None:
        """Warm-up against the epoch budget, once both are known (given, or chosen by the rules)."""
        if self.method == "mlnt" and not 1 <= warmup <= epochs - self.rounds:
            raise LabelcleanError(
                f"With --method mlnt --warmup must be in [1, epochs - rounds]: the baseline "
                f"model (also the frozen feature model) needs at least one epoch, and every round at "
                f"least one. Got warmup={warmup}, epochs={epochs}, rounds={self.rounds}."
            )
        if not 0 <= warmup < epochs:
            raise LabelcleanError(
                f"The 'warmup' option must be in [0, epochs) so that DivideMix trains after warm-up. "
                f"Got warmup={warmup}, epochs={epochs}."
            )


def warmup_limit(cfg: FitConfig) -> int:
    """Longest adaptive warm-up: MAX_WARMUP_EPOCHS, or a third of a given --epochs."""
    return MAX_WARMUP_EPOCHS if cfg.epochs is None else max(MIN_WARMUP_EPOCHS, cfg.epochs // 3)


@dataclass
class Start:
    """The weights the networks started from (:func:`labelclean.auto.start_kind`)."""

    kind: str = "random"  # 'random', 'self-supervised' or 'supervised'
    source: str | None = None  # the weights file, or torchvision's ImageNet weights
    loaded_tensors: int | None = None
    new_tensors: list[str] | None = None  # the network's tensors the weights did not hold


@dataclass
class Guard:
    """The self-locking guard's recent shares (:mod:`labelclean.rules`) and what it did."""

    labeled: list[float] = field(default_factory=list)  # share of samples in the labeled sets, per epoch
    agreement: list[float] = field(default_factory=list)  # share whose given label the networks predict
    recoveries: int = 0  # warm-up epochs it ran instead of a locked DivideMix epoch
    switched: int | None = None  # the epoch from which a lenient split became the 'quota' selection


@dataclass
class Decisions:
    """What the data showed and what the rules decided from it, in the order a fit learns them; with
    the declared options, all that :func:`settings` reads. Saved in checkpoints and in config.json's ``auto``."""

    n_samples: int = 0  # images the fit trains on
    median_side: int | None = None  # their median shorter side in pixels (data.median_side); None: --image-size
    device: str = "cpu"  # the kind of device the fit started on: 'cpu' or 'cuda'
    start: Start = field(default_factory=Start)
    warmup_agreement: list[float] = field(default_factory=list)  # per adaptive warm-up epoch (auto.warmup_over)
    near_chance: int | None = None  # the warm-up epoch after which only the chance bar kept it going
    warmup: int | None = None  # the warm-up's length, once it ended
    noise: NoiseEstimate | None = None  # estimated when warm-up ended (auto.estimate_noise)
    chosen: dict[str, Any] | None = None  # DivideMix's λu, loss window, selection for it (auto.choose_settings)
    guard: Guard = field(default_factory=Guard)
    quota_share: float | None = None  # the 'quota' share the guard set, in place of 1 − the noise rate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Decisions:
        nested = {"start": Start, "guard": Guard, "noise": NoiseEstimate}
        return cls(**{k: nested[k](**v) if k in nested and v is not None else v for k, v in values.items()})


@dataclass(kw_only=True)
class Settings(FitConfig):
    """Every option's effective value, none left to choose: what training, evaluation and config.json's
    ``settings`` read. Only :func:`settings` makes one."""

    epochs: int = field()
    warmup: int = field()
    lr: float = field()
    start_blend: float = field()
    p_threshold: float = field()
    lambda_u: float = field()
    loss_window: int = field()
    selection: str = field()
    arch: str = field()  # a network, not 'auto'
    image_size: int = field()
    quota_share: float = field()  # share of each class the 'quota' selection labels


def settings(cfg: FitConfig, decided: Decisions) -> Settings:
    """Every setting's effective value: the declared one, else what the rules decide from what the data
    showed so far (``decided``), else the rule's default.

    * image size and network: the images' median side up to the device's cap (auto.image_side), the
      network that suits them (auto.default_arch);
    * learning rate and blend: by the kind of start (auto.start_lr, auto.start_blend; a random start's
      with ``auto`` off);
    * warm-up: DivideMix's adaptive warm-up (:mod:`labelclean.rules`) once it has ended, the longest it
      may take until then; MLNT's baseline is BASELINE_EPOCHS (a third of a short --epochs);
    * epochs: warm-up + ``auto.train_epochs`` (enough for 1,500 optimizer steps);
    * DivideMix's λu, threshold, loss window and selection: chosen from the estimated noise with ``auto``
      once warm-up has ended, the paper's 50%-noise settings (PAPER_SETTINGS) before that or with ``auto``
      off; the quota's share is 1 − the noise rate, or what the guard set.

    >>> settings(FitConfig(warmup=5), Decisions(n_samples=1_438, median_side=8)).epochs  # 5 + 66 epochs of 23 steps
    71
    """
    image_size = cfg.image_size or image_side(decided.median_side, decided.device == "cuda", cfg.pretrained)
    rule = decided.start.kind if cfg.auto else "random"
    warmup = _warmup(cfg, decided)
    epochs = cfg.epochs if cfg.epochs is not None else warmup + train_epochs(decided.n_samples, cfg.batch_size)
    cfg.check_warmup(warmup, epochs)
    return Settings(**{
        **asdict(cfg), **_split_settings(cfg, decided), "epochs": epochs, "warmup": warmup, "image_size": image_size,
        "arch": cfg.arch if cfg.arch != "auto" else default_arch(decided.device, image_size, cfg.pretrained),
        "lr": cfg.lr if cfg.lr is not None else start_lr(rule),
        "start_blend": cfg.start_blend if cfg.start_blend is not None else start_blend(rule),
        "quota_share": _quota_share(decided)})


def _quota_share(decided: Decisions) -> float:
    """Share of each class the 'quota' selection labels: what the guard set, else 1 − the noise rate."""
    if decided.quota_share is not None:
        return decided.quota_share
    return 1 - decided.noise.rate if decided.noise is not None else 1.0


def _warmup(cfg: FitConfig, decided: Decisions) -> int:
    if cfg.warmup is not None:
        return cfg.warmup
    if cfg.method == "mlnt":
        return BASELINE_EPOCHS if cfg.epochs is None else min(BASELINE_EPOCHS, max(1, cfg.epochs // 3))
    return decided.warmup if decided.warmup is not None else warmup_limit(cfg)


def _split_settings(cfg: FitConfig, decided: Decisions) -> dict[str, Any]:
    """DivideMix's λu, threshold, loss window and selection: declared, else chosen (see :func:`settings`)."""
    chosen = {**PAPER_SETTINGS, **(decided.chosen or {} if cfg.auto and cfg.method == "dividemix" else {})}
    if decided.guard.switched is not None:  # a lenient split (rules.Rules.lenient)
        chosen["selection"] = "quota"
    elif chosen["selection"] == "quota" and not may_choose_quota(cfg):
        chosen["selection"] = "gmm"
    return {name: getattr(cfg, name) if getattr(cfg, name) is not None else value for name, value in chosen.items()}


def may_choose_quota(cfg: FitConfig) -> bool:
    """Whether the rules may choose the 'quota' selection: with ``auto``, no --selection, and the split at
    the quota's boundary (CLEAN_SPLIT), since the quota is the samples above it."""
    return cfg.auto and cfg.selection is None and cfg.p_threshold in (None, CLEAN_SPLIT)


@dataclass
class DataOptions(Options):
    """How ``fit`` and ``pretrain`` read the images and their labels (:func:`labelclean.data.read_labels`,
    :func:`labelclean.images.decode_listed`); config.json's ``data`` records them."""

    path_column: str | None = None  # the labels CSV's column of image paths; None: detected (data.PATH_COLUMNS)
    label_column: str | None = None  # its column of labels; None: detected (data.LABEL_COLUMNS)
    skip_missing: bool = False  # leave out rows whose image file is missing, instead of refusing them
    dedupe: bool = False  # keep the first of rows that repeat an image path, instead of refusing them
    skip_bad: bool = False  # leave out images that cannot be decoded, instead of refusing them
    cache_dir: str | Path | None = None  # folder for the decoded images (absolute once given); None: the fit's
    #                                      run directory (new images replace older ones), pretrain's output folder

    def __post_init__(self) -> None:
        self.cache_dir = str(Path(self.cache_dir).resolve()) if self.cache_dir else None

    def validate(self) -> DataOptions:
        """Refuse options that cannot work, before any image is read."""
        if self.path_column is not None and self.path_column == self.label_column:
            raise LabelcleanError(f"--path-column and --label-column both name the column '{self.path_column}'; "
                                  f"name the labels CSV's column of image paths and its column of labels.")
        if self.cache_dir is not None and Path(self.cache_dir).exists() and not Path(self.cache_dir).is_dir():
            raise LabelcleanError(f"The 'cache_dir' option must be a folder; {self.cache_dir} is a file.")
        return self

    @classmethod
    def taken_from(cls, options: dict[str, Any], data: DataOptions | None) -> tuple[DataOptions, dict[str, Any]]:
        """``data`` (default: the defaults) with the fields that ``options`` name replaced, and the other
        options: ``fit(..., skip_missing=True, epochs=30)`` sets a data option and a training option.

        >>> data, rest = DataOptions.taken_from({"skip_missing": True, "epochs": 30}, None)
        >>> data.skip_missing, rest
        (True, {'epochs': 30})
        """
        ours = {f.name for f in fields(cls)}
        return (replace(data or cls(), **{k: v for k, v in options.items() if k in ours}),
                {k: v for k, v in options.items() if k not in ours})


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
