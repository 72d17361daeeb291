"""Smoke tests that keep the benchmark scripts from rotting: one seed, two epochs, a few images.

The numbers mean nothing at this size; the tests check that every method runs end to end and
that the JSON results have the shape the README's tables are built from.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from labelclean.training import precision

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


def sources_of(bench, truth_csv=None) -> tuple[set, set]:
    """The source images of a quality benchmark's training rows and of its held-out rows: the writer's
    ``source`` column where it has one, else the pixels of each PNG."""
    import pandas as pd

    train, test = (pd.read_csv(csv)["path"].astype(str) for csv in (bench.train_csv, bench.test_csv))
    if truth_csv is not None:
        source = pd.read_csv(truth_csv).astype(str).set_index("path")["source"]
        return set(source[train]), set(source[test])
    return ({(bench.images_dir / p).read_bytes() for p in paths} for paths in (train, test))


def test_shifted_digits_repeat_no_source_until_every_digit_is_used(benchmarks, tmp_path):
    import pandas as pd
    from fit_time import write_shifted_digits

    few = pd.read_csv(write_shifted_digits(tmp_path / "few", 300, 28, 0.4, "sym", seed=0)[2])
    assert few["source"].is_unique and few["source"].between(0, 1796).all()
    many = pd.read_csv(write_shifted_digits(tmp_path / "many", 1900, 28, 0.4, "sym", seed=0)[2])
    assert many["source"].nunique() == 1797 and many["source"].value_counts().max() == 2  # 103 used twice


def test_no_benchmark_set_shares_a_source_between_train_and_test(benchmarks, tmp_path):
    import quality
    from fit_time import write_shifted_digits

    digits = quality.noisy_digits(0, tmp_path / "d8", mode="sym", rate=0.4, subset=300, test_fraction=0.2)
    train, test = sources_of(digits)
    assert len(train) == 240 and len(test) == 60 and not train & test  # 8x8: distinct pixels, none on both sides
    images_dir, labels_csv, truth_csv = write_shifted_digits(tmp_path / "d28", 1900, 28, 0.4, "sym", seed=0)
    shifted = quality.split(images_dir, labels_csv, truth_csv, tmp_path / "d28", test_fraction=0.2)
    train, test = sources_of(shifted, truth_csv)
    assert len(train) + len(test) == 1797 and not train & test  # a source's shifted twins stay on one side
    assert len(shifted.truth) + len(shifted.test_labels) == 1900


@pytest.fixture(scope="module")
def digits_pixels():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.target, digits.images


@pytest.mark.parametrize("mode", ["idn", "confusion"])
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_noise_that_follows_the_images_flips_the_share_asked_for(benchmarks, digits_pixels, mode, rate):
    import numpy as np
    from noise import MAKERS

    labels, images = digits_pixels
    noisy = MAKERS[mode](labels, images, rate, 10, np.random.default_rng(0))
    assert noisy.dtype.kind == "i" and noisy.shape == labels.shape and set(np.unique(noisy)) <= set(range(10))
    assert abs((noisy != labels).mean() - rate) < 0.03  # 1,797 samples: the binomial spread at 40 % is 0.012
    assert (noisy == MAKERS[mode](labels, images, rate, 10, np.random.default_rng(0))).all()  # one seed, one draw
    assert (noisy != MAKERS[mode](labels, images, rate, 10, np.random.default_rng(1))).any()
    pairs = np.bincount(labels[noisy != labels] * 10 + noisy[noisy != labels], minlength=100).reshape(10, 10)
    assert pairs.max() > 3 * pairs.sum() / 90  # wrong classes follow the images: far from uniform over the 90 pairs


def test_confusion_noise_flips_the_samples_a_classifier_finds_most_confusable(benchmarks, digits_pixels):
    import numpy as np
    from noise import confusion

    labels, images = digits_pixels
    few, more = (confusion(labels, images, rate, 10, np.random.default_rng(0)) for rate in (0.1, 0.3))
    assert ((few != labels) <= (more != labels)).all()  # the most confusable flip first, to the same class
    assert (few[few != labels] == more[few != labels]).all()


@pytest.mark.parametrize("ratio", [10, 100])
def test_long_tailed_classes_shrink_by_the_imbalance_ratio(benchmarks, digits_pixels, ratio):
    import numpy as np
    from noise import long_tailed

    labels, _ = digits_pixels
    rows = long_tailed(labels, ratio, 10, np.random.default_rng(0))
    counts = np.bincount(labels[rows], minlength=10)
    smallest = np.bincount(labels).min()  # 174
    assert counts[0] == smallest and counts[-1] == int(smallest / ratio)  # 17 or 1
    assert (np.diff(counts) <= 0).all() and len(set(rows)) == len(rows)
    assert (rows == long_tailed(labels, ratio, 10, np.random.default_rng(0))).all()


def test_quality_benchmark_runs_a_long_tailed_setting_with_noise_from_the_images(benchmarks, tmp_path):
    import pandas as pd
    import quality

    result = runner.invoke(quality.app, [
        "--setting", "idn:0.4:lt10", "--setting", "confusion:0.4", "--seeds", "1", "--subset", "400", "--set",
        "epochs=2,warmup=1", "--baseline-epochs", "2", "--methods", "plain_ce", "--device", "cpu", "--threads", "1",
        "--results", str(tmp_path), "--work", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    tail = json.loads((tmp_path / "quality-digits-idn40-lt10.json").read_text())
    assert tail["data"]["n_test"] == 80 and tail["data"]["n_train"] < 200  # 320 rows cut to a long tail
    assert abs(tail["runs"][0]["noise_rate"] - 0.4) < 0.1
    confused = json.loads((tmp_path / "quality-digits-confusion40.json").read_text())
    assert confused["data"] == {"n_train": 320, "n_test": 80, "split_seed": 0}
    assert confused["runs"][0]["noise_rate"] == pytest.approx(0.4)
    work = tmp_path / "work" / "digits-idn40-lt10-seed0"
    train, test = (set(pd.read_csv(work / f"{part}.csv")["path"]) for part in ("train", "test"))
    assert not train & test
    bad = runner.invoke(quality.app, ["--setting", "idn:0.4:10"])
    assert bad.exit_code != 0 and "MODE:RATE[:ltRATIO]" in bad.output


def test_a_result_records_the_commit_the_machine_the_command_and_the_seeds(benchmarks):
    import subprocess

    import common

    head = subprocess.run(["git", "-C", str(common.REPOSITORY), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=False)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    stamp = common.record(torch.device("cpu"), seeds=[3, 4])
    assert stamp["commit"] == head.stdout.strip() and isinstance(stamp["dirty"], bool)
    assert stamp["seeds"] == [3, 4] and stamp["command"].startswith("python ") and stamp["date"][:2] == "20"
    assert {"cpu", "cpu_count", "gpu", "torch", "device"} <= set(stamp["machine"])


def test_a_rewritten_result_file_does_not_make_the_code_dirty(benchmarks, tmp_path, monkeypatch):
    import subprocess

    import common

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "quality.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "start")
    monkeypatch.setattr(common, "REPOSITORY", tmp_path)
    monkeypatch.setattr(common, "RESULTS", tmp_path / "benchmarks" / "results")

    (tmp_path / "benchmarks" / "results" / "quality.json").write_text('{"seeds": [0]}\n')  # an earlier run's output
    assert common.commit()[1] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert common.commit()[1] is True


def test_quality_benchmark_can_add_seeds_to_a_run(benchmarks, tmp_path):
    import quality

    def run(*seeds: str) -> dict:
        out = tmp_path / "-".join(seeds)
        result = runner.invoke(quality.app, [
            "--setting", "sym:0.4", *seeds, "--subset", "100", "--set", "epochs=2,warmup=1", "--baseline-epochs", "2",
            "--methods", "plain_ce",
            "--device", "cpu", "--threads", "1", "--results", str(out), "--work", str(out / "work")])
        assert result.exit_code == 0, result.output
        return json.loads((out / "quality-digits-sym40.json").read_text())

    both, added = run("--seeds", "2"), run("--first-seed", "1", "--seeds", "1")
    assert [r["seed"] for r in both["runs"]] == [0, 1] and [r["seed"] for r in added["runs"]] == [1]
    assert added["seeds"] == [1] and both["seeds"] == [0, 1]
    assert {"commit", "dirty", "command", "date"} <= set(added) and "cpu" in added["machine"]
    assert added["runs"][0] == both["runs"][1] | {"seconds": added["runs"][0]["seconds"]}  # seed 1 is the same run


def test_quality_benchmark_adds_seeds_only_to_a_run_of_the_same_commit(benchmarks, tmp_path, monkeypatch):
    import common
    import quality

    def run(commit: str, *seeds: str, dirty: bool = False):
        monkeypatch.setattr(common, "commit", lambda: (commit, dirty))
        return runner.invoke(quality.app, [
            "--setting", "sym:0.4", *seeds, "--subset", "100", "--set", "epochs=2,warmup=1", "--baseline-epochs", "2",
            "--methods", "plain_ce", "--device", "cpu", "--threads", "1", "--results", str(tmp_path)])

    saved = tmp_path / "quality-digits-sym40.json"
    assert run("a" * 40, "--seeds", "1").exit_code == 0
    assert run("a" * 40, "--first-seed", "1", "--seeds", "1").exit_code == 0
    merged = json.loads(saved.read_text())
    assert merged["seeds"] == [0, 1] and [r["seed"] for r in merged["runs"]] == [0, 1]
    assert merged["summary"]["plain_ce"]["auroc"]["n"] == 2 and merged["runs_before"][0]["seeds"] == [0]
    refused = run("b" * 40, "--first-seed", "2", "--seeds", "1")
    assert refused.exit_code != 0 and "measured at aaaaaaaaaaaa, this run at bbbbbbbbbbbb" in refused.output
    assert "Traceback" not in refused.output and json.loads(saved.read_text()) == merged  # left as it was
    assert "aaaaaaaaaaaa (dirty)" in run("a" * 40, "--first-seed", "2", "--seeds", "1", dirty=True).output


@pytest.mark.slow
def test_quality_benchmark_scores_every_method(benchmarks, tmp_path):
    pytest.importorskip("cleanlab")
    import quality

    result = runner.invoke(quality.app, [
        "--setting", "asym:0.4", "--seeds", "1", "--subset", "100", "--set", "epochs=2,warmup=1,batch_size=32", "--baseline-epochs", "2",
        "--variant", "lambda_u=0", "--folds", "2", "--device", "cpu", "--threads", "1", "--results", str(tmp_path),
        "--work", str(tmp_path / "work"),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "quality-digits-asym40.json").read_text())
    assert saved["data"] == {"n_train": 80, "n_test": 20, "split_seed": 0}
    assert list(saved["summary"]) == ["labelclean", "labelclean is_error", "labelclean is_error@hint",
                                      "labelclean[lambda_u=0]", "labelclean[lambda_u=0] is_error",
                                      "labelclean[lambda_u=0] is_error@hint", "plain_ce", "cleanlab"]
    runs = {run["method"]: run for run in saved["runs"]}
    assert list(runs) == list(saved["summary"])  # one seed: one run per method, and the summary is its figures
    for method, figures in saved["summary"].items():
        assert {f: figures[f]["mean"] for f in quality.FIGURES} == {f: runs[method][f] for f in quality.FIGURES}
        assert all(figures[f]["std"] == 0 for f in quality.FIGURES)
    noise = saved["runs"][0]["noise_rate"]
    assert {run["noise_rate"] for run in saved["runs"]} == {noise}  # the same noisy labels for all
    assert [run["given_accuracy"] for run in saved["runs"]] == pytest.approx([1 - noise] * len(saved["runs"]))
    assert {run["seconds"] for run in saved["runs"] if run["method"].startswith("labelclean ")} == {
        runs["labelclean"]["seconds"]}  # the three decisions of one fit share its time
    assert "refined acc." in result.stdout


def test_quality_benchmark_starts_labelclean_from_pretrained_weights(benchmarks, tmp_path):
    import quality

    result = runner.invoke(quality.app, [
        "--setting", "sym:0.4", "--seeds", "1", "--subset", "100", "--methods", "ssl", "--set",
        "epochs=2,warmup=1,batch_size=32", "--pretrain-set", "epochs=1,batch_size=16", "--device", "cpu",
        "--threads", "1", "--results", str(tmp_path),
    ])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "quality-digits-sym40.json").read_text())["runs"][0]
    assert run["method"] == "ssl" and run["auto"]["start"]["kind"] == "self-supervised"
    assert 0 < run["pretrain_seconds"] < run["seconds"]


def test_pretrain_benchmark_probes_the_features(benchmarks, tmp_path):
    import pretrain

    result = runner.invoke(pretrain.app, ["--setting", "epochs=1,batch_size=64", "--threads", "1",
                                          "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "pretrain-digits.json").read_text())["rows"]
    assert [r["setting"] for r in rows] == ["random encoder", "epochs=1,batch_size=64"]
    assert rows[1]["settings"]["epochs"] == 1 and all(0 < r["knn_accuracy"] <= 1 for r in rows)


def test_pretrain_benchmark_probes_your_own_images(benchmarks, tmp_path):
    import pretrain
    from fit_time import write_shifted_digits

    images_dir, _, truth_csv = write_shifted_digits(tmp_path / "d28", 200, 28, 0.0, "sym", seed=0)
    result = runner.invoke(pretrain.app, ["--images", str(images_dir), "--truth", str(truth_csv), "--setting",
                                          "epochs=1,batch_size=64", "--threads", "1", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "pretrain-images.json").read_text())
    assert saved["data"]["image_size"] == 28 and saved["data"]["n_test"] == 40
    assert [r["setting"] for r in saved["rows"]] == ["random encoder", "epochs=1,batch_size=64"]
    assert saved["rows"][1]["settings"]["image_size"] == 28
    half = runner.invoke(pretrain.app, ["--images", str(images_dir), "--results", str(tmp_path)])
    assert half.exit_code != 0 and "both --images and --truth" in half.output


@pytest.mark.slow  # compiles the step: about a minute on the CPU
def test_speed_compile_step_times_the_eager_and_the_compiled_step_side_by_side(benchmarks, tmp_path):
    import speed

    out = tmp_path / "compile.json"
    result = runner.invoke(speed.app, ["compile-step", "--samples", "64", "--image-size", "8", "--batch-size", "16",
                                       "--dividemix-epochs", "2", "--device", "cpu", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    eager, compiled = saved["eager"], saved["compiled"]
    assert saved["settings"]["compile_step"] is False and {"commit", "machine", "command"} <= saved.keys()
    assert [e["phase"] for e in compiled["epochs"]] == ["warm-up", "train", "train"]
    first, last = compiled["epochs"][1], compiled["epochs"][2]
    assert compiled["compile_seconds"] == pytest.approx(first["training_seconds"] - last["training_seconds"])
    assert compiled["compile_seconds"] > 0 and eager["compile_seconds"] is None  # the first epoch compiled
    assert compiled["torch_compile"]["graphs"] >= 3 and compiled["torch_compile"]["cudagraph_skips"] == 0
    assert compiled["train_step_seconds"] == pytest.approx(last["training_seconds"] / last["steps"])
    assert saved["eager_over_compiled_step"] == pytest.approx(eager["train_step_seconds"] / compiled["train_step_seconds"])


@pytest.mark.slow
def test_speed_benchmark_projects_an_epoch(benchmarks, tmp_path):
    import speed

    out = tmp_path / "speed.json"
    result = runner.invoke(speed.app, [
        "parts", "--samples", "256", "--image-size", "16", "--arch", "small_cnn", "--batch-size", "16", "--steps", "2",
        "--eval-batch-size", "64", "--eval-batches", "1", "--device", "cpu", "--threads", "1", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["samples"] == 256 and saved["precision"] == precision(torch.device("cpu"))
    measured, projected, settings = saved["measured"], saved["projected"], saved["settings"]
    assert all(value > 0 for value in measured.values()), measured
    epoch = projected["co_divide_seconds"] + projected["train_seconds"]
    assert projected["epoch_seconds"] == pytest.approx(epoch)
    assert projected["epoch_images_per_second"] == pytest.approx(256 / epoch)
    assert projected["warmup_epoch_seconds"] == pytest.approx(2 * math.ceil(256 / 32) * measured["warmup_step_seconds"])
    assert projected["co_divide_seconds"] == pytest.approx(2 * (256 / measured["eval_images_per_second"]
                                                                + measured["gmm_seconds"]))
    assert projected["train_seconds"] == pytest.approx(
        2 * math.ceil(settings["labeled_fraction"] * 256 / 16) * measured["train_step_seconds"])
    assert (settings["epochs"], settings["warmup"]) == (300, 10)  # the paper's CIFAR-10 schedule
    assert projected["run_seconds"] == pytest.approx(10 * projected["warmup_epoch_seconds"] + 290 * epoch)
    assert 100 < saved["memory"]["cpu_peak_rss_mb"] < 100_000  # MB, not KiB or bytes: torch alone takes ~200
    assert "projected run" in result.stdout


@pytest.mark.slow
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
    assert [r["max_ram_gb"] for r in runs.values()] == list(memory.MODES.values())
    for r in runs.values():
        assert r["exit_code"] == 0 and r["reused_cache"] and r["stopped"]  # stopped after --steps, as by Ctrl-C
        assert 100 < r["peak_rss_mb"] < 100_000  # MB: a process that imported torch holds ~200
        assert r["peak_rss_mb"] >= r["sampled_rss_mb"] - 1  # the kernel's peak covers every 20 ms sample
        assert r["seconds"] > r["fit_seconds"] > 0  # the child's wall time includes its fit
    assert "peak RSS MB" in result.stdout


FAKE_HARNESS = """
import json, sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
assert args["--batch-size"] == "16" and args["--warmup-epochs"] == "1" and args["--dividemix-epochs"] == "1"
print("run_official: noise on stderr", file=sys.stderr)
print(json.dumps({"impl": "official-dividemix", "N": int(args["--n-train"]), "warmup_epoch_s": 8.0,
                  "dividemix_epoch_s": 30.0, "dividemix_train_s": 27.0, "dividemix_labeled_sizes": [40, 20]}))
