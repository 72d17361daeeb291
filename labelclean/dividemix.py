"""DivideMix (Li, Socher, Hoi, ICLR 2020): learning with noisy labels as semi-supervised learning.

Two networks are warmed up on all labels. Then, every epoch, for each network:

1. **co-divide** — a 2-component GMM on each sample's normalized loss gives its probability
   of being clean (:func:`co_divide`, :mod:`labelclean.evaluation`); the split made by one network is
   used to train the *other*, so the networks do not confirm their own mistakes. At very high noise a
   class-wise quota replaces the GMM's split (docs/high-noise.md);
2. **co-refine** — labeled samples get ``sharpen(w·y + (1−w)·p)``, with ``w`` the clean
   probability (:func:`co_refine`);
3. **co-guess** — unlabeled samples get the sharpened mean prediction of both networks
   (:func:`co_guess`), with ``--align`` aligned first to their given labels' class distribution;
4. **MixMatch** — mix up labeled and unlabeled samples (:func:`mixmatch`) and train on
   soft cross-entropy + ``λu``·MSE + a uniform-prior penalty (:func:`semi_supervised_loss`).

The step is :func:`train_step`, an epoch :func:`one_epoch`; the loop is :func:`train`. The rules that
adapt the run to its data (warm-up length, noise estimate, guards, quota share) are called at named points
(:class:`labelclean.rules.Rules`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .config import FitConfig, Settings, settings
from .evaluation import FinalEvaluation, final_evaluation, normalized_loss, split_clean_prob
from .rules import Rules
from .training import (
    EpochReport,
    Loop,
    TrainingData,
    TrainingState,
    autocast,
    batches,
    compiled,
    learning_rate,
    once,
    per_step,
    predict_logits,
    run_epochs,
    set_learning_rate,
    warmup_epoch,
)

log = logging.getLogger("labelclean")

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


def co_guess(own_probs: torch.Tensor, peer_probs: torch.Tensor, temperature: float,
             prior: torch.Tensor | None = None) -> torch.Tensor:
    """Guessed targets for unlabeled samples: sharpened mean over both networks and all views, aligned
    to ``prior`` (k,) before sharpening when given (:func:`align`).

    ``own_probs`` and ``peer_probs`` are (views, n, k).
    """
    mean = torch.cat([own_probs, peer_probs]).mean(0)
    return sharpen(mean if prior is None else align(mean, prior), temperature)


def align(probs: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Distribution alignment (ReMixMatch, Berthelot et al., ICLR 2020): scale each class's column of
    ``probs`` (n, k) by ``prior`` over the batch's mean prediction, then renormalize each row, so that
    the guesses do not drift toward the classes the networks already favour."""
    scaled = probs * (prior / probs.mean(0).clamp_min(1e-6))
    return scaled / scaled.sum(dim=1, keepdim=True)


