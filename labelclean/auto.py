"""The rules behind labelclean's defaults: the image size, learning rate and blend for the networks' start,
how long to train, when warm-up ends, which DivideMix settings suit the estimated noise (``--auto``),
which samples form the labeled set at very high noise, when a run's split has locked itself or become
too lenient, and which export threshold to suggest when the final split is too lenient.

The paper tuned its settings per CIFAR noise rate (its appendix lists λu and the threshold for
each); a user knows neither their noise rate nor its kind, and their data is rarely CIFAR-sized.
So every rule here reads the data — its size, its number of classes, and what the warmed-up
networks predict — never a dataset name. Each function is pure, so each rule is unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The boundary of every split: above it a sample is labeled in training (the paper's threshold, the
# GMM's own decision boundary); the quota's ranks straddle it; the export flags what is below it.
CLEAN_SPLIT = 0.5

# Image size: the images' median side, capped where a larger one costs more than it gives
# (docs/photos.md: a CPU small-CNN step at 54 px costs 3x one at 32 px; ImageNet weights need larger images).
CPU_MAX_IMAGE_SIZE = 32
PRETRAINED_CPU_MAX_IMAGE_SIZE = 112
MAX_IMAGE_SIZE = 224
CIFAR_NET_SIDE = 64  # up to this, a GPU trains the paper's PreAct ResNet-18 (made for 32-px CIFAR)

# The start: the paper's lr for random and self-supervised starts (as C2D), a tenth of it to fine-tune
# weights trained with labels (as DivideMix on Clothing1M), so the first noisy epochs keep what they know.
PAPER_LR = 0.02
FINE_TUNE_LR = 0.002
STARTS = ("random", "self-supervised", "supervised")
# A self-supervised start keeps half of each layer's direction, the rest from the random start: taken whole
# it cost F1 at 40% noise and kept its gain at 80% only when blended (docs/photos.md, "What changes with a
# learned start"; Ash & Adams, NeurIPS 2020, shrink warm starts for the same reason).
SELF_SUPERVISED_BLEND = 0.5

# SimCLR's crops (simclr.py) cover at least this share of the area; small images keep half, since a fifth
# of an 8 px digit made features worse than a random encoder's (docs/photos.md).
CROP_SCALE = 0.2
SMALL_IMAGE_CROP_SCALE = 0.5
SMALL_IMAGE = 16  # px: below this, crops keep at least half the image

# Schedule: counted in optimizer steps, since epochs of a small set are short (docs/methods.md, "--auto").
MIN_TRAIN_STEPS = 1500  # after warm-up, at least this many steps
MIN_TRAIN_EPOCHS = 30  # ... and at least this many passes (large data: each sample seen 30 times)
MAX_TRAIN_EPOCHS = 290  # ... and at most the paper's 300 epochs minus its 10 of warm-up

# Warm-up ends WARMUP_PATIENCE epochs after the agreement with the given labels last rose by WARMUP_MIN_GAIN
# (later gains come from memorizing wrong labels), but not before it beats chance by LEAVE_CHANCE: a
# plateau near chance is where learning starts (docs/high-noise.md, "On a GPU: a warm-up that ended near
# chance").
WARMUP_PATIENCE = 3
LEAVE_CHANCE = 0.05
WARMUP_MIN_GAIN = 0.005
MIN_WARMUP_EPOCHS = 2
MAX_WARMUP_EPOCHS = 30

# Noise-adaptive settings (the paper's appendix, by estimated noise rate and number of classes).
MANY_CLASSES = 20  # above this, the CIFAR-100 column: larger λu at every noise rate
PAIR_SHARE = 0.5  # disagreements concentrated on one class per given class → class-pair noise
HIGH_NOISE = 0.6  # from here the per-epoch split is unstable: average losses over LOSS_WINDOW epochs,
#                   and the labeled set is a class-wise quota instead of the GMM's clean side
LOSS_WINDOW = 5  # the official code averages the last 5 epochs' losses at 90% noise

# The self-locking guard fires when the labeled set stays LOCK_GAP below the networks' agreement for
# LOCK_EPOCHS epochs (healthy runs stayed within 0.045: docs/benchmarks.md, "The self-locking guard").
LOCK_GAP = 0.1
LOCK_EPOCHS = 3
MAX_RECOVERIES = 3  # extra warm-up epochs the guard may add in one run
# Its other side, and the export's threshold hint: a split that labels LENIENT_GAP more than the networks
# agree with holds mostly wrong labels (docs/high-noise.md).
LENIENT_GAP = 0.25
# Below this many images of at most CIFAR_NET_SIDE, at HIGH_NOISE or more, the small CNN did better than PreAct
# ResNet-18 from a random start (1,438 digits at 8 and 28 px; the paper's ResNet is measured on 50,000).
SMALL_SET = 10_000


def image_side(median_side: int, cuda: bool, pretrained: bool) -> int:
    """Default image side: the images' median shorter side, at most 224 px on a GPU, and on a CPU
    at most 32 px (112 px for a start from ImageNet weights); never enlarged.

    >>> image_side(500, False, False), image_side(500, False, True), image_side(500, True, True), image_side(8, True, True)
    (32, 112, 224, 8)
    """
    if cuda:
        return min(median_side, MAX_IMAGE_SIZE)
    return min(median_side, PRETRAINED_CPU_MAX_IMAGE_SIZE if pretrained else CPU_MAX_IMAGE_SIZE)


def default_arch(device_type: str, image_size: int, pretrained: bool = False) -> str:
    """The paper's PreAct ResNet-18 for small images on a GPU, ResNet-18 for large ones, a small CNN on CPU;
    ResNet-18 for a start from ImageNet weights (the cheapest torchvision publishes them for)."""
    if pretrained:
        return "resnet18"
    if device_type != "cuda":
        return "small_cnn"
    return "preact_resnet18" if image_size <= CIFAR_NET_SIDE else "resnet18"


def network_hint(arch: str, image_size: int, n_samples: int, noise_rate: float, start: str) -> str | None:
    """Advice to train the small CNN, when a ResNet from a random start meets fewer than SMALL_SET images of
    at most CIFAR_NET_SIDE and the networks estimate HIGH_NOISE or more after warm-up: there the small CNN did
    better (docs/high-noise.md). None elsewhere; at lower noise the ResNet did as well or better.

    >>> network_hint("preact_resnet18", 28, 1_438, 0.83, "random")[:41]
    'Warm-up estimated 83% noise on 1,438 imag'
    >>> network_hint("small_cnn", 28, 1_438, 0.83, "random"), network_hint("preact_resnet18", 28, 1_438, 0.4, "random")
    (None, None)
    """
    if (arch == "small_cnn" or start != "random" or image_size > CIFAR_NET_SIDE or n_samples >= SMALL_SET
            or noise_rate < HIGH_NOISE):
        return None
    return (f"Warm-up estimated {noise_rate:.0%} noise on {n_samples:,} images of {image_size} px. At such noise "
            f"on so few small images the small CNN did better than {arch} (docs/high-noise.md); "
            "if this fit's flags look poor, fit again with --arch small_cnn.")


def start_kind(loaded: bool, with_classifier: bool) -> str:
    """How the networks start: 'random'; 'supervised' from weights that come with a classifier (trained
    with labels, on other images: ImageNet); 'self-supervised' from weights without one
    (``labelclean pretrain`` saves none).

    >>> start_kind(False, False), start_kind(True, False), start_kind(True, True)
    ('random', 'self-supervised', 'supervised')
    """
    return "random" if not loaded else "supervised" if with_classifier else "self-supervised"


def start_lr(kind: str) -> float:
    """Learning rate for a start of this kind (see :func:`start_kind`).

    >>> [start_lr(kind) for kind in STARTS]
    [0.02, 0.02, 0.002]
    """
    return FINE_TUNE_LR if kind == "supervised" else PAPER_LR


def start_blend(kind: str) -> float:
    """Share of each loaded layer's direction a start of this kind keeps (see :func:`start_kind`).

    >>> [start_blend(kind) for kind in STARTS]
    [1.0, 0.5, 1.0]
    """
    return SELF_SUPERVISED_BLEND if kind == "self-supervised" else 1.0


def crop_scale(image_size: int) -> float:
    """Smallest share of the image area a pretraining crop covers.

    >>> crop_scale(8), crop_scale(32)
    (0.5, 0.2)
    """
    return SMALL_IMAGE_CROP_SCALE if image_size < SMALL_IMAGE else CROP_SCALE


def train_epochs(n_samples: int, batch_size: int) -> int:
    """Epochs after warm-up: enough for MIN_TRAIN_STEPS optimizer steps, within [30, 290] epochs.

    >>> train_epochs(50_000, 64), train_epochs(1_438, 64), train_epochs(400, 64)
    (30, 66, 215)
    """
    steps_per_epoch = math.ceil(n_samples / batch_size)
    return min(MAX_TRAIN_EPOCHS, max(MIN_TRAIN_EPOCHS, math.ceil(MIN_TRAIN_STEPS / steps_per_epoch)))


def best_warmup_epoch(agreement: Sequence[float]) -> int:
    """Index of the best warm-up epoch so far: the first whose agreement beat every earlier one by
    WARMUP_MIN_GAIN (later epochs within the gain are not better, only further into memorizing).

    >>> best_warmup_epoch([.1, .3, .5, .58, .57, .582, .56])
    3
    """
    best, best_value = 0, -math.inf
    for epoch, value in enumerate(agreement):
        if value > best_value + WARMUP_MIN_GAIN:
            best, best_value = epoch, value
    return best


def warmup_over(agreement: Sequence[float], chance: float = 0.0, max_epochs: int = MAX_WARMUP_EPOCHS) -> bool:
    """Should warm-up end after these epochs? WARMUP_PATIENCE epochs without a new best once the best
    beats ``chance`` (the most common given label's share) by LEAVE_CHANCE, or ``max_epochs``.

    >>> warmup_over([.1, .3, .5, .58, .57, .582, .56]), warmup_over([.1, .3, .5])
    (True, False)
    >>> warmup_over([.10, .13, .12, .13, .12, .13], chance=0.1)  # near chance: not learned yet
    False
    """
    done, best = len(agreement), best_warmup_epoch(agreement)
    if done < MIN_WARMUP_EPOCHS or done >= max_epochs:
        return done >= max_epochs
    return agreement[best] >= chance + LEAVE_CHANCE and done - 1 - best >= WARMUP_PATIENCE


@dataclass
class NoiseEstimate:
    """What the warmed-up networks say about the label noise."""

    rate: float  # share of samples whose given label the networks do not predict
    pair_share: float  # among those, the share on one partner per class, partners distinct (1 = class pairs)
    kind: str  # 'pair' (class-pair flips) or 'spread' (any other class)


def estimate_noise(predicted: np.ndarray, given: np.ndarray, num_classes: int) -> NoiseEstimate:
    """Noise rate and kind from the networks' predictions (n,) and the given labels (n,).

    ``pair_share`` is the share of the disagreements (given label ≠ prediction) that one pairing of
    classes explains: each given class paired with one predicted class, no predicted class with two
    given classes (:func:`pair_share`). Class-pair flips send a class's wrong labels to its partner,
    so nearly all disagreements sit on such pairs; flips to any other class spread over k−1 classes.
    Networks that predict few classes concentrate every class's disagreements on the same few
    predictions, which one pairing cannot explain (docs/high-noise.md). With three or fewer classes
    every kind of flip looks concentrated, so the kind is only called 'pair' above three classes.
    """
    disagree = predicted != given
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (given[disagree], predicted[disagree]), 1)
    share = pair_share(counts)
    kind = "pair" if num_classes > 3 and share >= PAIR_SHARE else "spread"
    return NoiseEstimate(float(disagree.mean()), share, kind)


def pair_share(counts: np.ndarray) -> float:
    """Share of the disagreements ``counts`` (k, k: given class × predicted class, zero diagonal) on the
    pairing of classes that holds the most: each given class with at most one predicted class and each
    predicted class with at most one given class (the assignment problem); 0 without disagreements.

    >>> pair_share(np.array([[0, 9, 1], [9, 0, 1], [0, 0, 0]]))  # 0 ↔ 1
    0.9
    >>> pair_share(np.array([[0, 9, 1], [0, 0, 0], [1, 9, 0]]))  # both classes' disagreements on class 1
    0.5
    """
    from scipy.optimize import linear_sum_assignment  # here, not at the top: the CLI's --help imports this module

    total = counts.sum()
    if total == 0:
        return 0.0
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / total)


def choose_settings(noise: NoiseEstimate, num_classes: int) -> dict[str, float | int | str]:
    """DivideMix's λu, loss window and selection of the labeled set for the estimated noise.

    The paper's appendix: λu = 0 for class-pair noise and for low noise (CIFAR-10 at 20%), 25 at
    50–80%, 50 at 90%; with 100 classes 25 at 20% and 150 above. From HIGH_NOISE on, a 5-epoch loss
    window and the class-wise quota, whose split is CLEAN_SPLIT by construction, so the paper's 0.6 at
    90% (for its GMM split) is not used (docs/methods.md, "--auto"; docs/high-noise.md).

    >>> choose_settings(NoiseEstimate(0.42, 0.2, "spread"), 10)
    {'lambda_u': 25.0, 'loss_window': 1, 'selection': 'gmm'}
    """
    many = num_classes > MANY_CLASSES
    if noise.kind == "pair":
        lambda_u = 0.0
    elif noise.rate < 0.3:
        lambda_u = 25.0 if many else 0.0
    elif noise.rate < 0.85:
        lambda_u = 150.0 if many else 25.0
    else:
        lambda_u = 150.0 if many else 50.0
    high = noise.rate >= HIGH_NOISE
    return {"lambda_u": lambda_u, "loss_window": LOSS_WINDOW if high else 1, "selection": "quota" if high else "gmm"}


def class_quota(given: np.ndarray, num_classes: int, share: float) -> np.ndarray:
    """How many samples of each given class (k,) the 'quota' selection labels: ``share`` of each class
    (rounded), with ``share`` = 1 − the noise estimated after warm-up.

    The same share in every class, as UNICON's class-balanced selection: a quota that followed each
    class's own agreement starved the classes the networks rarely predict (docs/high-noise.md).

    >>> class_quota(np.array([0, 0, 0, 0, 1, 1, 2]), 3, 0.5)
    array([2, 1, 0])
    """
    return np.round(share * np.bincount(given, minlength=num_classes)).astype(np.int64)


def quota_clean_prob(loss: np.ndarray, given: np.ndarray, quota: np.ndarray) -> np.ndarray:
    """Clean probability (n,) of the 'quota' selection: in each given class ``c``, the ``quota[c]``
    samples with the lowest ``loss`` (n,) get values above CLEAN_SPLIT, the others below, so that the
    split there — the training split and the export's default — is the quota.

    Within a class the value falls linearly with the loss rank: from 1 (lowest loss) to just above
    CLEAN_SPLIT on the labeled side, from just below it to 0 (highest loss) on the other; at the noise
    where the quota is used a GMM posterior is not even monotone in the loss (docs/high-noise.md).

    >>> quota_clean_prob(np.array([.1, .9, .5, .2, .8]), np.array([0, 0, 0, 1, 1]), np.array([2, 0]))
    array([1.  , 0.  , 0.75, 0.25, 0.  ])
    """
    prob = np.empty(len(loss))
    for c, k in enumerate(quota):
        members = np.flatnonzero(given == c)
        order = members[np.argsort(loss[members], kind="stable")]
        k = min(int(k), len(order))
        rank = np.arange(len(order))
        prob[order[:k]] = 1 - (1 - CLEAN_SPLIT) * rank[:k] / k
        prob[order[k:]] = CLEAN_SPLIT * (1 - (rank[k:] - k + 1) / (len(order) - k))
    return prob


def is_locked(labeled: Sequence[float], agreement: Sequence[float]) -> bool:
    """Has the split locked itself? ``labeled`` and ``agreement`` are per-epoch shares of samples.

    A DivideMix network learns only from the labeled set the *other* network's split gives it.
    When that set is far smaller than the share of samples whose given label the networks already
    predict (by LOCK_GAP, for LOCK_EPOCHS epochs in a row), or nearly empty, training on it cannot
    grow it again: the run has locked itself (docs/benchmarks.md, "The self-locking guard").

    >>> is_locked([.36, .35, .36], [.58, .59, .60]), is_locked([.58, .59, .60], [.60, .60, .61])
    (True, False)
    """
    recent = list(zip(labeled, agreement))[-LOCK_EPOCHS:]
    return len(recent) == LOCK_EPOCHS and all(f < a - LOCK_GAP or f < 0.02 for f, a in recent)


def is_lenient(labeled: Sequence[float], agreement: Sequence[float]) -> bool:
    """Is the split too lenient? ``labeled`` and ``agreement`` are per-epoch shares of samples, as for
    :func:`is_locked`: a labeled set larger than the share of samples whose given label the networks
    predict by LENIENT_GAP, for LOCK_EPOCHS epochs in a row, holds mostly labels the networks call wrong.

    >>> is_lenient([.72, .75, .70], [.21, .22, .21]), is_lenient([.62, .60, .61], [.60, .60, .61])
    (True, False)
    """
    recent = list(zip(labeled, agreement))[-LOCK_EPOCHS:]
    return len(recent) == LOCK_EPOCHS and all(f > a + LENIENT_GAP for f, a in recent)


def threshold_hint(clean_prob: np.ndarray, disagreement: float,
                   threshold: float = CLEAN_SPLIT) -> float | None:
    """A threshold for a split that flags far fewer labels (``clean_prob < threshold``) than the
    networks disagree with (``disagreement``: the share of samples whose given label they do not
    predict; by LENIENT_GAP): the clean_prob that flags as many, rounded up to 4 decimals; None
    when the split is plausible.

    >>> lenient = threshold_hint(np.r_[np.full(80, 0.9), np.full(20, 1.0)], 0.8)
    >>> 0.9 < lenient <= 1.0, threshold_hint(np.linspace(0, 1, 101), 0.6)
    (True, None)
    """
    if disagreement - float(np.mean(clean_prob < threshold)) <= LENIENT_GAP:
        return None
    return math.ceil(float(np.quantile(clean_prob, disagreement)) * 1e4) / 1e4
