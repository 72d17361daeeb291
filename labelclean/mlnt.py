"""MLNT (Li, Wong, Zhao, Kankanhalli, CVPR 2019): meta-learning based noise-tolerant training.

The student is trained with cross-entropy on the given labels, and before each ordinary update
it is also asked to be *robust to one more step of label noise*:

1. **baseline** — ``warmup`` epochs of plain cross-entropy (:func:`labelclean.dividemix.warmup_epoch`).
   A frozen copy becomes the **feature model** that defines neighbours below;
2. **synthetic noise** — per mini-batch, ``meta_sets`` (M) label sets: in each, a random fraction
   ``perturb_ratio`` (ρ) of the batch takes the given label of one of its ``neighbours`` (k) nearest
   samples in the same batch, in the feature model's penultimate space (:func:`synthetic_labels`);
3. **fast weights** — per set, one SGD step ``θ′ = θ − α∇θ CE(θ; noisy labels)`` (:func:`fast_weights`,
   through ``torch.func.functional_call``, so any architecture works);
4. **consistency** — the fast model should still agree with the **teacher**, an exponential moving
   average of the student (:func:`ema_update`): ``KL(teacher ‖ fast model)`` (:func:`consistency_loss`);
5. **update** — ``CE + w · mean consistency`` (:func:`train_step`); the meta-gradient flows through the
   fast-weight step (second order; ``first_order`` drops those terms). ``w`` ramps up and the EMA
   decay switches from 0.99 to 0.999 as in the official ``main.py`` (:func:`meta_schedule`);
6. **iterative training** — the meta epochs are split into ``rounds``; each round after the first
   starts the student and teacher from the previous round's teacher (the *mentor*) and leaves out
   the samples the mentor considers mislabeled (:func:`mentor_keeps`).

Where the paper and the official code leave a choice open, or assume things a user's folder does
not have (a clean validation set, ImageNet weights), this module chooses as follows:

* the student continues from the baseline (the official student starts from ImageNet weights and
  the baseline is a separate run used only for features); the feature model stays the baseline in
  every round;
* the "best model" of a round is its teacher: without clean validation labels it cannot be chosen
  by accuracy, and the EMA teacher follows the noisy labels less closely than the student;
* a sample is "mislabeled" for the mentor when it predicts another class than the given label
  (``mentor_filter='disagree'``). The alternative ``'gmm'`` (DivideMix's GMM on the mentor's
  per-sample loss, clean probability ≤ ``p_threshold``) works under symmetric noise but, measured
  on digits with 40% class-pair noise, left out *every* sample labeled 2, 3, 5, 6 or 7 (a flipped
  class has high loss throughout), and round 2 then never saw those classes (test accuracy 0.735);
* each round has its own learning-rate step (÷10 at half the round), meta-weight ramp and EMA
  schedule, as each round of the official code is a fresh run of ``main.py``;
* the M fast forward passes do not update the student's batch-norm running statistics (the
  official code's do, as a side effect); the teacher's statistics come from its own train-mode
  forward passes, as in the official code.

Outputs keep DivideMix's contract with **student and teacher as the two networks**
(:func:`evaluate`): ``clean_prob_net1``/``net2`` are the GMM clean probabilities from the student's
and the teacher's per-sample losses, predictions and refined labels use their mean softmax, and
``predict`` takes their mean softmax too.
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .config import FitConfig, Settings, settings
from .errors import LabelcleanError
from .evaluation import FinalEvaluation, clean_probability, final_evaluation, normalized_loss
from .training import (
    EpochReport,
    Loop,
    TrainingData,
    TrainingState,
    autocast,
    once,
    predict_logits,
    run_epochs,
    set_learning_rate,
    step_decay,
    warmup_epoch,
)

# ---------------------------------------------------------------------------------------------
# The method's math, as functions on tensors and modules.


def nearest_neighbours(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (n, min(k, n−1)) of each row's nearest *other* rows of ``features`` (n, d), Euclidean."""
    dist = torch.cdist(features, features)
    dist.fill_diagonal_(float("inf"))
    return dist.topk(min(k, len(features) - 1), dim=1, largest=False).indices


