"""DivideMix (Li, Socher, Hoi, ICLR 2020): learning with noisy labels as semi-supervised learning.

Two networks are warmed up on all labels. Then, every epoch, for each network:

1. **co-divide** — a 2-component GMM on each sample's normalized loss gives its probability
   of being clean (:func:`clean_probability`); the split made by one network is used to
   train the *other*, so the networks do not confirm their own mistakes. At very high noise a
   class-wise quota replaces the GMM's split (:func:`split_clean_prob`, docs/high-noise.md);
2. **co-refine** — labeled samples get ``sharpen(w·y + (1−w)·p)``, with ``w`` the clean
   probability (:func:`co_refine`);
3. **co-guess** — unlabeled samples get the sharpened mean prediction of both networks
   (:func:`co_guess`);
4. **MixMatch** — mix up labeled and unlabeled samples (:func:`mixmatch`) and train on
   soft cross-entropy + ``λu``·MSE + a uniform-prior penalty (:func:`semi_supervised_loss`).

The step is :func:`train_step`; the loop is :func:`train`.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from torch import nn

from . import distributed
from .auto import (
    LOCK_EPOCHS,
    MAX_RECOVERIES,
    best_warmup_epoch,
    choose_settings,
    class_quota,
    estimate_noise,
    is_lenient,
    is_locked,
    quota_clean_prob,
    warmup_over,
)
from .config import FitConfig, resolve, warmup_limit
from .training import (
    EpochReport,
    Loop,
    TrainingData,
    TrainingState,
    autocast,
    learning_rate,
    once,
    predict_logits,
    run_epochs,
    set_learning_rate,
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


# ---------------------------------------------------------------------------------------------
# Training.


def warmup_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
                 cfg: FitConfig, loop: Loop | None = None) -> torch.Tensor:
    """One pass of cross-entropy on all given labels (+ confidence penalty for 'asym' noise).

    Returns the mean loss as a device tensor (no host sync inside the loop). Within a fit,
    ``loop`` makes the pass stoppable and resumable at a step boundary.
    """
    net.train()
    total = torch.zeros((), device=data.device)
    batches = torch.randperm(len(data), device=data.device).split(2 * cfg.batch_size)
    for step in loop.steps(len(batches), total) if loop else range(len(batches)):
        idx = distributed.part(batches[step])
        x = data.views(idx, 1)[0]
        with autocast(data.device):
            logits = net(x).float()
        loss = F.cross_entropy(logits, data.labels[idx])
        objective = loss + negative_entropy(logits) if cfg.noise_mode == "asym" else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total += loss.detach()
    return distributed.average(total) / len(batches)


def train_step(net: nn.Module, peer: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData,
               labeled: torch.Tensor, clean_prob: torch.Tensor, unlabeled: torch.Tensor,
               lam: float, lambda_u: float, cfg: FitConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One DivideMix step for ``net``; ``labeled``/``unlabeled`` are index batches from the peer's split.

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
            targets_u = co_guess(own[:, n_x:], peer_probs.view(2, n_u, data.num_classes), cfg.temperature)
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
                clean_prob: torch.Tensor, epoch: int, cfg: FitConfig,
                loop: Loop | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One DivideMix epoch of ``net`` on the split given by the peer's ``clean_prob`` (n,).

    As in the official code, an epoch is one pass over the labeled set, with unlabeled
    batches of the same size drawn cyclically. Returns mean losses and the labeled count.
    """
    net.train()
    peer.eval()
    distributed.sync_buffers(peer)  # it predicts in eval mode, from its BatchNorm statistics
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
    for step in loop.steps(steps, totals) if loop else range(steps):
        labeled = distributed.part(labeled_batches[step])
        unlabeled = distributed.part(unlabeled_order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
        lambda_u = cfg.lambda_u * linear_rampup(epoch + step / steps, cfg.warmup, cfg.rampup_epochs)
        loss_x, loss_u = train_step(net, peer, optimizer, data, labeled, clean_prob[labeled], unlabeled,
                                    lams[step], lambda_u, cfg)
        totals += torch.stack([loss_x, loss_u])
    means = distributed.average(totals) / steps
    return means[0], means[1], n_labeled


def co_divide(net: nn.Module, data: TrainingData, history: list[torch.Tensor], cfg: FitConfig,
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


# ---------------------------------------------------------------------------------------------
# The settings chosen from the data (rules in auto.py), kept in state.extra["auto"]; config.resolve
# turns them into the effective config.


def quota_share(state: TrainingState) -> float:
    """Share of each class the 'quota' selection labels: 1 − the noise estimated when warm-up ended,
    or the agreement when the guard last switched to the quota or recovered a locked quota split."""
    decided = state.extra["auto"]
    return decided["quota_share"] if "quota_share" in decided else 1 - decided["noise"]["rate"]


def ensemble_agreement(nets: list[nn.Module], data: TrainingData, cfg: FitConfig) -> tuple[float, np.ndarray]:
    """Share of samples whose given label the two networks' mean prediction is, and that prediction (n,)."""
    probs = torch.stack([torch.softmax(predict_logits(net, data, cfg.eval_batch_size), dim=1) for net in nets])
    predicted = probs.mean(0).argmax(dim=1)
    return (predicted == data.labels).float().mean().item(), predicted.cpu().numpy()


def snapshot(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> dict[str, list[dict]]:
    return {"nets": [{k: v.detach().clone() for k, v in net.state_dict().items()} for net in nets],
            "optimizers": [copy.deepcopy(opt.state_dict()) for opt in optimizers]}


def adaptive_warmup(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
                    cfg: FitConfig, state: TrainingState, epoch: int) -> tuple[float, str | None]:
    """After warm-up epoch ``epoch``: measure agreement, keep the best networks so far, and when
    ``auto.warmup_over`` says so, go back to the best ones and end warm-up (returns a note).

    ``cfg`` is the config as given (None where the rules decide), not the resolved one.
    """
    decided = state.extra.setdefault("auto", {})
    agreement, predicted = ensemble_agreement(nets, data, cfg)
    history = decided.setdefault("warmup_agreement", [])
    history.append(agreement)
    if best_warmup_epoch(history) == len(history) - 1:
        decided["best"] = {**snapshot(nets, optimizers), "predicted": torch.from_numpy(predicted)}
    chance, limit = float(torch.bincount(data.labels).max()) / len(data), warmup_limit(cfg)
    if not warmup_over(history, chance, limit):
        if "near_chance" in decided or not warmup_over(history, max_epochs=limit):
            return agreement, None
        decided["near_chance"] = len(history)  # the patience alone would have ended warm-up here
        kept = history[best_warmup_epoch(history)]
        note = (f"Warm-up goes on: the networks agree with {kept:.0%} of the given labels, near the {chance:.0%} "
                "of always predicting the most common one")
        log.info("%s.", note)
        return agreement, note
    best = decided.pop("best")
    for net, opt, net_state, opt_state in zip(nets, optimizers, best["nets"], best["optimizers"]):
        net.load_state_dict(net_state)
        opt.load_state_dict(opt_state)
    note = end_warmup(best["predicted"].numpy(), data, cfg, state, epoch + 1, best_warmup_epoch(history) + 1)
    return agreement, note


def end_warmup(predicted: np.ndarray, data: TrainingData, cfg: FitConfig, state: TrainingState,
               warmup: int, kept_epoch: int | None = None) -> str:
    """Record the warm-up length, estimate the noise from the networks' predictions at its end and
    choose the settings."""
    noise = estimate_noise(predicted, data.labels.cpu().numpy(), data.num_classes)
    if cfg.noise_mode != "auto":  # the user's word on the kind of noise wins
        noise.kind = "pair" if cfg.noise_mode == "asym" else "spread"
    settings = choose_settings(noise, data.num_classes)
    state.extra.setdefault("auto", {}).update(warmup=warmup, noise=asdict(noise), settings=settings)
    chosen = {k: v for k, v in settings.items() if getattr(cfg, k) is None} if cfg.auto else {}
    note = (f"Warm-up ended after {warmup} epoch(s)" + (f", networks from epoch {kept_epoch}" if kept_epoch else "")
            + f"; they disagree with {noise.rate:.0%} of the given labels ({noise.kind} noise)")
    if chosen:
        note += "; chose " + ", ".join(f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}"
                                       for k, v in chosen.items())
    log.info("%s.", note)
    return note


def guard_fires(labeled: float, agreement: float, cfg: FitConfig, state: TrainingState) -> str | None:
    """Feed this epoch's labeled share and agreement to the self-locking guard; a note when it fires.

    With ``auto`` the run recovers by a warm-up epoch of both networks on all labels instead of
    this epoch's DivideMix epoch (at most MAX_RECOVERIES times): a locked split came from networks
    too weak when warm-up ended, and training on its small labeled set does not make them stronger.
    Under the 'quota' selection, whose share came from those networks, the share becomes this
    epoch's agreement. The other side of the guard is :func:`lenient_fires`.
    """
    guard = state.extra.setdefault("auto", {}).setdefault("guard", {"labeled": [], "agreement": [],
                                                                     "recoveries": 0})
    for name, value in (("labeled", labeled), ("agreement", agreement)):
        guard[name] = [*guard[name], value][-LOCK_EPOCHS:]
    if not is_locked(guard["labeled"], guard["agreement"]):
        return None
    guard["labeled"], guard["agreement"] = [], []
    recover = cfg.auto and guard["recoveries"] < MAX_RECOVERIES
    guard["recoveries"] += recover
    if recover and cfg.selection == "quota":
        state.extra["auto"]["quota_share"] = agreement
    note = (f"The split has locked itself: the labeled sets hold {labeled:.0%} of the samples while the "
            f"networks predict the given label for {agreement:.0%}. "
            + ("Running a warm-up epoch on all labels to recover." if recover else
               "Consider a longer --warmup (or --auto)."))
    log.warning(note)
    return note if recover else None


def lenient_fires(cfg: FitConfig, selection: str, state: TrainingState) -> str | None:
    """The guard's other side, on the shares :func:`guard_fires` recorded: a labeled set far above the
    share of samples whose given label the networks predict (``auto.is_lenient``) holds mostly wrong
    labels. With ``auto`` and no ``--selection`` given, the run switches to the 'quota' selection from
    the next epoch (recorded in the auto settings); otherwise it warns. A note when it fires.

    ``cfg`` is the config as given; ``selection`` the one in use.
    """
    decided = state.extra["auto"]
    guard = decided["guard"]
    if selection == "quota" or not is_lenient(guard["labeled"], guard["agreement"]):
        return None
    labeled, agreement = guard["labeled"][-1], guard["agreement"][-1]
    guard["labeled"], guard["agreement"] = [], []
    switch = cfg.auto and cfg.selection is None
    if switch:  # the quota's share: what the networks agree with now
        decided["settings"] = {**decided.get("settings", {}), "selection": "quota"}
        decided["quota_share"], guard["switched"] = agreement, len(state.history) + 1
    note = (f"The split is too lenient: the labeled sets hold {labeled:.0%} of the samples while the networks "
            f"predict the given label for only {agreement:.0%}, so most labeled samples are ones they call "
            f"wrong. " + ("Switching to a class-wise quota (--selection quota) from the next epoch." if switch
                          else "Consider --selection quota (or --auto)."))
    log.warning(note)
    return note


def warmup_both(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
                cfg: FitConfig, state: TrainingState) -> list[float]:
    """A warm-up epoch of each network; their mean losses."""
    def warm(k: int) -> float:
        return warmup_epoch(nets[k], optimizers[k], data, cfg, Loop(state, f"warm-up {k + 1}", cfg.seed)).item()

    return [once(state, f"warm-up {k + 1}", partial(warm, k)) for k in (0, 1)]


def one_epoch(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
              cfg: FitConfig, state: TrainingState, epoch: int) -> EpochReport:
    """Epoch ``epoch`` (0-based) of DivideMix: warm-up of both networks, or co-divide + a train epoch of each.

    Work that must not be redone when an epoch stopped by Ctrl-C resumes goes through ``once``.
    """
    note = None
    if cfg.warmup is not None and epoch >= cfg.warmup and "warmup" not in state.extra.get("auto", {}):
        note = end_warmup(ensemble_agreement(nets, data, cfg)[1], data, cfg, state, cfg.warmup)
    plan = resolve(cfg, len(data), state.extra.get("auto"))
    lr = learning_rate(epoch, plan)
    set_learning_rate(optimizers, lr)
    if epoch < plan.warmup:
        report = EpochReport(epoch + 1, plan.epochs, "warm-up", lr, 0.0,
                             loss=warmup_both(nets, optimizers, data, plan, state))
        if cfg.warmup is None:
            agreement, report.note = adaptive_warmup(nets, optimizers, data, cfg, state, epoch)
            report.agreement, report.epochs = [agreement], resolve(cfg, len(data), state.extra.get("auto")).epochs
        return report
    divided = once(state, "co-divide", lambda: [co_divide(net, data, hist, plan, quota_share(state), cfg.seed + epoch)
                                                for net, hist in zip(nets, state.loss_history)])
    labeled_share = float(np.mean([(prob > plan.p_threshold).float().mean().item() for prob, _, _ in divided]))
    agreement = [a for _, _, a in divided]
    if recovery := once(state, "guard", lambda: guard_fires(labeled_share, float(np.mean(agreement)), plan, state)):
        return EpochReport(epoch + 1, plan.epochs, "warm-up", lr, 0.0,
                           loss=warmup_both(nets, optimizers, data, plan, state), agreement=agreement, note=recovery)
    switched = once(state, "lenient guard", lambda: lenient_fires(cfg, plan.selection, state))

    def train_on_peer_split(k: int) -> tuple[float, float, int]:
        peer_split = divided[1 - k][0].to(data.device)  # a checkpoint's copy comes back on the CPU
        loss_x, loss_u, n_labeled = train_epoch(nets[k], nets[1 - k], optimizers[k], data, peer_split,
                                                epoch, plan, Loop(state, f"train {k + 1}", cfg.seed))
        return loss_x.item(), loss_u.item(), n_labeled

    results = [once(state, f"train {k + 1}", partial(train_on_peer_split, k)) for k in (0, 1)]
    labeled = [n for _, _, n in results]
    if 0 in labeled and not state.extra.get("warned_empty"):
        state.extra["warned_empty"] = True
        log.warning("A network's labeled set is empty this epoch (its GMM put every sample on the noisy side); "
                    "training continues on the unlabeled loss only.")
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


def train(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
          cfg: FitConfig, state: TrainingState, on_epoch: Callable[[EpochReport], None],
          after_epoch: Callable[[TrainingState], None]) -> None:
    """Warm up, then run DivideMix epochs, from ``state.epoch`` to the planned number of epochs.

    ``after_epoch(state)`` runs at every epoch boundary (the caller checkpoints there).
    """
    run_epochs(state, lambda: resolve(cfg, len(data), state.extra.get("auto")).epochs,
               partial(one_epoch, nets, optimizers, data, cfg, state), on_epoch, after_epoch)


@dataclass
class FinalEvaluation:
    """Per-sample results of both trained networks on the un-augmented training images."""

    clean_prob: np.ndarray  # (2, n) GMM clean probability from each network
    loss: np.ndarray  # (2, n) cross-entropy against the given label
    probs: np.ndarray  # (n, k) mean softmax of the two networks


def evaluate(nets: list[nn.Module], data: TrainingData, cfg: FitConfig,
             state: TrainingState | None = None) -> FinalEvaluation:
    """The final evaluation pass that export reads: clean probabilities and ensemble predictions.

    With the training's ``state``, each network's clean probability comes from the same rule as its
    training splits: its final losses averaged with the last ``loss_window − 1`` epochs' losses, and
    the selection in use, so the export's default threshold (0.5) flags what the fit's split does.
    Without it (MLNT), from the final losses and the GMM.
    """
    plan = (resolve(cfg, len(data), state.extra.get("auto")) if state is not None
            else replace(cfg, loss_window=1, selection="gmm"))
    histories = state.loss_history if state is not None else [[], []]
    logits = [predict_logits(net, data, cfg.eval_batch_size) for net in nets]
    losses = [F.cross_entropy(z, data.labels, reduction="none") for z in logits]
    given, share = data.labels.cpu().numpy(), quota_share(state) if plan.selection == "quota" else 1.0
    clean = []
    for loss, history in zip(losses, histories):
        window = [*history[max(0, len(history) + 1 - plan.loss_window):], normalized_loss(loss).cpu()]
        clean.append(split_clean_prob(torch.stack(window).mean(0).numpy(), given, data.num_classes,
                                      plan.selection, share, cfg.seed)[0])
    probs = torch.stack([torch.softmax(z, dim=1) for z in logits]).mean(0)
    return FinalEvaluation(np.stack(clean), torch.stack(losses).cpu().numpy(), probs.cpu().numpy())
