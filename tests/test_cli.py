"""The command line, in-process: fit → export → predict on a small digits set, and user errors."""

import io
import json
import re

import pandas as pd
from conftest import copy_images
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.export import COLUMNS

runner = CliRunner()
TINY_ARGS = ["--epochs", "3", "--warmup", "1", "--batch-size", "32", "--arch", "small_cnn", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_fit_export_predict_from_the_command_line(digits, tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", digits.images_dir, digits.labels_csv, "--out", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    for name in ["config.json", "history.jsonl", "samples.csv", "probs.npy", "model.pt"]:
        assert (out / name).exists(), name
    assert not (out / "checkpoint.pt").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete" and config["classes"] == [str(i) for i in range(10)]
    assert config["preprocessing"]["image_size"] == 8 and config["preprocessing"]["channels"] == 1
    assert len((out / "history.jsonl").read_text().splitlines()) == 3

    exported = invoke("export", out)
    assert exported.exit_code == 0, exported.output
    table = pd.read_csv(io.StringIO(exported.stdout))
    assert list(table.columns) == COLUMNS
    assert len(table) == 300
    assert table["path"].tolist() == pd.read_csv(digits.labels_csv)["path"].tolist()  # input order
    assert table["clean_prob"].between(0, 1).all()
    assert (table["is_noisy"] == (table["clean_prob"] < 0.5)).all()
    disagrees = table["predicted_label"] != table["given_label"]
    assert (table["is_error"] == (table["is_noisy"] & disagrees)).all()
    changed = table["suggested_label"] != table["given_label"]
    assert (changed == table["is_error"]).all()
    assert (table.loc[changed, "suggested_label"] == table.loc[changed, "predicted_label"]).all()

    errors = pd.read_csv(io.StringIO(invoke("export", out, "--only-errors", "--threshold", "0.9").stdout))
    assert len(errors) == int(((table["clean_prob"] < 0.9) & disagrees).sum()) and errors["is_error"].all()

    noisy = pd.read_csv(io.StringIO(invoke("export", out, "--only-noisy", "--sort", "clean_prob",
                                           "--threshold", "0.9").stdout))
    assert noisy["is_noisy"].all() and noisy["clean_prob"].is_monotonic_increasing
    assert len(noisy) == int((table["clean_prob"] < 0.9).sum())

    lines = invoke("export", out, "--format", "jsonl").stdout.splitlines()
    assert len(lines) == 300 and set(json.loads(lines[0])) == set(COLUMNS)

    assert invoke("export", out, "-o", tmp_path / "review.parquet").exit_code == 0
    assert len(pd.read_parquet(tmp_path / "review.parquet")) == 300

    new = copy_images(digits, tmp_path / "new", 5)
    predicted = invoke("predict", out, new[0].parent, "--top-k", "2")
    assert predicted.exit_code == 0, predicted.output
    preds = pd.read_csv(io.StringIO(predicted.stdout))
    assert list(preds.columns) == ["path", "predicted_label", "confidence", "label_2", "confidence_2"]
    assert len(preds) == 5 and (preds["confidence"] >= preds["confidence_2"]).all()


def test_user_errors_are_one_line_with_exit_code_1(digits, tiny_run, tmp_path):
    cases = [
        (["fit", digits.images_dir, tmp_path / "none.csv"], "does not exist"),
        (["fit", digits.images_dir, digits.labels_csv, "--epochs", "2", "--warmup", "5"], "'warmup' option"),
        (["fit", digits.images_dir, digits.labels_csv, "--p-threshold", "1.5"], "'p_threshold' option must be in"),
        (["fit", digits.images_dir, digits.labels_csv, "--out", tiny_run.directory], "already holds a finished run"),
        (["export", tmp_path / "nothing"], "Run directory .* does not exist"),
        (["export", tiny_run.directory, "--threshold", "2"], "'threshold' option must be in \\[0, 1\\]"),
        (["export", tiny_run.directory, "--format", "parquet"], "Parquet is binary"),
        (["predict", tiny_run.directory, tmp_path / "missing.png"], "does not exist"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == ""
        assert "Traceback" not in result.output

        assert re.search(message, result.stderr.replace("\n", " ")), (args, result.stderr)


def test_no_keep_model_refuses_predict_with_a_hint(digits, tmp_path):
    out = tmp_path / "run"
    assert invoke("fit", digits.images_dir, digits.labels_csv, "--out", out, "--no-keep-model",
                  *TINY_ARGS).exit_code == 0
    assert not (out / "model.pt").exists()
    result = invoke("predict", out, digits.images_dir)
    assert result.exit_code == 1 and "--keep-model" in result.stderr


def test_help_explains_every_command():
    for cmd in ["fit", "export", "predict", "demo", "report", "apply"]:
        result = invoke(cmd, "--help")
        assert result.exit_code == 0 and "Usage" in result.output