def synthetic_labels(labels: torch.Tensor, neighbours: torch.Tensor, sets: int, ratio: float) -> torch.Tensor:
    """``sets`` synthetic noisy copies (sets, n) of ``labels`` (n,).

    In each copy, ``floor(n · ratio)`` randomly chosen samples take the label of one of their
    neighbours (a row of ``neighbours``, chosen uniformly), as in the official ``main.py``; the
    others keep their label.
    """
    n, k = neighbours.shape
    chosen = torch.rand(sets, n, device=labels.device).argsort(dim=1)[:, :int(n * ratio)]
    pick = torch.randint(k, chosen.shape, device=labels.device)
    noisy = labels.repeat(sets, 1)
    noisy.scatter_(1, chosen, labels[neighbours[chosen, pick]])
    return noisy


def fast_weights(params: dict[str, torch.Tensor], loss: torch.Tensor, step: float,
                 create_graph: bool) -> dict[str, torch.Tensor]:
    """``θ′ = θ − step · ∇θ loss`` for every named parameter: one plain SGD step, kept functional.

    With ``create_graph`` the step stays differentiable, so the meta-gradient includes its
    second-order terms (the paper); without, ``∇θ loss`` is a constant (first-order approximation).
    """
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph, retain_graph=True)
    return {name: p - step * g for (name, p), g in zip(params.items(), grads)}


def consistency_loss(fast_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher ‖ fast model), averaged over samples *and* classes like the official ``nn.KLDivLoss()``."""
    return F.kl_div(F.log_softmax(fast_logits, dim=1), teacher_probs, reduction="sum") / fast_logits.numel()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher ← decay · teacher + (1 − decay) · student`` for every parameter (not the BN statistics)."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s, 1 - decay)


def meta_schedule(progress: float, cfg: Settings) -> tuple[float, float]:
    """Meta-loss weight and EMA decay ``progress`` epochs into a round.

    The official code ramps the weight as ``exp(−5(1−t)²)`` between two iterations and keeps the
    decay at 0.99 until the ramp ends, then 0.999; here the ramp lasts ``meta_rampup`` epochs.
    """
    if progress >= cfg.meta_rampup:
        return cfg.meta_weight, cfg.ema_decay_late
    return cfg.meta_weight * math.exp(-5 * (1 - progress / cfg.meta_rampup) ** 2), cfg.ema_decay


def penultimate_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of ``net``'s last linear layer (its classifier) for ``x``: (n, d)."""
    classifier = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    handle = classifier.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return captured[0].flatten(1)


