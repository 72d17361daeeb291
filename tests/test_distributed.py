"""DivideMix on two CPU processes (torchrun, gloo): the same samples and detection quality as on one,
Ctrl-C stops both at one step, and a resumed run ends exactly where an uninterrupted one does."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import labelclean
from labelclean import cli, distributed

SETTINGS = {"epochs": 10, "warmup": 4, "batch_size": 32, "arch": "small_cnn", "device": "cpu"}  # AUROC ≈ 0.98, one process
OPTIONS = [f"--{name.replace('_', '-')}={value}" for name, value in SETTINGS.items()]


def env() -> dict[str, str]:
    """The test's environment (its TMPDIR is the test's own directory), one thread per process: two
    processes on a 2-core machine."""
    return dict(os.environ, OMP_NUM_THREADS="1")


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "labelclean",
            "fit", *args, *OPTIONS]


def auroc(run: labelclean.Run, digits) -> float:
    """How well clean_prob ranks the flipped labels below the others (1 = perfectly)."""
    truth = pd.read_csv(digits.truth_csv, dtype=str).merge(run.export(), on="path", suffixes=("", "_run"))
    return roc_auc_score(truth["given_label"] != truth["true_label"], -truth["clean_prob"])


@pytest.fixture(scope="module")
def two_process_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "run"
    subprocess.run(torchrun(str(digits.images_dir), str(digits.labels_csv), f"--output={out}"), env=env(), check=True,
                   capture_output=True, timeout=1200)
    return labelclean.Run(out)


def test_shards_cover_every_sample_once(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert [list(distributed.shard(8, r)) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    batch = torch.arange(5)
    assert distributed.part(batch) is batch  # no process group: every helper is the identity


def test_the_processes_get_the_command_less_nproc():
    argv = ["-v", "fit", "images", "labels.csv", "--nproc", "2", "--output=run", "--gpus=2", "--epochs", "3"]
    assert cli.without_nproc(argv) == ["-v", "fit", "images", "labels.csv", "--output=run", "--epochs", "3"]


@pytest.mark.slow
def test_two_processes_match_one(digits, tmp_path, two_process_run):
    one = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "one", **SETTINGS)
    table = two_process_run.export()
    assert table["path"].tolist() == one.export()["path"].tolist()  # every sample once, in input order
    assert two_process_run.config["processes"] == 2
    assert auroc(two_process_run, digits) > auroc(one, digits) - 0.03


def nproc(*args: str) -> list[str]:
    return [sys.executable, "-m", "labelclean", "fit", *args, *OPTIONS, "--nproc=2"]


@pytest.mark.slow
def test_ctrl_c_stops_both_processes_and_the_run_resumes_exactly(digits, tmp_path, two_process_run):
    out = tmp_path / "cut"
    launcher = subprocess.Popen(nproc(str(digits.images_dir), str(digits.labels_csv), f"--output={out}"), env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 600  # generous: two processes import torch and decode on a busy machine
    while not (out / "checkpoint.pt").exists() and launcher.poll() is None:
        assert time.monotonic() < deadline, "the fit saved no checkpoint"
        time.sleep(0.02)
    os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the launcher and both processes
    output, _ = launcher.communicate(timeout=600)
    assert launcher.returncode == 130, output
    assert output.count("Stopped cleanly") == 1, output  # both stopped, the main process saved and said so
    assert "Traceback" not in output, output
    assert (out / "checkpoint.pt").exists()

    resumed = subprocess.run([sys.executable, "-m", "labelclean", "fit", f"--output={out}", "--resume", "--nproc=2"],
                             env=env(), capture_output=True, text=True, timeout=1200, check=False)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(labelclean.Run(out).export(), two_process_run.export(), check_exact=False, atol=1e-5)


@pytest.mark.slow
def test_an_error_in_the_processes_is_one_line_once(digits, tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("path,label\nmissing.png,3\n")
    failed = subprocess.run(nproc(str(digits.images_dir), str(bad), f"--output={tmp_path / 'run'}"), env=env(),
                            capture_output=True, text=True, timeout=600, check=False)
    assert failed.returncode == 1
    message = (f"error: {bad} has 1 rows but 1 path(s) do not exist under {digits.images_dir} (e.g. 'missing.png'). "
               "Fix the paths or pass --skip-missing.")
    assert failed.stderr.strip().splitlines() == [message], failed.stderr
