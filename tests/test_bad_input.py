"""Bad input never crashes: each case gets a one-line error naming the problem, exit code 1,
nothing on stdout, and no traceback (issue: reliability and safety)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from labelclean.cli import app
from labelclean.data import read_labels
from labelclean.errors import LabelcleanError

runner = CliRunner()
GOOD_ROWS = "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(8))


def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for i in range(8):
        Image.fromarray(np.full((8, 8), i * 30, np.uint8)).save(images / f"{i}.png")
    return images


def fit_with_csv(text: str | bytes, *extra: str) -> Callable[[Path], list]:
    def setup(tmp_path: Path) -> list:
        images = folder(tmp_path)
        csv = tmp_path / "labels.csv"
        csv.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["fit", images, csv, "--out", tmp_path / "run", "--epochs", "2", "--warmup", "1",
                "--batch-size", "2", "--device", "cpu", *extra]
    return setup


def fit_with_image(name: str, make: Callable[[Path], None], *extra: str) -> Callable[[Path], list]:
    def setup(tmp_path: Path) -> list:
        args = fit_with_csv("path,label\n" + GOOD_ROWS + f"{name},a\n", *extra)(tmp_path)
        make(tmp_path / "images" / name)
        return args
    return setup


def fit_with_options(*options: str) -> Callable[[Path], list]:
    return fit_with_csv("path,label\n" + GOOD_ROWS, *options)


def on_run(command: list[str], damage: Callable[[Path], None] = lambda d: None) -> Callable[[Path], list]:
    """A command on a copy of a finished tiny run, after ``damage`` to its directory."""
    def setup(tmp_path: Path, finished: Path) -> list:
        run = tmp_path / "run"
        run.mkdir()
        for f in finished.iterdir():
            (run / f.name).write_bytes(f.read_bytes())
        damage(run)
        return [c if c != "RUN" else run for c in command]
    setup.needs_run = True  # type: ignore[attr-defined]
    return setup


def set_status(run: Path, status: str) -> None:
    config = json.loads((run / "config.json").read_text())
    config["status"] = status
    (run / "config.json").write_text(json.dumps(config))


CASES = {
    # CSV
    "csv missing": (lambda t: ["fit", folder(t), t / "none.csv"], r"Labels file .*none.csv does not exist"),
    "csv empty": (fit_with_csv(""), r"labels.csv is empty"),
    "csv header only": (fit_with_csv("path,label\n"), r"header but no rows"),
    "no path column": (fit_with_csv("name,label\n0.png,a\n"), r"has no path column .*--path-column"),
    "no label column": (fit_with_csv("path,kind\n0.png,a\n"), r"has no label column .*--label-column"),
    "wrong delimiter": (fit_with_csv("path label\n0.png a\n1.png b\n"), r"has no path column"),
    "named column absent": (fit_with_csv("path,label\n" + GOOD_ROWS, "--label-column", "cls"),
                            r"no column 'cls'"),
    "not utf-8": (fit_with_csv("path,label\n0.png,caf\xe9\n".encode("latin-1")), r"is not UTF-8"),
    "duplicate paths": (fit_with_csv("path,label\n0.png,a\n0.png,b\n1.png,b\n"),
                        r"more than once .*row 3.*--dedupe"),
    "empty label": (fit_with_csv("path,label\n0.png,a\n1.png,\n"), r"row 3 \('1.png'\) has an empty label"),
    "empty path": (fit_with_csv("path,label\n,a\n1.png,b\n"), r"row 2 has an empty path"),
    "one class": (fit_with_csv("path,label\n0.png,a\n1.png,a\n"), r"only one class \('a'\)"),
    "unbalanced quotes": (fit_with_csv('path,label\n"0.png,a\n1.png,b\n'), r"labels.csv"),
    # paths
    "missing image": (fit_with_csv("path,label\n" + GOOD_ROWS + "gone.png,a\n"),
                      r"1 path\(s\) do not exist .*'gone.png'.*--skip-missing"),
    "parent path": (fit_with_csv("path,label\n../x.png,a\n1.png,b\n"), r"row 2: path '../x.png' is refused"),
    "absolute path": (fit_with_csv("path,label\n/etc/hosts,a\n1.png,b\n"), r"absolute paths are not allowed"),
    "symlink out": (fit_with_image("link.png", lambda p: p.symlink_to(p.parent.parent / "labels.csv")),
                    r"'link.png' is refused: it points outside the image folder"),
    # images
    "truncated image": (fit_with_image("cut.png", lambda p: p.write_bytes((p.parent / "0.png").read_bytes()[:40])),
                        r"1 image\(s\) .* cannot be read \('cut.png'.*--skip-bad"),
    "zero-byte image": (fit_with_image("zero.png", lambda p: p.write_bytes(b"")), r"'zero.png'.*--skip-bad"),
    "text as image": (fit_with_image("text.jpg", lambda p: p.write_text("hello")), r"'text.jpg'.*--skip-bad"),
    "folder as image": (fit_with_image("dir.png", lambda p: p.mkdir()), r"do not exist .*'dir.png'"),
    # options
    "epochs < warmup": (fit_with_options("--epochs", "2", "--warmup", "3"), r"'warmup' option must be in \[0, epochs\)"),
    "batch too large": (fit_with_options("--batch-size", "64"), r"fewer than two batches of 64; lower --batch-size"),
    "p-threshold": (fit_with_options("--p-threshold", "1.5"), r"'p_threshold' option must be in \[0, 1\]. Got 1.5"),
    "noise mode": (fit_with_options("--noise-mode", "pairs"), r"'noise_mode' option must be one of sym, asym"),
    "arch": (fit_with_options("--arch", "vgg"), r"'arch' option must be one of"),
    "image size": (fit_with_options("--image-size", "2"), r"'image_size' option must be between 4 and 1024"),
    "lr": (fit_with_options("--lr", "0"), r"'lr' option must be greater than 0"),
    "epochs": (fit_with_options("--epochs", "0"), r"'epochs' option must be at least 1"),
    "device": (fit_with_options("--device", "tpu"), r"'device' option must be one of auto, cpu, cuda"),
    "resume nothing": (fit_with_options("--resume"), r"Nothing to resume"),
    "init weights missing": (fit_with_options("--init-weights", "/nonexistent.pt"), r"Initial weights file .* does not exist"),
    # run directories
    "export missing run": (lambda t: ["export", t / "nothing"], r"Run directory .* does not exist"),
    "export empty dir": (lambda t: (t / "empty").mkdir() or ["export", t / "empty"],
                         r"is not a labelclean run directory \(no config.json\)"),
    "export unfinished": (on_run(["export", "RUN"], lambda r: set_status(r, "training")), r"did not finish.*--resume"),
    "export bad config": (on_run(["export", "RUN"], lambda r: (r / "config.json").write_text("{")),
                          r"config.json is not valid JSON"),
    "export lost samples": (on_run(["export", "RUN"], lambda r: (r / "samples.csv").unlink()), r"lacks samples.csv"),
    "export threshold": (on_run(["export", "RUN", "--threshold", "1.5"]), r"'threshold' option must be in \[0, 1\]"),
    "export sort": (on_run(["export", "RUN", "--sort", "path"]), r"'sort' option must be one of"),
    "export format": (on_run(["export", "RUN", "--format", "xml"]), r"'format' option must be one of"),
    "predict no model": (on_run(["predict", "RUN", "/etc/hosts"], lambda r: (r / "model.pt").unlink()), r"--keep-model"),
    "predict corrupt model": (on_run(["predict", "RUN", "/etc/hosts"], lambda r: (r / "model.pt").write_bytes(b"junk")),
                              r"Cannot load .*model.pt"),
    "predict bad image": (on_run(["predict", "RUN", "/etc/hosts"]), r"1 input image\(s\) cannot be read"),
    "predict top-k": (on_run(["predict", "RUN", "/etc/hosts", "--top-k", "99"]), r"'top_k' option must be in"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_one_line_error(name, tmp_path, tiny_run):
    setup, message = CASES[name]
    args = setup(tmp_path, tiny_run.directory) if getattr(setup, "needs_run", False) else setup(tmp_path)
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, (name, result.output, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.output
    error = result.stderr.strip().splitlines()[-1]  # progress bars may come before it
    assert error.startswith("error: ") and re.search(message, error), (name, result.stderr)
    assert not (tmp_path / "run" / "samples.csv").exists() or getattr(setup, "needs_run", False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_a_gpu(tmp_path):
    result = runner.invoke(app, [str(a) for a in fit_with_options("--device", "cuda")(tmp_path)])
    assert result.exit_code == 1 and "sees no CUDA GPU" in result.stderr


def test_skip_options_leave_out_bad_rows_and_record_them(tmp_path):
    setup = fit_with_image("zero.png", lambda p: p.write_bytes(b""), "--skip-bad", "--skip-missing", "--dedupe")
    args = setup(tmp_path)
    csv = args[2]
    csv.write_text(csv.read_text() + "gone.png,b\n0.png,b\n")
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    assert "zero.png" in skipped and "gone.png" in skipped and "repeated path" in skipped
    assert len((tmp_path / "run" / "samples.csv").read_text().splitlines()) == 1 + 8


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_random_csv_content_never_raises_anything_but_a_user_error(tmp_path, text):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    (tmp_path / "labels.csv").write_text(text, encoding="utf-8")
    try:
        read_labels(images, tmp_path / "labels.csv")
    except LabelcleanError as e:
        assert "\n" not in str(e).strip()
