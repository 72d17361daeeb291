"""Declared options, the decisions record and the one function that turns them into effective settings."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import TINY
from typer.testing import CliRunner

import labelclean
from labelclean.auto import CLEAN_SPLIT, NoiseEstimate, choose_settings
from labelclean.cli import app
from labelclean.config import DataOptions, Decisions, FitConfig, Guard, Settings, Start, settings
from labelclean.errors import LabelcleanError
from labelclean.export import DEFAULT_THRESHOLD


def test_settings_leave_nothing_to_choose_and_keep_what_was_declared():
    declared = FitConfig(lr=0.05, selection="gmm")
    plan = settings(declared, Decisions(n_samples=1_438, median_side=8))
    assert all(getattr(plan, f.name) is not None for f in fields(Settings))
    assert (plan.lr, plan.selection, plan.image_size, plan.arch) == (0.05, "gmm", 8, "small_cnn")
    assert plan.start_blend == 1.0 and plan.p_threshold == CLEAN_SPLIT == DEFAULT_THRESHOLD  # one boundary


def test_what_the_rules_decide_reaches_the_settings_and_the_record_survives_json():
    noise = NoiseEstimate(0.7, 0.1, "spread")
    decided = Decisions(n_samples=1_000, median_side=500, device="cuda", start=Start("self-supervised", "ssl.pt"),
                        warmup=6, noise=noise, chosen=choose_settings(noise, 10), guard=Guard(recoveries=1))
    plan = settings(FitConfig(), decided)
    assert (plan.image_size, plan.arch, plan.lr, plan.start_blend) == (224, "resnet18", 0.02, 0.5)
    assert (plan.warmup, plan.selection, plan.loss_window, plan.quota_share) == (6, "quota", 5, pytest.approx(0.3))
    assert Decisions.from_dict(json.loads(json.dumps(decided.to_dict()))) == decided
    # A threshold other than the quota's boundary keeps the GMM split; --no-auto keeps the paper's settings.
    assert settings(FitConfig(p_threshold=0.7), decided).selection == "gmm"
    assert settings(FitConfig(auto=False), decided).selection == "gmm"


def test_a_quota_with_another_threshold_is_refused():
    with pytest.raises(LabelcleanError, match="--selection quota labels each class's quota"):
        FitConfig(selection="quota", p_threshold=0.7).validate()
    assert FitConfig(selection="quota", p_threshold=0.5).validate().p_threshold == 0.5


@pytest.mark.parametrize("options, message", [
    (["--selection", "quota", "--threshold", "0.7"], "drop --threshold 0.7 or use --selection gmm"),
    (["--start-blend", "0.5"], "--start-blend blends loaded weights"),
])
def test_contradicting_options_are_one_line_errors(digits, tmp_path, options, message):
    result = CliRunner().invoke(app, [str(a) for a in ["fit", digits.images_dir, digits.labels_csv, "--output",
                                                       tmp_path / "run", "--device", "cpu", *options]])
    assert result.exit_code == 1 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_config_json_records_the_declared_options_the_decisions_and_the_settings(tiny_run):
    config = tiny_run.config
    assert config["fit"] == FitConfig(**TINY).to_dict()  # as declared: None where the rules chose
    decided = Decisions.from_dict(config["auto"])
    assert config["settings"] == settings(FitConfig.from_dict(config["fit"]), decided).to_dict()
    assert decided.n_samples == 300 and decided.warmup == 1 and decided.noise is not None


def test_a_run_started_before_decisions_were_recorded_is_not_resumed_with_a_traceback(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"status": "training", "fit": FitConfig(**TINY).to_dict()}))
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(LabelcleanError, match="started by an older labelclean.*--overwrite"):
        labelclean.fit(None, None, run, resume=True)


def test_data_options_round_trip_and_take_their_keywords_from_the_options():
    data = DataOptions(path_column="file", label_column="y", skip_missing=True, dedupe=True, skip_bad=True,
                       cache_dir=Path("cache"))
    assert data.cache_dir == str(Path("cache").resolve())  # absolute, as config.json records it
    assert DataOptions.from_dict(json.loads(json.dumps(data.to_dict()))) == data
    taken, rest = DataOptions.taken_from({"skip_bad": True, "epochs": 3}, DataOptions(dedupe=True))
    assert taken == DataOptions(dedupe=True, skip_bad=True) and rest == {"epochs": 3}


def test_config_json_records_the_data_options_with_what_was_read(tiny_run, digits):
    data = tiny_run.config["data"]
    assert DataOptions.from_dict(data) == DataOptions()
    assert data == {"images_dir": str(digits.images_dir.resolve()), "labels_csv": str(digits.labels_csv.resolve()),
                    "labels": "csv", **DataOptions().to_dict(), "n_samples": 300, "n_skipped": 0}


def test_fit_and_pretrain_take_the_data_options_as_an_object_or_as_keywords(digits, tmp_path):
    same = {"path_column": "path", "label_column": "path"}
    images, labels = digits.images_dir, digits.labels_csv
    for start in (lambda: labelclean.fit(images, labels, tmp_path / "run", data=DataOptions(**same)),
                  lambda: labelclean.fit(images, labels, tmp_path / "run", **same, epochs=3),
                  lambda: labelclean.pretrain(images, labels, tmp_path / "ssl.pt", data=DataOptions(**same)),
                  lambda: labelclean.pretrain(images, labels, tmp_path / "ssl.pt", **same, epochs=3)):
        with pytest.raises(LabelcleanError, match="both name the column 'path'"):
            start()
    assert not (tmp_path / "run").exists() and not (tmp_path / "ssl.pt").exists()