"""


@pytest.mark.slow  # PreAct ResNet-18, the official code's network
def test_speed_epochs_put_labelclean_beside_the_official_harness(benchmarks, tmp_path):
    import speed

    harness = tmp_path / "run_official.py"
    harness.write_text(FAKE_HARNESS)
    out = tmp_path / "epochs.json"
    result = runner.invoke(speed.app, [
        "epochs", "--samples", "64", "--batch-size", "16", "--official", str(harness),
        "--threads", "1", "--device", "cpu", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    ours = saved["labelclean"]
    assert [e["phase"] for e in ours] == ["warm-up", "train"] and ours[0]["steps"] == 2 * 2  # 64 images, 2B = 32
    assert ours[1]["steps"] == sum(-(-n // 16) for n in ours[1]["labeled"])
    assert saved["official"]["warmup_steps"] == 2 * 2 and saved["official"]["dividemix_steps"] == 3 + 2
    step = saved["side_by_side"]["DivideMix step (B labeled + B unlabeled)"]
    assert step["official"] == 30.0 / 5 and step["ratio"] == step["official"] / step["labelclean"]
    assert 0 < ours[1]["training_seconds"] < ours[1]["seconds"]
    assert "faster" in result.stdout


def test_speed_epochs_compare_only_the_official_network(benchmarks, tmp_path):
    import speed

    result = runner.invoke(speed.app, ["epochs", "--arch", "small_cnn", "--official", str(tmp_path / "x.py")])
    assert result.exit_code != 0 and "PreAct ResNet-18" in result.output


def test_speed_precision_layout_times_every_variant(benchmarks, tmp_path):
    import speed

    out = tmp_path / "precision.json"
    result = runner.invoke(speed.app, ["precision-layout", "--image-size", "8", "--batch", "8", "--repeats", "1",
                                       "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    variants = json.loads(out.read_text())["variants"]
    assert {(v["precision"], v["layout"]) for v in variants} == {
        (p, layout) for p in ("fp32", "bf16 autocast") for layout in ("NCHW", "channels-last")}
    assert all(v["train_step_seconds"] > 0 for v in variants)


def test_speed_threads_times_one_thread_and_every_core_idle_and_loaded(benchmarks, tmp_path):
    import speed

    out = tmp_path / "threads.json"
    result = runner.invoke(speed.app, ["threads", "--image-size", "8", "--batch", "8", "--repeats", "1", "--load", "1",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert list(saved["rounds"]) == ["as it is", "1 CPU-bound process(es) beside"] and "commit" in saved
    for r in saved["rounds"].values():
        assert set(r["step_seconds"]) == {"1", str(saved["cores"])} and all(v > 0 for v in r["step_seconds"].values())
        assert r["all_over_one"] == r["step_seconds"][str(saved["cores"])] / r["step_seconds"]["1"]


@pytest.mark.slow
def test_fit_time_benchmark_scores_a_fit(benchmarks, tmp_path):
    import fit_time

    out = tmp_path / "fit.json"
    result = runner.invoke(fit_time.app, ["--samples", "160", "--set", "epochs=2,warmup=1,batch_size=32",
                                          "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    phases = saved["phases"]
    assert phases["warmup_epochs"] == 1 and phases["dividemix_epochs"] == 1 and phases["dividemix_steps"] >= 2
    assert 0 < phases["warmup_seconds"] + phases["dividemix_seconds"] < phases["fit_seconds"]
    assert 0 <= saved["quality"]["auroc"] <= 1
    with __import__("PIL").Image.open(tmp_path / "work" / "images" / "00000.png") as image:
        assert image.size == (28, 28) and image.mode == "L"


@pytest.mark.slow
def test_gpu_check_logic_runs_on_the_cpu_with_tiny_sizes(benchmarks, tmp_path):
    import gpu_check

    harness = tmp_path / "run_official.py"
    harness.write_text(FAKE_HARNESS.replace('"16"', '"64"'))
    out = tmp_path / "gpu.json"
    result = runner.invoke(gpu_check.app, [
        "--samples", "128", "--warmup", "1", "--dividemix-epochs", "1", "--arch", "small_cnn", "--fit-samples", "160",
        "--fit-epochs", "2", "--fit-warmup", "1", "--official", str(harness), "--device", "cpu", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["end_to_end"]["ok"] and saved["end_to_end"]["export_rows"] == 160
    assert saved["two_processes"] == {"skipped": "0 GPU(s); needs 2"}
    assert saved["side_by_side"]["warm-up epoch"]["ratio"] > 0
