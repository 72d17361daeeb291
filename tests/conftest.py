"""Shared fixtures: small digits datasets with known label noise, and one tiny fitted run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import labelclean
from labelclean.demo import DigitsDataset, write_digits
from labelclean.training import EpochReport

# Settings that train in seconds on a 2-core CPU; enough to exercise every code path.
TINY = dict(epochs=3, warmup=1, batch_size=32, arch="small_cnn", device="cpu")


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> DigitsDataset:
    """300 digits, 40% of labels flipped, written as PNGs + labels.csv + truth.csv."""
    return write_digits(tmp_path_factory.mktemp("digits"), noise=0.4, seed=0, indices=np.arange(300))


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


def copy_images(digits: DigitsDataset, dest: Path, count: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(digits.images_dir.glob("*.png"))[:count]
    for f in files:
        (dest / f.name).write_bytes(f.read_bytes())
    return [dest / f.name for f in files]
