"""What both methods compute from trained networks: per-sample losses, the GMM (or quota) split into
clean and noisy samples, the networks' agreement with the given labels, and the final evaluation
that the outputs are written from. DivideMix and MLNT import it; neither imports the other.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from .auto import class_quota, quota_clean_prob
from .config import Settings
from .training import TrainingData, predict_logits

log = logging.getLogger("labelclean")


def normalized_loss(loss: torch.Tensor) -> torch.Tensor:
    """Min–max normalize per-sample losses so epochs are comparable for the loss window.

    Equal losses (no spread) give zeros and a warning: they carry no evidence against any label, and
    :func:`split_clean_prob` then calls every sample clean.
    """
    spread = loss.max() - loss.min()
    if spread <= 0:
        log.warning("Every sample has the same loss, so the losses cannot tell wrong labels from right ones; "
                    "every clean_prob is 1.0 (nothing flagged). Check that the images differ and that at least "
                    "two classes are in use.")
        return torch.zeros_like(loss)
    return (loss - loss.min()) / spread


def clean_probability(loss: np.ndarray | torch.Tensor, *, max_iter: int = 10, tol: float = 1e-2,
                      reg_covar: float = 5e-4, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Posterior of the low-loss component of a 2-component GMM fitted to per-sample losses.

    Parameters
    ----------
    loss : (n_samples,) normalized per-sample loss (see :func:`normalized_loss`)

    Returns
    -------
    clean_prob : (n_samples,) float in [0, 1]; higher = more likely correctly labeled
    converged : bool
        False when the GMM stopped at ``max_iter`` (the paper's 10 iterations usually do);
        the posterior is still usable, so this is reported, not raised.

    Examples
    --------
    >>> p, _ = clean_probability(np.r_[np.full(90, 0.05), np.full(10, 0.9)] + np.linspace(0, .01, 100))
    >>> bool(p[:90].min() > 0.9 and p[90:].max() < 0.1)
    True
    """
    x = np.asarray(loss, dtype=np.float64).reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar,
                          random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
    return gmm.predict_proba(x)[:, gmm.means_.argmin()], bool(gmm.converged_)


def split_clean_prob(loss: np.ndarray, given: np.ndarray, num_classes: int, selection: str, share: float,
                     seed: int) -> tuple[np.ndarray, bool]:
    """Clean probability (n,) of every sample from its (window-averaged) normalized loss (n,), and
    whether the GMM converged. ``selection`` 'gmm': :func:`clean_probability`; 'quota': in each
    given class the lowest losses, ``share`` of the class (:func:`labelclean.auto.class_quota`,
    :func:`labelclean.auto.quota_clean_prob`). The split is ``clean_prob > p_threshold``.

    Losses without spread carry no evidence against any label: every sample gets 1.0 (all labeled,
    nothing flagged) rather than 0.5, which would put every sample on the unlabeled side of the
    training split and leave the networks nothing to learn the given labels from.
    """
    if np.ptp(loss) == 0:
        return np.ones(len(loss)), True
    if selection == "quota":
        return quota_clean_prob(loss, given, class_quota(given, num_classes, share)), True
    return clean_probability(loss, seed=seed)


def ensemble_agreement(nets: list[nn.Module], data: TrainingData, cfg: Settings) -> tuple[float, np.ndarray]:
    """Share of samples whose given label the two networks' mean prediction is, and that prediction (n,)."""
    probs = torch.stack([torch.softmax(predict_logits(net, data, cfg.eval_batch_size), dim=1) for net in nets])
    predicted = probs.mean(0).argmax(dim=1)
    return (predicted == data.labels).float().mean().item(), predicted.cpu().numpy()


@dataclass
class FinalEvaluation:
    """Per-sample results of both trained networks on the un-augmented training images."""

    clean_prob: np.ndarray  # (2, n) GMM clean probability from each network
    loss: np.ndarray  # (2, n) cross-entropy against the given label
    probs: np.ndarray  # (n, k) mean softmax of the two networks


def final_evaluation(nets: list[nn.Module], data: TrainingData, cfg: Settings,
                     histories: list[list[torch.Tensor]]) -> FinalEvaluation:
    """The final evaluation pass that export reads: clean probabilities and ensemble predictions.

    Each network's clean probability comes from the rule of its training splits: its final losses
    averaged with the last ``loss_window − 1`` of its normalized losses in ``histories`` and
    ``cfg.selection`` (its quota share), so the export's default threshold (CLEAN_SPLIT) flags what
    the fit's split does.
    """
    logits = [predict_logits(net, data, cfg.eval_batch_size) for net in nets]
    losses = [F.cross_entropy(z, data.labels, reduction="none") for z in logits]
    given = data.labels.cpu().numpy()
    clean = []
    for loss, history in zip(losses, histories):
        window = [*history[max(0, len(history) + 1 - cfg.loss_window):], normalized_loss(loss).cpu()]
        clean.append(split_clean_prob(torch.stack(window).mean(0).numpy(), given, data.num_classes,
                                      cfg.selection, cfg.quota_share, cfg.seed)[0])
    probs = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(0)
    return FinalEvaluation(np.stack(clean), torch.stack(losses).cpu().numpy(), probs.cpu().numpy())
