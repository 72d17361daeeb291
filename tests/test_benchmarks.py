"""Smoke tests that keep the benchmark scripts from rotting: one seed, two epochs, a few images.

The numbers mean nothing at this size; the tests check that every method runs end to end and
that the JSON results have the shape the README's tables are built from.
"""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
runner = CliRunner()


@pytest.fixture
def benchmarks(monkeypatch: pytest.MonkeyPatch):
    """Make the scripts importable as they import each other when run (from their own folder), and
    restore torch's thread count, which ``--threads 1`` sets for the whole process."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()
    yield BENCHMARKS
    torch.set_num_threads(threads)


def test_overrides_are_typed_like_the_config_fields_also_those_the_rules_choose(benchmarks):
    from common import parse_overrides

    assert parse_overrides("selection=gmm,p_threshold=0.6,lambda_u=0,loss_window=5,flip=false,alpha=1") == {
        "selection": "gmm", "p_threshold": 0.6, "lambda_u": 0.0, "loss_window": 5, "flip": False, "alpha": 1.0}


def test_quality_benchmark_scores_every_method(benchmarks, tmp_path):
    pytest.importorskip("cleanlab")
    import quality

    result = runner.invoke(quality.app, [
        "--setting", "asym:0.4", "--seeds", "1", "--subset", "100", "--set", "epochs=2,warmup=1,batch_size=32", "--baseline-epochs", "2",
        "--variant", "lambda_u=0", "--folds", "2", "--device", "cpu", "--threads", "1", "--results", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "quality-digits-asym40.json").read_text())
    assert saved["data"] == {"n_train": 80, "n_test": 20, "split_seed": 0}
    assert list(saved["summary"]) == ["labelclean", "labelclean is_error", "labelclean is_error@hint",
                                      "labelclean[lambda_u=0]", "labelclean[lambda_u=0] is_error",
                                      "labelclean[lambda_u=0] is_error@hint", "plain_ce", "cleanlab"]
    for figures in saved["summary"].values():
        assert all(0 <= figures[f]["mean"] <= 1 for f in quality.FIGURES[:-1]), figures
    assert {run["noise_rate"] for run in saved["runs"]} == {saved["runs"][0]["noise_rate"]}  # same noise for all
    assert "refined acc." in result.stdout


def test_speed_benchmark_projects_an_epoch(benchmarks, tmp_path):
    import speed

    out = tmp_path / "speed.json"
    result = runner.invoke(speed.app, [
        "--samples", "256", "--image-size", "16", "--arch", "small_cnn", "--batch-size", "16", "--steps", "2",
        "--eval-batch-size", "64", "--eval-batches", "1", "--device", "cpu", "--threads", "1", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["samples"] == 256 and saved["precision"] == "fp32"
    assert saved["projected"]["run_seconds"] > saved["projected"]["epoch_seconds"] > 0
    assert saved["memory"]["cpu_peak_rss_mb"] > 0
    assert "projected run" in result.stdout


def test_memory_benchmark_measures_both_placements(benchmarks, tmp_path):
    import memory

    out = tmp_path / "memory.json"
    result = runner.invoke(memory.app, [
        "--images", "64", "--image-size", "16", "--distinct", "8", "--batch-size", "16", "--steps", "2",
        "--threads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["data"]["cache_mb"] == 64 * 3 * 16 * 16 / 1e6
    runs = saved["runs"]
    assert list(runs) == list(memory.MODES)
    assert [r["placement"] for r in runs.values()] == ["RAM", "memory-mapped"]
    for r in runs.values():
        assert r["exit_code"] == 0 and r["reused_cache"] and r["stopped"]  # stopped after --steps, as by Ctrl-C
        assert r["peak_rss_mb"] > 0 and r["seconds"] > 0
    assert "peak RSS MB" in result.stdout
