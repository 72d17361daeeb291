"""The command line, in-process: fit → export → predict on a small digits set, and user errors."""

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import typer
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
    samples = pd.read_csv(out / "samples.csv")
    np.testing.assert_allclose(table["clean_prob"], (samples["clean_prob_net1"] + samples["clean_prob_net2"]) / 2,
                               atol=1e-6)
    assert table["is_noisy"].any() and not table["is_noisy"].all()
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
    preds = pd.read_csv(io.StringIO(predicted.stdout), dtype={"predicted_label": str, "label_2": str})
    assert list(preds.columns) == ["path", "predicted_label", "confidence", "label_2", "confidence_2"]
    assert preds["path"].tolist() == [str(f) for f in new]
    first = table.set_index("path").loc[[f.name for f in new]]  # the copies of the first five training images
    assert preds["predicted_label"].tolist() == first["predicted_label"].astype(str).tolist()
    np.testing.assert_allclose(preds["confidence"], first["predicted_confidence"], atol=1e-5)
    assert (preds["confidence"] >= preds["confidence_2"]).all() and (preds["label_2"] != preds["predicted_label"]).all()


def test_user_errors_are_one_line_with_exit_code_1(digits, tiny_run, tmp_path):
    cases = [
        (["fit", digits.images_dir, tmp_path / "none.csv"], "does not exist"),
        (["fit", digits.images_dir, digits.labels_csv, "--epochs", "2", "--warmup", "5"], "--warmup"),
        (["fit", digits.images_dir, digits.labels_csv, "--p-threshold", "1.5"], "--p-threshold must be in"),
        (["fit", digits.images_dir, digits.labels_csv, "--out", tiny_run.directory], "already holds a finished run"),
        (["export", tmp_path / "nothing"], "Run directory .* does not exist"),
        (["export", tiny_run.directory, "--threshold", "2"], "--threshold must be in \\[0, 1\\]"),
        (["export", tiny_run.directory, "--format", "parquet"], "Parquet is binary"),
        (["predict", tiny_run.directory, tmp_path / "missing.png"], "does not exist"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stdout == ""
        assert "Traceback" not in result.output

        assert re.search(message, result.stderr.replace("\n", " ")), (args, result.stderr)


@pytest.mark.slow
def test_no_keep_model_refuses_predict_with_a_hint(digits, tmp_path):
    out = tmp_path / "run"
    assert invoke("fit", digits.images_dir, digits.labels_csv, "--out", out, "--no-keep-model",
                  *TINY_ARGS).exit_code == 0
    assert not (out / "model.pt").exists()
    result = invoke("predict", out, digits.images_dir)
    assert result.exit_code == 1 and "--keep-model" in result.stderr


def test_help_explains_every_command():
    commands = typer.main.get_command(app).commands
    assert sorted(commands) == ["apply", "demo", "export", "fit", "predict", "pretrain", "report"]
    for name, command in commands.items():
        result = runner.invoke(app, [name, "--help"], terminal_width=200, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        assert f"Usage: root {name}" in text or f"Usage: labelclean {name}" in text, text
        assert " ".join(command.help.split("\n\n")[0].split()) in text  # the docstring's first paragraph
        for param in command.params:
            if param.name != "help":
                shown = param.opts[0] if param.param_type_name == "option" else param.name
                assert shown.lower() in text.lower(), (name, shown)
