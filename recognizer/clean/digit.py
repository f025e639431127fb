"""One digit out of a cleaned crop: the small marks beside it (the dot, comma or dash
a writer puts after a number, a speck of the next cell) dropped, so that a single-digit
crop reads as its digit alone. Fields keep theirs: their reader reads separators."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from recognizer.clean.config import CleanConfig

EIGHT = np.ones((3, 3), dtype=bool)


def without_end_marks(ink: np.ndarray, cfg: CleanConfig) -> np.ndarray:
    """The ink (float32, 0 paper .. 1 stroke) without the marks that stand beside its
    largest mark (no column in common with it), in its lower half and at most
    ``cfg.end_mark_height`` of its height tall; their faint edges go with them."""
    labels, count = ndimage.label(ink >= cfg.stroke_level, structure=EIGHT)
    if count < 2:
        return ink
    boxes = ndimage.find_objects(labels)
    main = int(np.bincount(labels.ravel())[1:].argmax())
    rows, cols = boxes[main]
    height = rows.stop - rows.start
    ends = [i + 1 for i, (r, c) in enumerate(boxes)
            if i != main and r.stop - r.start <= cfg.end_mark_height * height
            and r.start >= rows.start + height / 2 and (c.start >= cols.stop or c.stop <= cols.start)]
    if not ends:
        return ink
    grow = np.ones((5, 5), np.uint8)
    gone = cv2.dilate(np.isin(labels, ends).astype(np.uint8), grow) > 0
    kept = cv2.dilate(((labels > 0) & ~np.isin(labels, ends)).astype(np.uint8), grow) > 0
    out = ink.copy()
    out[gone & ~kept] = 0.0
    return out
