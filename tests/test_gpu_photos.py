"""benchmarks/gpu_photos.py on the CPU at toy sizes: the patches of the official Clothing1M code,
its epoch accounting, the fixed labeled sets, and labelclean's side of the photo benchmark end to end."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
runner = CliRunner()


@pytest.fixture
def gpu_photos(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()
    import gpu_photos

    yield gpu_photos
    torch.set_num_threads(threads)


def fake_upstream(folder: Path, patches: list) -> Path:
    """Upstream files holding each patch target as often as the patch expects, among other lines."""
    folder.mkdir()
    texts: dict[str, str] = {}
    for name, old, _, times in patches:
        texts[name] = texts.get(name, "import sys\n") + "x = 1\n".join([old] * times) + "\n"
    for name in ("Train_clothing1M.py", "dataloader_clothing1M.py"):
        (folder / name).write_text(texts.get(name, "# loader\n"))
    return folder


def test_every_patch_is_applied_and_a_changed_upstream_is_refused(gpu_photos, tmp_path):
    upstream = fake_upstream(tmp_path / "upstream", gpu_photos.CLOTHING_PATCHES)
    diff = gpu_photos.patch_clothing(upstream, tmp_path / "code")
    patched = (tmp_path / "code" / "Train_clothing1M.py").read_text()
    for _, old, new, times in gpu_photos.CLOTHING_PATCHES:
        added = [line for line in new.splitlines() if line not in old.splitlines()]
        assert new in patched and added and all(f"+{line}" in diff for line in added)
    assert (tmp_path / "code" / "_photo_timing.py").exists() and (tmp_path / "code" / "checkpoint").is_dir()
    text = (upstream / "Train_clothing1M.py").read_text()
    (upstream / "Train_clothing1M.py").write_text(text.replace("unlabeled_train_iter.next()", "it.next()", 1))
    with pytest.raises(SystemExit, match="found 1 times"):
        gpu_photos.patch_clothing(upstream, tmp_path / "code2")
    (upstream / "dataloader_clothing1M.py").unlink()
    with pytest.raises(Exception, match="dataloader_clothing1M.py"):
        gpu_photos.patch_clothing(upstream, tmp_path / "code3")


def test_official_epochs_pair_each_training_with_the_evaluation_before_it(gpu_photos):
    records = [{"epoch": 0, "phase": p, "seconds": s} for p, s in
               [("loader_warmup", 0.5), ("warmup", 10), ("loader_warmup", 0.5), ("warmup", 11), ("val", 100),
                ("loader_eval_train", 1), ("eval_train", 3), ("loader_eval_train", 1), ("eval_train", 4)]]
    records += [{"epoch": 1, "phase": "loader_train", "seconds": 2, "sizes": [40, 24]},
                {"epoch": 1, "phase": "train", "seconds": 20},
                {"epoch": 1, "phase": "loader_train", "seconds": 2, "sizes": [30, 34]},
                {"epoch": 1, "phase": "train", "seconds": 21}, {"epoch": 1, "phase": "val", "seconds": 100}]
    figures = gpu_photos.official_epochs(records)
    assert figures["warmup_epoch_s"] == 22  # validation left out
    assert figures["dividemix_epoch_s"] == 9 + 45 and figures["labeled"] == [40, 30]
    assert "dividemix_epoch_s" not in gpu_photos.official_epochs(records[:9])


def test_the_timing_module_fixes_the_labeled_set_size(gpu_photos, tmp_path, monkeypatch):
    (tmp_path / "_photo_timing.py").write_text(gpu_photos.TIMING_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PHOTO_LABELED", "5,7")
    import _photo_timing

    pred = np.zeros(20, dtype=bool)
    assert _photo_timing.fixed(pred, 0).sum() == 5 and _photo_timing.fixed(pred, 1).sum() == 7
    assert (1 - _photo_timing.fixed(pred, 1)).nonzero()[0].size == 13  # as the upstream loader takes it


def test_labelclean_trains_on_fixed_labeled_sets_of_the_sizes_asked(gpu_photos):
    from speed import synthetic_images, training_data

    cfg = gpu_photos.fit_config("small_cnn", 16, 8, 1, torch.device("cpu"))
    data = training_data(*synthetic_images(48, 3, 16, 4), cfg, torch.device("cpu"))
    fit = gpu_photos.labelclean_fit(data, cfg, [10, 30], peak=1e12)
    assert fit["labeled"] == [10, 30] and fit["dividemix_steps"] == 2 + 4
    flops = fit["flops"]
    assert flops["warmup_per_image"] == pytest.approx(3 * flops["eval_per_image"], rel=0.05)  # forward + 2× backward
    assert fit["epoch_flops"]["dividemix_epoch"] == 2 * 48 * flops["eval_per_image"] + 6 * flops["dividemix_step"]
    assert fit["mfu"] == pytest.approx(fit["epoch_flops"]["dividemix_epoch"] / fit["dividemix_epoch_s"] / 1e12)
    assert fit["gpu_utilisation"] is None  # no GPU here
    assert fit["gmm_s"] > 0  # the two GMMs of the one co-divide, timed on the host
    assert fit["gmm_share_of_dividemix_epoch"] == pytest.approx(2 * fit["gmm_s"] / fit["dividemix_epoch_s"])


def test_photos_have_mixed_sizes_and_the_official_lists_match_them(gpu_photos, tmp_path):
    labels_csv, paths, labels = gpu_photos.write_photos(tmp_path, 30, val=4)
    from PIL import Image

    sizes = {Image.open(tmp_path / p).size for p in paths}
    assert len(sizes) == len(gpu_photos.SIZES) and any(w < h for w, h in sizes) and any(w > h for w, h in sizes)
    gpu_photos.write_clothing_lists(tmp_path, paths, labels, fit=28, val=4)
    keys = (tmp_path / "noisy_label_kv.txt").read_text().splitlines()
    assert len(keys) == 28 and all((tmp_path / k.split()[0][7:]).is_file() for k in keys)  # the upstream cuts 'images/'
    assert [int(k.split()[1]) for k in keys] == list(np.arange(28) % 14)
    assert len(labels_csv.read_text().splitlines()) == 31


@pytest.mark.slow
def test_labelclean_side_end_to_end_writes_the_json(gpu_photos, tmp_path):
    out = tmp_path / "gpu-photos.json"
    result = runner.invoke(gpu_photos.app, ["--photos", "28", "--num-batches", "2", "--batch-size", "4",
                                            "--image-size", "72", "--archs", "resnet18",
                                            "--sections", "photos_224,larger_than_memory", "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert r["machine"]["device"] == "cpu" and {"commit", "dirty", "command", "date", "seeds"} <= r.keys()
    photos, big = r["photos_224"], r["larger_than_memory"]
    fit = photos["labelclean"]["resnet18"]
    assert fit["labeled"] == [4, 4] and fit["dividemix_epoch_s"] > 0 and photos["decode"]["images"] == 28
    assert photos["ratio_epoch"] is None and photos["mfu"] is None  # no official run, no GPU peak
    whole = fit["projected_fit_of_all_photos"]
    assert whole["images"] == 28 and whole["dividemix_epoch_s"] == pytest.approx(fit["dividemix_epoch_s"] * 28 / 8)
    assert big["images_on"].startswith("memory-mapped") and big["projected_1M"]["run_hours"] > 0
    assert len(r["clothing_patches"]) == len(gpu_photos.CLOTHING_PATCHES)


def test_a_part_starts_only_with_the_seconds_it_needs_left(gpu_photos):
    assert gpu_photos.Budget(100).skipped(20) is None
    assert "20 s needed" in gpu_photos.Budget(10).skipped(20)["skipped"]
    assert gpu_photos.Budget(-1).skipped() is not None


def test_cifar_32_times_the_eager_step_then_the_compiled_step_then_the_compiled_networks(gpu_photos, monkeypatch):
    runs = []

    def fit(data, cfg, labeled, peak, compile_mode=None, count_flops=True):
        runs.append((cfg.compile_step, compile_mode, cfg.epochs, count_flops))
        seconds = {False: 2.0, True: 1.0}[cfg.compile_step or compile_mode is not None]
        epochs = [{"phase": "warm-up", "seconds": 1.0},
                  *({"phase": "train", "seconds": s, "training_seconds": s} for s in [30.0, seconds][:cfg.epochs - 1])]
        return {"dividemix_epoch_s": seconds, "epochs": epochs}

    monkeypatch.setattr(gpu_photos, "labelclean_fit", fit)
    options = {"cifar_budget": 60, "cifar_images": 128, "official_cifar": None, "compile_": True, "part_needs": 1,
               "compile_needs": 1}
    out = gpu_photos.cifar_section(options, torch.device("cpu"), None)
    assert runs == [(False, None, 2, True), (True, None, 3, False), (False, "reduce-overhead", 3, False)]
    assert out["labelclean"]["compile_seconds"] is None  # one DivideMix epoch: nothing compiled
    assert out["labelclean_compiled_step"]["compile_seconds"] == 29.0  # first DivideMix epoch − last
    assert out["compiled_step_speedup"] == 2.0 and out["ratio_epoch_like_for_like_compiled_step"] is None
