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

from labelclean import api
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
        return ["fit", images, csv, "--output", tmp_path / "run", "--epochs", "2", "--warmup", "1",
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


def fit_with_folders(change: Callable[[Path], object], *extra: str) -> Callable[[Path], list]:
    """``fit PHOTOS`` on class folders a/ and b/ of four images each, after ``change`` to PHOTOS."""
    def setup(tmp_path: Path) -> list:
        images = folder(tmp_path)
        photos = tmp_path / "photos"
        for i, image in enumerate(sorted(images.iterdir())):
            (photos / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
            (photos / "ab"[i % 2] / image.name).write_bytes(image.read_bytes())
        change(photos)
        return ["fit", photos, "--output", tmp_path / "run", "--epochs", "2", "--warmup", "1", "--batch-size", "2",
                "--device", "cpu", *extra]
    return setup


def apply_as_folders(*extra: str) -> Callable[[Path], list]:
    """``apply`` of a review of images/ + labels.csv (paths relative to images/), written as class folders."""
    def setup(tmp_path: Path) -> list:
        fit_with_options()(tmp_path)
        (tmp_path / "reviewed.csv").write_text("path,accepted_label\n0.png,b\n")
        return ["apply", tmp_path / "reviewed.csv", tmp_path / "labels.csv", "--as-folders", tmp_path / "clean",
                *extra]
    return setup


def emptied(path: Path) -> None:
    for f in path.iterdir():
        f.unlink()


def pretrain_with(fit_setup: Callable[[Path], list], *extra: str) -> Callable[[Path], list]:
    """The same input given to ``labelclean pretrain`` instead of ``fit``: the same one-line errors."""
    def setup(tmp_path: Path) -> list:
        args = fit_setup(tmp_path)
        return ["pretrain", *args[1:args.index("--output")], "--output", tmp_path / "ssl.pt", "--epochs", "1",
                "--batch-size", "2",
                "--device", "cpu", *extra]
    return setup


def write_unfinished_pretraining(tmp_path: Path) -> list:
    args = pretrain_with(fit_with_options())(tmp_path)
    (tmp_path / "ssl.checkpoint.pt").write_bytes(b"junk")
    return args


def on_run(command: list[str], damage: Callable[[Path], None] = lambda d: None) -> Callable[[Path], list]:
    """A command on a copy of a finished tiny run, after ``damage`` to its directory; NOTES in the
    command is a text file that is not an image."""
    def setup(tmp_path: Path, finished: Path) -> list:
        run = tmp_path / "run"
        run.mkdir()
        for f in finished.iterdir():
            (run / f.name).write_bytes(f.read_bytes())
        damage(run)
        (tmp_path / "notes.txt").write_text("not an image\n")
        return [{"RUN": run, "NOTES": tmp_path / "notes.txt", "HERE": tmp_path}.get(c, c) for c in command]
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
    "unbalanced quotes": (fit_with_csv('path,label\n"0.png,a\n1.png,b\n'),
                          r"labels.csv is not a readable CSV: .*EOF inside string"),
    # paths
    "missing image": (fit_with_csv("path,label\n" + GOOD_ROWS + "gone.png,a\n"),
                      r"1 path\(s\) do not exist .*'gone.png'.*--skip-missing"),
    "parent path": (fit_with_csv("path,label\n../x.png,a\n1.png,b\n"), r"row 2: path '../x.png' is refused"),
    "absolute path": (fit_with_csv("path,label\n/0.png,a\n1.png,b\n"), r"absolute paths are not allowed"),
    "symlink out": (fit_with_image("link.png", lambda p: p.symlink_to(p.parent.parent / "labels.csv")),
                    r"'link.png' is refused: it points outside the image folder"),
    # class folders (no CSV)
    "folders: file at top": (fit_with_folders(lambda p: (p / "0.png").write_bytes((p / "a" / "0.png").read_bytes())),
                             r"photos/0.png is a file at the top level of .*photos, which holds class folders"),
    "folders: csv at top": (fit_with_folders(lambda p: (p / "labels.csv").write_text("path,label\n")),
                            r"holds labels.csv but no labels CSV was given; to use it: labelclean fit"),
    "folders: no folders": (fit_with_folders(lambda p: [f.rename(p / f.name) for f in sorted(p.glob("*/*"))]
                                             + [(p / "a").rmdir(), (p / "b").rmdir()]),
                            r"holds images but no class folders .*give a labels CSV"),
    "folders: empty class": (fit_with_folders(lambda p: (p / "c").mkdir()),
                             r"Class folder .*photos/c holds no images .*remove the folder"),
    "folders: only hidden files": (fit_with_folders(lambda p: emptied(p / "b")
                                                    or (p / "b" / ".DS_Store").write_text("")),
                                   r"Class folder .*photos/b holds no images"),
    "folders: nested": (fit_with_folders(lambda p: (p / "a" / "old").mkdir()),
                        r"photos/a/old is a folder inside the class folder 'a'; .* one level deep"),
    "folders: one class": (fit_with_folders(lambda p: [f.rename(p / "a" / f"b{f.name}")
                                                       for f in sorted((p / "b").iterdir())]
                                            and (p / "b").rmdir()), r"photos has only one class \('a'\)"),
    "folders: empty": (fit_with_folders(lambda p: [emptied(p / c) or (p / c).rmdir() for c in "ab"]),
                       r"photos is empty; put one folder per class in it"),
    "folders: bad image": (fit_with_folders(lambda p: (p / "a" / "text.jpg").write_text("hi")),
                           r"1 image\(s\) listed in .*photos cannot be read \('a/text.jpg'.*--skip-bad"),
    "folders: link out": (fit_with_folders(lambda p: (p / "a" / "out.png").symlink_to(p.parent / "images" / "0.png")),
                          r"photos/a/out.png is refused: it points outside the image folder"),
    "folders: column option": (fit_with_folders(lambda p: None, "--label-column", "y"),
                               r"--label-column names a column of a labels CSV, but none was given"),
    "pretrain folders: nested": (pretrain_with(fit_with_folders(lambda p: (p / "b" / "x").mkdir())),
                                 r"photos/b/x is a folder inside the class folder 'b'"),
    # images
    "truncated image": (fit_with_image("cut.png", lambda p: p.write_bytes((p.parent / "0.png").read_bytes()[:40])),
                        r"1 image\(s\) .* cannot be read \('cut.png'.*--skip-bad"),
    "zero-byte image": (fit_with_image("zero.png", lambda p: p.write_bytes(b"")), r"'zero.png'.*--skip-bad"),
    "text as image": (fit_with_image("text.jpg", lambda p: p.write_text("hello")), r"'text.jpg'.*--skip-bad"),
    "folder as image": (fit_with_image("dir.png", lambda p: p.mkdir()), r"do not exist .*'dir.png'"),
    # options
    "epochs < warmup": (fit_with_options("--epochs", "2", "--warmup", "3"), r"--warmup must be in \[0, epochs\)"),
    "batch too large": (fit_with_options("--batch-size", "64"), r"fewer than two batches of 64; lower --batch-size"),
    "threshold": (fit_with_options("--threshold", "1.5"), r"--threshold must be in \[0, 1\]. Got 1.5"),
    "noise mode": (fit_with_options("--noise-mode", "pairs"), r"--noise-mode must be one of auto, sym, asym"),
    "selection": (fit_with_options("--selection", "best"), r"--selection must be one of gmm, quota"),
    "arch": (fit_with_options("--arch", "vgg"), r"--arch must be one of"),
    "image size": (fit_with_options("--image-size", "2"), r"--image-size must be between 4 and 1024"),
    "lr": (fit_with_options("--lr", "0"), r"--lr must be greater than 0"),
    "epochs": (fit_with_options("--epochs", "0"), r"--epochs must be at least 1"),
    "device": (fit_with_options("--device", "tpu"), r"--device must be one of auto, cpu, cuda"),
    "resume nothing": (fit_with_options("--resume"), r"Nothing to resume"),
    "mlnt option without mlnt": (fit_with_options("--meta-sets", "2", "--rounds", "1"),
                                 r"--meta-sets, --rounds do nothing with --method dividemix: only MLNT reads it"),
    "dividemix option with mlnt": (fit_with_options("--method", "mlnt", "--lambda-u", "3"),
                                   r"--lambda-u does nothing with --method mlnt: only DivideMix reads it"),
    "align with mlnt": (fit_with_options("--method", "mlnt", "--align"),
                        r"--align does nothing with --method mlnt: only DivideMix reads it"),
    "compile with mlnt": (fit_with_options("--method", "mlnt", "--compile"),
                          r"--compile does nothing with --method mlnt: only DivideMix reads it"),
    "start blend without start": (fit_with_options("--start-blend", "0.5"),
                                  r"--start-blend blends loaded weights"),
    "init weights missing": (fit_with_options("--init-weights", "/nonexistent.pt"), r"Initial weights file .* does not exist"),
    "init weights no state dict": (fit_with_options("--init-weights", "/etc/hosts"), r"Cannot load initial weights /etc/hosts"),
    "pretrained and init weights": (fit_with_options("--pretrained", "--init-weights", "/etc/hosts"),
                                    r"either --pretrained .* or --init-weights FILE, not both"),
    "pretrained small cnn": (fit_with_options("--pretrained", "--arch", "small_cnn"),
                             r"--pretrained .* --arch resnet18, resnet34, resnet50; got --arch small_cnn"),
    # pretrain: the same input problems as fit, and its own options and files
    "pretrain missing image": (pretrain_with(fit_with_csv("path,label\n" + GOOD_ROWS + "gone.png,a\n")),
                               r"1 path\(s\) do not exist .*'gone.png'.*--skip-missing"),
    "pretrain truncated image": (pretrain_with(fit_with_image("cut.png", lambda p: p.write_bytes(b"x"))),
                                 r"1 image\(s\) .* cannot be read \('cut.png'.*--skip-bad"),
    "pretrain no label column": (pretrain_with(fit_with_csv("path,kind\n0.png,a\n")), r"has no label column"),
    "pretrain batch too large": (pretrain_with(fit_with_options(), "--batch-size", "8"),
                                 r"fewer than two batches of 8; lower --batch-size"),
    "pretrain temperature": (pretrain_with(fit_with_options(), "--temperature", "0"),
                             r"--temperature must be greater than 0"),
    "pretrain image size": (pretrain_with(fit_with_options(), "--image-size", "2"),
                            r"--image-size must be between 4 and 1024"),
    "pretrain resume nothing": (pretrain_with(fit_with_options(), "--resume"), r"Nothing to resume: .*ssl.checkpoint.pt"),
    "pretrain unfinished": (write_unfinished_pretraining, r"unfinished pretraining; add --resume"),
    "pretrain corrupt checkpoint": (lambda t: write_unfinished_pretraining(t) + ["--resume"], r"Cannot load .*checkpoint"),
    # run directories
    "export missing run": (lambda t: ["export", t / "nothing"], r"Run directory .* does not exist"),
    "export empty dir": (lambda t: (t / "empty").mkdir() or ["export", t / "empty"],
                         r"is not a labelclean run directory \(no config.json\)"),
    "export unfinished": (on_run(["export", "RUN"], lambda r: set_status(r, "training")), r"did not finish.*--resume"),
    "export bad config": (on_run(["export", "RUN"], lambda r: (r / "config.json").write_text("{")),
                          r"config.json is not valid JSON"),
    "export lost samples": (on_run(["export", "RUN"], lambda r: (r / "samples.csv").unlink()), r"lacks samples.csv"),
    "export threshold": (on_run(["export", "RUN", "--threshold", "1.5"]), r"--threshold must be in \[0, 1\]"),
    "export sort": (on_run(["export", "RUN", "--sort", "path"]), r"--sort must be one of"),
    "export format": (on_run(["export", "RUN", "--format", "xml"]), r"--format must be one of"),
    "export action alone": (on_run(["export", "RUN", "--action", "drop"]),
                            r"--action does nothing without --as-labels or --as-folders"),
    "export label studio option": (on_run(["export", "RUN", "--document-root", "HERE"]),
                                   r"--document-root does nothing without --format label-studio"),
    "export both filters": (on_run(["export", "RUN", "--only-noisy", "--only-errors"]),
                            r"--only-noisy does nothing with --only-errors"),
    "export folders sorted": (on_run(["export", "RUN", "--as-folders", "HERE/out", "--sort", "clean_prob"]),
                              r"--sort does nothing with --as-labels or --as-folders"),
    "export folders not empty": (on_run(["export", "RUN", "--as-folders", "HERE"]),
                                 r"already exists and is not an empty folder; .*nothing was written"),
    "export folders into a file": (on_run(["export", "RUN", "--as-folders", "NOTES"]),
                                   r"notes.txt already exists and is not an empty folder"),
    "apply nowhere": (on_run(["apply", "NOTES", "NOTES"]), r"-o FILE for a labels CSV, --as-folders DIR"),
    "apply folders, images elsewhere": (apply_as_folders(), r"8 of 8 images do not exist under .*--images-dir"),
    "apply folders, a label with /": (lambda t: apply_as_folders("--images-dir", t / "images")(t)
                                      + (t / "reviewed.csv").write_text("path,accepted_label\n0.png,b/c\n") * [],
                                      r"The review uses 1 label\(s\) that .*labels.csv never uses"),
    "apply images dir without folders": (lambda t: apply_as_folders()(t)[:3] + ["-o", t / "x.csv", "--images-dir", t],
                                         r"--images-dir does nothing without --as-folders and a labels CSV"),
    "predict images dir without csv": (on_run(["predict", "RUN", "NOTES", "--images-dir", "HERE"]),
                                       r"--images-dir does nothing without a CSV among the inputs"),
    "predict no model": (on_run(["predict", "RUN", "NOTES"], lambda r: (r / "model.pt").unlink()), r"--keep-model"),
    "predict corrupt model": (on_run(["predict", "RUN", "NOTES"], lambda r: (r / "model.pt").write_bytes(b"junk")),
                              r"Cannot load .*model.pt"),
    "predict bad image": (on_run(["predict", "RUN", "NOTES"]), r"1 input image\(s\) cannot be read"),
    "predict top-k": (on_run(["predict", "RUN", "NOTES", "--top-k", "99"]), r"--top-k must be in"),
    "predict batch size": (on_run(["predict", "RUN", "NOTES", "--batch-size", "0"]),
                           r"--batch-size must be at least 1. Got 0"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_one_line_error(name, tmp_path, tiny_run):
    setup, message = CASES[name]
    args = setup(tmp_path, tiny_run.directory) if getattr(setup, "needs_run", False) else setup(tmp_path)
    before = files_under(tmp_path)
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, (name, result.output, result.exception)
    assert result.stdout == ""
    assert "Traceback" not in result.output
    error = result.stderr.strip().splitlines()[-1]  # progress bars may come before it
    assert error.startswith("error: ") and re.search(message, error), (name, result.stderr)
    written = {path: data for path, data in files_under(tmp_path).items() if before.get(path) != data}
    # No output and nothing changed; only the decoded-image cache stays, for the next fit (e.g. with --skip-bad).
    assert all(Path(path).name.startswith("decoded-") for path in written), (name, sorted(written))


@pytest.mark.parametrize("inputs, options, message", [
    (fit_with_options(), ["--path-column", "file"], r"\S+labels.csv has no column 'file' .*--path-column option."),
    (fit_with_options(), ["--path-column", "path", "--label-column", "path"],
     r"--path-column and --label-column both name the column 'path'; .*"),
    (fit_with_options(), ["--cache-dir", "NOTES"], r"--cache-dir must be a folder; \S+notes.txt is a file."),
    (fit_with_folders(lambda p: None), ["--path-column", "file"],
     r"--path-column names a column of a labels CSV, but none was given .*"),
], ids=["absent column", "one column for both", "cache dir a file", "column of class folders"])
def test_fit_and_pretrain_refuse_the_same_bad_data_options_alike(tmp_path, inputs, options, message):
    (tmp_path / "notes.txt").write_text("not a folder\n")
    options = [tmp_path / "notes.txt" if option == "NOTES" else option for option in options]
    errors = []
    for command in (inputs, pretrain_with(inputs)):
        result = runner.invoke(app, [str(a) for a in command(tmp_path) + options])
        assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.output, result.output
        errors.append(result.stderr.strip())
    assert errors[0] == errors[1] and re.fullmatch("error: " + message, errors[0]), errors


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


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


def out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)")


def test_gpu_out_of_memory_names_the_options_that_shrink_it(tmp_path, tiny_run, monkeypatch):
    monkeypatch.setattr(api, "fit", out_of_memory)
    monkeypatch.setattr(api.Run, "predict", out_of_memory)
    fit = runner.invoke(app, [str(a) for a in fit_with_options()(tmp_path)])
    predict = runner.invoke(app, ["predict", str(tiny_run.directory), str(tmp_path / "images")])
    for result in (fit, predict):
        assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.output, result.output
    assert fit.stderr.strip() == ("error: the GPU ran out of memory; try a smaller --batch-size or --image-size, "
                                  "or --device cpu.")
    assert predict.stderr.strip() == "error: the GPU ran out of memory; try a smaller --batch-size, or --device cpu."


def test_predict_refuses_colour_images_for_a_grayscale_run_unless_asked(tmp_path, tiny_run):
    new = tmp_path / "new"
    new.mkdir()
    Image.new("L", (8, 8), 128).save(new / "gray.png")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(new / "red.png")
    refused = runner.invoke(app, ["predict", str(tiny_run.directory), str(new)])
    assert refused.exit_code == 1 and refused.stdout == "" and "Traceback" not in refused.output
    error = refused.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: 1 of 2 input image\(s\) are in colour \(e\.g\. '\S*red\.png'\) but the run in "
                        r"\S+ was trained on grayscale \(1 channel\); .* --convert-channels to convert them\.", error), error
    converted = runner.invoke(app, ["predict", str(tiny_run.directory), str(new), "--convert-channels"])
    assert converted.exit_code == 0, converted.output
    assert len(converted.stdout.splitlines()) == 1 + 2


def test_grayscale_images_are_converted_for_a_colour_run(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(16):
        Image.new("RGB", (8, 8), [(200, 30, 30), (30, 30, 200)][i % 2]).save(images / f"{i}.png")
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{i}.png,{'rb'[i % 2]}\n" for i in range(16)))
    run = api.fit(images, tmp_path / "labels.csv", tmp_path / "run", epochs=2, warmup=1, batch_size=4,
                  arch="small_cnn", device="cpu")
    assert run.config["preprocessing"]["channels"] == 3
    Image.new("L", (8, 8), 128).save(tmp_path / "gray.png")
    result = runner.invoke(app, ["predict", str(run.directory), str(tmp_path / "gray.png")])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1 + 1


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


def test_a_diverging_fit_stops_in_one_line_and_writes_no_results(tmp_path):
    args = fit_with_options("--lr", "1e30", "--epochs", "3", "--warmup", "2")(tmp_path)
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1 and result.stdout == "" and "Traceback" not in result.output, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: Training diverged in epoch 1 (loss nan") and "lower --lr" in message, message
    assert not (tmp_path / "run" / "samples.csv").exists() and not (tmp_path / "run" / "checkpoint.pt").exists()