def unlabeled_prior(labels: torch.Tensor, is_labeled: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The class distribution the unlabeled samples' guesses are aligned to: the share of each class
    among their given labels, one sample added to each. If the noise keeps each class's size about right
    and the labeled samples are rightly labeled, that is the distribution of their true classes, which on
    long tails holds many of the rare classes' clean samples (their losses are high). Where the wrong
    labels gather on some classes (noise that follows the images; a rare class given more wrong labels
    than it has images) it overstates those classes (docs/benchmarks.md). Counted on the device, without
    a host sync."""
    counts = torch.ones(num_classes, device=labels.device).index_add_(0, labels, (~is_labeled).float())
    return counts / counts.sum()


def mixmatch(inputs: torch.Tensor, targets: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every sample with a random partner: ``λ'·a + (1−λ')·b`` with ``λ' = max(λ, 1−λ) ≥ 0.5``, so each
    mix stays closer to its own sample (and so to its own labeled/unlabeled loss term). ``λ`` is a 0-dim
    tensor on the device; ``1−λ'`` is ``min(λ, 1−λ)``, the same number without a second float32 rounding."""
    lam, rest = torch.maximum(lam, 1 - lam), torch.minimum(lam, 1 - lam)
    partner = torch.randperm(inputs.shape[0], device=inputs.device)
    return (lam * inputs + rest * inputs[partner],
            lam * targets + rest * targets[partner])


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """KL(uniform ‖ mean prediction): keeps the network from putting every sample in one class."""
    mean_pred = torch.softmax(logits, dim=1).mean(0)
    prior = torch.full_like(mean_pred, 1 / mean_pred.numel())
    return (prior * (prior / mean_pred).log()).sum()


def semi_supervised_loss(logits: torch.Tensor, targets: torch.Tensor, n_labeled: int,
                         lambda_u: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


# ---------------------------------------------------------------------------------------------
# Training.


def train_step(net: nn.Module, peer: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
               labeled: torch.Tensor, clean_prob: torch.Tensor, unlabeled: torch.Tensor,
               lam: torch.Tensor, lambda_u: torch.Tensor, cfg: Settings,
               prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DivideMix step for ``net``; ``labeled``/``unlabeled`` are index batches from the peer's split,
    ``lam`` (mixup's draw) and ``lambda_u`` 0-dim tensors on the device: the step never waits for the host.
    ``prior``: the class distribution the guesses are aligned to (:func:`unlabeled_prior`), or None.

    Either batch may be empty (a split that put every sample on one side): that term is skipped.
    Returns the labeled and unlabeled losses (device tensors).
    """
    n_x, n_u = len(labeled), len(unlabeled)
    v1, v2 = data.views(torch.cat([labeled, unlabeled]))  # each: the labeled samples, then the unlabeled
    given = F.one_hot(data.labels[labeled], data.num_classes).float()
    # Co-refine and co-guess predict all four views of ``net`` in one forward pass (train mode, no
    # gradients), so BatchNorm normalizes them with the statistics of the union and updates its
    # running statistics once per step. The official code runs four passes (u1, u2, x1, x2), each
    # normalized by its own batch and each updating the running statistics. Neither gets gradients;
    # the difference is in the targets' batch statistics and in how fast the running ones move.
    with torch.no_grad(), autocast(data.device):
        own = torch.softmax(net(torch.cat([v1, v2])).float(), dim=1)
        own = own.view(2, n_x + n_u, data.num_classes)  # (view, sample, class)
        targets_x = co_refine(own[:, :n_x], given, clean_prob, cfg.temperature)
        if n_u:
            peer_probs = torch.softmax(peer(torch.cat([v1[n_x:], v2[n_x:]])).float(), dim=1)
            targets_u = co_guess(own[:, n_x:], peer_probs.view(2, n_u, data.num_classes), cfg.temperature, prior)
        else:
            targets_u = given[:0]
    inputs = torch.cat([v1[:n_x], v2[:n_x], v1[n_x:], v2[n_x:]])
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
                clean_prob: torch.Tensor, epoch: int, cfg: Settings,
                loop: Loop | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One DivideMix epoch of ``net`` on the split given by the peer's ``clean_prob`` (n,).

    As in the official code, an epoch is one pass over the labeled set, with unlabeled
    batches of the same size drawn cyclically. Returns mean losses and the labeled count.
    With ``cfg.compile_step`` the step is compiled and the last labeled batch filled to full size.
    """
    net.train()
    peer.eval()
    distributed.sync_buffers(peer)  # it predicts in eval mode, from its BatchNorm statistics
    is_labeled = clean_prob > cfg.p_threshold
    labeled_idx = is_labeled.nonzero().squeeze(1)
    unlabeled_idx = (~is_labeled).nonzero().squeeze(1)
    n_labeled, n_unlabeled = len(labeled_idx), len(unlabeled_idx)  # host sync, once per epoch
    prior = unlabeled_prior(data.labels, is_labeled, data.num_classes) if cfg.align else None
    steps = math.ceil((n_labeled or n_unlabeled) / cfg.batch_size)
    labeled_batches = batches(labeled_idx[torch.randperm(n_labeled, device=data.device)], cfg.batch_size,
                              full=cfg.compile_step) if n_labeled else [labeled_idx] * steps
    cycles = math.ceil(steps * cfg.batch_size / max(n_unlabeled, 1))
    unlabeled_order = torch.cat([unlabeled_idx[torch.randperm(n_unlabeled, device=data.device)]
                                 for _ in range(cycles)]) if n_unlabeled else unlabeled_idx
    lams = per_step(torch.distributions.Beta(cfg.alpha, cfg.alpha).sample((steps,)), data.device)
    lambda_us = per_step([cfg.lambda_u * linear_rampup(epoch + step / steps, cfg.warmup, cfg.rampup_epochs)
                          for step in range(steps)], data.device)
    step_fn = compiled(train_step, data) if cfg.compile_step else train_step
    totals = torch.zeros(2, device=data.device)
    for step in loop.steps(steps, totals) if loop else range(steps):
        labeled = distributed.part(labeled_batches[step])
        unlabeled = distributed.part(unlabeled_order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        loss_x, loss_u = step_fn(net, peer, optimizer, data, labeled, clean_prob[labeled], unlabeled,
                                 lams[step], lambda_us[step], cfg, prior)
        totals += torch.stack([loss_x, loss_u])
    means = distributed.average(totals) / steps
    return means[0], means[1], n_labeled


def co_divide(net: nn.Module, data: TrainingData, history: list[torch.Tensor], cfg: Settings,
              share: float, seed: int) -> tuple[torch.Tensor, bool, float]:
    """Clean probability (n,) of every sample from ``net``'s losses, averaged over the loss window
    (:func:`split_clean_prob` with ``cfg.selection`` and the quota's ``share``); whether the GMM
    converged; and the share of samples whose given label ``net`` predicts.

    ``history`` (this network's recent normalized losses) is updated in place.
    """
    logits = predict_logits(net, data, cfg.eval_batch_size)
    history.append(normalized_loss(F.cross_entropy(logits, data.labels, reduction="none")).cpu())
    del history[:-cfg.loss_window]
    prob, converged = split_clean_prob(torch.stack(history).mean(0).numpy(), data.labels.cpu().numpy(),
                                       data.num_classes, cfg.selection, share, seed)
    agreement = (logits.argmax(dim=1) == data.labels).float().mean().item()
    return torch.as_tensor(prob, dtype=torch.float32, device=data.device), converged, agreement


def warmup_both(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
                cfg: Settings, state: TrainingState) -> list[float]:
    """A warm-up epoch of each network; their mean losses."""
    def warm(k: int) -> float:
        return warmup_epoch(nets[k], optimizers[k], data, cfg, Loop(state, f"warm-up {k + 1}", cfg.seed)).item()

    return [once(state, f"warm-up {k + 1}", partial(warm, k)) for k in (0, 1)]


def warmup(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData, rules: Rules,
           state: TrainingState, epoch: int, lr: float) -> EpochReport:
    """A warm-up epoch of both networks on all labels; an adaptive warm-up then asks the rules whether it is over."""
    plan = rules.settings()
    report = EpochReport(epoch + 1, plan.epochs, "warm-up", lr, 0.0,
                         loss=warmup_both(nets, optimizers, data, plan, state))
    if rules.adaptive_warmup:
        agreement, report.note = rules.after_warmup_epoch(nets, optimizers, data, epoch)
        report.agreement, report.epochs = [agreement], rules.settings().epochs
    return report


def one_epoch(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData, rules: Rules,
              state: TrainingState, epoch: int) -> EpochReport:
    """Epoch ``epoch`` (0-based) of DivideMix: warm-up of both networks, or co-divide + a train epoch of each
    network on its peer's split. The rules (:class:`labelclean.rules.Rules`) may end warm-up, or replace a
    locked epoch with a warm-up epoch. Work that must not be redone when an epoch stopped by Ctrl-C resumes
    goes through ``once``.
    """
    note = rules.before_epoch(nets, data, epoch)
    plan = rules.settings()
    lr = learning_rate(epoch, plan)
    set_learning_rate(optimizers, lr)
    if epoch < plan.warmup:
        return warmup(nets, optimizers, data, rules, state, epoch, lr)
    divided = once(state, "co-divide", lambda: [co_divide(net, data, hist, plan, plan.quota_share, plan.seed + epoch)
                                                for net, hist in zip(nets, state.loss_history)])
    labeled_share = float(np.mean([(prob > plan.p_threshold).float().mean().item() for prob, _, _ in divided]))
    agreement = [a for _, _, a in divided]
    if recovery := once(state, "guard", lambda: rules.after_split(labeled_share, float(np.mean(agreement)),
                                                                  plan.selection)):
        return EpochReport(epoch + 1, plan.epochs, "warm-up", lr, 0.0,
                           loss=warmup_both(nets, optimizers, data, plan, state), agreement=agreement, note=recovery)
    switched = once(state, "lenient guard", lambda: rules.lenient(plan.selection))

    def train_on_peer_split(k: int) -> tuple[float, float, int]:
        peer_split = divided[1 - k][0].to(data.device)  # a checkpoint's copy comes back on the CPU
        loss_x, loss_u, n_labeled = train_epoch(nets[k], nets[1 - k], optimizers[k], data, peer_split,
                                                epoch, plan, Loop(state, f"train {k + 1}", plan.seed))
        return loss_x.item(), loss_u.item(), n_labeled

    results = [once(state, f"train {k + 1}", partial(train_on_peer_split, k)) for k in (0, 1)]
    labeled = [n for _, _, n in results]
    warn_empty(labeled, state)
    return EpochReport(
        epoch + 1, plan.epochs, "train", lr, 0.0,
        loss=[r[0] for r in results],
        loss_u=[r[1] for r in results],
        labeled=labeled,
        noise_estimate=1 - sum(labeled) / (2 * len(data)),
        lambda_u=plan.lambda_u * linear_rampup(epoch + 1, plan.warmup, plan.rampup_epochs),
        gmm_converged=all(c for _, c, _ in divided),
        agreement=agreement,
        note="; ".join(n for n in (note, switched) if n) or None,
    )


def warn_empty(labeled: list[int], state: TrainingState) -> None:
    """Say once per fit that a network's labeled set was empty."""
    if 0 in labeled and not state.extra.get("warned_empty"):
        state.extra["warned_empty"] = True
        log.warning("A network's labeled set is empty this epoch (its GMM put every sample on the noisy side); "
                    "training continues on the unlabeled loss only.")


def train(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
          cfg: FitConfig, state: TrainingState, on_epoch: Callable[[EpochReport], None],
          after_epoch: Callable[[TrainingState], None]) -> None:
    """Warm up, then run DivideMix epochs, from ``state.epoch`` to the planned number of epochs, with the
    declared options ``cfg`` and the rules that adapt them (:class:`labelclean.rules.Rules`).

    ``after_epoch(state)`` runs at every epoch boundary (the caller checkpoints there).
    """
    rules = Rules(cfg, state)
    run_epochs(state, lambda: rules.settings().epochs, partial(one_epoch, nets, optimizers, data, rules, state),
               on_epoch, after_epoch)


def evaluate(nets: list[nn.Module], data: TrainingData, cfg: FitConfig, state: TrainingState) -> FinalEvaluation:
    """The final evaluation (:func:`labelclean.evaluation.final_evaluation`) with the training's settings and
    loss window, so the export's default threshold flags what the fit's split does."""
    return final_evaluation(nets, data, settings(cfg, state.decisions), state.loss_history)
