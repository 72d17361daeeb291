"""The DivideMix math on tiny CPU tensors: sharpening, co-refinement, co-guessing, MixMatch, GMM split."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, effective

import labelclean
from labelclean import dividemix, evaluation
from labelclean.augment import Augment
from labelclean.auto import NoiseEstimate
from labelclean.config import Decisions, FitConfig
from labelclean.dividemix import (
    align,
    co_guess,
    co_refine,
    evaluate,
    linear_rampup,
    mixmatch,
    semi_supervised_loss,
    sharpen,
    train_epoch,
    train_step,
    uniform_prior_penalty,
    unlabeled_prior,
)
from labelclean.evaluation import clean_probability, normalized_loss, split_clean_prob
from labelclean.models import build_model
from labelclean.training import (
    TrainingData,
    TrainingState,
    make_optimizer,
    negative_entropy,
    predict_logits,
    warmup_epoch,
)


def test_sharpen_lowers_entropy_and_keeps_rows_normalized():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    s = sharpen(p, 0.5)
    torch.testing.assert_close(s.sum(1), torch.ones(2))
    expected = p**2 / (p**2).sum(1, keepdim=True)
    torch.testing.assert_close(s, expected)
    assert (s.max(1).values > p.max(1).values).all()
    torch.testing.assert_close(sharpen(p, 1.0), p)


def test_co_refine_blends_given_label_and_prediction_by_clean_probability():
    own = torch.tensor([[[0.0, 1.0]], [[0.0, 1.0]]])  # 2 views, 1 sample, 2 classes: network says class 1
    given = torch.tensor([[1.0, 0.0]])  # given label class 0
    fully_clean = co_refine(own, given, torch.tensor([1.0]), temperature=1.0)
    torch.testing.assert_close(fully_clean, given)
    fully_noisy = co_refine(own, given, torch.tensor([0.0]), temperature=1.0)
    torch.testing.assert_close(fully_noisy, torch.tensor([[0.0, 1.0]]))
    half = co_refine(own, given, torch.tensor([0.3]), temperature=1.0)
    torch.testing.assert_close(half, torch.tensor([[0.3, 0.7]]))


def test_co_refine_averages_views():
    own = torch.tensor([[[0.2, 0.8]], [[0.6, 0.4]]])
    out = co_refine(own, torch.tensor([[1.0, 0.0]]), torch.tensor([0.0]), temperature=1.0)
    torch.testing.assert_close(out, torch.tensor([[0.4, 0.6]]))


def test_co_guess_averages_both_networks_and_views_then_sharpens():
    own = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    peer = torch.tensor([[[0.5, 0.5]], [[0.0, 1.0]]])
    torch.testing.assert_close(co_guess(own, peer, 1.0), torch.tensor([[0.5, 0.5]]))
    guess = co_guess(own, torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]]), 0.5)
    mean = torch.tensor([[0.625, 0.375]])  # over both networks and both views; then sharpened with T = 0.5
    torch.testing.assert_close(guess, mean**2 / (mean**2).sum())


def test_align_moves_the_guesses_toward_the_prior_and_keeps_a_batch_that_matches_it():
    favoured = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.8, 0.2]])  # the batch leans 80:20 to class 0
    aligned = align(favoured, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(aligned.sum(1), torch.ones(3))
    assert aligned[:, 1].mean() > 0.45  # was 0.2
    assert torch.equal(aligned[:, 1].argsort(), favoured[:, 1].argsort())  # the rows keep their order
    torch.testing.assert_close(align(favoured, torch.tensor([0.8, 0.2])), favoured)


def test_co_guess_aligns_before_sharpening_only_when_given_a_prior():
    own = torch.tensor([[[0.9, 0.1], [0.6, 0.4]], [[0.9, 0.1], [0.6, 0.4]]])
    torch.testing.assert_close(co_guess(own, own, 0.5, None), co_guess(own, own, 0.5))
    prior = torch.tensor([0.5, 0.5])
    torch.testing.assert_close(co_guess(own, own, 0.5, prior), sharpen(align(own[0], prior), 0.5))


def test_unlabeled_prior_counts_the_given_labels_of_the_unlabeled_samples_plus_one():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    is_labeled = torch.tensor([True, True, False, False, False, True])
    torch.testing.assert_close(unlabeled_prior(labels, is_labeled, 4), torch.tensor([2.0, 3.0, 1.0, 1.0]) / 7)


@pytest.mark.parametrize("aligned", [False, True])
def test_train_epoch_aligns_the_guesses_to_the_unlabeled_prior_only_when_asked(aligned, monkeypatch):
    data = tiny_training_data()
    cfg = effective(epochs=2, warmup=0, batch_size=8, p_threshold=0.5, lambda_u=25.0, align=aligned)
    priors = []
    monkeypatch.setattr(dividemix, "co_guess", lambda *args: priors.append(args[3]) or co_guess(*args))
    clean_prob = torch.arange(len(data)) % 2 * 0.9
    net, peer = build_model("small_cnn", 1, 3, 8), build_model("small_cnn", 1, 3, 8)
    train_epoch(net, peer, make_optimizer(net, cfg), data, clean_prob, 1, cfg)
    expected = unlabeled_prior(data.labels, clean_prob > 0.5, 3) if aligned else None
    assert priors and all(p is expected or torch.equal(p, expected) for p in priors)


def test_mixmatch_keeps_lambda_at_least_half_and_mixes_inputs_and_targets_alike():
    torch.manual_seed(0)
    x = torch.arange(8.0).view(8, 1)
    y = torch.eye(8)
    mixed_x, mixed_y = mixmatch(x, y, torch.tensor(0.2))  # 0.2 → 0.8
    partner = ((mixed_x - 0.8 * x) / 0.2).round().long().squeeze(1)
    assert sorted(partner.tolist()) == list(range(8))
    torch.testing.assert_close(mixed_y, 0.8 * y + 0.2 * y[partner])
    torch.testing.assert_close(mixed_y.sum(1), torch.ones(8))


def test_uniform_prior_penalty_is_zero_for_balanced_predictions_and_positive_for_collapsed():
    balanced = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    assert uniform_prior_penalty(balanced).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.tensor([[5.0, 0.0], [5.0, 0.0]])
    assert uniform_prior_penalty(collapsed).item() > 0.5


def test_negative_entropy_is_lowest_for_uniform_predictions():
    assert negative_entropy(torch.zeros(1, 4)).item() == pytest.approx(-np.log(4))
    assert negative_entropy(torch.tensor([[10.0, 0, 0, 0]])).item() > -0.01


def test_semi_supervised_loss_parts():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    total, loss_x, loss_u = semi_supervised_loss(logits, targets, n_labeled=2, lambda_u=10.0)
    expected_x = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    torch.testing.assert_close(loss_x, expected_x)
    assert loss_u.item() == pytest.approx(0.0, abs=1e-7)
    torch.testing.assert_close(total, loss_x + uniform_prior_penalty(logits))
    _, loss_x0, _ = semi_supervised_loss(logits, targets, n_labeled=0, lambda_u=1.0)
    assert loss_x0.item() == 0.0
    guessed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # the unlabeled row's softmax is (0.5, 0.5)
    total, loss_x, loss_u = semi_supervised_loss(logits, guessed, n_labeled=2, lambda_u=10.0)
    assert loss_u.item() == pytest.approx(0.25)  # mean over classes of (0.5 − 1)² and (0.5 − 0)²
    torch.testing.assert_close(total, loss_x + 10.0 * loss_u + uniform_prior_penalty(logits))
    torch.testing.assert_close(uniform_prior_penalty(torch.tensor([[5.0, 0.0], [5.0, 0.0]])),
                               0.5 * torch.log(0.5 / torch.softmax(torch.tensor([5.0, 0.0]), 0)).sum())


def test_linear_rampup():
    assert linear_rampup(5, warmup=5, length=16) == 0.0
    assert linear_rampup(13, warmup=5, length=16) == 0.5
    assert linear_rampup(100, warmup=5, length=16) == 1.0
    assert linear_rampup(3, warmup=5, length=0) == 1.0


def test_clean_probability_gives_low_loss_samples_high_probability():
    rng = np.random.default_rng(0)
    loss = np.r_[rng.normal(0.1, 0.03, 700), rng.normal(0.8, 0.1, 300)]
    prob, _ = clean_probability(np.clip(loss, 0, 1))
    assert prob.shape == (1000,)
    assert ((prob[:700] > 0.5).mean()) > 0.99
    assert ((prob[700:] < 0.5).mean()) > 0.99
    # the component order from sklearn must not matter: reversing the data gives reversed probabilities
    prob_rev, _ = clean_probability(np.clip(loss, 0, 1)[::-1])
    np.testing.assert_allclose(prob_rev[::-1], prob, atol=1e-6)


def test_identical_losses_call_every_sample_clean_with_a_warning(caplog):
    torch.testing.assert_close(normalized_loss(torch.tensor([1.0, 3.0, 2.0])), torch.tensor([0.0, 1.0, 0.5]))
    flat = normalized_loss(torch.full((5,), 2.3))
    assert "same loss" in caplog.text
    torch.testing.assert_close(flat, torch.zeros(5))
    given = np.array([0, 1, 0, 1, 0])
    for selection in ("gmm", "quota"):
        prob, _ = split_clean_prob(flat.numpy(), given, 2, selection, 0.5, seed=0)
        np.testing.assert_array_equal(prob, np.ones(5))  # no evidence against any label: all kept, none flagged


def test_a_fit_whose_losses_are_all_equal_ends_with_a_warning_and_an_export(digits, tmp_path, monkeypatch, caplog):
    # Networks that predict the same for every image: every per-sample loss is log(k), in training and at the end.
    for module in (dividemix, evaluation):  # co-divide's, and the agreement's and final evaluation's
        monkeypatch.setattr(module, "predict_logits", lambda net, data, batch_size: torch.zeros(len(data),
                                                                                                 data.num_classes))
    run = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", **TINY)
    table = run.export()
    assert "same loss" in caplog.text
    assert len(table) == 300 and (table["clean_prob"] == 1.0).all() and not table["is_noisy"].any()


def test_the_final_split_averages_the_loss_window_and_uses_the_training_selection():
    data = tiny_training_data(n=60, classes=3)
    nets = [build_model("small_cnn", 1, 3, 8).eval() for _ in range(2)]
    rng = np.random.default_rng(0)
    earlier = [[torch.as_tensor(rng.uniform(size=60), dtype=torch.float32) for _ in range(4)] for _ in range(2)]
    given = data.labels.numpy()
    for selection, window in (("gmm", 3), ("quota", 5), ("gmm", 1)):
        cfg = FitConfig(epochs=4, warmup=1, auto=False, lambda_u=0.0, p_threshold=0.5, loss_window=window,
                        selection=selection)
        noise = NoiseEstimate(0.6, 0.1, "spread")
        state = TrainingState(4, [list(h) for h in earlier], decisions=Decisions(median_side=8, noise=noise))
        result = evaluate(nets, data, cfg, state)
        for k, net in enumerate(nets):
            logits = predict_logits(net, data, 512)
            final = normalized_loss(torch.nn.functional.cross_entropy(logits, data.labels, reduction="none"))
            mean = torch.stack([*earlier[k][5 - window:], final]).mean(0).numpy()
            expected, _ = split_clean_prob(mean, given, 3, selection, 0.4, seed=0)
            np.testing.assert_allclose(result.clean_prob[k], expected, rtol=1e-6)
        if selection == "quota":  # the export's default split is the quota: 1 − the noise estimate of each class
            assert np.mean(result.clean_prob > 0.5) == pytest.approx(0.4, abs=0.03)


def tiny_training_data(n: int = 24, classes: int = 3, padding: int = 1, flip: bool = True):
    torch.manual_seed(0)
    images = torch.randint(0, 255, (n, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,))
    augment = Augment(torch.tensor(0.5).view(1, 1, 1, 1), torch.tensor(0.25).view(1, 1, 1, 1), padding, flip)
    return TrainingData(images, labels, classes, augment, torch.device("cpu"))


@pytest.mark.parametrize("noise_mode", ["sym", "asym"])
def test_warmup_is_one_sgd_step_of_cross_entropy_per_batch_plus_a_confidence_penalty_under_pair_noise(noise_mode, fp32):
    data = tiny_training_data(n=16, padding=0, flip=False)  # no random augmentation: the step can be redone
    cfg = effective(batch_size=8, noise_mode=noise_mode)  # one batch of 2 × 8: the whole set
    net, manual = build_model("small_cnn", 1, 3, 8), build_model("small_cnn", 1, 3, 8)
    manual.load_state_dict(net.state_dict())
    loss = warmup_epoch(net, make_optimizer(net, cfg), data, cfg)

    logits = manual(data.augment.plain(data.images))
    expected = F.cross_entropy(logits, data.labels)
    objective = expected + (negative_entropy(logits) if noise_mode == "asym" else 0)
    objective.backward()
    make_optimizer(manual, cfg).step()
    torch.testing.assert_close(loss, expected.detach())
    for (name, trained), (_, redone) in zip(net.named_parameters(), manual.named_parameters()):
        torch.testing.assert_close(trained, redone, atol=1e-6, rtol=1e-5, msg=name)


def test_train_step_follows_the_paper_co_refine_co_guess_mixmatch_then_one_sgd_step(fp32):
    """Algorithm 1 of the paper, redone by hand on a batch without random augmentation: the only
    random draw left is MixMatch's partner permutation, seeded alike for both. The step takes λ and λu
    as device tensors; the reference mixes with Python numbers, λ' = max(λ, 1−λ), as the paper writes it."""
    data = tiny_training_data(n=12, padding=0, flip=False)
    cfg = effective(batch_size=4, temperature=0.5, weight_decay=0.0)
    labeled, unlabeled = torch.tensor([0, 3, 5, 7]), torch.tensor([1, 2, 10, 11])
    clean_prob = torch.tensor([0.9, 0.6, 0.8, 0.7])
    net, peer, manual = (build_model("small_cnn", 1, 3, 8) for _ in range(3))
    manual.load_state_dict(net.state_dict())
    torch.manual_seed(5)
    lam = torch.tensor(0.3)  # below 0.5: the step mixes with 1 − λ = 0.7
    loss_x, loss_u = train_step(net, peer, make_optimizer(net, cfg), data, labeled, clean_prob, unlabeled,
                                lam=lam, lambda_u=torch.tensor(2.0), cfg=cfg)

    x, u = data.augment.plain(data.images[labeled]), data.augment.plain(data.images[unlabeled])
    with torch.no_grad():
        own = torch.softmax(manual(torch.cat([x, u, x, u])), dim=1).view(2, 8, 3)
        refined = co_refine(own[:, :4], F.one_hot(data.labels[labeled], 3).float(), clean_prob, 0.5)
        guessed = co_guess(own[:, 4:], torch.softmax(peer(torch.cat([u, u])), dim=1).view(2, 4, 3), 0.5)
    torch.manual_seed(5)
    inputs, targets = torch.cat([x, x, u, u]), torch.cat([refined, refined, guessed, guessed])
    partner, mix = torch.randperm(16), max(lam.item(), 1 - lam.item())
    mixed_x, mixed_y = (mix * inputs + (1 - mix) * inputs[partner], mix * targets + (1 - mix) * targets[partner])
    total, expected_x, expected_u = semi_supervised_loss(manual(mixed_x), mixed_y, 8, 2.0)
    torch.testing.assert_close((loss_x, loss_u), (expected_x.detach(), expected_u.detach()))
    total.backward()
    make_optimizer(manual, cfg).step()
    for (name, trained), (_, redone) in zip(net.named_parameters(), manual.named_parameters()):
        torch.testing.assert_close(trained, redone, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("clean", ["none", "all", "half", "at threshold"])
def test_train_epoch_survives_an_empty_labeled_or_unlabeled_set(clean):
    data = tiny_training_data()
    cfg = effective(epochs=2, warmup=0, batch_size=8, p_threshold=0.5, lambda_u=25.0, weight_decay=0.0)
    net, peer = build_model("small_cnn", 1, 3, 8), build_model("small_cnn", 1, 3, 8)
    peer_before = {k: v.clone() for k, v in peer.state_dict().items()}
    clean_prob = {"none": torch.zeros(len(data)), "all": torch.ones(len(data)),
                  "half": torch.arange(len(data)) % 2 * 0.9,
                  "at threshold": torch.tensor([0.5, 0.9]).repeat_interleave(len(data) // 2)}[clean]
    optimizer = make_optimizer(net, cfg)
    steps = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: steps.append(
        [p.grad.abs().sum().item() for p in net.parameters()]))
    loss_x, loss_u, n_labeled = train_epoch(net, peer, optimizer, data, clean_prob, 1, cfg)
    assert n_labeled == int((clean_prob > cfg.p_threshold).sum())  # strictly above: 0.5 is not labeled at 0.5
    assert len(steps) == -(-(n_labeled or len(data)) // cfg.batch_size)  # one pass over the labeled set
    assert all(sum(grads) > 0 for grads in steps)  # every step had a loss to descend
    assert torch.isfinite(loss_x) and torch.isfinite(loss_u)
    assert (loss_x > 0) == (n_labeled > 0)
    assert (loss_u > 0) == (n_labeled < len(data))
    for name, value in peer.state_dict().items():  # the peer only predicts: its weights and statistics stay
        assert torch.equal(value, peer_before[name]), name
