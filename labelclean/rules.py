"""The rules that adapt a DivideMix run to its data, in one controller the method calls at named points:

* :meth:`Rules.after_warmup_epoch` — the adaptive warm-up: keep the best networks, end on a plateau
  (auto.warmup_over) and hand over the networks of the epoch it kept;
* :meth:`Rules.end_warmup` — estimate the noise from the warmed-up networks (auto.estimate_noise) and
  choose λu, loss window and selection for it (auto.choose_settings);
* :meth:`Rules.after_split` — the self-locking guard (auto.is_locked): recover with a warm-up epoch;
* :meth:`Rules.lenient` — its other side (auto.is_lenient): switch to the class-wise quota.

What they decide goes into the fit's typed record (``state.decisions``, :class:`labelclean.config.Decisions`);
:meth:`Rules.settings` turns it, with the declared options, into the effective settings. The measurements
behind each rule are in docs/methods.md and docs/high-noise.md.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from .auto import (
    LOCK_EPOCHS,
    MAX_RECOVERIES,
    best_warmup_epoch,
    choose_settings,
    estimate_noise,
    is_lenient,
    is_locked,
    network_hint,
    warmup_over,
)
from .config import FitConfig, Settings, may_choose_quota, settings, warmup_limit
from .evaluation import ensemble_agreement
from .training import TrainingData, TrainingState

log = logging.getLogger("labelclean")


class Rules:
    """The declared options of a fit and its training state; every decision is recorded in ``state.decisions``."""

    def __init__(self, cfg: FitConfig, state: TrainingState):
        self.cfg, self.state = cfg, state

    def settings(self) -> Settings:
        return settings(self.cfg, self.state.decisions)

    @property
    def adaptive_warmup(self) -> bool:
        return self.cfg.warmup is None

    def before_epoch(self, nets: list[nn.Module], data: TrainingData, epoch: int) -> str | None:
        """At the start of epoch ``epoch``: end a declared warm-up that is over (:meth:`end_warmup`); a note then."""
        if self.cfg.warmup is None or epoch < self.cfg.warmup or self.state.decisions.warmup is not None:
            return None
        return self.end_warmup(ensemble_agreement(nets, data, self.settings())[1], data, self.cfg.warmup)

    def after_warmup_epoch(self, nets: list[nn.Module], optimizers: list[torch.optim.Optimizer],
                           data: TrainingData, epoch: int) -> tuple[float, str | None]:
        """After adaptive warm-up epoch ``epoch``: measure agreement, keep the best networks so far, and when
        ``auto.warmup_over`` says so, go back to the best ones and end warm-up (returns a note)."""
        decided, plan = self.state.decisions, self.settings()
        agreement, predicted = ensemble_agreement(nets, data, plan)
        decided.warmup_agreement.append(agreement)
        history = decided.warmup_agreement
        if best_warmup_epoch(history) == len(history) - 1:
            self.state.extra["warmup_best"] = {**snapshot(nets, optimizers), "predicted": torch.from_numpy(predicted)}
        chance, limit = float(torch.bincount(data.labels).max()) / len(data), warmup_limit(self.cfg)
        if not warmup_over(history, chance, limit):
            return agreement, self.near_chance(chance, limit)
        best = self.state.extra.pop("warmup_best")
        for net, opt, net_state, opt_state in zip(nets, optimizers, best["nets"], best["optimizers"]):
            net.load_state_dict(net_state)
            opt.load_state_dict(opt_state)
        return agreement, self.end_warmup(best["predicted"].numpy(), data, epoch + 1, best_warmup_epoch(history) + 1)

    def near_chance(self, chance: float, limit: int) -> str | None:
        """A note, once, when only the chance bar keeps warm-up going (the patience alone would end it)."""
        decided = self.state.decisions
        history = decided.warmup_agreement
        if decided.near_chance is not None or not warmup_over(history, max_epochs=limit):
            return None
        decided.near_chance = len(history)
        kept = history[best_warmup_epoch(history)]
        note = (f"Warm-up goes on: the networks agree with {kept:.0%} of the given labels, near the {chance:.0%} "
                "of always predicting the most common one")
        log.info("%s.", note)
        return note

    def end_warmup(self, predicted: np.ndarray, data: TrainingData, warmup: int, kept_epoch: int | None = None) -> str:
        """Record the warm-up length, estimate the noise from the networks' predictions at its end and
        choose the settings."""
        noise = estimate_noise(predicted, data.labels.cpu().numpy(), data.num_classes)
        if self.cfg.noise_mode != "auto":  # the user's word on the kind of noise wins
            noise.kind = "pair" if self.cfg.noise_mode == "asym" else "spread"
        decided = self.state.decisions
        decided.warmup, decided.noise, decided.chosen = warmup, noise, choose_settings(noise, data.num_classes)
        plan = self.settings()
        chosen = {k: getattr(plan, k) for k in decided.chosen if getattr(self.cfg, k) is None} if self.cfg.auto else {}
        note = (f"Warm-up ended after {warmup} epoch(s)" + (f", networks from epoch {kept_epoch}" if kept_epoch else "")
                + f"; they disagree with {noise.rate:.0%} of the given labels ({noise.kind} noise)")
        if chosen:
            note += "; chose " + ", ".join(f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}"
                                           for k, v in chosen.items())
        log.info("%s.", note)
        if hint := network_hint(plan.arch, plan.image_size, decided.n_samples, noise.rate, decided.start.kind):
            log.warning(hint)
        return note

    def after_split(self, labeled: float, agreement: float, selection: str) -> str | None:
        """Feed this epoch's labeled share and agreement to the self-locking guard; a note when it fires.

        With ``auto`` the run recovers by a warm-up epoch of both networks on all labels instead of this
        epoch's DivideMix epoch (at most MAX_RECOVERIES times): a locked split came from networks too weak
        when warm-up ended, and training on its small labeled set does not make them stronger. Under the
        'quota' selection (``selection``: the one in use), whose share came from those networks, the share
        becomes this epoch's agreement.
        """
        guard = self.state.decisions.guard
        guard.labeled = [*guard.labeled, labeled][-LOCK_EPOCHS:]
        guard.agreement = [*guard.agreement, agreement][-LOCK_EPOCHS:]
        if not is_locked(guard.labeled, guard.agreement):
            return None
        guard.labeled, guard.agreement = [], []
        recover = self.cfg.auto and guard.recoveries < MAX_RECOVERIES
        guard.recoveries += recover
        if recover and selection == "quota":
            self.state.decisions.quota_share = agreement
        note = (f"The split has locked itself: the labeled sets hold {labeled:.0%} of the samples while the "
                f"networks predict the given label for {agreement:.0%}. "
                + ("Running a warm-up epoch on all labels to recover." if recover else
                   "Consider a longer --warmup (or --auto)."))
        log.warning(note)
        return note if recover else None

    def lenient(self, selection: str) -> str | None:
        """The guard's other side, on the shares :meth:`after_split` recorded: a labeled set far above the
        share of samples whose given label the networks predict holds mostly wrong labels. When the rules may
        choose the selection (:func:`labelclean.config.may_choose_quota`), the run switches to the 'quota'
        selection from the next epoch; otherwise it warns. ``selection`` is the one in use; a note when it fires.
        """
        guard = self.state.decisions.guard
        if selection == "quota" or not is_lenient(guard.labeled, guard.agreement):
            return None
        labeled, agreement = guard.labeled[-1], guard.agreement[-1]
        guard.labeled, guard.agreement = [], []
        switch = may_choose_quota(self.cfg)
        if switch:  # the quota's share: what the networks agree with now
            self.state.decisions.quota_share, guard.switched = agreement, len(self.state.history) + 1
        note = (f"The split is too lenient: the labeled sets hold {labeled:.0%} of the samples while the networks "
                f"predict the given label for only {agreement:.0%}, so most labeled samples are ones they call "
                f"wrong. " + ("Switching to a class-wise quota (--selection quota) from the next epoch." if switch
                              else "Consider --selection quota (or --auto)."))
        log.warning(note)
        return note


def snapshot(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> dict[str, list[dict]]:
    return {"nets": [{k: v.detach().clone() for k, v in net.state_dict().items()} for net in nets],
            "optimizers": [copy.deepcopy(opt.state_dict()) for opt in optimizers]}
