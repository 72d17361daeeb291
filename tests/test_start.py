"""Starting from learned weights: torchvision's ImageNet weights (offline: from the torch hub
cache, or a one-line error), a torchvision-format file, the grayscale stem, the rules for the start.
Nothing is downloaded: the hub cache is a temp folder and the download is made to fail."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from typer.testing import CliRunner

from labelclean.augment import imagenet_stats
from labelclean.auto import crop_scale, image_side, start_blend, start_kind, start_lr
from labelclean.cli import app
from labelclean.models import build_model, fit_stem, hub_file, load_weights

runner = CliRunner()
RESNET18_TENSORS = len(torchvision.models.resnet18().state_dict())  # 122, 2 of them the classifier's


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and a download that fails as it does without a network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch"


def fit_args(digits, out, *extra):
    return ["fit", str(digits.images_dir), str(digits.labels_csv), "--output", str(out), "--epochs", "2",
            "--warmup", "1", "--batch-size", "32", "--image-size", "16", "--device", "cpu", *extra]


def test_pretrained_offline_without_the_file_names_it_and_init_weights(digits, tmp_path, offline_hub):
    expected = offline_hub / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert hub_file("resnet18") == expected
    result = runner.invoke(app, fit_args(digits, tmp_path / "run", "--arch", "resnet18", "--pretrained"))
    assert result.exit_code == 1 and "Traceback" not in result.output  # torch.hub says 'Downloading: ...' first
    error = " ".join(result.stderr.strip().splitlines()[-1].split())
    assert error.startswith("error: Cannot get torchvision's ImageNet weights for resnet18")
    assert str(expected) in error and "--init-weights FILE" in error
    assert not (tmp_path / "run" / "samples.csv").exists()


def write_random_resnet18(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), path)  # torchvision's format, 1000 ImageNet classes
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_pretrained_reads_the_hub_cache_offline_and_fine_tunes(digits, tmp_path, offline_hub):
    given = write_random_resnet18(hub_file("resnet18"))
    result = runner.invoke(app, fit_args(digits, tmp_path / "run", "--pretrained"))  # --arch auto: resnet18
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    start = config["auto"]["start"]
    assert config["settings"]["arch"] == "resnet18" and config["fit"]["arch"] == "auto" and config["fit"]["pretrained"]
    assert (config["preprocessing"]["mean"], config["preprocessing"]["std"]) == imagenet_stats(1)  # as the weights expect
    assert start["kind"] == "supervised" and config["settings"]["lr"] == 0.002 and config["fit"]["lr"] is None
    assert start["loaded_tensors"] == RESNET18_TENSORS - 2 and start["new_tensors"] == ["fc.weight", "fc.bias"]
    log = " ".join(result.stderr.split())
    assert f"Loaded {RESNET18_TENSORS - 2} of the network's {RESNET18_TENSORS} tensors" in log
    assert "conv1.weight summed over R, G and B" in log
    model = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["nets"][0]
    assert model["layer4.1.bn2.running_var"].shape == given["layer4.1.bn2.running_var"].shape


@pytest.mark.slow
def test_init_weights_loads_every_backbone_tensor_of_a_torchvision_file(digits, tmp_path, offline_hub):
    weights = tmp_path / "resnet18.pth"
    write_random_resnet18(weights)
    result = runner.invoke(app, fit_args(digits, tmp_path / "run", "--arch", "resnet18", "--init-weights", str(weights),
                                         "--lr", "0.01"))
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["auto"]["start"]["loaded_tensors"] == RESNET18_TENSORS - 2
    assert config["fit"]["lr"] == config["settings"]["lr"] == 0.01  # the user's lr wins


def test_the_summed_stem_sees_a_gray_image_as_the_colour_one_sees_it_in_rgb():
    colour = torch.randn(64, 3, 7, 7)
    summed = fit_stem(colour, torch.empty(64, 1, 7, 7))
    image = torch.rand(2, 1, 16, 16)
    assert torch.allclose(F.conv2d(image, summed), F.conv2d(image.expand(-1, 3, -1, -1), colour), atol=1e-5)
    assert fit_stem(colour, torch.empty(64, 3, 7, 7)) is colour


def test_load_weights_copies_matching_tensors_and_reports_the_rest():
    torch.manual_seed(0)
    net = build_model("resnet18", 1, 10, 16)
    state = torchvision.models.resnet18().state_dict()
    loaded = load_weights(net, state, "a file")
    assert loaded.count == RESNET18_TENSORS - 2 and loaded.with_classifier
    assert loaded.summed == ["conv1.weight"] and loaded.new == ["fc.weight", "fc.bias"]
    assert torch.equal(net.state_dict()["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(net.state_dict()["layer3.0.conv2.weight"], state["layer3.0.conv2.weight"])
    without_head = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert not load_weights(build_model("resnet18", 3, 10, 16), without_head, "a file").with_classifier


def test_rules_for_the_start():
    assert [start_kind(False, False), start_kind(True, False), start_kind(True, True)] == \
        ["random", "self-supervised", "supervised"]
    assert start_lr("random") == start_lr("self-supervised") == 0.02  # C2D trains at DivideMix's CIFAR lr
    assert start_lr("supervised") == 0.002  # DivideMix's Clothing1M fine-tuning
    assert start_blend("self-supervised") == 0.5 and start_blend("supervised") == start_blend("random") == 1
    assert image_side(500, cuda=False, pretrained=False) == 32
    assert image_side(500, cuda=False, pretrained=True) == 112
    assert image_side(500, cuda=True, pretrained=True) == 224
    assert image_side(100, cuda=False, pretrained=True) == 100  # never enlarged
    assert image_side(500, cuda=True, pretrained=False) == 224


def test_pretraining_crops_keep_more_of_small_images():
    assert crop_scale(8) == 0.5 and crop_scale(15) == 0.5  # measured on 8 px digits
    assert crop_scale(16) == crop_scale(224) == 0.2  # SimCLR's CIFAR recipe
