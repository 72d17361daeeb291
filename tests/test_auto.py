"""The rules behind the defaults (labelclean/auto.py) and their wiring into a DivideMix fit."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY, fit_interrupted_after
from typer.testing import CliRunner

import labelclean
from labelclean import cli, rules
from labelclean.auto import (
    LOCK_EPOCHS,
    MAX_RECOVERIES,
    NoiseEstimate,
    best_warmup_epoch,
    choose_settings,
    class_quota,
    estimate_noise,
    is_lenient,
    is_locked,
    quota_clean_prob,
    threshold_hint,
    warmup_over,
)
from labelclean.config import PAPER_SETTINGS, Decisions, FitConfig
from labelclean.demo import DIGIT_PAIRS, flip_labels
from labelclean.dividemix import linear_rampup
from labelclean.errors import LabelcleanError
from labelclean.evaluation import clean_probability
from labelclean.report import render_report
from labelclean.rules import Rules
from labelclean.training import TrainingData, TrainingState


def networks_that_know_the_truth(mode: str, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Predictions of perfect networks (the true labels) and the given labels under flips."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 10, 5000)
    given = flip_labels(truth, rate, mode, 10, rng)
    return truth, given, float((truth != given).mean())


@pytest.mark.parametrize("mode, rate", [("sym", 0.2), ("sym", 0.5), ("sym", 0.8), ("asym", 0.4)])
def test_noise_estimate_finds_the_rate_and_the_kind(mode, rate):
    predicted, given, flipped = networks_that_know_the_truth(mode, rate)
    noise = estimate_noise(predicted, given, 10)
    assert noise.rate == pytest.approx(flipped)
    assert noise.kind == ("pair" if mode == "asym" else "spread")
    if mode == "sym":
        assert noise.pair_share < 0.3  # spread over 9 other classes
    else:
        assert noise.pair_share == 1.0  # every flip goes to the class's partner
        assert set(DIGIT_PAIRS) >= set(np.unique(given[predicted != given]).tolist()) - set(DIGIT_PAIRS.values())


def per_given_class_share(predicted: np.ndarray, given: np.ndarray) -> float:
    """The share of the disagreements on each given class's most common prediction (no pairing asked)."""
    counts = np.zeros((10, 10), dtype=np.int64)
    np.add.at(counts, (given[predicted != given], predicted[predicted != given]), 1)
    return counts.max(1).sum() / counts.sum()


def test_networks_that_predict_few_classes_are_not_read_as_class_pair_noise():
    """Near chance at 80% spread noise, networks predicting mostly 0, 1 and 2 put every class's disagreements
    on those few classes: concentrated per given class, yet no pairing of classes explains them."""
    rng = np.random.default_rng(0)
    _, given, _ = networks_that_know_the_truth("sym", 0.8)
    predicted = rng.choice(10, size=len(given), p=[0.5, 0.25, 0.15] + [0.1 / 7] * 7)
    assert per_given_class_share(predicted, given) > 0.5  # what the kind was read from before
    noise = estimate_noise(predicted, given, 10)
    assert noise.kind == "spread" and noise.pair_share < 0.2


def test_class_pair_noise_is_still_found_by_networks_that_make_their_own_mistakes():
    truth, given, _ = networks_that_know_the_truth("asym", 0.4)
    rng = np.random.default_rng(1)
    wrong = rng.random(len(truth)) < 0.1  # the networks also err on 10% of the images, anywhere
    predicted = np.where(wrong, rng.integers(0, 10, len(truth)), truth)
    noise = estimate_noise(predicted, given, 10)
    assert noise.kind == "pair" and noise.pair_share > 0.6


