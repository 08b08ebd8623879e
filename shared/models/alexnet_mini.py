"""AlexNet's shape for small images (64 px data, 56 px crops), fast enough to train on a laptop CPU.

The module indexing is the same as torchvision's AlexNet, so ``features.0/3/6/8/10``
are the five convolutions and ``features.1/4/7/9/11`` their (in-place) ReLUs: layer
aliases, hooks and attack code written for AlexNet work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class AlexNetMini(nn.Module):
    """Five convs, three max-pools, a 2x2 adaptive pool and AlexNet's three-layer classifier, shrunk."""

    def __init__(
        self,
        num_classes: int = 16,
        widths: tuple[int, int, int, int, int] = (48, 96, 128, 128, 64),
        pool: int = 2,
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(widths) != 5:
            raise ValueError(f"widths={widths!r}: need five conv widths (conv1..conv5)")
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=5, stride=2, padding=2),  # 0 conv1: 56 -> 28
            nn.ReLU(inplace=True),  # 1
            nn.MaxPool2d(kernel_size=3, stride=2),  # 2: 28 -> 13
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),  # 3 conv2
            nn.ReLU(inplace=True),  # 4
            nn.MaxPool2d(kernel_size=3, stride=2),  # 5: 13 -> 6
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),  # 6 conv3
            nn.ReLU(inplace=True),  # 7
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),  # 8 conv4
            nn.ReLU(inplace=True),  # 9
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),  # 10 conv5
            nn.ReLU(inplace=True),  # 11
            nn.MaxPool2d(kernel_size=3, stride=2),  # 12: 6 -> 2
        )
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * pool * pool, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
