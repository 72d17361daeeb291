"""Self-supervised pretraining: SimCLR's views and loss, its weights taken by fit, resuming."""

from __future__ import annotations

import math

import pytest
import torch
from typer.testing import CliRunner

import labelclean
from labelclean.augment import colour_jitter, gray, random_gray, random_resized_crop, rotate_hue
from labelclean.cli import app
from labelclean.models import build_model, classifier_name
from labelclean.simclr import checkpoint_of, encoder, nt_xent

TINY_PRETRAIN = {"epochs": 2, "batch_size": 32, "arch": "small_cnn", "device": "cpu"}


def test_nt_xent_is_the_cross_entropy_of_finding_the_partner_view():
    z = torch.eye(4)  # four orthogonal directions: each view's partner is itself, all others at cosine 0
    tau = 0.5
    partner, other = math.exp(1 / tau), 1.0
    expected = -math.log(partner / (partner + (2 * 4 - 2) * other))
    assert nt_xent(z, z, tau).item() == pytest.approx(expected, rel=1e-5)
    assert nt_xent(z, z.roll(1, dims=0), tau) > nt_xent(z, z, tau)  # partners pointing elsewhere cost more


def test_resized_crops_differ_per_image_and_flip_only_when_asked():
    torch.manual_seed(0)
    left_bright = torch.zeros(64, 1, 8, 8)
    left_bright[..., :4] = 1.0
    kept = random_resized_crop(left_bright, (0.5, 1.0), flip=False)
    mirrored = random_resized_crop(left_bright, (0.5, 1.0), flip=True)
    assert kept.shape == left_bright.shape and 0 <= kept.min() and kept.max() <= 1
    assert (kept[..., 0].mean((1, 2)) >= kept[..., -1].mean((1, 2))).all()  # no flip: left stays brighter
    share_flipped = (mirrored[..., 0].mean((1, 2)) < mirrored[..., -1].mean((1, 2))).float().mean()
    assert 0.25 < share_flipped < 0.75
    assert len({round(v, 4) for v in kept.mean((1, 2, 3)).tolist()}) > 10  # each image its own crop


def test_colour_jitter_keeps_range_and_channels_and_hue_keeps_luma():
    torch.manual_seed(0)
    rgb, mono = torch.rand(32, 3, 6, 6), torch.rand(32, 1, 6, 6)
    assert torch.equal(colour_jitter(rgb, 0.4, 0.1, p=0.0), rgb)
    jittered = colour_jitter(rgb, 0.4, 0.1, p=1.0)
    assert jittered.shape == rgb.shape and 0 <= jittered.min() and jittered.max() <= 1
    assert not torch.allclose(jittered, rgb)
    assert colour_jitter(mono, 0.4, 0.1, p=1.0).shape == mono.shape
    turns = torch.rand(32)
    assert torch.allclose(gray(rotate_hue(rgb, turns)), gray(rgb), atol=1e-5)
    assert torch.allclose(rotate_hue(rgb, torch.ones(32)), rgb, atol=1e-5)  # a full turn
    grayed = random_gray(rgb, p=1.0)
    assert torch.equal(grayed[:, 0], grayed[:, 1]) and torch.equal(grayed[:, 1], grayed[:, 2])


@pytest.mark.parametrize("arch", ["small_cnn", "preact_resnet18", "resnet18"])
def test_the_encoder_is_the_fit_network_without_its_classifier(arch):
    net, features = encoder(arch, 1, 8)
    fit_net = build_model(arch, 1, 10, 8)
    head = classifier_name(fit_net)
    assert set(net.state_dict()) == {k for k in fit_net.state_dict() if not k.startswith(head + ".")}
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, features)


def test_pretrained_weights_start_a_fit(digits, tmp_path):
    weights = labelclean.pretrain(digits.images_dir, digits.labels_csv, tmp_path / "ssl.pt", **TINY_PRETRAIN)
    saved = torch.load(weights, weights_only=True)
    assert not checkpoint_of(weights).path.exists()  # removed once the weights are saved
    result = CliRunner().invoke(app, [
        "fit", str(digits.images_dir), str(digits.labels_csv), "--output", str(tmp_path / "run"), "--init-weights",
        str(weights), "--epochs", "3", "--warmup", "1", "--batch-size", "32", "--arch", "small_cnn", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    config = labelclean.Run(tmp_path / "run").config
    start = config["auto"]["start"]
    assert start["kind"] == "self-supervised" and start["loaded_tensors"] == len(saved)
    assert config["settings"]["lr"] == 0.02 and len(start["new_tensors"]) == 2  # the classifier's weight and bias
    assert f"Loaded {len(saved)} of the network's {len(saved) + 2} tensors" in " ".join(result.stderr.split())


def test_interrupted_pretraining_resumes_to_the_same_weights(digits, tmp_path):
    whole = torch.load(labelclean.pretrain(digits.images_dir, digits.labels_csv, tmp_path / "whole.pt",
                                           **TINY_PRETRAIN), weights_only=True)

    def stop(report):
        if report.epoch == 1:
            raise KeyboardInterrupt

    out = tmp_path / "parts.pt"
    with pytest.raises(KeyboardInterrupt):
        labelclean.pretrain(digits.images_dir, digits.labels_csv, out, on_epoch=stop, **TINY_PRETRAIN)
    assert checkpoint_of(out).path.exists() and not out.exists()
    resumed = torch.load(labelclean.pretrain(digits.images_dir, digits.labels_csv, out, resume=True), weights_only=True)
    assert resumed.keys() == whole.keys()
    assert all(torch.allclose(resumed[k].float(), whole[k].float()) for k in whole)


def test_pretrain_command_shows_progress_and_the_next_command(digits, tmp_path):
    out = tmp_path / "ssl.pt"
    result = CliRunner().invoke(app, ["pretrain", str(digits.images_dir), str(digits.labels_csv), "--output", str(out),
                                      "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-flip"])
    assert result.exit_code == 0, result.output
    assert "pretrain loss" in result.stderr and f"--init-weights {out}" in " ".join(result.stderr.split())
    again = CliRunner().invoke(app, ["pretrain", str(digits.images_dir), str(digits.labels_csv), "--output", str(out)])
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.stderr

