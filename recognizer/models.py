"""The model registry: named digit classifiers taking (N, 1, 28, 28) inputs in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from recognizer.errors import ConfigError

# MNIST pixel statistics; standardising inside the model keeps every caller on [0, 1].
_MEAN, _STD = 0.1307, 0.3081


class Standardize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - _MEAN) / _STD


def perceptron() -> nn.Module:
    """One dense layer: the seeds' linear baseline."""
    return nn.Sequential(Standardize(), nn.Flatten(), nn.Linear(28 * 28, 10))


def mlp() -> nn.Module:
    """Two hidden layers of 512 with dropout."""
    return nn.Sequential(
        Standardize(), nn.Flatten(),
        nn.Linear(28 * 28, 512), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(512, 10),
    )


def seed_cnn() -> nn.Module:
    """conv 32 -> conv 64 -> max-pool -> dense 256, with dropout (the seeds' CNN)."""
    return nn.Sequential(
        Standardize(),
        nn.Conv2d(1, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(64 * 12 * 12, 256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, 10),
    )


def _conv_bn(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def best() -> nn.Module:
    """The default CNN, built for accuracy per FLOP: about 5.5 M multiply-adds and 70 k
    weights, against the seed CNN's 13 M and 2.4 M.

    Batch-normalised 3x3 convolutions, downsampled early so the wider layers run on
    14x14 and 7x7 maps, and global average pooling in place of a large dense layer.
    """
    return nn.Sequential(
        Standardize(),
        *_conv_bn(1, 16),               # 28x28
        nn.MaxPool2d(2),                # 14x14
        *_conv_bn(16, 32),
        *_conv_bn(32, 32),
        nn.MaxPool2d(2),                # 7x7
        *_conv_bn(32, 64),
        *_conv_bn(64, 64),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 10),
    )


MODELS: dict[str, Callable[[], nn.Module]] = {
    "perceptron": perceptron,
    "mlp": mlp,
    "seed-cnn": seed_cnn,
    "best": best,
}


def build(name: str) -> nn.Module:
    """Instantiate a registered model by name."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)}"
        ) from None
    # channels-last convolutions run markedly faster on CPUs (measured 1.4x here).
    return factory().to(memory_format=torch.channels_last)
