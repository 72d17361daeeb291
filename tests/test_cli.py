"""The command line, in-process: fit → export → predict on a small digits set, and user errors."""

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
import typer
from conftest import TINY, copy_images
from typer.testing import CliRunner

import labelclean
from labelclean import dividemix
from labelclean.cli import app, rewrite_args
from labelclean.errors import LabelcleanError
from labelclean.export import COLUMNS

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands
TINY_ARGS = ["--epochs", "3", "--warmup", "1", "--batch-size", "32", "--arch", "small_cnn", "--device", "cpu"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_fit_export_predict_from_the_command_line(digits, tmp_path):
    out = tmp_path / "run"
    result = invoke("fit", digits.images_dir, digits.labels_csv, "--output", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    for name in ["config.json", "history.jsonl", "samples.csv", "probs.npy", "model.pt"]:
        assert (out / name).exists(), name
    assert not (out / "checkpoint.pt").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete" and config["classes"] == [str(i) for i in range(10)]
    assert config["data"]["labels"] == "csv" and config["data"]["labels_csv"] == str(digits.labels_csv.resolve())
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
    preds = pd.read_csv(io.StringIO(predicted.stdout), dtype={"predicted_label": str, "predicted_label_2": str,
                                                              "label_2": str})
    assert list(preds.columns) == ["path", "predicted_label", "predicted_confidence", "predicted_label_2",
                                   "predicted_confidence_2", "confidence", "label_2", "confidence_2"]  # old names: 0.1
    assert "the old ones (confidence, label_2, confidence_2) are still written" in " ".join(predicted.stderr.split())
    pd.testing.assert_frame_equal(preds[["confidence", "label_2", "confidence_2"]], preds[
        ["predicted_confidence", "predicted_label_2", "predicted_confidence_2"]].set_axis(
        ["confidence", "label_2", "confidence_2"], axis=1))
    assert preds["path"].tolist() == [str(f) for f in new]
    first = table.set_index("path").loc[[f.name for f in new]]  # the copies of the first five training images
    assert preds["predicted_label"].tolist() == first["predicted_label"].astype(str).tolist()
    np.testing.assert_allclose(preds["predicted_confidence"], first["predicted_confidence"], atol=1e-5)
    assert (preds["predicted_confidence"] >= preds["predicted_confidence_2"]).all()
    assert (preds["predicted_label_2"] != preds["predicted_label"]).all()


def test_user_errors_are_one_line_with_exit_code_1(digits, tiny_run, tmp_path):
    cases = [
        (["fit", digits.images_dir, tmp_path / "none.csv"], "does not exist"),
        (["fit", digits.images_dir, digits.labels_csv, "--epochs", "2", "--warmup", "5"], "--warmup"),
        (["fit", digits.images_dir, digits.labels_csv, "--threshold", "1.5"], "--threshold must be in"),
        (["fit", digits.images_dir, digits.labels_csv, "--output", tiny_run.directory], "already holds a finished run"),
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
    assert invoke("fit", digits.images_dir, digits.labels_csv, "--output", out, "--no-keep-model",
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


def class_folders(digits, root):
    """The digits as a user with class folders has them: photos/LABEL/NAME.png by the given (noisy) label,
    with the files a Mac or Windows leaves behind."""
    photos = root / "photos"
    for path, label in pd.read_csv(digits.labels_csv, dtype=str).itertuples(index=False):
        (photos / label).mkdir(parents=True, exist_ok=True)
        (photos / label / path).write_bytes((digits.images_dir / path).read_bytes())
    for junk in [".DS_Store", "3/.DS_Store", "Thumbs.db"]:
        (photos / junk).write_bytes(b"\0")
    return photos


def test_class_folders_in_fit_and_cleaned_folders_out_of_export_and_apply(digits, tmp_path):
    photos = class_folders(digits, tmp_path)
    out = tmp_path / "run"
    result = invoke("fit", photos, "-o", out, *TINY_ARGS)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "config.json").read_text())["data"]
    assert data["labels"] == "class folders" and data["labels_csv"] is None and data["images_dir"] == str(photos)
    table = pd.read_csv(io.StringIO(invoke("export", out).stdout), dtype=str)
    truth = pd.read_csv(digits.labels_csv, dtype=str)
    assert sorted(table["path"]) == sorted(truth["label"] + "/" + truth["path"])
    assert (table["given_label"] == table["path"].str.split("/").str[0]).all()

    cleaned = invoke("export", out, "--as-folders", tmp_path / "cleaned")
    assert cleaned.exit_code == 0 and "hard links" in cleaned.stderr, cleaned.output
    for row in table.itertuples():
        linked = tmp_path / "cleaned" / row.suggested_label / row.path.split("/")[1]
        assert linked.samefile(photos / row.path), row.path
    assert sum(1 for _ in (tmp_path / "cleaned").glob("*/*")) == 300
    assert len(pd.read_csv(tmp_path / "cleaned.changes.csv")) == (table["is_error"] == "True").sum()

    reviewed = table[table["is_error"] == "True"].head(10).assign(accepted_label=lambda t: t["suggested_label"])
    reviewed.to_csv(tmp_path / "reviewed.csv", index=False)
    applied = invoke("apply", tmp_path / "reviewed.csv", photos, "--as-folders", tmp_path / "kept", "-o",
                     tmp_path / "kept.csv", "--action", "drop")
    assert applied.exit_code == 0, applied.output
    kept = {p.relative_to(tmp_path / "kept").as_posix() for p in (tmp_path / "kept").glob("*/*")}
    assert kept == set(table["path"]) - set(reviewed["path"])  # the changed rows dropped, the others as they were
    assert set(pd.read_csv(tmp_path / "kept.csv", dtype=str)["path"]) == kept
    assert (tmp_path / "kept.changes.csv").exists() and not (tmp_path / "kept.changes.csv.changes.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cleaned", "cleaned.changes.csv", "kept", "kept.changes.csv",
                                                          "kept.csv", "photos", "reviewed.csv", "run"]


def test_a_class_folder_fit_resumes_from_its_folders(digits, tmp_path):
    photos = class_folders(digits, tmp_path)
    out = tmp_path / "run"

    def stop(report):
        if report.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        labelclean.fit(photos, out=out, on_epoch=stop, **TINY)  # no labels CSV: class folders
    with_csv = invoke("fit", photos, digits.labels_csv, "--output", out, "--resume")
    assert with_csv.exit_code == 1 and "continues the run on the class folders of" in with_csv.stderr
    resumed = invoke("fit", photos, "--out", out, "--resume", "--epochs", "9")  # --out: the old spelling of --output
    assert resumed.exit_code == 0, resumed.output
    assert "--out is deprecated" in resumed.stderr and "use --output" in resumed.stderr
    assert "--epochs is ignored with --resume" in resumed.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "complete" and config["epochs"] == 3 and config["data"]["labels"] == "class folders"


def test_every_command_names_a_concept_the_same_way():
    commands = typer.main.get_command(app).commands
    names = {(command, param.name): param.opts for command, c in commands.items() for param in c.params}
    with_o = {command: opts for (command, _), opts in names.items() if "-o" in opts}
    assert sorted(with_o) == ["apply", "demo", "export", "fit", "predict", "pretrain", "report"]
    assert all(opts == ["--output", "-o"] for opts in with_o.values()), with_o
    assert names["fit", "p_threshold"] == names["export", "threshold"] == ["--threshold"]
    assert names["report", "threshold"] == ["--threshold"]
    assert names["export", "action"] == names["apply", "action"] == ["--action"]
    assert names["export", "as_folders"] == names["apply", "as_folders"] == ["--as-folders"]
    for command in commands:
        shown = runner.invoke(app, [command, "--help"], terminal_width=200).output
        assert not re.search(r"--out\b|--p-threshold|--drop-rejected", shown), command


def test_old_spellings_warn_and_still_work(tmp_path):
    assert rewrite_args(["fit", "a", "--out=r", "--p-threshold", "0.3"], COMMANDS) == [
        "fit", "a", "--output=r", "--threshold", "0.3"]
    assert rewrite_args(["apply", "r.csv", "l.csv", "--drop-rejected"], COMMANDS)[3:] == ["--action", "drop"]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\na.png,cat\nb.png,dog\n")
    (tmp_path / "reviewed.csv").write_text("path,accepted_label\na.png,dog\n")
    for old, rows in [("--drop-rejected", ["b.png"]), ("--no-drop-rejected", ["a.png", "b.png"])]:
        result = invoke("apply", tmp_path / "reviewed.csv", csv, "-o", tmp_path / "clean.csv", old)
        assert result.exit_code == 0, result.output
        assert f"warning: {old} is deprecated" in result.stderr
        assert pd.read_csv(tmp_path / "clean.csv")["path"].tolist() == rows
    threshold = invoke("fit", tmp_path, csv, "--p-threshold", "1.5")
    assert "use --threshold" in threshold.stderr and "must be in [0, 1]. Got 1.5" in threshold.stderr


def test_main_options_work_after_the_command(tmp_path):
    missing = tmp_path / "nothing"
    assert invoke("export", missing).exit_code == 1
    for args in [("--debug", "export", missing), ("export", missing, "--debug"), ("export", "-v", missing, "--debug")]:
        result = invoke(*args)
        assert isinstance(result.exception, LabelcleanError), args  # --debug: raised, for the traceback
    # an option's value is never taken for a main option
    assert rewrite_args(["fit", "a", "--label-column", "--debug", "-v"], COMMANDS) == [
        "-v", "fit", "a", "--label-column", "--debug"]
    assert rewrite_args(["--debug", "fit", "--", "--debug"], COMMANDS) == ["--debug", "fit", "--", "--debug"]


def test_align_reaches_the_guesses_and_config_json(digits, tmp_path, monkeypatch):
    """--align goes from the command line to config.json and to every co-guess of the fit."""
    priors = []
    guess = dividemix.co_guess
    monkeypatch.setattr(dividemix, "co_guess", lambda *args: priors.append(args[3]) or guess(*args))
    out = tmp_path / "run"
    result = invoke("fit", digits.images_dir, digits.labels_csv, "--output", out, *TINY_ARGS, "--align",
                    "--lambda-u", "25")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["fit"]["align"] is True and config["settings"]["align"] is True
    assert priors and all(p is not None and p.shape == (10,) for p in priors)