def test_the_pairing_share_is_never_above_the_per_given_class_share():
    """The pairing only withdraws 'pair' calls: it explains at most what each class's most common prediction does."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        given, predicted = rng.integers(0, 10, 300), rng.choice(10, 300, p=rng.dirichlet(np.full(10, 0.3)))
        assert estimate_noise(predicted, given, 10).pair_share <= per_given_class_share(predicted, given) + 1e-12


def test_noise_kind_is_not_called_pair_with_three_classes_or_fewer():
    predicted = np.array([0, 0, 1, 1, 0, 1])
    given = np.array([1, 1, 0, 0, 0, 1])  # every disagreement concentrated, as any flip is with 2 classes
    assert estimate_noise(predicted, given, 2).kind == "spread"
    assert estimate_noise(np.array([0, 1]), np.array([0, 1]), 10) == NoiseEstimate(0.0, 0.0, "spread")


@pytest.mark.parametrize("rate, kind, classes, expected", [
    # The paper's appendix: CIFAR-10 column (10 classes) and CIFAR-100 column (100 classes); the quota from 60%.
    (0.2, "spread", 10, (0.0, 1, "gmm")),
    (0.5, "spread", 10, (25.0, 1, "gmm")),
    (0.8, "spread", 10, (25.0, 5, "quota")),
    (0.9, "spread", 10, (50.0, 5, "quota")),
    (0.2, "pair", 10, (0.0, 1, "gmm")),
    (0.4, "pair", 10, (0.0, 1, "gmm")),
    (0.2, "spread", 100, (25.0, 1, "gmm")),
    (0.5, "spread", 100, (150.0, 1, "gmm")),
    (0.9, "spread", 100, (150.0, 5, "quota")),
])
def test_settings_follow_the_papers_table(rate, kind, classes, expected):
    chosen = choose_settings(NoiseEstimate(rate, 0.0, kind), classes)
    assert (chosen["lambda_u"], chosen["loss_window"], chosen["selection"]) == expected


def test_warmup_ends_after_a_plateau_or_at_its_limit():
    rising = [0.1, 0.2, 0.3, 0.4, 0.5]
    assert not warmup_over(rising)
    assert warmup_over(rising, max_epochs=5)
    assert warmup_over([0.1, 0.5, 0.5, 0.502, 0.49])  # gains under 0.005 do not count
    assert not warmup_over([0.5])  # at least two epochs


def test_warmup_does_not_end_on_a_plateau_near_chance():
    near_chance = [0.10, 0.13, 0.12, 0.13, 0.12, 0.13]  # no new best for 4 epochs, but ≤ chance + 0.05
    assert warmup_over(near_chance) and not warmup_over(near_chance, chance=0.1)
    assert warmup_over(near_chance, chance=0.1, max_epochs=6)  # the limit still ends it
    left_chance = [0.10, 0.12, 0.16, 0.15, 0.155, 0.16]  # best 0.16 beats chance by 0.05, then a plateau
    assert warmup_over(left_chance, chance=0.10) and not warmup_over(left_chance, chance=0.12)


def test_a_long_run_still_learning_near_chance_gets_no_near_chance_note(monkeypatch):
    """With --epochs 300 warm-up may last 100 epochs: networks that gain every epoch are not on a plateau,
    so epoch 30 (the default limit) is no reason for the near-chance note."""
    scripted = iter(0.006 * (epoch + 1) for epoch in range(31))  # a new best every epoch, all below 0.55
    monkeypatch.setattr(rules, "ensemble_agreement", lambda nets, data, cfg: (next(scripted), np.zeros(100, int)))
    labels = torch.where(torch.arange(100) < 50, 0, torch.arange(100) % 9 + 1)  # chance: 50%
    data = TrainingData.build(torch.zeros(100, 1, 4, 4, dtype=torch.uint8), labels, 10, [0.0], [1.0],
                              torch.device("cpu"))
    nets = [torch.nn.Linear(2, 2) for _ in range(2)]
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.1) for net in nets]
    state = TrainingState(decisions=Decisions(n_samples=100, median_side=4))
    run_rules = Rules(FitConfig(epochs=300), state)
    notes = [run_rules.after_warmup_epoch(nets, optimizers, data, epoch)[1] for epoch in range(31)]
    assert notes == [None] * 31 and state.decisions.near_chance is None


def test_a_fit_warms_up_past_a_plateau_near_chance_and_says_so(monkeypatch):
    """The wiring of the chance bar: the patience alone would end warm-up after epoch 5; it goes on,
    with one note, until the networks leave chance, then ends on the patience and keeps the best epoch."""
    scripted = iter([0.10, 0.13, 0.12, 0.13, 0.12, 0.13, 0.20, 0.19, 0.19, 0.20])
    monkeypatch.setattr(rules, "ensemble_agreement", lambda nets, data, cfg: (next(scripted), np.zeros(100, int)))
    labels = torch.arange(100) % 10  # chance: 10% (always the most common label)
    images = torch.zeros(100, 1, 4, 4, dtype=torch.uint8)
    data = TrainingData.build(images, labels, 10, [0.0], [1.0], torch.device("cpu"))
    nets = [torch.nn.Linear(2, 2) for _ in range(2)]
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.1) for net in nets]
    state = TrainingState(decisions=Decisions(n_samples=100, median_side=4))
    notes = [Rules(FitConfig(), state).after_warmup_epoch(nets, optimizers, data, epoch)[1] for epoch in range(10)]
    assert notes[4] == "Warm-up goes on: the networks agree with 13% of the given labels, near the 10% of always " \
                       "predicting the most common one"
    assert notes[:4] == [None] * 4 and notes[5:9] == [None] * 4  # said once
    assert notes[9].startswith("Warm-up ended after 10 epoch(s), networks from epoch 7")
    assert state.decisions.near_chance == 5 and state.decisions.warmup == 10


def test_a_short_epoch_budget_needs_an_explicit_warmup():
    with pytest.raises(LabelcleanError, match="With --epochs 2 also set --warmup"):
        FitConfig(epochs=2).validate()
    assert FitConfig(epochs=2, warmup=1).validate().warmup == 1


def test_guard_detects_a_locked_split_and_not_a_healthy_one():
    # The failure seen on a 4,000-image set: ~36% labeled while the networks agree with ~58%.
    assert is_locked([0.36] * LOCK_EPOCHS, [0.58] * LOCK_EPOCHS)
    assert is_locked([0.01] * LOCK_EPOCHS, [0.01] * LOCK_EPOCHS)  # collapsed to nothing labeled
    assert not is_locked([0.58] * LOCK_EPOCHS, [0.60] * LOCK_EPOCHS)  # labeled ≈ agreement: healthy
    assert not is_locked([0.36] * (LOCK_EPOCHS - 1), [0.58] * (LOCK_EPOCHS - 1))  # not for long enough
    assert not is_locked([0.36, 0.36, 0.56], [0.58, 0.58, 0.60])  # recovered on its own


def high_noise_losses(rate: float = 0.8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the networks see at very high spread noise: truth, given labels, their predictions (right for 90%)
    and window-averaged normalized losses — clean labels near 0, wrong ones a broad bulk with a long tail."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 10, 2000)
    given = flip_labels(truth, rate, "sym", 10, rng)
    predicted = np.where(rng.uniform(size=2000) < 0.9, truth, rng.integers(0, 10, 2000))
    wrong = given != truth
    loss = np.where(wrong, rng.gamma(2.0, 0.12, 2000), rng.gamma(1.0, 0.02, 2000))
    loss[predicted == given] *= 0.5  # a label the network predicts has a lower loss
    return truth, given, predicted, np.minimum(loss, 1.0)


def test_the_quota_labels_the_estimated_clean_share_of_every_class_by_lowest_loss():
    truth, given, predicted, loss = high_noise_losses()
    share = 1 - estimate_noise(predicted, given, 10).rate  # what the networks agree with
    prob = quota_clean_prob(loss, given, class_quota(given, 10, share))
    labeled = prob > 0.5
    for c in range(10):  # per class, the same share: the split follows the noise estimate and the class balance
        assert labeled[given == c].sum() == round(share * (given == c).sum())
        members = np.flatnonzero(given == c)  # within a class, a lower loss never gets a lower clean_prob
        assert (np.diff(prob[members[np.argsort(loss[members])]]) <= 0).all()
    assert labeled.mean() == pytest.approx(share, abs=0.005)
    assert (given[labeled] == truth[labeled]).mean() > 0.85  # mostly clean, while 80% of the labels are wrong
    gmm = clean_probability(loss)[0] > 0.5
    assert gmm.mean() > labeled.mean() + 0.25  # the GMM's clean side took much of the bulk of wrong labels


def test_the_quota_keeps_every_class_when_the_networks_predict_few_of_them():
    # Seen with a quota that followed each class's agreement: classes the networks rarely predicted lost
    # their labeled samples, and the run collapsed to one class. The quota reads only the given labels.
    given = np.repeat(np.arange(10), 50)
    quota = class_quota(given, 10, 0.2)
    np.testing.assert_array_equal(quota, np.full(10, 10))
    prob = quota_clean_prob(np.random.default_rng(0).uniform(size=500), given, quota)
    np.testing.assert_array_equal(np.bincount(given[prob > 0.5], minlength=10), quota)


def test_guard_switches_a_lenient_split_to_the_quota(caplog):
    # The failure at sym 80%: ~75% labeled while the networks predict the given label for ~21%.
    assert is_lenient([0.75] * LOCK_EPOCHS, [0.21] * LOCK_EPOCHS)
    assert not is_lenient([0.75] * (LOCK_EPOCHS - 1), [0.21] * (LOCK_EPOCHS - 1))  # not for long enough
    assert not is_lenient([0.62, 0.60, 0.61], [0.60, 0.59, 0.61])  # labeled ≈ agreement: healthy
    assert not is_lenient([0.75, 0.75, 0.40], [0.21, 0.21, 0.21])  # came back on its own

    noise = NoiseEstimate(0.3, 0.1, "spread")
    state = TrainingState(decisions=Decisions(n_samples=100, median_side=8, warmup=2, noise=noise,
                                              chosen={"lambda_u": 25.0, "loss_window": 5, "selection": "gmm"}))
    run_rules, fired = Rules(FitConfig(), state), []
    for labeled, agreement in [(0.5, 0.4)] + [(0.75, 0.21)] * LOCK_EPOCHS:
        assert run_rules.after_split(labeled, agreement, "gmm") is None  # no warm-up: the split is not locked
        fired.append(run_rules.lenient(run_rules.settings().selection))
    assert fired[:-1] == [None] * LOCK_EPOCHS and "too lenient" in fired[-1] and "quota" in caplog.text
    assert run_rules.settings().selection == "quota"  # from the next epoch
    assert run_rules.settings().quota_share == 0.21  # labeling the share the networks agree with
    assert run_rules.lenient("quota") is None  # once on the quota, the guard has nothing to switch

    # The user's word: warn, keep the selection (a threshold other than the quota's boundary, too).
    for cfg in (FitConfig(auto=False), FitConfig(selection="gmm"), FitConfig(p_threshold=0.7)):
        kept = Rules(cfg, TrainingState(decisions=Decisions(n_samples=100, median_side=8, warmup=2, noise=noise)))
        for _ in range(LOCK_EPOCHS):
            kept.after_split(0.75, 0.21, "gmm")
            note = kept.lenient("gmm")
        assert "Consider --selection quota" in note and kept.settings().selection == "gmm"


def test_a_lenient_final_split_gets_a_threshold_that_flags_as_many_as_the_networks_disagree_with():
    # Seen at sym 80% on digits: the GMM's clean side took the bulk of the wrong labels, 15% flagged.
    rng = np.random.default_rng(0)
    wrong = np.arange(1000) < 800
    clean_prob = np.where(wrong, rng.uniform(0.7, 0.99, 1000), rng.uniform(0.99, 1.0, 1000))
    clean_prob[:150] = rng.uniform(0, 0.3, 150)  # the long tail of losses it did flag
    hint = threshold_hint(clean_prob, wrong.mean())
    assert hint is not None and np.mean(clean_prob < hint) == pytest.approx(0.8, abs=0.005)
    assert threshold_hint(clean_prob, np.mean(clean_prob < 0.5)) is None  # as many flagged as disagreed with
    assert threshold_hint(clean_prob, 0.3) is None  # a gap under LENIENT_GAP


def test_the_summary_and_report_of_a_fit_use_the_suggested_threshold(tiny_run, tmp_path, capsys):
    run_dir = shutil.copytree(tiny_run.directory, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "threshold_hint": 0.9999}))
    run = labelclean.Run(run_dir)
    cli.summarize(run)
    flagged = int(run.export(threshold=0.9999)["is_noisy"].sum())
    summary = capsys.readouterr().err
    assert f"{flagged:,} of 300 labels look suspect (clean_prob < 0.9999)" in summary
    assert "--only-errors --sort clean_prob --threshold 0.9999" in summary
    assert "The fit suggests --threshold 0.9999" in render_report(run)
    assert "The fit suggests" not in render_report(run, threshold=0.9999)


def test_guard_recovers_a_limited_number_of_times_and_only_with_auto(caplog):
    state = TrainingState()
    fired = []
    for _ in range(LOCK_EPOCHS * (MAX_RECOVERIES + 1)):
        fired.append(Rules(FitConfig(), state).after_split(0.3, 0.6, "gmm"))
    notes = [n for n in fired if n]
    assert len(notes) == MAX_RECOVERIES and "warm-up epoch" in notes[0]
    assert fired[LOCK_EPOCHS - 1] is not None and fired[0] is None  # fires on the LOCK_EPOCHS-th epoch
    assert state.decisions.guard.recoveries == MAX_RECOVERIES
    assert "locked itself" in caplog.text  # the last, unrecovered time still warns

    manual = TrainingState()
    assert all(Rules(FitConfig(auto=False), manual).after_split(0.3, 0.6, "gmm") is None for _ in range(LOCK_EPOCHS))
    assert manual.decisions.guard.recoveries == 0


@pytest.mark.slow
def test_adaptive_warmup_chooses_and_records_the_settings(digits, tmp_path):
    run = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", **dict(TINY, epochs=7, warmup=None))
    decided = run.config["auto"]
    assert decided["warmup"] == 2  # the limit: a third of --epochs 7
    agreement = decided["warmup_agreement"]
    assert len(agreement) == 2 and [h["agreement"] for h in run.history[:2]] == [[a] for a in agreement]
    # The noise is estimated from the networks kept (the best warm-up epoch): its rate is their disagreement.
    noise = NoiseEstimate(**decided["noise"])
    assert noise.rate == pytest.approx(1 - agreement[best_warmup_epoch(agreement)], abs=1e-6)  # float32 mean
    assert noise.kind == ("pair" if noise.pair_share >= 0.5 else "spread")
    assert decided["chosen"] == choose_settings(noise, 10)
    chosen = decided["chosen"]
    assert run.fit_config.lambda_u is None and run.settings.lambda_u == chosen["lambda_u"]  # left to the rules:
    assert [h["lambda_u"] for h in run.history[2:]] == pytest.approx(
        [chosen["lambda_u"] * linear_rampup(e + 1, 2, 16) for e in range(2, 7)])
    phases = [epoch["phase"] for epoch in run.history]
    assert phases[:2] == ["warm-up"] * 2 and "train" in phases[2:] and len(phases) == 7
    assert run.history[1]["note"].startswith("Warm-up ended after 2 epoch(s)")
    assert run.history[1]["note"].endswith(  # what --auto chose is said
        f"; chose lambda_u {chosen['lambda_u']:g}, loss_window {chosen['loss_window']:g}, "
        f"selection {chosen['selection']}")


@pytest.mark.slow
def test_resume_inside_an_adaptive_warmup_gives_the_same_result(digits, tmp_path):
    settings = dict(TINY, epochs=7, warmup=None)
    reference = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "ref", **settings)
    fit_interrupted_after(1, digits, tmp_path / "cut", **settings)  # inside the adaptive warm-up
    resumed = labelclean.fit(None, None, tmp_path / "cut", resume=True)
    assert resumed.export().equals(reference.export())
    assert resumed.config["auto"] == reference.config["auto"]


def lambda_u_per_epoch(run: labelclean.Run) -> list[float]:
    """The λu each DivideMix epoch trained with, divided by its ramp-up: the setting in force."""
    cfg = run.fit_config
    warmup = run.config["auto"]["warmup"]
    return [h["lambda_u"] / linear_rampup(h["epoch"], warmup, cfg.rampup_epochs)
            for h in run.history if h["phase"] == "train"]


@pytest.mark.parametrize("options, lambda_u, kind", [
    pytest.param([], None, None, marks=pytest.mark.slow),  # --auto: the rules' choice
    pytest.param(["--no-auto"], PAPER_SETTINGS["lambda_u"], None, marks=pytest.mark.slow),  # the paper's 50% settings
    (["--lambda-u", "3"], 3.0, None),  # an explicit value wins over --auto
    pytest.param(["--no-auto", "--lambda-u", "3"], 3.0, None, marks=pytest.mark.slow),
    pytest.param(["--noise-mode", "asym"], 0.0, "pair", marks=pytest.mark.slow),  # the user's word on the kind wins
])
def test_explicit_values_and_no_auto_win_over_the_rules(digits, tmp_path, options, lambda_u, kind):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli.app, [str(a) for a in ["fit", digits.images_dir, digits.labels_csv, "--output", out,
                                                           "--epochs", "3", "--warmup", "1", "--batch-size", "32",
                                                           "--arch", "small_cnn", "--device", "cpu", *options]])
    assert result.exit_code == 0, result.output
    run = labelclean.Run(out)
    config = json.loads((out / "config.json").read_text())
    assert config["fit"]["auto"] == ("--no-auto" not in options)
    assert config["fit"]["lambda_u"] == (3.0 if "--lambda-u" in options else None)
    decided = config["auto"]
    assert decided["chosen"] == choose_settings(NoiseEstimate(**decided["noise"]), 10)  # recorded either way
    expected = decided["chosen"]["lambda_u"] if lambda_u is None else lambda_u
    assert lambda_u_per_epoch(run) == pytest.approx([expected, expected])
    if kind:
        assert decided["noise"]["kind"] == kind
    chosen = {k: v for k, v in decided["chosen"].items() if config["fit"][k] is None}
    announced = "; chose " + ", ".join(f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}"
                                       for k, v in chosen.items())
    note = run.history[1]["note"]
    assert note.endswith(announced) if config["fit"]["auto"] else "; chose" not in note


@pytest.mark.slow
def test_the_guard_fires_inside_a_real_fit_and_recovers_with_a_warm_up_epoch(digits, tmp_path, caplog):
    """--threshold 1 leaves every labeled set empty: the split is locked from the first DivideMix epoch."""
    settings = dict(TINY, epochs=6, warmup=1, p_threshold=1.0)
    run = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "auto", **settings)
    phases = [h["phase"] for h in run.history]
    assert phases == ["warm-up", "train", "train", "warm-up", "train", "train"]  # fires on the LOCK_EPOCHS-th
    assert run.history[3]["note"].startswith("The split has locked itself: the labeled sets hold 0% of the samples")
    assert run.history[3]["note"].endswith("Running a warm-up epoch on all labels to recover.")
    assert [h["labeled"] for h in run.history if h["phase"] == "train"] == [[0, 0]] * 4
    assert run.config["auto"]["guard"]["recoveries"] == 1

    manual = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "manual", auto=False, **settings)
    assert [h["phase"] for h in manual.history] == ["warm-up"] + ["train"] * 5  # without --auto it only warns
    assert manual.config["auto"]["guard"]["recoveries"] == 0
    assert "Consider a longer --warmup (or --auto)" in caplog.text


@pytest.mark.parametrize(("device", "noise", "start", "advised"), [
    ("cuda", 0.8, "random", True),  # the GPU's PreAct ResNet-18 on 200 8-px images at 80% noise
    ("cpu", 0.8, "random", False),  # the small CNN already
    ("cuda", 0.4, "random", False),  # at 40% the ResNet did better
    ("cuda", 0.8, "self-supervised", False),  # learned weights: not what was measured
])
def test_a_resnet_on_few_small_images_at_very_high_noise_is_advised_the_small_cnn(device, noise, start, advised,
                                                                                   caplog):
    labels = np.arange(200) % 10
    predicted = labels.copy()
    wrong = int(noise * len(labels))
    predicted[:wrong] = (labels[:wrong] + 1 + np.random.default_rng(0).integers(0, 9, wrong)) % 10
    data = TrainingData.build(torch.zeros(200, 1, 8, 8, dtype=torch.uint8), labels, 10, [0.0], [1.0],
                              torch.device("cpu"))
    state = TrainingState(decisions=Decisions(n_samples=200, median_side=8, device=device))
    state.decisions.start.kind = start
    with caplog.at_level("WARNING", logger="labelclean"):
        Rules(FitConfig(), state).end_warmup(predicted, data, 5)
    assert state.decisions.noise.rate == pytest.approx(noise)
    assert ("--arch small_cnn" in caplog.text) == advised
    if advised:
        assert "80% noise on 200 images of 8 px" in caplog.text and "preact_resnet18" in caplog.text


def test_the_summary_and_report_repeat_the_advice_on_the_network(tiny_run, tmp_path, capsys):
    run_dir = shutil.copytree(tiny_run.directory, tmp_path / "run")
    config = json.loads((run_dir / "config.json").read_text())
    assert labelclean.Run(run_dir).network_hint is None and "--arch small_cnn" not in render_report(tiny_run)
    config["settings"]["arch"] = "preact_resnet18"  # as on a GPU
    config["auto"]["noise"]["rate"] = 0.8
    (run_dir / "config.json").write_text(json.dumps(config))
    cli.summarize(labelclean.Run(run_dir))
    assert "fit again with --arch small_cnn" in capsys.readouterr().err
    page = render_report(labelclean.Run(run_dir))
    assert "Warm-up estimated 80% noise on 300 images of 8 px" in page and "fit again with --arch small_cnn" in page
