"""The row of handwriting in a cleaned field, and the underlines under it.

:func:`locate` starts at the most prominent mark (tall and heavy, not cut off by the
image's edge, not a flat dash) and grows the row by the marks in its band that lie close beside it, so
that printed words elsewhere in a cell, bleed-through and specks are left out.
:func:`remove_underlines` takes out long thin flat strokes: a hand-drawn underline or an
end-of-amount dash, separate or touching the digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from recognizer.clean.background import open_by
from recognizer.clean.config import CleanConfig
from recognizer.clean.lines import across

EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class _Mark:
    label: int
    top: int
    bottom: int
    left: int
    right: int
    area: int
    on_edge: bool

    @property
    def height(self) -> int:
        return self.bottom - self.top


def _marks(strokes: np.ndarray, cfg: CleanConfig) -> tuple[np.ndarray, list[_Mark]]:
    labels, count = ndimage.label(strokes, structure=EIGHT)
    if count == 0:
        return labels, []
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    h, w = strokes.shape
    found = []
    for i, where in enumerate(ndimage.find_objects(labels)):
        t, b, lo, r = where[0].start, where[0].stop, where[1].start, where[1].stop
        found.append(_Mark(i + 1, t, b, lo, r, int(areas[i]), t == 0 or lo == 0 or b == h or r == w))
    least = max(cfg.min_mark_pixels, cfg.speck_share * max(m.area for m in found))
    return labels, [m for m in found if m.area >= least]


def _beside(m: _Mark, box: tuple[int, int, int, int], cfg: CleanConfig) -> bool:
    """Whether mark ``m`` belongs to the row whose box is (top, bottom, left, right)."""
    top, bottom, left, right = box
    band = bottom - top
    overlap = min(bottom, m.bottom) - max(top, m.top)
    within = overlap >= cfg.row_overlap * min(band, m.height) or (
        m.top >= top - 0.2 * band and m.bottom <= bottom + 0.5 * band)
    gap = max(m.left - right, left - m.right, 0)
    return within and gap <= cfg.row_gap * band and m.height <= cfg.row_tallest * band


def _prominence(m: _Mark, cfg: CleanConfig) -> float:
    """How likely a mark is to be the row's digits: tall and heavy, whole and not flat."""
    weight = cfg.edge_weight if m.on_edge else 1.0
    if m.right - m.left >= cfg.underline_flat * m.height:
        weight *= cfg.flat_weight
    return m.height * np.sqrt(m.area) * weight


def locate(ink: np.ndarray, cfg: CleanConfig) -> np.ndarray | None:
    """A mask of the marks of the main row of handwriting, or None when there is none."""
    labels, found = _marks(ink >= cfg.stroke_level, cfg)
    if not found:
        return None
    seed = max(found, key=lambda m: _prominence(m, cfg))
    row = [seed]
    box = (seed.top, seed.bottom, seed.left, seed.right)
    grown = True
    while grown:
        grown = False
        for m in found:
            if m not in row and _beside(m, box, cfg):
                row.append(m)
                box = (min(box[0], m.top), max(box[1], m.bottom), min(box[2], m.left), max(box[3], m.right))
                grown = True
    return np.isin(labels, [m.label for m in row])


def digit_rows(strokes: np.ndarray) -> tuple[float, float] | None:
    """A robust height of one digit of a row (the upper quartile of the heights of its
    heavier marks that are not flat: underlines, dashes and dots left out) and the
    median row its digits stand on; None without strokes."""
    labels, count = ndimage.label(strokes, structure=EIGHT)
    if count == 0:
        return None
    areas = np.bincount(labels.ravel())[1:]
    sizes = [(w[0].stop - w[0].start, w[1].stop - w[1].start, areas[i], w[0].stop)
             for i, w in enumerate(ndimage.find_objects(labels))]
    big = max(a for _, _, a, _ in sizes)
    digits = [(h, b) for h, w, a, b in sizes if a >= 0.25 * big and h >= 0.4 * w]
    if not digits:
        digits = [max((h, b) for h, _, _, b in sizes)]
    return float(np.percentile([h for h, _ in digits], 75)), float(np.median([b for _, b in digits]))


def _overhangs(flat: np.ndarray, rest: np.ndarray, by: float) -> bool:
    """Whether the flat runs reach at least ``by`` pixels beyond the rest of the ink, on
    the left or the right: an underline does; the feet of touching digits (a 2's base
    running into a 3) do not."""
    cols, others = np.flatnonzero(flat.any(axis=0)), np.flatnonzero(rest.any(axis=0))
    if not others.size:
        return True
    return bool(cols[0] <= others[0] - by or cols[-1] >= others[-1] + by)


def remove_underlines(ink: np.ndarray, pen: float, cfg: CleanConfig) -> np.ndarray:
    """The row without long thin flat strokes (underlines, end dashes), whether separate
    or touching the digits, and without short flat strokes under it (a digit's own
    underline); where a digit's stroke crosses one, the crossing stays."""
    strokes = ink >= cfg.stroke_level
    found = digit_rows(strokes)
    if found is None:
        return ink
    ref, base = found
    band = cv2.dilate(strokes.astype(np.uint8), np.ones((5, 1), np.uint8))
    flat = (open_by(band, (1, max(5, int(cfg.underline_length * ref)))) > 0) & strokes
    # Underlines run along the foot of the row (the tops of touching digits, level with
    # each other, make long flat runs too).
    flat[:max(0, int(base - cfg.underline_reach * ref))] = False
    out = ink.copy()
    if flat.any() and _overhangs(flat, strokes & ~flat, cfg.underline_overhang * ref):
        crossing = across((strokes & ~flat).astype(np.uint8), int(pen) + 3, True)
        gone = cv2.dilate((flat & ~crossing).astype(np.uint8), np.ones((3, 1), np.uint8)) > 0
        out[gone & ~crossing] = 0.0
    labels, _ = ndimage.label(out >= cfg.stroke_level, structure=EIGHT)
    for i, where in enumerate(ndimage.find_objects(labels)):
        h, w = where[0].stop - where[0].start, where[1].stop - where[1].start
        if h > cfg.underline_height * ref:
            continue
        under = where[0].start >= base and w >= max(cfg.underline_short * ref, cfg.underline_flat * h)
        if under or w >= cfg.underline_length * ref:
            out[where][labels[where] == i + 1] = 0.0
    return out
