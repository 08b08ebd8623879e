"""A small ResNet for 64 px images: the architecture of the offline reference encoder.

SCIENCE.md §3 measures semantic change with an external encoder ``e(x)``. Offline
the project trains its own, and it must not share architecture or seed with the
attacked model (``alexnet_mini``): an encoder built like the victim would see the
attack's changes through the same inductive biases. Residual blocks with batch
norm, global average pooling and a 128-d penultimate layer differ from AlexNet's
plain convs, max-pools and fully connected stack.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.models.zoo import MINI, register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 projection) shortcut, as in He et al. 2016."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetMini(nn.Module):
    """Stem (56 -> 14 px) and three one-block stages (14, 7, 4 px); ``fc`` reads the pooled ``widths[-1]`` features.

    About 11 M multiply-adds per 56 px image, half of ``alexnet_mini``: the stem
    downsamples 4x like ResNet's, so the encoder trains in a few CPU minutes.
    """

    def __init__(self, num_classes: int = 16, widths: tuple[int, int, int] = (32, 64, 128)) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.layer1 = BasicBlock(widths[0], widths[0])
        self.layer2 = BasicBlock(widths[0], widths[1], stride=2)
        self.layer3 = BasicBlock(widths[1], widths[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model(
    "resnet_mini",
    layers={"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "penultimate": "avgpool"},
    preprocess=MINI,
    num_classes=16,
    head="fc",
    notes="The reference encoder's embedding is the input of 'fc': the pooled layer3 output (128-d).",
)
def _resnet_mini(num_classes: int) -> nn.Module:
    """A three-stage ResNet at 56 px: the offline reference encoder behind CLIP-δ without CLIP weights."""
    return ResNetMini(num_classes=num_classes)
