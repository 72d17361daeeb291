"""Network architectures (labelclean/models.py): every --arch fits, saves and predicts; --init-weights
starts both networks from a saved state dict."""

import pytest
import torch
import torchvision
from typer.testing import CliRunner

import labelclean
from labelclean.cli import app
from labelclean.models import blend_start, build_model, classifier_name, load_weights, small_cnn

runner = CliRunner()
SHORT = {"epochs": 2, "warmup": 1, "batch_size": 8, "image_size": 8, "device": "cpu"}


def torchvision_reference(name: str) -> dict[str, torch.Size]:
    """Tensor shapes of torchvision's own network for a 1-channel, 10-class input."""
    net = getattr(torchvision.models, name)(weights=None, num_classes=10)
    net.conv1 = torch.nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    return {k: v.shape for k, v in net.state_dict().items()}


def batch_norm(prefix: str, channels: int) -> dict[str, torch.Size]:
    shapes = {f"{prefix}.{name}": torch.Size([channels]) for name in ("weight", "bias", "running_mean", "running_var")}
    return shapes | {f"{prefix}.num_batches_tracked": torch.Size([])}


def preact_resnet18_reference() -> dict[str, torch.Size]:
    """The paper's PreAct ResNet-18 for 1 channel, written out: stem, 4 stages of 2 blocks, BN head."""
    shapes = {"stem.weight": torch.Size([64, 1, 3, 3])}
    c_in, block = 64, 0
    for c_out in (64, 128, 256, 512):
        for first in (True, False):
            prefix = f"blocks.{block}."
            for bn, c in (("bn1", c_in if first else c_out), ("bn2", c_out)):
                shapes |= batch_norm(prefix + bn, c)
            shapes[prefix + "conv1.weight"] = torch.Size([c_out, c_in if first else c_out, 3, 3])
            shapes[prefix + "conv2.weight"] = torch.Size([c_out, c_out, 3, 3])
            if first and c_in != c_out:
                shapes[prefix + "shortcut.weight"] = torch.Size([c_out, c_in, 1, 1])
            c_in, block = c_out, block + 1
    classifier = {"head.4.weight": torch.Size([10, 512]), "head.4.bias": torch.Size([10])}
    return shapes | batch_norm("head.0", 512) | classifier


def small_cnn_reference() -> dict[str, torch.Size]:
    """Three stages of two conv-BN-ReLU (32, 64, 128 channels), max-pooled while the map is at least
    4 px (after the first two stages at 8 px), then pooling, flatten and a linear layer."""
    shapes, c_in = {}, 1
    for index, c_out in zip((0, 3, 7, 10, 14, 17), (32, 32, 64, 64, 128, 128)):
        shapes |= {f"{index}.weight": torch.Size([c_out, c_in, 3, 3])} | batch_norm(str(index + 1), c_out)
        c_in = c_out
    return shapes | {"22.weight": torch.Size([10, 128]), "22.bias": torch.Size([10])}


REFERENCES = {
    "small_cnn": small_cnn_reference,
    "preact_resnet18": preact_resnet18_reference,
    "resnet18": lambda: torchvision_reference("resnet18"),
    "resnet34": lambda: torchvision_reference("resnet34"),
    "resnet50": lambda: torchvision_reference("resnet50"),
}


@pytest.mark.parametrize("arch", [
    "small_cnn", *(pytest.param(arch, marks=pytest.mark.slow)
                   for arch in ("preact_resnet18", "resnet18", "resnet34", "resnet50")),
])
def test_every_arch_fits_saves_and_predicts(few_digits, tmp_path, arch):
    # torchvision's ResNets downsample 32x: at 8 px their bf16 activations overflowed to NaN (fp32 did not)
    size = {"image_size": 32} if arch.startswith("resnet") else {}
    run = labelclean.fit(few_digits.images_dir, few_digits.labels_csv, tmp_path / "run", arch=arch, **{**SHORT, **size})
    assert run.config["fit"]["arch"] == run.config["settings"]["arch"] == arch
    for state in torch.load(run.directory / "model.pt", weights_only=True)["nets"]:
        assert {k: v.shape for k, v in state.items()} == REFERENCES[arch]()
    exported = run.export()
    predicted = run.predict([few_digits.labels_csv], images_dir=few_digits.images_dir, device="cpu")
    assert predicted["predicted_label"].tolist() == exported["predicted_label"].tolist()
    assert len(exported) == 32 and exported["clean_prob"].notna().all()


def test_the_small_cnn_pools_only_while_the_map_is_at_least_4_px():
    assert [type(m).__name__ for m in small_cnn(1, 10, 8)].count("MaxPool2d") == 2  # 8 → 4 → 2
    assert [type(m).__name__ for m in small_cnn(1, 10, 32)].count("MaxPool2d") == 3
    for arch in REFERENCES:
        assert build_model(arch, 3, 5, 16)(torch.zeros(2, 3, 16, 16)).shape == (2, 5)


