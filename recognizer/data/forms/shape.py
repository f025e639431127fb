"""Other writers' proportions and wobble: a training digit's shape changed before it is
written into a field.

The reader's fields are written with a few thousand training digits, each of them many
hundred times over a run. Writers differ from those digits in more than size and slant:
some write narrow digits and some wide ones, they tilt single digits, and no two of their
strokes bend alike. A random aspect, rotation and smooth elastic distortion writes each
digit in a shape that no other field repeats. The digit model's training augmentation
(:mod:`recognizer.training.augment`) takes its ranges from :class:`DigitShape`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

#: Paper added round a 28x28 digit before it is reshaped, so that no stroke is cut off.
_PAD = 6


@dataclass(frozen=True)
class DigitShape:
    """How far a digit's shape may change. ``p``: the share of fields whose digits change
    (0: digits keep their shapes, and no random numbers are drawn for them)."""

    p: float = 0.0
    #: Width over height, as a factor: one per field written by one hand, varying by
    #: ``aspect_spread`` (log scale) per digit; one per digit otherwise.
    aspect: tuple[float, float] = (0.8, 1.2)
    aspect_spread: float = 0.05
    rotate_deg: float = 10.0
    #: Elastic distortion on this share of the digits: a smooth displacement field from a
    #: ``elastic_grid`` x ``elastic_grid`` grid of random moves of up to ``elastic_px``
    #: pixels of the 28x28 digit.
    p_elastic: float = 0.5
    elastic_px: float = 2.0
    elastic_grid: int = 4


def field_aspect(shape: DigitShape, rng: np.random.Generator) -> float:
    """A writer's aspect, drawn once per field."""
    lo, hi = shape.aspect
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def reshape(digit: np.ndarray, aspect: float, shape: DigitShape, rng: np.random.Generator) -> np.ndarray:
    """``digit`` (light-on-dark uint8) widened by ``aspect``, turned by a random angle and,
    for a share of the digits, elastically distorted; uint8, with paper round it."""
    img = cv2.copyMakeBorder(digit, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=0)
    h, w = img.shape
    angle = math.radians(rng.uniform(-shape.rotate_deg, shape.rotate_deg))
    # Destination -> source: undo the rotation, then the widening, about the centre.
    cos, sin = math.cos(angle), math.sin(angle)
    m = np.array([[cos / aspect, sin / aspect], [-sin, cos]], np.float32)
    centre = np.array([(w - 1) / 2, (h - 1) / 2], np.float32)
    inverse = np.hstack([m, (centre - m @ centre)[:, None]])
    if rng.random() >= shape.p_elastic:
        return cv2.warpAffine(img, inverse, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    g = shape.elastic_grid
    moves = rng.uniform(-shape.elastic_px, shape.elastic_px, (2, g, g)).astype(np.float32)
    map_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    map_y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    map_x += cv2.resize(moves[0], (w, h), interpolation=cv2.INTER_CUBIC)
    map_y += cv2.resize(moves[1], (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
