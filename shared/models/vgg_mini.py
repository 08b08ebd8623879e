"""VGG's shape with batch norm for small images (64 px data, 56 px crops): the saliency-fooling demo model.

Heo et al. (SCIENCE.md §6) fool VGG19 at its last conv block. ``vgg_mini`` keeps what
the interpreters need from VGG: a plain chain ``features -> avgpool -> flatten ->
classifier`` of Conv/BN/ReLU/MaxPool/Linear/Dropout (so LRP_T walks it layer by
layer), and a last conv block that still sees a 14 x 14 map, fine enough for the
Location frame (⌊14/7⌋ = 2 cells wide) and for centre-of-mass moves. A stride-2 first
conv keeps it near ``alexnet_mini``'s cost so the pretrain job trains it in minutes.
"""

from __future__ import annotations

import torch
from torch import nn

# Module indices of the four convs' BN outputs (pre-activation) and ReLU outputs.
VGG_MINI_TARGET = "features.11"  # BN after conv4: the last conv block's pre-activation, 14 x 14 at 56 px
VGG_MINI_LAYERS = {f"conv{i + 1}": f"features.{m}" for i, m in enumerate((2, 5, 9, 12))}


def _block(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class VGGMini(nn.Module):
    """Four 3x3 conv+BN+ReLU blocks (56 -> 28 -> 14 px), two max-pools, a 2x2 average pool, two linears."""

    def __init__(
        self,
        num_classes: int = 16,
        widths: tuple[int, int, int, int] = (32, 48, 64, 96),
        hidden: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(widths) != 4:
            raise ValueError(f"widths={widths!r}: need four conv widths (conv1..conv4)")
        c1, c2, c3, c4 = widths
        self.features = nn.Sequential(
            *_block(3, c1, stride=2),  # 0-2 conv1: 56 -> 28
            *_block(c1, c2),  # 3-5 conv2
            nn.MaxPool2d(kernel_size=2, stride=2),  # 6: 28 -> 14
            *_block(c2, c3),  # 7-9 conv3
            *_block(c3, c4),  # 10-12 conv4 (features.11 = target layer)
            nn.MaxPool2d(kernel_size=2, stride=2),  # 13: 14 -> 7
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(c4 * 4, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
