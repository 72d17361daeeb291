"""The Python API (labelclean/api.py): ``fit`` and ``Run`` with its loading, export, prediction and
history; predict and export agree on the training images; ``examples/python_api.py`` runs."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import labelclean
from labelclean.config import FitConfig
from labelclean.errors import LabelcleanError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "python_api.py"


def test_run_load_reads_back_what_fit_returned(tiny_run, digits):
    run = labelclean.Run.load(tiny_run.directory)
    assert isinstance(run, labelclean.Run) and run.directory == tiny_run.directory
    assert run.config == tiny_run.config and run.config["status"] == "complete"
    assert run.classes == [str(i) for i in range(10)]
    assert run.fit_config == FitConfig.from_dict(run.config["fit"])
    assert (run.fit_config.epochs, run.fit_config.warmup, run.fit_config.arch) == (3, 1, "small_cnn")
    labels = pd.read_csv(digits.labels_csv, dtype=str)
    samples = run.samples()
    assert samples["path"].tolist() == labels["path"].tolist()  # input order
    assert samples["given_label"].tolist() == labels["label"].tolist()
    assert run.probs().shape == (300, 10)
    pd.testing.assert_frame_equal(run.export(), tiny_run.export())


def test_history_has_one_record_per_epoch_with_the_phase_schedule(tiny_run):
    history = tiny_run.history
    assert [(h["epoch"], h["epochs"], h["phase"]) for h in history] == [(1, 3, "warm-up"), (2, 3, "train"),
                                                                       (3, 3, "train")]
    lr = tiny_run.settings.lr
    assert [h["lr"] for h in history] == pytest.approx([lr, lr / 10, lr / 10])  # ÷10 from half the epochs
    for h in history[1:]:
        labeled = h["labeled"]
        assert h["noise_estimate"] == pytest.approx(1 - sum(labeled) / 600)
        assert len(h["loss"]) == len(h["loss_u"]) == len(h["agreement"]) == 2


def test_predict_on_the_training_images_agrees_with_the_export(tiny_run, digits):
    """One ensemble rule, the two networks' mean softmax, for both: an image gets one prediction per run."""
    exported = tiny_run.export()
    predicted = tiny_run.predict([digits.labels_csv], images_dir=digits.images_dir, device="cpu", top_k=3)
    assert predicted["path"].tolist() == exported["path"].tolist()
    assert predicted["predicted_label"].tolist() == exported["predicted_label"].tolist()
    np.testing.assert_allclose(predicted["confidence"], exported["predicted_confidence"], atol=1e-5)
    probs = tiny_run.probs()
    top = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    names = np.array(tiny_run.classes, dtype=object)
    for k in (2, 3):
        assert predicted[f"label_{k}"].tolist() == names[top[:, k - 1]].tolist()
        np.testing.assert_allclose(predicted[f"confidence_{k}"], probs[np.arange(300), top[:, k - 1]], atol=1e-5)


def test_predict_takes_files_folders_and_csvs(tiny_run, digits, tmp_path):
    files = sorted(digits.images_dir.glob("*.png"))[:3]
    by_file = tiny_run.predict(files, device="cpu")
    assert by_file["path"].tolist() == [str(f) for f in files]
    by_folder = tiny_run.predict([digits.images_dir], device="cpu", batch_size=7)
    assert len(by_folder) == 300 and by_folder["path"].tolist() == sorted(by_folder["path"])
    pd.testing.assert_frame_equal(by_folder.head(3), by_file)  # batch size changes nothing
    (tmp_path / "new.csv").write_text("path\n" + "\n".join(f.name for f in files) + "\n")
    by_csv = tiny_run.predict([tmp_path / "new.csv"], images_dir=digits.images_dir, device="cpu")
    pd.testing.assert_frame_equal(by_csv.drop(columns="path"), by_file.drop(columns="path"))
    with pytest.raises(LabelcleanError, match=r"'top_k' option must be in \[1, 10\]. Got 0"):
        tiny_run.predict(files, top_k=0)


def test_run_refuses_what_is_not_a_finished_run(tiny_run, tmp_path):
    with pytest.raises(LabelcleanError, match="does not exist"):
        labelclean.Run.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelcleanError, match="not a labelclean run directory"):
        labelclean.Run.load(tmp_path / "empty")
    with pytest.raises(LabelcleanError, match="Give the image folder and the labels CSV"):
        labelclean.fit(None, None, tmp_path / "run")


def test_fit_takes_a_config_object_and_options_that_override_it(digits, tmp_path):
    config = FitConfig(epochs=3, warmup=1, batch_size=32, arch="small_cnn", device="cpu", lambda_u=7.0)
    reports = []
    run = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "run", config=config, lambda_u=3.0,
                         keep_model=False, on_epoch=reports.append)
    assert run.fit_config.lambda_u == 3.0 and run.fit_config.batch_size == 32
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert [r.__dict__ for r in reports] == run.history  # what on_epoch saw is what history keeps
    assert not (run.directory / "model.pt").exists()
    with pytest.raises(LabelcleanError, match="--keep-model"):
        run.predict([digits.images_dir])


@pytest.mark.slow
def test_the_example_script_runs_as_a_user_would_run_it(tmp_path):
    out = tmp_path / "example"
    result = subprocess.run([sys.executable, str(EXAMPLE), str(out), "--samples", "200", "--epochs", "3",
                             "--warmup", "1"], capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    run = labelclean.Run(out / "run")
    errors = run.export(threshold=0.5, only_errors=True, sort="clean_prob")
    assert f"{len(errors)} of 200 labels look wrong" in result.stdout
    assert all(path in result.stdout for path in errors["path"].head(10))
    assert f"'rate': {run.config['auto']['noise']['rate']}" in result.stdout
    predicted = run.predict([out / "images" / "0000.png", out / "images" / "0001.png"], top_k=2, device="cpu")
    for row in predicted.itertuples():
        assert re.search(rf"{re.escape(row.path)}\s+{row.predicted_label}\s+", result.stdout), result.stdout
