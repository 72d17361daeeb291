"""The device's fast path: bf16 autocast where the CPU computes bf16 natively, fp32 elsewhere (both
branches forced on this CPU), channels-last layout, fp32 outputs, and the thread count."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY

import labelclean
from labelclean import training
from labelclean.augment import Augment
from labelclean.config import FitConfig
from labelclean.dividemix import warmup_epoch
from labelclean.models import build_model
from labelclean.training import TrainingData, autocast, make_optimizer, place, precision, predict_logits

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["bf16 CPU", "fp32 CPU"])
def native_bf16(request, monkeypatch):
    """Run the test as on a CPU with native bf16 and as on one without."""
    monkeypatch.setattr(training, "cpu_has_fast_bf16", lambda: request.param)
    return request.param


def tiny_data(n: int = 24) -> TrainingData:
    torch.manual_seed(0)
    images = torch.randint(0, 255, (n, 1, 8, 8), dtype=torch.uint8)
    augment = Augment(torch.tensor(0.5).view(1, 1, 1, 1), torch.tensor(0.25).view(1, 1, 1, 1), 1, True)
    return TrainingData(images, torch.arange(n) % 3, 3, augment, CPU)


def test_cpu_bf16_detection_names_a_known_flag(monkeypatch):
    training.cpu_has_fast_bf16.cache_clear()
    detected = training.cpu_has_fast_bf16()
    assert isinstance(detected, bool)
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # an older torch: /proc/cpuinfo
    training.cpu_has_fast_bf16.cache_clear()
    try:
        flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
        assert training.cpu_has_fast_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    finally:
        training.cpu_has_fast_bf16.cache_clear()


def test_autocast_follows_the_cpu_and_keeps_outputs_fp32(native_bf16):
    net = place(build_model("small_cnn", 1, 3, 8), CPU)
    x = tiny_data().to_model(torch.randn(4, 1, 8, 8))
    with autocast(CPU):
        raw = net(x)
    assert raw.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    assert precision(CPU) == ("bf16 autocast" if native_bf16 else "fp32")
    assert predict_logits(net, tiny_data(), batch_size=10).dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_both_precisions_train(native_bf16):
    torch.manual_seed(0)
    data = tiny_data()
    net = place(build_model("small_cnn", 1, 3, 8), CPU)
    before = [p.detach().clone() for p in net.parameters()]
    cfg = FitConfig(epochs=2, warmup=1, batch_size=4, lr=0.02)
    loss = warmup_epoch(net, make_optimizer(net, cfg), data, cfg)
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_networks_and_batches_are_channels_last():
    net = place(build_model("small_cnn", 1, 3, 8), CPU)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    views = tiny_data().views(torch.arange(5))
    assert all(v.is_contiguous(memory_format=torch.channels_last) for v in views)


def test_cpu_threads_come_from_the_machine_not_from_a_timing(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert training.cpu_threads(CPU) == 2  # every core this process may use
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert training.cpu_threads(CPU) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert training.cpu_threads(CPU) == 4  # the user's word (torch reads it at start) wins


@pytest.mark.slow  # two fits, one beside a CPU-bound process
def test_the_same_fit_gives_the_same_export_on_a_loaded_machine(digits, tmp_path, monkeypatch):
    """Two fits of one command, the second while other processes keep every core busy, export the
    same bytes: the thread count does not follow the load."""
    from labelclean import api

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(api, "cpu_threads", training.cpu_threads)  # the default, not the tests' one thread
    before = torch.get_num_threads()
    torch.set_num_threads(cores)  # as a process started without OMP_NUM_THREADS has it
    busy = "import time\nend = time.time() + 120\nwhile time.time() < end: pass"
    try:
        idle = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "idle", **TINY)
        load = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(cores)]
        try:
            loaded = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "loaded", **TINY)
        finally:
            for process in load:
                process.kill()
                process.wait()
    finally:
        torch.set_num_threads(before)
    assert idle.config["threads"] == loaded.config["threads"] == cores
    assert idle.export().to_csv(index=False) == loaded.export().to_csv(index=False)


def test_threads_are_restored_after_the_block():
    before = torch.get_num_threads()
    with training.threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_fit_without_native_bf16_runs_in_fp32_and_says_so(digits, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "cpu_has_fast_bf16", lambda: False)
    run = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", **TINY)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["precision"] == "fp32" and config["threads"] >= 1
    assert run.probs().dtype == "float32" and len(run.export()) == len(run.samples())
