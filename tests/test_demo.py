"""Real behaviour on real data: the README's demo must find flipped labels and repair them.

Digits with 40% of labels flipped to another class, the demo's CPU settings. A plain
cross-entropy model with confidence thresholding reaches F1 ≈ 0.97 and repaired accuracy
≈ 0.95 here (docs/benchmarks.md, plain CE rows), so DivideMix must at least match that.
"""

import pandas as pd
import pytest
from typer.testing import CliRunner

import labelclean
from labelclean.cli import app
from labelclean.demo import score


@pytest.mark.slow
def test_demo_finds_flipped_labels_and_refines_them(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--output", str(tmp_path), "--noise", "0.4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "detection AUROC" in result.stdout

    table = labelclean.Run(tmp_path / "run").export(threshold=0.5)
    figures = score(table, pd.read_csv(tmp_path / "truth.csv", dtype=str))
    assert 0.35 < figures["noise_rate"] < 0.45
    assert figures["auroc"] >= 0.97, figures
    assert figures["f1"] >= 0.93, figures
    assert figures["refined_accuracy"] >= 0.95, figures
    assert figures["refined_accuracy"] > figures["given_accuracy"] + 0.3, figures
