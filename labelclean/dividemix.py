"""DivideMix (Li, Socher, Hoi, ICLR 2020): learning with noisy labels as semi-supervised learning.

Two networks are warmed up on all labels. Then, every epoch, for each network:

1. **co-divide** — a 2-component GMM on each sample's normalized loss gives its probability
   of being clean (:func:`clean_probability`); the split made by one network is used to
   train the *other*, so the networks do not confirm their own mistakes;
2. **co-refine** — labeled samples get ``sharpen(w·y + (1−w)·p)``, with ``w`` the clean
   probability (:func:`co_refine`);
3. **co-guess** — unlabeled samples get the sharpened mean prediction of both networks
   (:func:`co_guess`);
4. **MixMatch** — mix up labeled and unlabeled samples (:func:`mixmatch`) and train on
   soft cross-entropy + ``λu``·MSE + a uniform-prior penalty (:func:`semi_supervised_loss`).

The step is :func:`train_step`; the loop is :func:`train`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from .config import FitConfig
from .errors import LabelcleanError
from .training import (
    EpochReport,
    TrainingData,
    TrainingState,
    autocast,
    learning_rate,
    per_sample_loss,
    predict_logits,
    run_epochs,
    set_learning_rate,
)

# ---------------------------------------------------------------------------------------------
# The method's math, as pure functions on tensors.


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Lower the entropy of each row of ``probs`` (n, k): ``p^(1/T)`` renormalized."""
    sharpened = probs ** (1 / temperature)
    return sharpened / sharpened.sum(dim=1, keepdim=True)


def co_refine(own_probs: torch.Tensor, given: torch.Tensor, clean_prob: torch.Tensor,
              temperature: float) -> torch.Tensor:
    """Refined targets for labeled samples: ``sharpen(w·y + (1−w)·p̄, T)``.

    Parameters
    ----------
    own_probs : (views, n, k) softmax of the network being trained, one per augmented view
    given : (n, k) one-hot given labels
    clean_prob : (n,) the peer's clean probability ``w``
    """
    w = clean_prob[:, None]
    return sharpen(w * given + (1 - w) * own_probs.mean(0), temperature)


