"""Writing styles MNIST's writers rarely used: the continental 1 and the crossed 7.

MNIST comes from American writers. Much of the world writes a 1 with a long flag (an
up-stroke into the top of the stem, at times as long as the stem) and crosses its 7s.
A model that has never seen them reads a flagged 1 as a 7 or a 4. These functions draw
the missing strokes onto *training* digits, so that training sees both styles.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Digits this module can restyle.
STYLED = (1, 7)


def _pen(digit: np.ndarray) -> float:
    """Stroke width of a light-on-dark uint8 digit, in pixels."""
    strokes = (digit >= 128).astype(np.uint8)
    if not strokes.any():
        return 2.0
    dt = cv2.distanceTransform(strokes, cv2.DIST_L2, 3)
    return float(max(1.5, 2 * np.percentile(dt[strokes > 0], 75)))


def _line(canvas: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float) -> None:
    """Draw an anti-aliased stroke of full intensity, at 4x precision."""
    shift = 2
    a = (int(round(p0[0] * 4)), int(round(p0[1] * 4)))
    b = (int(round(p1[0] * 4)), int(round(p1[1] * 4)))
    layer = np.zeros_like(canvas)
    cv2.line(layer, a, b, 255, max(1, int(round(width))), cv2.LINE_AA, shift)
    np.maximum(canvas, layer, out=canvas)


def flag_one(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 1 (light-on-dark uint8 28x28) with a continental flag: a stroke from the top of
    the stem down to the left, 20-55% of the digit's height long."""
    out = digit.copy()
    ys, xs = np.nonzero(digit >= 128)
    if ys.size < 5:
        return out
    top = ys.min()
    height = ys.max() - top + 1
    tx = float(xs[ys <= top + 1].mean())
    length = height * rng.uniform(0.2, 0.55)
    angle = math.radians(rng.uniform(35, 70))  # below the horizontal, to the left
    end = (tx - length * math.cos(angle), top + length * math.sin(angle))
    _line(out, (tx, float(top)), end, _pen(digit) * rng.uniform(0.8, 1.1))
    if rng.random() < 0.15:  # a foot as well
        bottom = ys.max()
        bx = float(xs[ys >= bottom - 1].mean())
        half = height * rng.uniform(0.15, 0.3)
        _line(out, (bx - half, float(bottom)), (bx + half, float(bottom)), _pen(digit))
    return out


def cross_seven(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 7 with a bar across its stem at about mid height."""
    out = digit.copy()
    ys, xs = np.nonzero(digit >= 128)
    if ys.size < 5:
        return out
    top, bottom = ys.min(), ys.max()
    row = int(round(top + (bottom - top) * rng.uniform(0.45, 0.6)))
    on_row = xs[np.abs(ys - row) <= 1]
    if on_row.size == 0:
        return out
    cx = float(np.median(on_row))
    half = (xs.max() - xs.min() + 1) * rng.uniform(0.2, 0.35)
    tilt = rng.uniform(-0.1, 0.1) * half
    _line(out, (cx - half, row + tilt), (cx + half, row - tilt), _pen(digit) * rng.uniform(0.8, 1.1))
    return out


def restyle(digit: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
    """The digit in the other style when one is known for its label, else unchanged."""
    if label == 1:
        return flag_one(digit, rng)
    if label == 7:
        return cross_seven(digit, rng)
    return digit


def restyled_set(digits: np.ndarray, labels: np.ndarray, share: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Restyled copies of ``share`` of the 1s and 7s among light-on-dark uint8 digits."""
    picks = [i for i in np.flatnonzero(np.isin(labels, STYLED)) if rng.random() < share]
    if not picks:
        return digits[:0], labels[:0]
    return np.stack([restyle(digits[i], int(labels[i]), rng) for i in picks]), labels[picks]
