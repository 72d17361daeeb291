"""How the pieces are wired: which split each network trains on and with which weights, the ramp of the
unlabeled weight, the loss window, the warm-up's hand-over, augmented views, the image size rule, resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import effective, fit_interrupted_after
from PIL import Image

import labelclean
from labelclean import dividemix, rules
from labelclean.auto import NoiseEstimate
from labelclean.config import Decisions, FitConfig, settings
from labelclean.data import decode_images, median_side
from labelclean.dividemix import co_divide, linear_rampup, one_epoch, train_epoch
from labelclean.evaluation import normalized_loss, split_clean_prob
from labelclean.models import build_model
from labelclean.rules import Rules
from labelclean.training import TrainingData, TrainingState, make_optimizer, predict_logits


def random_data(n: int = 40, classes: int = 4, padding: int = 1, flip: bool = True) -> TrainingData:
    torch.manual_seed(0)
    images = torch.randint(0, 255, (n, 1, 8, 8), dtype=torch.uint8)
    return TrainingData.build(images, torch.arange(n) % classes, classes, [0.5], [0.25], torch.device("cpu"),
                              padding=padding, flip=flip)


def after_warmup(cfg: FitConfig, n: int = 40) -> TrainingState:
    """A DivideMix run whose one-epoch warm-up ended at 30% spread noise."""
    noise = NoiseEstimate(0.3, 0.1, "spread")
    return TrainingState(epoch=1, decisions=Decisions(n_samples=n, median_side=8, warmup=1, noise=noise,
                                                      chosen={"lambda_u": 25.0, "loss_window": 1, "selection": "gmm"}))


def test_each_network_trains_on_its_peers_split_with_its_own_loss_history(monkeypatch):
    data = random_data()
    nets = [build_model("small_cnn", 1, 4, 8) for _ in range(2)]
    cfg = FitConfig(epochs=3, warmup=1, batch_size=8)
    state = after_warmup(cfg)
    splits = [torch.linspace(0, 1, 40), torch.linspace(1, 0, 40)]  # each network's own clean probabilities
    histories, trained = [], []

    def divide(net, data, history, plan, share, seed):
        histories.append(history)
        return splits[nets.index(net)], True, 0.5

    def train(net, peer, optimizer, data, clean_prob, epoch, plan, loop):
        trained.append((nets.index(net), nets.index(peer), clean_prob))
        return torch.tensor(1.0), torch.tensor(0.5), int((clean_prob > plan.p_threshold).sum())

    monkeypatch.setattr(dividemix, "co_divide", divide)
    monkeypatch.setattr(dividemix, "train_epoch", train)
    optimizers = [make_optimizer(net, effective()) for net in nets]
    report = one_epoch(nets, optimizers, data, Rules(cfg, state), state, epoch=1)
    assert histories[0] is state.loss_history[0] and histories[1] is state.loss_history[1]
    assert [(k, peer) for k, peer, _ in trained] == [(0, 1), (1, 0)]
    for k, _, clean_prob in trained:
        torch.testing.assert_close(clean_prob, splits[1 - k])  # the peer's split, not its own
    assert report.labeled == [int((splits[1] > 0.5).sum()), int((splits[0] > 0.5).sum())]


def test_a_train_epoch_labels_the_samples_above_the_threshold_weighted_by_their_clean_probability(monkeypatch):
    data = random_data()
    cfg = effective(epochs=30, warmup=2, batch_size=4, p_threshold=0.5, lambda_u=25.0)
    clean_prob = torch.rand(40, generator=torch.Generator().manual_seed(1))
    steps = []

    def step(net, peer, optimizer, data, labeled, weights, unlabeled, lam, lambda_u, cfg, prior):
        steps.append((labeled, weights, unlabeled, lambda_u))
        return torch.tensor(0.0), torch.tensor(0.0)

    monkeypatch.setattr(dividemix, "train_step", step)
    net, peer = build_model("small_cnn", 1, 4, 8), build_model("small_cnn", 1, 4, 8)
    train_epoch(net, peer, make_optimizer(net, cfg), data, clean_prob, 5, cfg)
    labeled = torch.cat([s[0] for s in steps])
    assert sorted(labeled.tolist()) == (clean_prob > 0.5).nonzero().squeeze(1).tolist()  # each labeled once
    for batch, weights, unlabeled, _ in steps:
        torch.testing.assert_close(weights, clean_prob[batch])  # co-refinement weights: the batch's own
        assert (clean_prob[unlabeled] <= 0.5).all() and len(unlabeled) == len(batch)
    # The unlabeled weight ramps within the epoch, step by step, as the paper's linear ramp-up.
    ramp = [s[3].item() for s in steps]  # device tensors
    assert ramp == pytest.approx([25.0 * linear_rampup(5 + k / len(steps), 2, 16) for k in range(len(steps))])
    assert all(a < b for a, b in itertools.pairwise(ramp))


def test_co_divide_averages_the_loss_window_and_keeps_only_that_many_epochs():
    data = random_data()
    net = build_model("small_cnn", 1, 4, 8).eval()
    earlier = [torch.rand(40, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    history = list(earlier)
    cfg = effective(loss_window=3, selection="gmm")
    prob, _, _ = co_divide(net, data, history, cfg, share=1.0, seed=0)
    loss = torch.nn.functional.cross_entropy(predict_logits(net, data, 512), data.labels, reduction="none")
    assert len(history) == 3 and all(a is b for a, b in zip(history[:2], earlier[2:]))
    window = torch.stack([*earlier[2:], normalized_loss(loss)]).mean(0).numpy()
    expected, _ = split_clean_prob(window, data.labels.numpy(), 4, "gmm", 1.0, seed=0)
    np.testing.assert_allclose(prob.numpy(), expected, rtol=1e-6)


def test_the_warm_up_hands_over_the_networks_of_the_epoch_it_says_it_kept(monkeypatch):
    scripted = iter([0.30, 0.50, 0.58, 0.57, 0.582, 0.56, 0.55])  # best: epoch 3 (0.582 is within the gain)
    predictions = iter(np.full(40, k % 4) for k in range(7))
    monkeypatch.setattr(rules, "ensemble_agreement", lambda nets, data, cfg: (next(scripted), next(predictions)))
    data = random_data()
    nets = [torch.nn.Linear(2, 2) for _ in range(2)]
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) for net in nets]
    state = TrainingState(decisions=Decisions(n_samples=40, median_side=8))
    run_rules, notes = Rules(FitConfig(), state), []
    for epoch in range(7):
        for net in nets:  # what this epoch's training left
            torch.nn.init.constant_(net.weight, epoch)
        notes.append(run_rules.after_warmup_epoch(nets, optimizers, data, epoch)[1])
        if state.decisions.warmup is not None:
            break
    assert notes[-1].startswith("Warm-up ended after 6 epoch(s), networks from epoch 3")
    assert all((net.weight == 2).all() for net in nets)  # epoch 3's networks (0-based 2)
    assert state.decisions.noise.rate == pytest.approx(np.mean(np.full(40, 2) != data.labels.numpy()))


def test_the_two_augmented_views_of_a_batch_differ_and_each_image_gets_its_own_crop():
    images = torch.randint(0, 255, (1, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = TrainingData.build(images.repeat(32, 1, 1, 1), torch.zeros(32, dtype=torch.long), 2, [0.5], [0.25],
                              torch.device("cpu"), padding=2, flip=True)
    torch.manual_seed(0)
    first, second = data.views(torch.arange(32))
    assert not torch.equal(first, second)
    assert len({tuple(view.flatten().tolist()) for view in first}) > 8  # the same image, cropped differently
    plain = data.augment.plain(images)
    assert not all(torch.equal(view, plain[0]) for view in first)


@pytest.mark.parametrize("sizes, cuda, expected", [
    ([(40, 20), (20, 60), (30, 30), (50, 24), (24, 90)], False, 24),  # shorter sides 20, 20, 30, 24, 24
    ([(200, 100), (120, 300), (400, 150)], True, 120),  # shorter sides 100, 120, 150: no cap on a GPU
    ([(200, 100), (120, 300), (400, 150)], False, 32),  # the CPU's cap
])
def test_the_image_size_is_the_median_shorter_side_of_mixed_non_square_images(tmp_path, sizes, cuda, expected):
    files = []
    for k, size in enumerate(sizes):
        files.append(tmp_path / f"{k}.png")
        Image.new("L", size, color=k * 40).save(files[-1])
    decided = Decisions(n_samples=len(files), median_side=median_side(files), device="cuda" if cuda else "cpu")
    plan = settings(FitConfig(), decided)
    assert plan.image_size == expected
    decoded, bad = decode_images(files, plan.image_size)
    assert not bad and tuple(decoded.shape) == (len(files), 1, expected, expected)


def test_a_fit_stopped_after_an_epoch_resumes_to_the_same_result(few_digits, tmp_path):
    options = {"epochs": 3, "warmup": 1, "batch_size": 8, "arch": "small_cnn", "device": "cpu"}
    reference = labelclean.fit(few_digits.images_dir, few_digits.labels_csv, tmp_path / "ref", **options)
    fit_interrupted_after(2, few_digits, tmp_path / "cut", **options)
    resumed = labelclean.fit(None, None, tmp_path / "cut", resume=True)
    assert resumed.export().equals(reference.export())
    assert resumed.config["auto"] == reference.config["auto"]
    assert resumed.config["settings"] == reference.config["settings"]