def frozen_copy(net: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``net``'s architecture holding ``state_dict``, in eval mode, without gradients."""
    copied = copy.deepcopy(net)
    copied.load_state_dict(state_dict)
    return copied.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Training.


def meta_backward(net: nn.Module, x: torch.Tensor, logits: torch.Tensor, label_sets: torch.Tensor,
                  teacher_probs: torch.Tensor, weight: float, cfg: Settings) -> torch.Tensor:
    """Add ``weight · mean_m KL(teacher ‖ f(x; θ′_m))`` to ``net``'s gradients; return the mean KL.

    ``logits`` is the student's output on ``x`` (its graph is reused for every set's inner step, as
    in the official code); each set is back-propagated on its own so memory holds one set at a time.
    """
    params = dict(net.named_parameters())
    buffers = {name: b.clone() for name, b in net.named_buffers()}  # fast passes leave BN statistics alone
    total = logits.new_zeros(())
    for noisy in label_sets:
        fast = fast_weights(params, F.cross_entropy(logits, noisy), cfg.meta_lr, create_graph=not cfg.first_order)
        with autocast(x.device):
            fast_logits = torch.func.functional_call(net, (fast, buffers), (x,)).float()
        loss = consistency_loss(fast_logits, teacher_probs)
        (weight / len(label_sets) * loss).backward(retain_graph=True)
        total += loss.detach()
    return total / len(label_sets)


def train_step(student: nn.Module, teacher: nn.Module, feature_model: nn.Module, optimizer: torch.optim.Optimizer,
               data: TrainingData, idx: torch.Tensor, weight: float, decay: float, cfg: Settings) -> torch.Tensor:
    """One MLNT step on the samples ``idx``, in the official order: CE on the given labels, EMA update
    of the teacher, the meta-gradient of the M synthetic label sets, one optimizer step.

    Returns the CE and the mean consistency loss (a device tensor of 2).
    """
    x = data.views(idx, 1)[0]
    labels = data.labels[idx]
    with autocast(data.device):
        logits = student(x).float()
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    ema_update(teacher, student, decay)
    consistency = loss.new_zeros(())
    if weight > 0 and len(idx) > 1:  # a lone sample has no neighbour to take a label from
        with torch.no_grad(), autocast(data.device):
            teacher_probs = torch.softmax(teacher(x).float(), dim=1)
            features = penultimate_features(feature_model, x).float()
        label_sets = synthetic_labels(labels, nearest_neighbours(features, cfg.neighbours), cfg.meta_sets,
                                      cfg.perturb_ratio)
        consistency = meta_backward(student, x, logits, label_sets, teacher_probs, weight, cfg)
    optimizer.step()
    return torch.stack([loss.detach(), consistency])


def train_epoch(student: nn.Module, teacher: nn.Module, feature_model: nn.Module, optimizer: torch.optim.Optimizer,
                data: TrainingData, kept: torch.Tensor, round_epoch: int, cfg: Settings, loop: Loop) -> torch.Tensor:
    """One pass over the ``kept`` sample indices; returns the mean CE and consistency loss (2,)."""
    student.train()
    teacher.train()
    batches = kept[torch.randperm(len(kept), device=data.device)].split(cfg.batch_size)
    totals = torch.zeros(2, device=data.device)
    for step in loop.steps(len(batches), totals):
        idx = batches[step]
        weight, decay = meta_schedule(round_epoch + step / len(batches), cfg)
        totals += train_step(student, teacher, feature_model, optimizer, data, idx, weight, decay, cfg)
    return totals / len(batches)


def round_bounds(cfg: Settings) -> list[int]:
    """First epoch of every round, then ``cfg.epochs``: the meta epochs split as evenly as possible."""
    meta = cfg.epochs - cfg.warmup
    return [cfg.warmup + r * meta // cfg.rounds for r in range(cfg.rounds)] + [cfg.epochs]


def mentor_keeps(mentor: nn.Module, data: TrainingData, cfg: Settings, seed: int) -> torch.Tensor:
    """Mask (n,) of the samples a later round trains on: those the mentor considers correctly labeled.

    ``cfg.mentor_filter`` decides: 'disagree' keeps the samples whose given label is the mentor's
    prediction, 'gmm' those whose GMM clean probability under it is above ``p_threshold``, 'none' all.
    """
    if cfg.mentor_filter == "none":
        return torch.ones(len(data), dtype=torch.bool)
    logits = predict_logits(mentor, data, cfg.eval_batch_size)
    if cfg.mentor_filter == "disagree":
        keep = (logits.argmax(dim=1) == data.labels).cpu()
    else:
        loss = normalized_loss(F.cross_entropy(logits, data.labels, reduction="none"))
        keep = torch.as_tensor(clean_probability(loss.cpu().numpy(), seed=seed)[0] > cfg.p_threshold)
    if keep.sum() < 2:
        raise LabelcleanError(
            f"The previous round's teacher considers {len(keep) - int(keep.sum()):,} of {len(keep):,} labels "
            f"wrong, which leaves nothing to train on; try --mentor-filter none or --rounds 1."
        )
    return keep


def start_round(index: int, student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer,
                data: TrainingData, cfg: Settings, state: TrainingState, seed: int) -> None:
    """Set up round ``index`` (0-based) in ``state.extra``: the first freezes the baseline as the feature
    model and trains on every sample; later ones restart from the previous teacher on the samples it keeps.
    Either way the teacher starts as a copy of the student, as in the official code."""
    if index == 0:
        state.extra["feature_model"] = {k: v.detach().clone() for k, v in student.state_dict().items()}
        state.extra["kept"] = torch.ones(len(data), dtype=torch.bool)
    else:
        state.extra["kept"] = mentor_keeps(teacher, data, cfg, seed)
        student.load_state_dict(teacher.state_dict())
        optimizer.state.clear()  # a fresh run of the official code starts without momentum
    teacher.load_state_dict(student.state_dict())


def one_epoch(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
              cfg: Settings, state: TrainingState, epoch: int) -> EpochReport:
    """Epoch ``epoch`` (0-based): a baseline epoch of the student, or a meta epoch of the current round."""
    student, teacher = nets
    if epoch < cfg.warmup:
        set_learning_rate(optimizers, cfg.lr)
        loss = warmup_epoch(student, optimizers[0], data, cfg, Loop(state, "baseline", cfg.seed))
        return EpochReport(epoch + 1, cfg.epochs, "baseline", cfg.lr, 0.0, loss=[loss.item()])
    bounds = round_bounds(cfg)
    index = bisect_right(bounds, epoch) - 1
    if epoch == bounds[index]:  # once: a resumed epoch must not restart its round
        once(state, "round", lambda: start_round(index, student, teacher, optimizers[0], data, cfg, state,
                                                 seed=cfg.seed + epoch))
    lr = step_decay(cfg.lr, epoch - bounds[index], bounds[index + 1] - bounds[index])
    set_learning_rate(optimizers, lr)
    kept = state.extra["kept"].to(data.device).nonzero().squeeze(1)
    feature_model = frozen_copy(student, state.extra["feature_model"])
    loss, consistency = train_epoch(student, teacher, feature_model, optimizers[0], data, kept,
                                    epoch - bounds[index], cfg, Loop(state, "meta", cfg.seed)).tolist()
    return EpochReport(epoch + 1, cfg.epochs, "meta", lr, 0.0, loss=[loss],
                       noise_estimate=1 - len(kept) / len(data), round=index + 1, consistency=consistency,
                       meta_weight=meta_schedule(epoch + 1 - bounds[index], cfg)[0])


def train(nets: list[nn.Module], optimizers: list[torch.optim.Optimizer], data: TrainingData,
          cfg: FitConfig, state: TrainingState, on_epoch: Callable[[EpochReport], None],
          after_epoch: Callable[[TrainingState], None]) -> None:
    """Baseline, then MLNT rounds, from ``state.epoch`` to the planned epochs; ``nets`` is (student, teacher).
    No rule adapts an MLNT run: its settings are decided once from the declared options ``cfg``.

    Only the student's optimizer steps. ``state.extra`` holds the frozen feature model and the
    current round's kept-sample mask, so a resumed run continues mid-round exactly.
    """
    plan = settings(cfg, state.decisions)
    run_epochs(state, lambda: plan.epochs, partial(one_epoch, nets, optimizers, data, plan, state), on_epoch,
               after_epoch)


def evaluate(nets: list[nn.Module], data: TrainingData, cfg: FitConfig, state: TrainingState) -> FinalEvaluation:
    """The final evaluation (:func:`labelclean.evaluation.final_evaluation`) with (student, teacher) as the
    two networks: ``clean_prob`` rows are the GMM clean probabilities from their per-sample losses (final
    epoch only: MLNT keeps no loss window); ``probs`` is their mean softmax, from which the refined label
    is blended.
    """
    plan = replace(settings(cfg, state.decisions), loss_window=1, selection="gmm")
    return final_evaluation(nets, data, plan, [[], []])
