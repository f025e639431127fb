"""Digits drawn by a pen model: shapes that the training digits do not hold.

The training digits come from one collection of writers, and a reader that learns from
them alone knows their habits only: mostly plain ones, sevens without a bar, fours closed
at the top. Other writers differ in whole shapes rather than in proportion or wobble
(:mod:`.shape`): a one with a long up-stroke, a seven with a bar, a four open at the top,
a two with a loop, a nine with a curved tail. Here each digit has a few such shapes
(allographs), each a skeleton of pen strokes through control points in a unit box. A
writer picks one shape per digit and keeps it for the whole field, moves the control
points by their own amount, and writes with one pen width; each digit then wobbles a
little about that. The result is a 28x28 light-on-dark digit, like a training digit, so
that everything after it (reshaping, size, slant, pen, cursive joins) applies unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recognizer.data.forms.pen import stroke as pen_stroke

#: Each digit's shapes, as a pen writes them. Points are "x y" in hundredths of the
#: digit's height (y downwards), joined by a smooth curve; "|" is a corner (the next
#: piece starts at the last point) and ";" lifts the pen for a new stroke.
SHAPES: dict[int, tuple[str, ...]] = {
    0: (
        "45 2, 15 18, 5 55, 20 92, 40 100, 60 85, 68 45, 56 10, 40 2, 30 8",
        "38 0, 10 25, 8 70, 35 100, 62 75, 60 20, 38 0",
    ),
    1: (
        "35 0, 34 50, 32 100",
        "12 25, 38 0 | 37 50, 36 100",
        "12 22, 38 0 | 37 50, 36 100; 12 100, 62 100",
        "2 42, 22 20, 42 0 | 40 50, 38 100",
    ),
    2: (
        "8 22, 30 2, 55 5, 65 28, 50 55, 5 100 | 40 98, 72 98",
        "8 20, 32 0, 60 10, 60 35, 20 80, 12 97, 26 100, 30 90, 20 88, 40 100, 72 95",
        "4 8, 35 0, 62 15, 55 40, 5 100 | 35 92, 70 100",
    ),
    3: (
        "8 12, 35 0, 60 12, 58 32, 30 47, 60 60, 65 82, 40 100, 5 88",
        "8 2, 62 2 | 30 42 | 60 55, 66 80, 42 100, 6 90",
    ),
    4: (
        "50 0, 3 66 | 70 66; 52 5, 51 50, 50 100",
        "10 0, 5 60 | 68 58; 55 0, 54 50, 52 100",
        "18 0, 3 55 | 72 52; 50 18, 49 60, 48 100",
    ),
    5: (
        "15 2, 10 45 | 35 36, 60 50, 63 78, 40 99, 5 88; 15 2, 62 0",
        "62 0, 16 2 | 10 45 | 35 36, 60 50, 63 78, 40 99, 5 88",
    ),
    6: (
        "55 0, 25 20, 8 55, 15 90, 38 100, 60 85, 58 60, 35 50, 12 62",
        "50 0, 15 45, 10 75, 30 100, 55 90, 55 65, 30 55, 12 70",
    ),
    7: (
        "3 3, 68 0 | 45 50, 25 100",
        "3 3, 68 0 | 45 50, 25 100; 20 50, 62 48",
        "3 16, 5 0 | 68 2 | 48 50, 30 100",
        "3 3, 68 0 | 50 40, 40 70, 36 100",
    ),
    8: (
        "60 12, 35 0, 10 15, 18 38, 50 55, 65 78, 40 100, 10 85, 20 60, 50 42, 60 20, 50 5",
        "35 0, 10 20, 35 45, 60 22, 35 0; 35 45, 5 72, 35 100, 68 72, 35 45",
    ),
    9: (
        "62 20, 40 2, 12 14, 10 38, 36 48, 60 32, 63 8 | 60 55, 56 100",
        "62 20, 40 2, 12 14, 10 38, 36 48, 60 32, 63 8 | 62 60, 45 93, 18 98",
        "62 20, 40 2, 12 14, 10 38, 36 48, 60 32, 63 8 | 50 55, 32 100",
    ),
}

#: A stroke: its smooth pieces, each an (n, 2) array of control points in digit heights,
#: each piece after the first starting at the corner where the last one ended.
Stroke = list[np.ndarray]


def parse(shape: str) -> list[Stroke]:
    """A shape of :data:`SHAPES` as its strokes."""
    strokes = []
    for text in shape.split(";"):
        pieces: Stroke = []
        for part in text.split("|"):
            pts = np.array([[float(v) for v in p.split()] for p in part.split(",")]) / 100
            pieces.append(np.vstack([pieces[-1][-1:], pts]) if pieces else pts)
        strokes.append(pieces)
    return strokes


_PARSED = {digit: [parse(s) for s in shapes] for digit, shapes in SHAPES.items()}

#: Digits are drawn this tall (in pixels) in their 28x28 box, like the training digits.
_HEIGHT = 20
_BOX = 28
#: Points drawn per piece between two control points.
_STEPS = 8


@dataclass(frozen=True)
class StrokeDigits:
    """How often a field's digits are drawn by the pen model. ``p``: the share of fields
    (0: none, and no random numbers are drawn for it)."""

    p: float = 0.0
    #: How far a writer moves each control point (in digit heights, one standard
    #: deviation, drawn per field), and how much more each digit wobbles about that.
    writer_jitter: tuple[float, float] = (0.01, 0.05)
    digit_jitter: float = 0.02
    #: The pen's width in pixels of the 28x28 box (the training digits' strokes are 2-3).
    width: tuple[float, float] = (1.4, 3.4)


@dataclass
class Writer:
    """One hand: a shape per digit, its own moves of each shape's control points, a
    pen width; made by :func:`writer`."""

    spec: StrokeDigits
    shapes: dict[int, list[Stroke]]
    moves: dict[int, list[list[np.ndarray]]]
    width: float


def writer(spec: StrokeDigits, rng: np.random.Generator) -> Writer:
    """A writer drawn at random: one shape for each digit, kept for all its digits."""
    jitter = rng.uniform(*spec.writer_jitter)
    shapes, moves = {}, {}
    for digit, options in _PARSED.items():
        shape = options[int(rng.integers(len(options)))]
        shapes[digit] = shape
        moves[digit] = [[rng.normal(0, jitter, piece.shape) for piece in stroke] for stroke in shape]
    return Writer(spec, shapes, moves, rng.uniform(*spec.width))


def _smooth(points: np.ndarray) -> np.ndarray:
    """A Catmull-Rom curve through ``points`` (n, 2), ``_STEPS`` points per segment."""
    if len(points) < 3:
        t = np.linspace(0, 1, _STEPS + 1)[:, None]
        return points[0] + t * (points[-1] - points[0])
    p = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    t = np.linspace(0, 1, _STEPS, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (3 * p1 - p0 - 3 * p2 + p3) * t ** 3))
    out.append(points[-1:])
    return np.vstack(out)


def draw(hand: Writer, digit: int, rng: np.random.Generator) -> np.ndarray:
    """``digit`` in ``hand``'s shape, with this digit's own wobble drawn from ``rng``:
    28x28 light-on-dark uint8, its ink ``_HEIGHT`` pixels tall and centred, like a
    training digit."""
    lines = []
    for stroke, moves in zip(hand.shapes[digit], hand.moves[digit], strict=True):
        pieces, end = [], None
        for piece, move in zip(stroke, moves, strict=True):
            pts = piece + move + rng.normal(0, hand.spec.digit_jitter, move.shape)
            if end is not None:  # a corner: the piece starts where the last one ended
                pts[0] = end
            pieces.append(_smooth(pts))
            end = pts[-1]
        lines.append(np.vstack(pieces))
    allpts = np.vstack(lines)
    lo, hi = allpts.min(0), allpts.max(0)
    scale = _HEIGHT / max(hi[1] - lo[1], 1e-6)
    centre = (lo + hi) / 2
    ink = np.zeros((_BOX, _BOX), np.float32)
    for line in lines:
        pen_stroke(ink, (line - centre) * scale + _BOX / 2, hand.width)
    return np.rint(ink * 255).astype(np.uint8)
