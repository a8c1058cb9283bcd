"""``tiny_cnn``: a random-init, AlexNet-shaped test backbone (conv1, pool1, conv2, pool2, fc6, fc7, fc8).

It runs in milliseconds on 32×32 inputs so extract → store → SVM → metric can be tested on a CPU in seconds.
Random weights are its only weights (or a local checkpoint); it is not meant to give good features.
"""

from __future__ import annotations

from torch import nn

from .spec import BackboneSpec, Preprocess
from .torchvision_ import BACKBONES


class TinyCNN(nn.Module):
    """AlexNet's layout in miniature: ``features``, ``avgpool``, ``classifier``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(16 * 2 * 2, 32),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(32, 32),
            nn.ReLU(inplace=True),
            nn.Linear(32, num_classes),
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


BACKBONES.register(
    "tiny_cnn",
    BackboneSpec(
        name="tiny_cnn",
        builder=TinyCNN,
        preprocess=Preprocess(mode="center_crop", resize=36, crop=32),
        default_layer="fc6",
        family="alexnet",
        random_ok=True,
    ),
)
