"""A field image -> the reader's input: the one path shared by training, serving and jobs.

Only generic normalization: the paper is the image's median grey, ink is what differs
from it towards the dark (or, on dark paper, the light), its contrast stretched so that
the strongest strokes reach 1; the whole crop is then scaled, aspect kept, to fit
``HEIGHT x WIDTH`` and laid at the left of a dark canvas. Nothing here knows what kind
of form the crop came from: finding the number in it is the network's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from recognizer.errors import BlankImage
from recognizer.normalize import LIGHT_PAPER, MIN_CONTRAST, blank_message
from recognizer.reader.model import CANVAS_H as HEIGHT
from recognizer.reader.model import CANVAS_W as WIDTH

#: The ink level (percentile of the image's ink) that is stretched to 1: the strongest
#: strokes, not one stray dark pixel.
PEAK_PERCENTILE = 99.5


@dataclass(frozen=True)
class Fitted:
    """Where the crop went on the canvas: canvas pixels per image pixel, and the row of
    the canvas the crop's top row went to (its left column is the canvas's first)."""

    scale: float
    top: int


def _order_stats(grey: np.ndarray) -> tuple[np.ndarray, int]:
    """Cumulative counts of a uint8 image's 256 grey levels, and its pixel count: its
    order statistics without sorting it (a median and a percentile per field cost as
    much as the rest of the input path when taken by partitioning)."""
    counts = np.cumsum(np.bincount(grey.ravel(), minlength=256))
    return counts, int(counts[-1])


def _kth(counts: np.ndarray, k: int) -> float:
    """The ``k``-th smallest grey level (from 0), from cumulative counts."""
    return float(np.searchsorted(counts, k, side="right"))


def ink_of(grey: np.ndarray) -> np.ndarray:
    """uint8 grey -> float32 ink in [0, 1]: 0 on the paper, 1 on the strongest strokes.
    Raises :class:`BlankImage` when nothing differs from the paper enough to be ink."""
    counts, n = _order_stats(grey)
    paper = (_kth(counts, (n - 1) // 2) + _kth(counts, n // 2)) / 2  # the median
    light = paper > LIGHT_PAPER
    g = grey.astype(np.float32)
    ink = paper - g if light else g - paper
    top = float(ink.max())
    if top < MIN_CONTRAST:
        raise BlankImage(blank_message(top))
    # The PEAK_PERCENTILE-th percentile of the ink, interpolated between order statistics
    # as numpy's default does; ink rises as grey falls on light paper.
    at = PEAK_PERCENTILE / 100 * (n - 1)
    lo = int(np.floor(at))
    hi = min(lo + 1, n - 1)
    if light:
        below, above = paper - _kth(counts, n - 1 - lo), paper - _kth(counts, n - 1 - hi)
    else:
        below, above = _kth(counts, lo) - paper, _kth(counts, hi) - paper
    # Half the darkest pixel at least: a small number in a large cell is under 0.5 % of it.
    peak = max(below + (at - lo) * (above - below), 0.5 * top)
    return np.clip(ink / peak, 0.0, 1.0)


def fit(grey: np.ndarray) -> tuple[np.ndarray, Fitted]:
    """A field's uint8 grey image -> (HEIGHT, WIDTH) float32 input and where it went."""
    ink = ink_of(grey)
    h, w = ink.shape
    scale = min(HEIGHT / h, WIDTH / w)
    nh, nw = max(1, min(HEIGHT, round(h * scale))), max(1, min(WIDTH, round(w * scale)))
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = np.zeros((HEIGHT, WIDTH), np.float32)
    top = (HEIGHT - nh) // 2
    out[top:top + nh, :nw] = cv2.resize(ink, (nw, nh), interpolation=shrink)
    return out, Fitted(scale, top)
