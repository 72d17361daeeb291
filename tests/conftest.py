"""Shared fixtures: small digits datasets with known label noise, and one tiny fitted run.

Every test runs in its own temporary directory (``run_in_tmp_path``), so a ``labelclean-run/`` or
any other file in the directory pytest was started from never changes a result, and nothing a test
writes (temp files included) lands outside it. Hypothesis draws the same examples on every run and
keeps no database.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet  # noqa: F401  before torch: its parquet reader loaded after torch can crash (apache/arrow#2637)
import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

import labelclean
from labelclean import config
from labelclean.config import Decisions, FitConfig, Settings
from labelclean.demo import DigitsDataset, write_digits
from labelclean.training import EpochReport

# Hypothesis caches what it finds while the tests are collected in a folder: the system's temp folder, not the
# checkout (each test then points it at its own, below).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "labelclean-tests-hypothesis")
settings.register_profile("labelclean", derandomize=True, database=None, deadline=None)
settings.load_profile("labelclean")

# Settings that train in seconds on a 2-core CPU; enough to exercise every code path.
TINY = {"epochs": 3, "warmup": 1, "batch_size": 32, "arch": "small_cnn", "device": "cpu"}


@pytest.fixture(autouse=True)
def run_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test's working directory, temp folder (here and in the processes it starts) and Hypothesis's
    folder are its own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    set_hypothesis_home_dir(str(tmp_path / ".hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsDataset:
    """300 digits, 40% of labels flipped, written as PNGs + labels.csv + truth.csv."""
    return write_digits(tmp_path_factory.mktemp("digits"), noise=0.4, seed=0, indices=np.arange(300))


@pytest.fixture(scope="session")
def few_digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsDataset:
    """32 digits, 25% of labels flipped: enough for one short step of a large network."""
    return write_digits(tmp_path_factory.mktemp("few"), noise=0.25, seed=0, indices=np.arange(32))


@pytest.fixture(scope="session")
def tiny_run(digits: DigitsDataset, tmp_path_factory: pytest.TempPathFactory) -> labelclean.Run:
    return labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path_factory.mktemp("run") / "run", **TINY)


def fit_interrupted_after(epoch: int, digits: DigitsDataset, out: Path, **settings: object) -> None:
    """A fit that stops once epoch ``epoch`` is saved, as if killed then: it leaves a checkpoint to resume."""
    def stop(report: EpochReport) -> None:
        if report.epoch == epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        labelclean.fit(digits.images_dir, digits.labels_csv, out, on_epoch=stop, **settings)


def effective(**options: object) -> Settings:
    """The settings a fit of 100 small images on the CPU trains with under ``options``, for tests that call
    the method's pieces (:func:`labelclean.config.settings`)."""
    return config.settings(FitConfig(**options), Decisions(n_samples=100, median_side=8))


def copy_images(digits: DigitsDataset, dest: Path, count: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(digits.images_dir.glob("*.png"))[:count]
    for f in files:
        (dest / f.name).write_bytes(f.read_bytes())
    return [dest / f.name for f in files]



@pytest.fixture
def fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full precision on any CPU, for tests that redo a step by hand in fp32 (bf16 autocast, used on CPUs
    with native bf16, rounds every matmul to 8 bits of mantissa)."""
    from labelclean import training

    monkeypatch.setattr(training, "cpu_has_fast_bf16", lambda: False)


@pytest.fixture(scope="session", autouse=True)
def one_cpu_thread() -> Iterator[None]:
    """Fits in tests run on one CPU thread, not on every core ``training.cpu_threads`` gives: CI's
    cores are shared, and one thread keeps the suite's fits cheap and alike wherever it runs.
    Session-wide, so that session fixtures' fits get it too; through OMP_NUM_THREADS, the fits of the
    processes tests start too (on a busy machine two threads of a child fit ran 4x slower than one)."""
    from labelclean import api

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api, "cpu_threads", lambda device: 1)
        patch.setenv("OMP_NUM_THREADS", "1")
        yield
