"""Writing styles MNIST's writers rarely used: the continental 1, the crossed or hooked 7
and the flat-topped 3.

MNIST comes from American writers. Much of the world writes a 1 with a long flag (an
up-stroke into the top of the stem, at times half as long as the stem, at times rising
from the base line so that the 1 looks like a lambda), crosses its 7s
or starts them with a short down-stroke (a serif) at the bar's left end, and tops its 3s
with a straight bar and a diagonal down to the middle (a 3 like a z on a bowl). A model
that has never seen them reads a flagged 1 as a 7 or a 4, a hooked 7 as a 2 or a 9 and a
flat-topped 3 as a 2. These functions draw the missing strokes onto *training* digits,
so that training sees every style.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Digits this module can restyle.
STYLED = (1, 3, 7)


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


def _strokes(digit: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and columns of the digit's stroke pixels, or None when too few to restyle."""
    ys, xs = np.nonzero(digit >= 128)
    return (ys, xs) if ys.size >= 5 else None


def flag_one(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 1 (light-on-dark uint8 28x28) with a continental flag: a stroke from the top of
    the stem down to the left, 20-55% of the digit's height long and 35-70 degrees below
    the horizontal, or half the time a lead-in stroke from near the base line, 60-95% of
    the height long and 55-75 degrees steep (the 1 shaped like a lambda)."""
    out = digit.copy()
    strokes = _strokes(digit)
    if strokes is None:
        return out
    ys, xs = strokes
    top = ys.min()
    height = ys.max() - top + 1
    tx = float(xs[ys <= top + 1].mean())
    if rng.random() < 0.5:
        length = height * rng.uniform(0.2, 0.55)
        angle = math.radians(rng.uniform(35, 70))  # below the horizontal, to the left
    else:  # steep, or it would be a 7's bar
        length = height * rng.uniform(0.6, 0.95)
        angle = math.radians(rng.uniform(55, 75))
    end = (tx - length * math.cos(angle), top + length * math.sin(angle))
    _line(out, (tx, float(top)), end, _pen(digit) * rng.uniform(0.8, 1.1))
    if rng.random() < 0.15:  # a foot as well
        bottom = ys.max()
        bx = float(xs[ys >= bottom - 1].mean())
        half = height * rng.uniform(0.15, 0.3)
        _line(out, (bx - half, float(bottom)), (bx + half, float(bottom)), _pen(digit))
    return out


def cross_seven(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 7 with a bar across its stem at about mid height, and a third of the time a serif
    as well (:func:`hook_seven`)."""
    out = digit.copy()
    strokes = _strokes(digit)
    if strokes is None:
        return out
    ys, xs = strokes
    top, bottom = ys.min(), ys.max()
    row = int(round(top + (bottom - top) * rng.uniform(0.45, 0.6)))
    on_row = xs[np.abs(ys - row) <= 1]
    if on_row.size == 0:
        return out
    cx = float(np.median(on_row))
    half = (xs.max() - xs.min() + 1) * rng.uniform(0.2, 0.35)
    tilt = rng.uniform(-0.1, 0.1) * half
    _line(out, (cx - half, row + tilt), (cx + half, row - tilt), _pen(digit) * rng.uniform(0.8, 1.1))
    return hook_seven(out, rng) if rng.random() < 1 / 3 else out


def hook_seven(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 7 that starts with a serif: a short stroke down from the left end of its bar,
    15-35% of the digit's height long."""
    out = digit.copy()
    strokes = _strokes(digit)
    if strokes is None:
        return out
    ys, xs = strokes
    top, height = ys.min(), ys.max() - ys.min() + 1
    bar = ys <= top + max(2, height // 6)
    lx = int(xs[bar].min())
    ly = float(ys[bar][xs[bar] == lx].mean())
    length = height * rng.uniform(0.15, 0.35)
    lean = rng.uniform(-0.3, 0.2) * length  # a little to either side of straight down
    _line(out, (float(lx), ly), (lx + lean, ly + length), _pen(digit) * rng.uniform(0.8, 1.1))
    return out


def flat_top_three(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 3 whose upper bowl is replaced by a straight bar and a diagonal from the bar's
    right end down to where the lower bowl begins."""
    strokes = _strokes(digit)
    if strokes is None:
        return digit.copy()
    ys, xs = strokes
    top, height = int(ys.min()), int(ys.max() - ys.min() + 1)
    mid = int(round(top + height * rng.uniform(0.4, 0.5)))
    upper, below = ys < mid, (ys >= mid) & (ys <= mid + 2)
    if not upper.any() or not below.any():
        return digit.copy()
    out = digit.copy()
    out[:mid] = 0
    left, right = float(np.percentile(xs[upper], 10)), float(np.percentile(xs[upper], 95))
    bar = top + rng.uniform(0.0, 0.08) * height
    tilt = rng.uniform(-0.05, 0.05) * height
    joint = (float(xs[below].min()) + rng.uniform(0, 0.15) * (right - left), float(mid))
    pen = _pen(digit) * rng.uniform(0.8, 1.1)
    _line(out, (left, bar + tilt), (right, bar - tilt), pen)
    _line(out, (right, bar - tilt), joint, pen)
    return out


def restyle(digit: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
    """The digit in the other style when one is known for its label, else unchanged."""
    if label == 1:
        return flag_one(digit, rng)
    if label == 3:
        return flat_top_three(digit, rng)
    if label == 7:
        return cross_seven(digit, rng) if rng.random() < 0.6 else hook_seven(digit, rng)
    return digit


def restyled_set(digits: np.ndarray, labels: np.ndarray, share: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Restyled copies of ``share`` of the digits of :data:`STYLED` labels among
    light-on-dark uint8 digits."""
    picks = [i for i in np.flatnonzero(np.isin(labels, STYLED)) if rng.random() < share]
    if not picks:
        return digits[:0], labels[:0]
    return np.stack([restyle(digits[i], int(labels[i]), rng) for i in picks]), labels[picks]
