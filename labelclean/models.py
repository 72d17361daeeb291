"""Network architectures: a small fast CNN, the paper's PreAct ResNet-18, torchvision ResNets,
and the weights a network can start from (torchvision's ImageNet weights, or a local file).

Every network takes ``(n, channels, size, size)`` float input and returns ``(n, n_classes)``
logits; pooling is adaptive, so any image size works. Its last ``nn.Linear`` is the classifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from .config import ARCHS, TORCHVISION_ARCHS
from .errors import LabelcleanError

log = logging.getLogger("labelclean")


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_cnn(in_channels: int, num_classes: int, image_size: int, width: int = 32) -> nn.Sequential:
    """Three conv–BN–ReLU stages (width, 2·width, 4·width) with 2×2 max-pooling while the map is ≥ 4 px.

    Fast on a CPU and enough for small images such as 8×8 digits.
    """
    layers: list[nn.Module] = []
    c, size = in_channels, image_size
    for stage in range(3):
        out = width * 2**stage
        layers += conv_bn_relu(c, out) + conv_bn_relu(out, out)
        if size >= 4:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al., 2016): BN–ReLU before each convolution."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """The network of the DivideMix paper's CIFAR experiments: 3×3 stem, 4 stages of 2 PreAct blocks."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        blocks, c = [], 64
        for c_out, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            blocks += [PreActBlock(c, c_out, stride), PreActBlock(c_out, c_out, 1)]
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def torchvision_resnet(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """A torchvision ResNet with random initialisation (no weight download)."""
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


def build_model(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if arch == "small_cnn":
        return small_cnn(in_channels, num_classes, image_size)
    if arch == "preact_resnet18":
        return PreActResNet18(in_channels, num_classes)
    if arch in TORCHVISION_ARCHS:
        return torchvision_resnet(arch, in_channels, num_classes)
    raise LabelcleanError(f"The 'arch' option must be one of {', '.join(ARCHS)}. Got '{arch}'.")


def classifier_name(model: nn.Module) -> str:
    """Name of the network's classifier: its last ``nn.Linear`` (``fc`` in torchvision's ResNets)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]


def hub_file(arch: str) -> Path:
    """Where torchvision keeps (or would download) the ImageNet weights of ``arch``: the torch hub
    cache (``$TORCH_HOME/hub/checkpoints``), under the file name of the weights' URL."""
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def imagenet_weights(arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights of ``arch`` (its DEFAULT, the best it publishes), through its
    own weights API: read from the torch hub cache, downloaded there first when missing."""
    if arch not in TORCHVISION_ARCHS:
        raise LabelcleanError(f"--pretrained takes torchvision's ImageNet weights, published for --arch "
                              f"{', '.join(TORCHVISION_ARCHS)}; got --arch {arch}. Pick one of them, or drop --pretrained.")
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 (offline, a proxy, a truncated file: urllib, OS and pickle errors)
        raise LabelcleanError(
            f"Cannot get torchvision's ImageNet weights for {arch} ({str(e).splitlines()[0] or type(e).__name__}): "
            f"torchvision expects the file {hub_file(arch)}. Copy it there from {weights.url}, or pass the "
            f"downloaded file with --init-weights FILE instead of --pretrained."
        ) from None


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """A local state dict (also one saved as ``{"state_dict": ...}``), read without running code."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises several types for files it cannot read)
        raise LabelcleanError(f"Cannot load initial weights {weights}: {str(e).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LabelcleanError(f"{weights} holds no state dict (a mapping of layer names to tensors); save one "
                              f"with torch.save(model.state_dict(), FILE).")
    return state


def fit_stem(given: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """Colour weights for a grayscale network: a convolution over R, G and B whose filters are
    summed over the three channels responds to a gray image exactly as the colour one does to
    that image repeated in R, G and B. Other tensors are returned as they are."""
    if given.ndim == 4 and own.ndim == 4 and given.shape[1] == 3 and own.shape[1] == 1:
        return given.sum(dim=1, keepdim=True)
    return given


@dataclass
class Loaded:
    """What :func:`load_weights` copied into a network."""

    count: int  # tensors copied
    total: int  # tensors in the network
    new: list[str]  # the network's tensors left as initialized (its classifier, when the classes differ)
    summed: list[str]  # colour stem weights summed to one channel (see fit_stem)
    with_classifier: bool  # the weights hold a classifier: trained with labels (ImageNet), not self-supervised

    def describe(self, source: str) -> str:
        text = f"Loaded {self.count} of the network's {self.total} tensors from {source} into both networks"
        if self.new:
            text += f"; new: {', '.join(self.new)}"
        if self.summed:
            text += f"; {', '.join(self.summed)} summed over R, G and B for the grayscale images"
        return text + "."


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> Loaded:
    """Copy every tensor of ``state`` whose name matches one of ``model`` and whose shape matches
    (after :func:`fit_stem`). The classifier (other classes) stays new, so torchvision's ImageNet
    weights and ``labelclean pretrain``'s output (which has none) start a 10-class grayscale run."""
    own = model.state_dict()
    fitted = {k: fit_stem(v, own[k]) for k, v in state.items() if k in own}
    matching = {k: v for k, v in fitted.items() if own[k].shape == v.shape}
    if not matching:
        raise LabelcleanError(
            f"No tensor in {source} matches the network's layer names and shapes; "
            f"check that --arch names the architecture the weights were saved from."
        )
    model.load_state_dict(matching, strict=False)
    summed = [k for k in matching if matching[k].shape != state[k].shape]
    head = classifier_name(model)
    return Loaded(len(matching), len(own), [k for k in own if k not in matching], summed,
                  f"{head}.weight" in state)


def blend_start(model: nn.Module, fresh: dict[str, torch.Tensor], loaded: Loaded, share: float) -> None:
    """Keep ``share`` of the direction of each loaded weight (convolutions, linear layers) and take the
    rest from ``fresh``, the network's own random start, at the random start's norm; BatchNorm's
    running statistics, stale for the blended weights, restart from the random start's. Under BatchNorm
    a weight's scale does not change the output, only how fast SGD turns it; so the blended network
    trains at a random start's pace. See ``auto.SELF_SUPERVISED_BLEND``."""
    state = model.state_dict()
    for name in state.keys() - set(loaded.new):
        own, start = state[name], fresh[name]
        if own.ndim >= 2 and own.is_floating_point():
            direction = share * own / own.norm().clamp_min(1e-12) + (1 - share) * start / start.norm()
            state[name] = direction * (start.norm() / direction.norm().clamp_min(1e-12))
        elif name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            state[name] = start
    model.load_state_dict(state)
