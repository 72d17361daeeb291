"""Network architectures: a small fast CNN, the paper's PreAct ResNet-18, torchvision ResNets.

Every network takes ``(n, channels, size, size)`` float input and returns ``(n, n_classes)``
logits; pooling is adaptive, so any image size works.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import LabelcleanError

ARCHS = ("auto", "small_cnn", "preact_resnet18", "resnet18", "resnet34", "resnet50")


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


def default_arch(device_type: str, image_size: int) -> str:
    """The paper's PreAct ResNet-18 for small images on a GPU, ResNet-18 for large ones, a small CNN on CPU."""
    if device_type != "cuda":
        return "small_cnn"
    return "preact_resnet18" if image_size <= 64 else "resnet18"


def build_model(arch: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if arch == "small_cnn":
        return small_cnn(in_channels, num_classes, image_size)
    if arch == "preact_resnet18":
        return PreActResNet18(in_channels, num_classes)
    if arch in ("resnet18", "resnet34", "resnet50"):
        return torchvision_resnet(arch, in_channels, num_classes)
    raise LabelcleanError(f"The 'arch' option must be one of {', '.join(ARCHS)}. Got '{arch}'.")


def load_initial_weights(model: nn.Module, weights: Path) -> int:
    """Copy every tensor of a local state dict whose name and shape match; returns how many.

    The classifier layer (other number of classes) and a stem for other channels are
    skipped, so ImageNet weights saved from torchvision can start a 10-class grayscale run.
    """
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:
        raise LabelcleanError(f"Cannot load initial weights {weights}: {str(e).splitlines()[0]}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise LabelcleanError(
            f"No tensor in {weights} matches the network's layer names and shapes; "
            f"check that --arch names the architecture the weights were saved from."
        )
    model.load_state_dict(matching, strict=False)
    return len(matching)
