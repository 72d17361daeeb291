"""MLNT: its math on tiny CPU tensors, then a tiny `fit --method mlnt` → export/predict, and resume."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, copy_images, fit_interrupted_after
from torch import nn
from typer.testing import CliRunner

import labelclean
from labelclean import training
from labelclean.augment import Augment
from labelclean.cli import app
from labelclean.config import FitConfig
from labelclean.errors import LabelcleanError
from labelclean.evaluation import clean_probability, normalized_loss
from labelclean.export import COLUMNS
from labelclean.mlnt import (
    consistency_loss,
    ema_update,
    fast_weights,
    mentor_keeps,
    meta_backward,
    meta_schedule,
    nearest_neighbours,
    penultimate_features,
    round_bounds,
    synthetic_labels,
)
from labelclean.models import small_cnn
from labelclean.training import TrainingData

MLNT_TINY = dict(TINY, method="mlnt", meta_sets=2, rounds=2)  # 1 baseline epoch, then 2 rounds of 1 epoch


def test_nearest_neighbours_are_the_closest_other_samples():
    features = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    assert nearest_neighbours(features, 2).tolist() == [[1, 2], [0, 2], [1, 0], [2, 1]]
    assert nearest_neighbours(features, 10).shape == (4, 3)  # k is capped at the other samples


def test_synthetic_labels_replace_exactly_the_requested_fraction_with_neighbour_labels():
    torch.manual_seed(0)
    n, k = 21, 3
    labels = torch.arange(n) * 7  # all distinct, so every replacement shows as a change
    neighbours = nearest_neighbours(torch.randn(n, 5), k)
    noisy = synthetic_labels(labels, neighbours, sets=50, ratio=0.5)
    assert noisy.shape == (50, n)
    changed = noisy != labels
    assert (changed.sum(1) == math.floor(n * 0.5)).all()
    for m, i in changed.nonzero().tolist():
        assert noisy[m, i] in labels[neighbours[i]]
    assert changed.any(0).all()  # every sample gets chosen in some set
    assert (synthetic_labels(labels, neighbours, 3, 0.0) == labels).all()
    assert (synthetic_labels(labels, neighbours, 3, 1.0) != labels).all()


def test_fast_weights_equal_a_manual_sgd_step():
    torch.manual_seed(0)
    net = small_cnn(1, 3, 8)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(3, (6,))
    reference = small_cnn(1, 3, 8)
    reference.load_state_dict(net.state_dict())
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1)
    F.cross_entropy(reference(x), y).backward()
    sgd.step()

    fast = fast_weights(dict(net.named_parameters()), F.cross_entropy(net(x), y), 0.1, create_graph=False)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(fast[name], param)
    torch.testing.assert_close(torch.func.functional_call(net, fast, (x,)), reference(x))


def test_meta_gradient_is_second_order_unless_first_order(monkeypatch):
    """The accumulated gradient equals d/dθ KL(teacher ‖ f(x; θ − α∇θ CE)) differentiated through the step."""
    monkeypatch.setattr(training, "cpu_has_fast_bf16", lambda: False)  # exact math: fp32, as the reference
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.randint(3, (5,))
    noisy = torch.stack([y, (y + 1) % 3])
    teacher = torch.softmax(torch.randn(5, 3), dim=1)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def inner_loss(p: dict, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(torch.func.functional_call(net, p, (x,)), labels)

    def meta_objective(p: dict, second_order: bool) -> torch.Tensor:
        losses = []
        for labels in noisy:
            inner = torch.func.grad(inner_loss)(p, labels)
            if not second_order:
                inner = {k: g.detach() for k, g in inner.items()}
            fast = {k: p[k] - 0.5 * inner[k] for k in p}
            losses.append(consistency_loss(torch.func.functional_call(net, fast, (x,)), teacher))
        return torch.stack(losses).mean()

    for first_order in (False, True):
        net.zero_grad()
        meta_backward(net, x, net(x), noisy, teacher, 1.0, FitConfig(meta_lr=0.5, first_order=first_order))
        expected = torch.func.grad(meta_objective)(params, not first_order)
        for name, param in net.named_parameters():
            torch.testing.assert_close(param.grad, expected[name])


def test_consistency_loss_is_kl_averaged_over_samples_and_classes():
    teacher = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    assert consistency_loss(teacher.log(), teacher).item() == pytest.approx(0.0, abs=1e-7)
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    expected = (teacher * (teacher / 0.5).log()).sum() / 4
    torch.testing.assert_close(consistency_loss(logits, teacher), expected)


def test_ema_update_moves_teacher_parameters_towards_the_student_only():
    torch.manual_seed(0)
    student, teacher = small_cnn(1, 3, 8), small_cnn(1, 3, 8)
    student(torch.randn(4, 1, 8, 8))  # changes the student's BN running statistics
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    params = dict(student.named_parameters())
    for name, value in teacher.state_dict().items():
        if name in params:
            torch.testing.assert_close(value, 0.9 * before[name] + 0.1 * params[name])
        else:
            torch.testing.assert_close(value, before[name])


def test_meta_schedule_ramps_weight_then_switches_ema_decay():
    cfg = FitConfig(meta_weight=2.0, meta_rampup=4.0)
    assert meta_schedule(0.0, cfg) == (pytest.approx(2.0 * math.exp(-5)), 0.99)
    assert meta_schedule(2.0, cfg) == (pytest.approx(2.0 * math.exp(-5 / 4)), 0.99)
    assert meta_schedule(4.0, cfg) == (2.0, 0.999)
    assert meta_schedule(0.0, FitConfig(meta_rampup=0.0)) == (1.0, 0.999)


def test_rounds_split_the_meta_epochs_and_options_are_validated():
    assert round_bounds(FitConfig(epochs=30, warmup=5, rounds=2)) == [5, 17, 30]
    assert round_bounds(FitConfig(epochs=3, warmup=1, rounds=2)) == [1, 2, 3]
    with pytest.raises(LabelcleanError, match="baseline"):
        FitConfig(method="mlnt", epochs=3, warmup=0).validate()
    with pytest.raises(LabelcleanError, match="epochs - rounds"):
        FitConfig(method="mlnt", epochs=3, warmup=2, rounds=2).validate()
    with pytest.raises(LabelcleanError, match="'perturb_ratio' option must be in"):
        FitConfig(method="mlnt", perturb_ratio=1.5).validate()
    with pytest.raises(LabelcleanError, match="'method' option"):
        FitConfig(method="coteaching").validate()
    with pytest.raises(LabelcleanError, match="'mentor_filter' option"):
        FitConfig(method="mlnt", mentor_filter="loss").validate()


def test_mentor_filter_leaves_out_the_samples_the_mentor_considers_mislabeled():
    mentor = nn.Sequential(nn.Flatten(), nn.Linear(2, 2))  # predicts the brighter of two pixels
    with torch.no_grad():
        mentor[1].weight.copy_(4 * torch.eye(2))
        mentor[1].bias.zero_()
    images = torch.tensor([[200, 10], [10, 200], [200, 10], [10, 200], [250, 0], [0, 250]], dtype=torch.uint8)
    labels = torch.tensor([0, 1, 1, 0, 0, 1])
    data = TrainingData(images.view(6, 1, 1, 2), labels, 2, Augment(torch.zeros(1), torch.ones(1), 0, False),
                        torch.device("cpu"))
    expected = [True, True, False, False, True, True]
    assert mentor_keeps(mentor, data, FitConfig(mentor_filter="disagree"), seed=0).tolist() == expected
    assert mentor_keeps(mentor, data, FitConfig(mentor_filter="gmm", p_threshold=0.5), seed=0).tolist() == expected
    assert mentor_keeps(mentor, data, FitConfig(mentor_filter="none"), seed=0).all()


def test_penultimate_features_are_the_classifier_input():
    net = small_cnn(1, 3, 8).eval()
    x = torch.randn(2, 1, 8, 8)
    features = penultimate_features(net, x)
    assert features.shape == (2, 128)
    torch.testing.assert_close(net[-1](features), net(x))


@pytest.mark.slow
def test_fit_method_mlnt_then_export_and_predict_from_the_command_line(digits, tmp_path):
    out = tmp_path / "run"
    args = ["fit", digits.images_dir, digits.labels_csv, "--output", out, "--method", "mlnt", "--meta-sets", "2",
            "--epochs", "3", "--warmup", "1", "--batch-size", "32", "--arch", "small_cnn", "--device", "cpu"]
    runner = CliRunner()
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "mlnt" and config["fit"]["method"] == "mlnt" and config["status"] == "complete"
    history = labelclean.Run(out).history
    assert [(h["phase"], h["round"]) for h in history] == [("baseline", None), ("meta", 1), ("meta", 2)]
    assert history[1]["consistency"] > 0 and history[2]["noise_estimate"] > 0  # round 2 left samples out

    exported = runner.invoke(app, ["export", str(out)])
    assert exported.exit_code == 0, exported.output
    table = pd.read_csv(io.StringIO(exported.stdout))
    assert list(table.columns) == COLUMNS and len(table) == 300
    samples = labelclean.Run(out).samples()  # student's and teacher's GMM posteriors of their saved losses
    for net in ("net1", "net2"):
        loss = torch.tensor(samples[f"loss_{net}"].to_numpy(), dtype=torch.float32)
        expected, _ = clean_probability(normalized_loss(loss).numpy(), seed=config["fit"]["seed"])
        np.testing.assert_allclose(samples[f"clean_prob_{net}"], expected, atol=1e-4)
    np.testing.assert_allclose(table["clean_prob"], (samples["clean_prob_net1"] + samples["clean_prob_net2"]) / 2,
                               atol=1e-6)

    new = copy_images(digits, tmp_path / "new", 3)
    predicted = runner.invoke(app, ["predict", str(out), str(new[0].parent)])
    assert predicted.exit_code == 0, predicted.output
    assert len(pd.read_csv(io.StringIO(predicted.stdout))) == 3


@pytest.mark.slow
def test_interrupted_mlnt_fit_resumes_mid_round_to_the_same_result(digits, tmp_path):
    settings = dict(MLNT_TINY, epochs=4)  # rounds: epoch 2, then epochs 3–4
    reference = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "ref", **settings)
    fit_interrupted_after(3, digits, tmp_path / "cut", **settings)
    epochs_seen = []
    resumed = labelclean.fit(None, None, tmp_path / "cut", resume=True, on_epoch=lambda r: epochs_seen.append(r.epoch))
    assert epochs_seen == [4]
    pd.testing.assert_frame_equal(resumed.export(), reference.export(), check_exact=False, atol=1e-5)
    assert resumed.history[-1]["noise_estimate"] == reference.history[-1]["noise_estimate"]
