"""Label noise that follows the images, and long-tailed classes: the quality benchmark's settings
beside the coin-drawn ``sym`` and ``asym`` of :func:`labelclean.demo.flip_labels`.

- :func:`instance_dependent`: Xia et al., "Part-dependent label noise", NeurIPS 2020 (their
  instance-dependent generator): each sample's flip rate is drawn around the target rate, and its
  wrong class through a random projection of its image.
- :func:`confusion`: Chen et al., "Beyond class-conditional assumption", AAAI 2021: a classifier
  trained on the clean labels picks which samples flip (those it finds most confusable) and to which
  class (its most probable wrong one).
- :func:`long_tailed`: the rows of an exponentially imbalanced subset (Cao et al., NeurIPS 2019).
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from scipy.stats import truncnorm
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

RATE_SPREAD = 0.1  # standard deviation of the per-sample flip rates (Xia et al.)
CONFUSION_FOLDS = 5


def instance_dependent(labels: np.ndarray, images: np.ndarray, rate: float, num_classes: int,
                       rng: np.random.Generator) -> np.ndarray:
    """Noisy labels: sample i flips with probability q_i ~ N(rate, 0.1²) truncated to [0, 1]; its wrong
    class is drawn from softmax(x_i W_{y_i}) over the other classes, x_i its standardized pixels and
    W_c a Gaussian projection per class. On average a share ``rate`` flips."""
    n = len(labels)
    low, high = (0 - rate) / RATE_SPREAD, (1 - rate) / RATE_SPREAD
    flip_rate = truncnorm.rvs(low, high, loc=rate, scale=RATE_SPREAD, size=n, random_state=rng)
    pixels = images.reshape(n, -1).astype(np.float64)
    pixels = (pixels - pixels.mean()) / pixels.std()
    projection = rng.standard_normal((num_classes, pixels.shape[1], num_classes))
    logits = np.einsum("nd,ndk->nk", pixels, projection[labels])
    logits[np.arange(n), labels] = -np.inf
    probs = flip_rate[:, None] * softmax(logits, axis=1)
    probs[np.arange(n), labels] = 1 - flip_rate
    drawn = (probs.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
    return np.minimum(drawn, num_classes - 1)  # guards the last bin against rounding of the cumulative sum


def confusion(labels: np.ndarray, images: np.ndarray, rate: float, num_classes: int,
              rng: np.random.Generator) -> np.ndarray:
    """Noisy labels: a logistic regression on the pixels, trained on the clean labels (out-of-fold, so
    that it has not memorized the sample it scores), gives every sample its most probable wrong class;
    the ``rate`` share of samples where that class is most probable flip to it. The folds are drawn
    from ``rng``; the rest does not depend on it."""
    n = len(labels)
    folds = StratifiedKFold(CONFUSION_FOLDS, shuffle=True, random_state=int(rng.integers(2**31)))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probs = np.zeros((n, num_classes))
    present = np.unique(labels)
    probs[:, present] = cross_val_predict(model, images.reshape(n, -1), labels, cv=folds, method="predict_proba")
    probs[np.arange(n), labels] = -1.0
    wrong = probs.argmax(axis=1)
    order = np.argsort(-probs[np.arange(n), wrong], kind="stable")  # most confusable first
    noisy = labels.copy()
    flipped = order[:round(rate * n)]
    noisy[flipped] = wrong[flipped]
    return noisy


def long_tailed(labels: np.ndarray, ratio: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of a subset whose class c keeps ⌊n · ratio^(−c/(K−1))⌋ rows, n the smallest
    class count: class 0 the largest, class K−1 ``ratio`` times smaller."""
    n = min(np.sum(labels == c) for c in range(num_classes))
    kept = [rng.choice(np.flatnonzero(labels == c), int(n * ratio ** (-c / (num_classes - 1))), replace=False)
            for c in range(num_classes)]
    return np.sort(np.concatenate(kept))


MAKERS = {"idn": instance_dependent, "confusion": confusion}
