"""The run directory: atomic writes, safe loading, overwrite protection, and resuming interrupted fits."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, fit_interrupted_after

import labelclean
from labelclean.errors import LabelcleanError
from labelclean.files import atomic_write, load_torch, write_text
from labelclean.training import STOP, Interrupted, Loop

RESUME = dict(TINY, epochs=4, warmup=1)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.csv"
    write_text(target, "old\n")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.csv"]


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_never_execute_pickled_code(tmp_path):
    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(LabelcleanError, match="Cannot load"):
        load_torch(tmp_path / "evil.pt")


def test_existing_run_is_not_overwritten_without_permission(digits, tiny_run):
    before = (tiny_run.directory / "samples.csv").read_bytes()
    with pytest.raises(LabelcleanError, match="--overwrite"):
        labelclean.fit(digits.images_dir, digits.labels_csv, tiny_run.directory, **TINY)
    assert (tiny_run.directory / "samples.csv").read_bytes() == before


@pytest.mark.slow
def test_interrupted_fit_resumes_to_the_same_result(digits, tmp_path):
    reference = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "ref", **RESUME)
    fit_interrupted_after(2, digits, tmp_path / "cut", **RESUME)
    with pytest.raises(LabelcleanError, match="did not finish"):
        labelclean.Run(tmp_path / "cut")
    with pytest.raises(LabelcleanError, match="--resume"):
        labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "cut", **RESUME)
    epochs_seen = []
    resumed = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "cut", resume=True,
                             on_epoch=lambda r: epochs_seen.append(r.epoch))
    assert epochs_seen == [3, 4]
    pd.testing.assert_frame_equal(resumed.export(), reference.export(), check_exact=False, atol=1e-5)
    assert len(resumed.history) == 4


@pytest.mark.slow
def test_ctrl_c_stops_at_a_step_boundary_and_resumes_there(digits, tmp_path, monkeypatch):
    # Small batches: after one warm-up epoch the quota may label only ~10% of the 300 samples, and the
    # stop below needs a second step in "train 2".
    settings = dict(RESUME, batch_size=8)
    reference = labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "ref", **settings)
    steps = Loop.steps

    def ctrl_c_in_epoch_3(loop, count, totals):
        for step in steps(loop, count, totals):
            if (loop.state.epoch, loop.name, step) == (2, "train 2", 1):
                STOP.set()  # what the Ctrl-C handler does: this step finishes, the next one does not start
            yield step

    monkeypatch.setattr(Loop, "steps", ctrl_c_in_epoch_3)
    with pytest.raises(Interrupted, match="after 2 of .* epoch 3"):
        labelclean.fit(digits.images_dir, digits.labels_csv, tmp_path / "cut", **settings)
    monkeypatch.undo()
    saved = load_torch(tmp_path / "cut" / "checkpoint.pt")
    assert saved["epoch"] == 2 and saved["partial"]["loop"]["name"] == "train 2"
    assert {"co-divide", "guard", "train 1"} <= set(saved["partial"]["done"])
    resumed = labelclean.fit(None, None, tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(resumed.export(), reference.export(), check_exact=False, atol=1e-5)


def start_fit(digits, out: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """``labelclean fit`` in a child process; returns once it has finished its second epoch."""
    args = [sys.executable, "-m", "labelclean", "fit", str(digits.images_dir), str(digits.labels_csv),
            "--output", str(out), "--epochs", "30", "--warmup", "1", "--batch-size", "32", "--arch", "small_cnn",
            "--device", "cpu", *extra]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # generous: a busy 2-core machine may take minutes to import and decode
    while not (out / "history.jsonl").exists() or len((out / "history.jsonl").read_text().splitlines()) < 2:
        assert time.time() < deadline and process.poll() is None, "fit did not reach epoch 2"
        time.sleep(0.2)
    return process, args


@pytest.mark.slow
def test_fit_killed_with_sigkill_resumes(digits, tmp_path):
    """A kill may land inside an atomic write and leave its temp file: the resume must not mind."""
    out = tmp_path / "run"
    process, args = start_fit(digits, out)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "samples.csv").exists()
    (out / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves it
    finished = subprocess.run(args[:4] + ["--output", str(out), "--resume"], capture_output=True, text=True,
                              timeout=1200, check=False)
    assert finished.returncode == 0, finished.stderr
    run = labelclean.Run(out)
    assert len(run.export()) == 300 and [h["epoch"] for h in run.history] == list(range(1, 31))
    assert run.config["status"] == "complete" and not (out / "checkpoint.pt").exists()


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_saves_and_says_how_to_resume(digits, tmp_path):
    out = tmp_path / "run"
    process, _ = start_fit(digits, out)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 130
    assert "Stopped cleanly after" in stderr and f"labelclean fit --output {out} --resume" in stderr
    assert "Traceback" not in stderr
    assert "partial" in load_torch(out / "checkpoint.pt")


def test_outputs_get_the_usual_file_mode(tmp_path):
    write_text(tmp_path / "shared.csv", "x\n")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "shared.csv").stat().st_mode & 0o777 == 0o666 & ~mask
