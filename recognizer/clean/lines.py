"""Ruling lines, table borders and box borders: long straight runs of ink, removed
where they do not cross a stroke."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from recognizer.clean.background import open_by
from recognizer.clean.config import CleanConfig


def across(rest: np.ndarray, reach: int, vertical: bool) -> np.ndarray:
    """Pixels with stroke (``rest``, uint8) within ``reach`` on both sides, above and
    below when ``vertical`` else left and right: where a stroke crosses a line."""
    kernel = np.ones((reach, 1) if vertical else (1, reach), np.uint8)
    before = (0, reach - 1) if vertical else (reach - 1, 0)
    return (cv2.dilate(rest, kernel, anchor=before) > 0) & (cv2.dilate(rest, kernel, anchor=(0, 0)) > 0)


def _runs(faint: np.ndarray, length: int, gap: int, thickness: float, vertical: bool,
          coverage: float) -> np.ndarray:
    """Faint-ink pixels of straight runs at least ``length`` long along one axis, gaps
    up to ``gap`` bridged and a pixel of skew either side tolerated; a run must be inked
    along ``coverage`` of its length."""
    along, skew = ((gap, 1), (1, 3)) if vertical else ((1, gap), (3, 1))
    bridged = cv2.morphologyEx(faint, cv2.MORPH_CLOSE, np.ones(along, np.uint8))
    core = open_by(cv2.dilate(bridged, np.ones(skew, np.uint8)), (length, 1) if vertical else (1, length))
    width = int(2 * thickness) + 3
    grown = cv2.dilate(core, np.ones((1, width) if vertical else (width, 1), np.uint8)) > 0
    line = grown & (faint > 0)
    labels, _ = ndimage.label(grown)
    for i, where in enumerate(ndimage.find_objects(labels)):
        own = labels[where] == i + 1
        if (line[where] & own).any(axis=1 if vertical else 0).mean() < coverage:
            line[where] &= ~own
    return line


def remove_lines(ink: np.ndarray, pen: float, cfg: CleanConfig) -> np.ndarray:
    """The ink without ruling lines and box borders; where a stroke crosses one, the
    crossing stays. ``pen``: the stroke width in pixels."""
    h, w = ink.shape
    faint = (ink >= cfg.faint_level).astype(np.uint8)
    hor = _runs(faint, max(int(cfg.line_width_share * w), int(cfg.line_strokes * pen)),
                cfg.line_gap, pen, False, cfg.line_coverage)
    ver = _runs(faint, max(int(cfg.line_height_share * h), int(cfg.line_strokes * pen)),
                max(cfg.line_gap, int(cfg.line_gap_share * h)), pen, True, cfg.line_coverage)
    lines = hor | ver
    if not lines.any():
        return ink
    rest = ((ink >= cfg.stroke_level) & ~lines).astype(np.uint8)
    reach = int(max(2, round(pen))) + 2
    crossing = (hor & across(rest, reach, True)) | (ver & across(rest, reach, False))
    out = ink.copy()
    out[lines & ~crossing] = 0.0
    return out