def co_guess(own_probs: torch.Tensor, peer_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Guessed targets for unlabeled samples: sharpened mean over both networks and all views.

    ``own_probs`` and ``peer_probs`` are (views, n, k).
    """
    return sharpen(torch.cat([own_probs, peer_probs]).mean(0), temperature)


def mixmatch(inputs: torch.Tensor, targets: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every sample with a random partner: ``λ·a + (1−λ)·b``, with ``λ ≥ 0.5`` so each mix
    stays closer to its own sample (and so to its own labeled/unlabeled loss term)."""
    lam = max(lam, 1 - lam)
    partner = torch.randperm(inputs.shape[0], device=inputs.device)
    return (lam * inputs + (1 - lam) * inputs[partner],
            lam * targets + (1 - lam) * targets[partner])


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform ‖ mean prediction): keeps the network from putting every sample in one class."""
    mean_pred = torch.softmax(logits, dim=1).mean(0)
    prior = torch.full_like(mean_pred, 1 / mean_pred.numel())
    return (prior * (prior / mean_pred).log()).sum()


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean of Σ p·log p; added to the warm-up loss under class-pair noise to penalize confidence."""
    return (torch.softmax(logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def semi_supervised_loss(logits: torch.Tensor, targets: torch.Tensor, n_labeled: int,
                         lambda_u: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DivideMix's loss on a mixed batch whose first ``n_labeled`` rows come from labeled samples.

    Returns the total loss, the labeled (soft cross-entropy) and the unlabeled (MSE) parts.
    """
    loss_x = (soft_cross_entropy(logits[:n_labeled], targets[:n_labeled])
              if n_labeled else logits.new_zeros(()))
    loss_u = ((torch.softmax(logits[n_labeled:], dim=1) - targets[n_labeled:]) ** 2).mean() \
        if n_labeled < len(logits) else logits.new_zeros(())
    return loss_x + lambda_u * loss_u + uniform_prior_penalty(logits), loss_x, loss_u


def linear_rampup(epoch: float, warmup: int, length: float) -> float:
    """0 at the end of warm-up, rising linearly to 1 after ``length`` epochs."""
    if length <= 0:
        return 1.0
    return float(np.clip((epoch - warmup) / length, 0.0, 1.0))


def normalized_loss(loss: torch.Tensor) -> torch.Tensor:
    """Min–max normalize per-sample losses so epochs are comparable for the loss window."""
    spread = loss.max() - loss.min()
    if spread <= 0:
        raise LabelcleanError(
            "Every sample has the same loss, so clean and noisy samples cannot be told apart; "
            "check that the images differ and that there are at least two classes in use."
        )
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


# ---------------------------------------------------------------------------------------------
# Training.


def warmup_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
                 cfg: FitConfig) -> torch.Tensor:
    """One pass of cross-entropy on all given labels (+ confidence penalty for 'asym' noise).

    Returns the mean loss as a device tensor (no host sync inside the loop).
    """
    net.train()
    total = torch.zeros((), device=data.device)
    order = torch.randperm(len(data), device=data.device)
    batches = order.split(2 * cfg.batch_size)
    for idx in batches:
        x = data.views(idx, 1)[0]
        with autocast(data.device):
            logits = net(x).float()
        loss = F.cross_entropy(logits, data.labels[idx])
        objective = loss + negative_entropy(logits) if cfg.noise_mode == "asym" else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total += loss.detach()
    return total / len(batches)


def train_step(net: nn.Module, peer: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
               labeled: torch.Tensor, clean_prob: torch.Tensor, unlabeled: torch.Tensor,
               lam: float, lambda_u: float, cfg: FitConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One DivideMix step for ``net``; ``labeled``/``unlabeled`` are index batches from the peer's split.

    Either batch may be empty (a split that put every sample on one side): that term is skipped.
    Returns the labeled and unlabeled losses (device tensors).
    """
    x1, x2 = data.views(labeled)
    u1, u2 = data.views(unlabeled)
    n_x, n_u = len(labeled), len(unlabeled)
    given = F.one_hot(data.labels[labeled], data.num_classes).float()
    with torch.no_grad(), autocast(data.device):
        own = torch.softmax(net(data.to_model(torch.cat([x1, u1, x2, u2]))).float(), dim=1)
        own = own.view(2, n_x + n_u, data.num_classes)  # (view, sample, class)
        targets_x = co_refine(own[:, :n_x], given, clean_prob, cfg.temperature)
        if n_u:
            peer_probs = torch.softmax(peer(data.to_model(torch.cat([u1, u2]))).float(), dim=1)
            targets_u = co_guess(own[:, n_x:], peer_probs.view(2, n_u, data.num_classes), cfg.temperature)
        else:
            targets_u = given[:0]
    inputs = torch.cat([x1, x2, u1, u2])
    targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
    mixed_inputs, mixed_targets = mixmatch(inputs, targets, lam)
    with autocast(data.device):
        logits = net(data.to_model(mixed_inputs)).float()
    loss, loss_x, loss_u = semi_supervised_loss(logits, mixed_targets, 2 * n_x, lambda_u)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss_x.detach(), loss_u.detach()


def train_epoch(net: nn.Module, peer: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
                clean_prob: torch.Tensor, epoch: int, cfg: FitConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One DivideMix epoch of ``net`` on the split given by the peer's ``clean_prob`` (n,).

    As in the official code, an epoch is one pass over the labeled set, with unlabeled
    batches of the same size drawn cyclically. Returns mean losses and the labeled count.
    """
    net.train()
    peer.eval()
    is_labeled = clean_prob > cfg.p_threshold
    labeled_idx = is_labeled.nonzero().squeeze(1)
    unlabeled_idx = (~is_labeled).nonzero().squeeze(1)
    n_labeled, n_unlabeled = len(labeled_idx), len(unlabeled_idx)  # host sync, once per epoch
    steps = math.ceil((n_labeled or n_unlabeled) / cfg.batch_size)
    labeled_batches = labeled_idx[torch.randperm(n_labeled, device=data.device)].split(cfg.batch_size) \
        if n_labeled else [labeled_idx] * steps
    cycles = math.ceil(steps * cfg.batch_size / max(n_unlabeled, 1))
    unlabeled_order = torch.cat([unlabeled_idx[torch.randperm(n_unlabeled, device=data.device)]
                                 for _ in range(cycles)]) if n_unlabeled else unlabeled_idx
    lams = torch.distributions.Beta(cfg.alpha, cfg.alpha).sample((steps,)).tolist()
    totals = torch.zeros(2, device=data.device)
    for step, labeled in enumerate(labeled_batches):
        unlabeled = unlabeled_order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        lambda_u = cfg.lambda_u * linear_rampup(epoch + step / steps, cfg.warmup, cfg.rampup_epochs)
        loss_x, loss_u = train_step(net, peer, optimizer, data, labeled, clean_prob[labeled], unlabeled,
                                    lams[step], lambda_u, cfg)
        totals += torch.stack([loss_x, loss_u])
    means = totals / steps
    return means[0], means[1], n_labeled


def co_divide(net: nn.Module, data: TrainingData, history: list[torch.Tensor], cfg: FitConfig,
              seed: int) -> tuple[torch.Tensor, bool]:
    """Clean probability (n,) of every sample from ``net``'s losses, averaged over the loss window.

    ``history`` (this network's recent normalized losses) is updated in place.
    """
    history.append(normalized_loss(per_sample_loss(net, data, cfg.eval_batch_size)).cpu())
    del history[:-cfg.loss_window]
    prob, converged = clean_probability(torch.stack(history).mean(0).numpy(), seed=seed)
    return torch.as_tensor(prob, dtype=torch.float32, device=data.device), converged


def one_epoch(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
              cfg: FitConfig, state: TrainingState, epoch: int) -> EpochReport:
    """Epoch ``epoch`` (0-based) of DivideMix: warm-up of both networks, or co-divide + a train epoch of each."""
    lr = learning_rate(epoch, cfg)
    set_learning_rate(optimizers, lr)
    if epoch < cfg.warmup:
        losses = [warmup_epoch(net, opt, data, cfg) for net, opt in zip(nets, optimizers)]
        return EpochReport(epoch + 1, cfg.epochs, "warm-up", lr, 0.0, loss=torch.stack(losses).tolist())
    divided = [co_divide(net, data, hist, cfg, seed=cfg.seed + epoch)
               for net, hist in zip(nets, state.loss_history)]
    results = [train_epoch(nets[k], nets[1 - k], optimizers[k], data, divided[1 - k][0], epoch, cfg)
               for k in (0, 1)]
    labeled = [n for _, _, n in results]
    return EpochReport(
        epoch + 1, cfg.epochs, "train", lr, 0.0,
        loss=torch.stack([r[0] for r in results]).tolist(),
        loss_u=torch.stack([r[1] for r in results]).tolist(),
        labeled=labeled,
        noise_estimate=1 - sum(labeled) / (2 * len(data)),
        lambda_u=cfg.lambda_u * linear_rampup(epoch + 1, cfg.warmup, cfg.rampup_epochs),
        gmm_converged=all(c for _, c in divided),
    )


def train(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
          cfg: FitConfig, state: TrainingState, on_epoch: Callable[[EpochReport], None],
          after_epoch: Callable[[TrainingState], None]) -> None:
    """Warm up, then run DivideMix epochs, from ``state.epoch`` to ``cfg.epochs``.

    ``after_epoch(state)`` runs at every epoch boundary (the caller checkpoints there).
    """
    run_epochs(state, cfg.epochs, partial(one_epoch, nets, optimizers, data, cfg, state), on_epoch, after_epoch)


@dataclass
class FinalEvaluation:
    """Per-sample results of both trained networks on the un-augmented training images."""

    clean_prob: np.ndarray  # (2, n) GMM clean probability from each network
    loss: np.ndarray  # (2, n) cross-entropy against the given label
    probs: np.ndarray  # (n, k) mean softmax of the two networks


def evaluate(nets: list[nn.Module], data: TrainingData, cfg: FitConfig) -> FinalEvaluation:
    """The final evaluation pass that export reads: clean probabilities and ensemble predictions."""
    logits = [predict_logits(net, data, cfg.eval_batch_size) for net in nets]
    losses = [F.cross_entropy(z, data.labels, reduction="none") for z in logits]
    clean = [clean_probability(normalized_loss(loss).cpu().numpy(), seed=cfg.seed + cfg.epochs)[0]
             for loss in losses]
    probs = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(0)
    return FinalEvaluation(np.stack(clean), torch.stack(losses).cpu().numpy(), probs.cpu().numpy())
