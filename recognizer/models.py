"""The model registry: named digit classifiers taking (N, 1, 28, 28) inputs in [0, 1].

Outputs are logits for the digits 0-9 and, in models trained for reading fields, an
eleventh class, ``settings.NOT_A_DIGIT``: a piece of a field that is not one whole digit (a
fragment, two touching digits read as one, a digit with part of its neighbour).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from recognizer.errors import ConfigError
from recognizer.settings import DIGITS, IMAGE_SIZE

#: Pixels of one input image, flattened.
_PIXELS = IMAGE_SIZE * IMAGE_SIZE
#: Side of the seed CNN's feature maps after two 3x3 convolutions and a 2x2 pool.
_SEED_MAP = (IMAGE_SIZE - 4) // 2

# MNIST pixel statistics; standardising inside the model keeps every caller on [0, 1].
_MEAN, _STD = 0.1307, 0.3081


class Standardize(nn.Module):
    """Scale [0, 1] inputs to MNIST's mean and standard deviation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - _MEAN) / _STD


def perceptron(classes: int = DIGITS) -> nn.Module:
    """One dense layer: the seeds' linear baseline."""
    return nn.Sequential(Standardize(), nn.Flatten(), nn.Linear(_PIXELS, classes))


def mlp(classes: int = DIGITS) -> nn.Module:
    """Two hidden layers of 512 with dropout."""
    return nn.Sequential(
        Standardize(), nn.Flatten(),
        nn.Linear(_PIXELS, 512), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(512, classes),
    )


def seed_cnn(classes: int = DIGITS) -> nn.Module:
    """conv 32 -> conv 64 -> max-pool -> dense 256, with dropout (the seeds' CNN)."""
    return nn.Sequential(
        Standardize(),
        nn.Conv2d(1, 32, 3), nn.ReLU(),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(64 * _SEED_MAP * _SEED_MAP, 256), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(256, classes),
    )


def _conv_bn(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _compact_cnn(widths: tuple[int, int, int, int, int], classes: int) -> nn.Module:
    """Batch-normalised 3x3 convolutions of the given widths, downsampled early so the
    wider layers run on 14x14 and 7x7 maps, and global average pooling in place of a
    large dense layer."""
    w1, w2, w3, w4, w5 = widths
    return nn.Sequential(
        Standardize(),
        *_conv_bn(1, w1),               # 28x28
        nn.MaxPool2d(2),                # 14x14
        *_conv_bn(w1, w2),
        *_conv_bn(w2, w3),
        nn.MaxPool2d(2),                # 7x7
        *_conv_bn(w3, w4),
        *_conv_bn(w4, w5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(w5, classes),
    )


def best(classes: int = DIGITS) -> nn.Module:
    """The compact CNN, built for accuracy per FLOP: about 5.5 M multiply-adds and 70 k
    weights, against the seed CNN's 13 M and 2.4 M."""
    return _compact_cnn((16, 32, 32, 64, 64), classes)


def wide(classes: int = DIGITS) -> nn.Module:
    """:func:`best` at twice its width: about 22 M multiply-adds and 280 k weights. The
    capacity goes to writing styles MNIST lacks; what it buys and costs on real forms
    is measured in docs/forms.md."""
    return _compact_cnn((32, 64, 64, 128, 128), classes)


MODELS: dict[str, Callable[[int], nn.Module]] = {
    "perceptron": perceptron,
    "mlp": mlp,
    "seed-cnn": seed_cnn,
    "best": best,
    "wide": wide,
}


def build(name: str, classes: int = DIGITS) -> nn.Module:
    """Instantiate a registered model by name, with ``classes`` outputs (10 digits, or
    11 with ``settings.NOT_A_DIGIT``)."""
    if classes not in (DIGITS, DIGITS + 1):
        raise ConfigError(f"a digit model has 10 or 11 classes, not {classes}")
    try:
        factory = MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)}"
        ) from None
    # channels-last convolutions run markedly faster on CPUs (measured 1.4x here).
    return factory(classes).to(memory_format=torch.channels_last)


def splitter_net(channels: int = 32) -> nn.Module:
    """The splitter of touching digits (:mod:`recognizer.splitter`): a fully convolutional
    network from a mark's ink (N, 1, 32, W) to a logit per pixel, at half resolution,
    that the pixel belongs to the mark's leftmost digit. Dilated convolutions see about
    66 input pixels across, two digits' width, without pooling away the detail of
    where strokes meet; about 47 k weights."""
    layers: list[nn.Module] = [nn.Conv2d(1, channels, 3, stride=2, padding=1),
                               nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    for dilation in (1, 2, 4, 8, 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation),
                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(channels, 1, 1))
    return nn.Sequential(*layers)
