"""Form cleaning: from a scanned field to the handwriting alone.

Real forms put more on the page than the digits: printed security backgrounds, stains
and uneven light, ruling lines and box borders that cross the ink, dark scanner borders
and masks at the edges, specks, printed words and underlines. :func:`clean` takes them
out, in this order, with OpenCV's morphology and scipy's labelling:

1. :mod:`.background`: paper and ink; the background (tint, stains, light, masks and
   scanner borders) is taken out.
2. :mod:`.lines`: ruling lines and box borders, crossings with strokes kept.
3. :mod:`.row`: the main row of handwriting, without what lies elsewhere in the cell;
   underlines and end dashes taken out.

Fields are always cleaned; a single digit is cleaned when its image needs it
(:func:`needs_cleaning`: ink reaches the image's border), so that clean scans and
MNIST-style inputs take the plain path unchanged, and loses the dot or dash written
after it as well (:func:`clean_digit`, :mod:`.digit`).
"""

from __future__ import annotations

import cv2
import numpy as np

from recognizer.clean.background import ink_map, scale_of
from recognizer.clean.config import CleanConfig, Cleaned
from recognizer.clean.digit import without_end_marks
from recognizer.clean.lines import remove_lines
from recognizer.clean.row import locate, remove_underlines
from recognizer.errors import NoDigits
from recognizer.normalize import ink_levels

__all__ = ["CleanConfig", "Cleaned", "clean", "clean_digit", "needs_cleaning"]


def _near(mask: np.ndarray) -> np.ndarray:
    """The mask grown by two pixels, so that strokes' faint edges come along."""
    return cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0


def _own_scale(ink: np.ndarray, row: np.ndarray, cfg: CleanConfig) -> np.ndarray | None:
    """The ink map scaled to the row's own strongest strokes, when they are fainter than
    ``cfg.faint_row`` (print or a border elsewhere, darker than the pen, set the map's
    scale); None when the row is not faint."""
    level = scale_of(np.where(row, ink, 0.0).astype(np.float32))
    if level >= cfg.faint_row:
        return None
    return np.clip(ink / max(level, cfg.stroke_level), 0.0, 1.0).astype(np.float32)


def clean(grey: np.ndarray, cfg: CleanConfig | None = None) -> Cleaned:
    """A greyscale field image -> the ink of its row of handwriting, cropped.

    Raises :class:`~recognizer.errors.BlankImage` when nothing stands out from the paper
    and :class:`~recognizer.errors.NoDigits` when only lines, borders or background do.
    """
    cfg = cfg or CleanConfig()
    ink, pen = ink_map(grey, cfg)
    ink = remove_lines(ink, pen, cfg)
    row = locate(ink, cfg)
    if row is None:
        raise NoDigits("no digits found: the image holds no handwriting, only paper, lines, "
                       "borders or background")
    rescaled = _own_scale(ink, row, cfg)
    if rescaled is not None:
        ink, row = rescaled, locate(rescaled, cfg)
    ink = np.where(_near(row), ink, 0.0).astype(np.float32)
    # An underline is never all there is: a flat mark alone stays (it may be a digit).
    without = remove_underlines(ink, pen, cfg)
    kept = locate(without, cfg)
    if kept is not None:
        ink, row = without, kept
    ys, xs = np.nonzero(row)
    top, bottom, left, right = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pad = max(cfg.min_margin, int(cfg.margin * (bottom - top)))
    top, left = max(0, top - pad), max(0, left - pad)
    bottom, right = min(ink.shape[0], bottom + pad), min(ink.shape[1], right + pad)
    crop = np.where(_near(row), ink, 0.0)[top:bottom, left:right].astype(np.float32)
    return Cleaned(crop, (left, top), pen)


def clean_digit(grey: np.ndarray, cfg: CleanConfig | None = None) -> np.ndarray:
    """A greyscale single-digit crop -> its digit's ink as a light-on-dark uint8 image
    (what :mod:`recognizer.normalize` takes): :func:`clean`, then the dot, comma or
    dash beside the digit dropped. Raises as :func:`clean` does."""
    cfg = cfg or CleanConfig()
    cleaned = clean(grey, cfg)
    return np.rint(without_end_marks(cleaned.ink, cfg) * 255.0).astype(np.uint8)


def needs_cleaning(greys: np.ndarray, cfg: CleanConfig | None = None) -> np.ndarray:
    """For an (N, H, W) uint8 stack, which images need cleaning before a single digit is
    read from them: those whose border is more than ``cfg.border_ink`` ink (by
    preprocessing's paper/ink rule) - ruling lines, boxes, masks and printed backgrounds
    reach the edge of a crop; a clean scan's border is paper. Images smaller than
    ``cfg.min_clean_size`` are never cleaned."""
    cfg = cfg or CleanConfig()
    levels, peaks, _ = ink_levels(greys)
    border = np.concatenate((levels[:, 0], levels[:, -1], levels[:, 1:-1, 0], levels[:, 1:-1, -1]),
                            axis=1)
    strong = border >= np.maximum(0.5 * peaks, 1)[:, None]
    return (strong.mean(axis=1) > cfg.border_ink) & (min(greys.shape[1:]) >= cfg.min_clean_size)
