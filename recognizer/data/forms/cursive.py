"""Cursive strokes: the pen's path between digits written without lifting it.

Writers of amounts in a hurry join neighbouring digits (a run of zeros becomes a chain of
loops) and start a run of digits with a lead-in stroke that rises from the base line. The
training digits are written one by one, with the pen lifted between them, so a reader
learns from them alone that every stroke belongs to some digit. A joining stroke runs from
the right-most ink of one digit's lower part to the left-most ink of the next digit's upper
part, sagging towards the base line; a lead-in rises from the base line, left of a run's
first digit, to that digit's left-most ink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Sub-pixel precision of the drawn strokes (bits, as ``cv2.polylines`` takes them).
_SHIFT = 2


@dataclass(frozen=True)
class Cursive:
    """How often a field is written cursively. ``p``: the share of fields (0: none, and no
    random numbers are drawn for it)."""

    p: float = 0.0
    #: In a cursive field, the share of neighbouring digits joined by a stroke.
    p_join: float = 0.6
    #: The share of cursive fields whose runs of digits start with a lead-in stroke, and
    #: its length, in digit heights to the left of the digit.
    p_lead_in: float = 0.5
    lead_in: tuple[float, float] = (0.2, 0.6)
    #: The joining strokes' width, as a share of the field's pen width.
    width: tuple[float, float] = (0.5, 1.0)
    #: Digits further apart than this (in digit heights, ink to ink) are not joined: a
    #: pen that travels further is lifted.
    max_join: float = 0.5
    #: How far a stroke's middle sags below the straight line, in digit heights.
    sag: tuple[float, float] = (0.0, 0.15)


#: A glyph as placed on the canvas: kind ("d" digit, "m" mark), top, left and its ink.
Placed = tuple[str, int, int, np.ndarray]


def _pen_at(top: int, left: int, ink: np.ndarray, leaving: bool) -> tuple[float, float] | None:
    """Where the pen leaves a digit (``leaving``: the right-most ink of its lower two
    thirds) or enters it (the left-most ink of its upper two thirds)."""
    h = ink.shape[0]
    first = h // 3 if leaving else 0
    ys, xs = np.nonzero(ink[first: h if leaving else max(1, 2 * h // 3)] > 0.5)
    if xs.size == 0:
        return None
    x = xs.max() if leaving else xs.min()
    return left + float(x), top + first + float(ys[xs == x].mean())


def _curve(a: tuple[float, float], b: tuple[float, float], sag: float, floor: float) -> np.ndarray:
    """A quadratic Bezier curve from ``a`` to ``b`` whose control point lies ``sag`` pixels
    below their midpoint, never below ``floor``; fixed-point points for ``cv2.polylines``."""
    control = np.array([(a[0] + b[0]) / 2, min(floor, (a[1] + b[1]) / 2 + sag)])
    t = np.linspace(0.0, 1.0, 16)[:, None]
    pts = (1 - t) ** 2 * np.array(a) + 2 * (1 - t) * t * control + t ** 2 * np.array(b)
    return np.round(pts * (1 << _SHIFT)).astype(np.int32)


def connect(canvas: np.ndarray, placed: Sequence[Placed], cursive: Cursive, rng: np.random.Generator,
            pen: float, height: float, baseline: int) -> None:
    """Draw, into ``canvas`` (float ink in [0, 1]), the cursive strokes of one field: joins
    between neighbouring digits and lead-ins before runs of digits, for a share
    ``cursive.p`` of fields."""
    if cursive.p <= 0 or rng.random() >= cursive.p:
        return
    lead_in = rng.random() < cursive.p_lead_in
    width = max(1, int(round(pen * rng.uniform(*cursive.width))))
    level = float(canvas.max()) or 1.0  # the strokes in the field's own ink
    strokes = np.zeros(canvas.shape, np.uint8)
    previous: Placed | None = None
    for glyph in placed:
        kind, top, left, ink = glyph
        if kind != "d":
            previous = None
            continue
        entry = _pen_at(top, left, ink, leaving=False)
        start, reach = None, cursive.max_join * height
        if previous is not None and rng.random() < cursive.p_join:
            start = _pen_at(*previous[1:], leaving=True)
        elif previous is None and lead_in and entry is not None:
            reach = cursive.lead_in[1] * height + 1
            start = (entry[0] - rng.uniform(*cursive.lead_in) * height, float(baseline))
        if start is not None and entry is not None and start[0] + 1 < entry[0] < start[0] + reach:
            sag = rng.uniform(*cursive.sag) * height
            cv2.polylines(strokes, [_curve(start, entry, sag, float(baseline))], False, 255,
                          width, cv2.LINE_AA, _SHIFT)
        previous = glyph
    np.maximum(canvas, strokes.astype(np.float32) * (level / 255.0), out=canvas)
