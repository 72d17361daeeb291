"""The DivideMix step without per-step overhead: its scalars as device tensors, full-size batches for a
compiled step, and the compiled step itself against the eager one."""

import functools

import pytest
import torch
from conftest import effective

from labelclean import dividemix, training
from labelclean.dividemix import linear_rampup, mixmatch, train_epoch
from labelclean.models import build_model
from labelclean.training import TrainingData, batches, make_optimizer, per_step


def data(n: int = 24, classes: int = 3, padding: int = 1, flip: bool = True) -> TrainingData:
    torch.manual_seed(0)
    images = torch.randint(0, 255, (n, 1, 8, 8), dtype=torch.uint8)
    return TrainingData.build(images, torch.arange(n) % classes, classes, [0.5], [0.25], torch.device("cpu"),
                              padding=padding, flip=flip)


def test_mixmatch_with_a_tensor_lambda_mixes_exactly_as_the_paper_with_a_python_number():
    """Bit for bit, so that moving λ to the device changed no export: λ' = max(λ, 1−λ) and 1 − λ' taken
    in double precision from λ's float32 value, as the step did with ``.tolist()``."""
    torch.manual_seed(3)
    lams = torch.distributions.Beta(4.0, 4.0).sample((50,))
    assert (lams < 0.5).any() and (lams > 0.5).any()
    x, y = torch.randn(16, 3, 4, 4), torch.softmax(torch.randn(16, 5), dim=1)
    for lam in per_step(lams, torch.device("cpu")):
        torch.manual_seed(1)
        mixed_x, mixed_y = mixmatch(x, y, lam)
        torch.manual_seed(1)
        partner, mix = torch.randperm(16), max(lam.item(), 1 - lam.item())
        assert torch.equal(mixed_x, mix * x + (1 - mix) * x[partner])
        assert torch.equal(mixed_y, mix * y + (1 - mix) * y[partner])


def recorded_epoch(monkeypatch: pytest.MonkeyPatch, cfg, clean_prob: torch.Tensor, epoch: int = 5) -> list[tuple]:
    """The arguments of every step of a train epoch (the step itself replaced)."""
    steps = []

    def step(net, peer, optimizer, data, labeled, weights, unlabeled, lam, lambda_u, cfg, prior):
        steps.append((labeled, unlabeled, lam, lambda_u))
        return torch.tensor(0.0), torch.tensor(0.0)

    monkeypatch.setattr(dividemix, "train_step", step)
    monkeypatch.setattr(dividemix, "compiled", lambda step, data: step)  # the plan, not the compiler
    net, peer, images = build_model("small_cnn", 1, 3, 8), build_model("small_cnn", 1, 3, 8), data()
    torch.manual_seed(7)
    train_epoch(net, peer, make_optimizer(net, cfg), images, clean_prob, epoch, cfg)
    return steps


def test_a_step_gets_its_mixup_draw_and_unlabeled_weight_as_device_tensors_drawn_as_before(monkeypatch):
    cfg = effective(epochs=30, warmup=2, batch_size=4, lambda_u=25.0)
    clean_prob = (torch.arange(24) % 3 > 0).float()  # 16 labeled: 4 steps
    steps = recorded_epoch(monkeypatch, cfg, clean_prob)
    assert all(lam.shape == () and lam.dtype == torch.float32 for _, _, lam, _ in steps)
    torch.manual_seed(7)  # the epoch's draws in its order: the labeled order, two cycles of the unlabeled one, λ
    torch.randperm(16), torch.randperm(8), torch.randperm(8)
    expected = torch.distributions.Beta(cfg.alpha, cfg.alpha).sample((len(steps),))
    assert torch.equal(torch.stack([s[2] for s in steps]), expected)
    ramp = [25.0 * linear_rampup(5 + k / len(steps), 2, 16) for k in range(len(steps))]
    assert torch.equal(torch.stack([s[3] for s in steps]), torch.tensor(ramp, dtype=torch.float32))


def test_batches_fill_the_last_batch_by_wrapping_around_only_when_asked():
    order = torch.arange(10)
    assert [b.tolist() for b in batches(order, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [b.tolist() for b in batches(order, 4, full=True)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert [b.tolist() for b in batches(torch.arange(3), 8, full=True)] == [[0, 1, 2, 0, 1, 2, 0, 1]]
    assert [b.tolist() for b in batches(torch.arange(8), 4, full=True)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize("compile_step", [False, True])
def test_a_compiled_epoch_has_full_size_batches_and_an_eager_one_keeps_its_short_last_batch(monkeypatch,
                                                                                          compile_step):
    cfg = effective(epochs=30, warmup=2, batch_size=4, lambda_u=25.0, compile_step=compile_step)
    clean_prob = (torch.arange(24) < 10).float()  # 10 labeled: batches of 4, 4 and 2 (or 4, filled)
    steps = recorded_epoch(monkeypatch, cfg, clean_prob)
    sizes = [(len(labeled), len(unlabeled)) for labeled, unlabeled, _, _ in steps]
    assert sizes == [(4, 4), (4, 4), (4, 4) if compile_step else (2, 4)]
    assert set(torch.cat([s[0] for s in steps]).tolist()) == set(range(10))  # every labeled sample, some twice


def epoch_of(compile_step: bool, labeled: int = 12) -> tuple[list[float], dict[str, torch.Tensor]]:
    """One train epoch of a fresh network from a fixed start: its losses and its weights after."""
    cfg = effective(epochs=30, warmup=2, batch_size=4, lambda_u=25.0, compile_step=compile_step)
    torch.manual_seed(11)
    net, peer = build_model("small_cnn", 1, 3, 8), build_model("small_cnn", 1, 3, 8)
    clean_prob, images = (torch.arange(24) < labeled).float() * 0.9, data()  # full batches: the same work either way
    torch.manual_seed(12)
    loss_x, loss_u, _ = train_epoch(net, peer, make_optimizer(net, cfg), images, clean_prob, 5, cfg)
    return [loss_x.item(), loss_u.item()], {k: v.detach().clone() for k, v in net.state_dict().items()}


def assert_same_epoch(compiled: tuple, eager: tuple, tolerance: float) -> None:
    assert compiled[0] == pytest.approx(eager[0], rel=tolerance, abs=tolerance)
    for name, value in eager[1].items():
        torch.testing.assert_close(compiled[1][name], value, rtol=tolerance, atol=tolerance, msg=name)


def test_the_compiled_step_traces_whole_and_trains_as_the_eager_one(monkeypatch, fp32):
    """torch.compile's tracing (Dynamo) and autograd graph (AOTAutograd) run on the real step, with the
    graph executed by eager kernels (backend 'aot_eager'), which is quick; the slow test below compiles
    it with inductor, the backend a fit uses."""
    monkeypatch.setattr(training, "_compile", functools.cache(
        lambda step, device_type: torch.compile(step, dynamic=False, backend="aot_eager")))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        compiled = epoch_of(True)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 3  # views to loss, backward's rest, SGD
        assert_same_epoch(compiled, epoch_of(False), 1e-5)
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
def test_the_inductor_compiled_step_trains_as_the_eager_one(monkeypatch, fp32):
    """What ``--compile`` does on a CPU (about a minute of compilation), with inductor's random numbers
    drawn by the eager kernels (``fallback_random``) so both draw the same augmentations and mixes."""
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch._dynamo.reset()
    try:
        assert_same_epoch(epoch_of(True), epoch_of(False), 1e-4)
    finally:
        torch._dynamo.reset()