def saved_weights(path, classes: int, wrapped: bool) -> dict[str, torch.Tensor]:
    """A small-CNN state dict with distinctive values (not an initialisation), saved to ``path``."""
    torch.manual_seed(123)
    net = small_cnn(1, classes, 8)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.05)
    state = net.state_dict()
    torch.save({"state_dict": state} if wrapped else state, path)
    return state


@pytest.mark.parametrize("classes, wrapped", [(10, False), (3, True)])
def test_init_weights_start_both_networks_from_the_file(few_digits, tmp_path, classes, wrapped):
    saved = saved_weights(tmp_path / "init.pt", classes, wrapped)
    # lr 1e-12: the networks keep the weights they started from (to 1e-9), so what was loaded shows.
    args = ["fit", few_digits.images_dir, few_digits.labels_csv, "--output", tmp_path / "run", "--init-weights",
            tmp_path / "init.pt", "--lr", "1e-12", "--arch", "small_cnn", "--epochs", "2", "--warmup", "1",
            "--batch-size", "8", "--image-size", "8", "--device", "cpu"]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    loadable = {k for k, v in small_cnn(1, 10, 8).state_dict().items() if saved[k].shape == v.shape}
    said = " ".join(result.stderr.split())  # the CLI logs to stderr, wrapped
    assert f"Loaded {len(loadable)} of the network's " in said and "into both networks" in said
    torch.manual_seed(0)  # what fit builds before loading: two networks from the run's seed
    fresh = [small_cnn(1, 10, 8) for _ in range(2)]
    for net, state in zip(fresh, torch.load(tmp_path / "run" / "model.pt", weights_only=True)["nets"]):
        for name, param in net.named_parameters():
            expected = saved[name] if name in loadable else param.detach()
            torch.testing.assert_close(state[name], expected, atol=1e-6, rtol=0)
    assert len(loadable) == len(saved) - (2 if classes != 10 else 0)  # only the classifier differs


def blended(start: torch.Tensor, own: torch.Tensor, share: float) -> torch.Tensor:
    """``share`` of the loaded weight's direction, the rest of the random start's, at the random start's norm."""
    direction = share * start / start.norm() + (1 - share) * own / own.norm()
    return direction / direction.norm() * own.norm()


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_self_supervised_weights_are_blended_with_each_networks_random_start(few_digits, tmp_path, share):
    head = classifier_name(small_cnn(1, 10, 8))
    saved = {k: v for k, v in saved_weights(tmp_path / "all.pt", 10, False).items() if not k.startswith(head)}
    torch.save(saved, tmp_path / "ssl.pt")  # no classifier: a self-supervised start, as 'labelclean pretrain' saves
    args = ["fit", few_digits.images_dir, few_digits.labels_csv, "--output", tmp_path / "run", "--init-weights",
            tmp_path / "ssl.pt", "--lr", "1e-12", "--arch", "small_cnn", "--epochs", "2", "--warmup", "1",
            "--batch-size", "8", "--image-size", "8", "--device", "cpu", *(["--start-blend", "1"] if share == 1 else [])]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    config = labelclean.Run(tmp_path / "run").config
    assert config["settings"]["start_blend"] == share and config["auto"]["start"]["kind"] == "self-supervised"
    assert config["fit"]["start_blend"] == (None if share < 1 else 1)  # the default, chosen for the kind of start
    torch.manual_seed(0)  # the fit's two random starts
    fresh = [small_cnn(1, 10, 8) for _ in range(2)]
    nets = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["nets"]
    for net, state in zip(fresh, nets):
        for name, own in net.named_parameters():
            own = own.detach()
            kept = own.ndim == 1 or share == 1  # BatchNorm's scale and shift; every loaded tensor at --start-blend 1
            expected = own if name.startswith(head) else saved[name] if kept else blended(saved[name], own, share)
            torch.testing.assert_close(state[name], expected, atol=1e-6, rtol=0)
    assert not torch.allclose(nets[0]["0.weight"], nets[1]["0.weight"]) or share == 1  # two different starts


def test_a_blended_start_restarts_batchnorm_statistics():
    torch.manual_seed(0)
    net = small_cnn(1, 10, 8)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    state = {k: v + 2 if v.is_floating_point() else v + 5 for k, v in fresh.items()}  # trained elsewhere
    blend_start(net, fresh, load_weights(net, state, "a file"), 0.5)
    after = net.state_dict()
    for name in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        assert torch.equal(after[name], fresh[name])  # stale for the blended convolution before it
    assert torch.equal(after["1.weight"], state["1.weight"])  # BatchNorm's scale and shift: as loaded
    torch.testing.assert_close(after["0.weight"].norm(), fresh["0.weight"].norm())
