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


def _runs(faint: np.ndarray, length: int, gap: int, thickness: int, vertical: bool,
          coverage: float) -> np.ndarray:
    """Faint-ink pixels of straight runs at least ``length`` long along one axis, gaps
    up to ``gap`` bridged and a pixel of skew either side tolerated, at most
    ``thickness`` pixels either side of the run's core; a run must be inked along
    ``coverage`` of its length."""
    along, skew = ((gap, 1), (1, 3)) if vertical else ((1, gap), (3, 1))
    bridged = cv2.morphologyEx(faint, cv2.MORPH_CLOSE, np.ones(along, np.uint8))
    core = open_by(cv2.dilate(bridged, np.ones(skew, np.uint8)), (length, 1) if vertical else (1, length))
    core &= bridged  # the skew's tolerance found the run; the line is its own pixels
    width = 2 * thickness + 1
    grown = cv2.dilate(core, np.ones((1, width) if vertical else (width, 1), np.uint8)) > 0
    line = grown & (faint > 0)
    labels, _ = ndimage.label(grown)
    for i, where in enumerate(ndimage.find_objects(labels)):
        own = labels[where] == i + 1
        if (line[where] & own).any(axis=1 if vertical else 0).mean() < coverage:
            line[where] &= ~own
    return line


def _length(extent: int, share: float, pen: float, cfg: CleanConfig) -> int:
    """The shortest run that is a line across an image ``extent`` pixels long: ``share``
    of it and ``cfg.line_strokes`` pen widths (a digit's stroke is rarely that long), or,
    where the image is shorter than that many pen widths, nearly all of it."""
    return int(max(share * extent, min(cfg.line_strokes * pen, cfg.line_span * extent)))


def _edge_rules(faint: np.ndarray, pen: float, gap: int, cfg: CleanConfig) -> np.ndarray:
    """Vertical runs entering from the top or bottom edge that are shorter than a full
    ruling line but longer than any stroke of a digit: ``cfg.edge_line_share`` of the
    height and ``cfg.line_strokes`` pen widths. In a smaller image there are none."""
    h = faint.shape[0]
    length = int(max(cfg.edge_line_share * h, cfg.line_strokes * pen))
    if length >= h:
        return np.zeros(faint.shape, bool)
    runs = _runs(faint, length, gap, cfg.line_reach, True, cfg.line_coverage)
    labels, _ = ndimage.label(runs)
    reach = cfg.edge_reach
    edge = [i + 1 for i, (rows, _) in enumerate(ndimage.find_objects(labels))
            if rows.start <= reach or rows.stop >= h - reach]
    return np.isin(labels, edge) if edge else np.zeros(faint.shape, bool)


def remove_lines(ink: np.ndarray, pen: float, cfg: CleanConfig) -> np.ndarray:
    """The ink without ruling lines and box borders; where a stroke crosses one, the
    crossing stays. ``pen``: the stroke width in pixels."""
    h, w = ink.shape
    faint = (ink >= cfg.faint_level).astype(np.uint8)
    reach = cfg.line_reach
    hor = _runs(faint, _length(w, cfg.line_width_share, pen, cfg), cfg.line_gap, reach, False,
                cfg.line_coverage)
    gap = max(cfg.line_gap, int(cfg.line_gap_share * h))
    ver = _runs(faint, _length(h, cfg.line_height_share, pen, cfg), gap, reach, True, cfg.line_coverage)
    ver |= _edge_rules(faint, pen, gap, cfg)
    lines = hor | ver
    if not lines.any():
        return ink
    rest = ((ink >= cfg.stroke_level) & ~lines).astype(np.uint8)
    # A stroke crossing a line has ink on both sides of the line's whole band.
    span = 2 * reach + cfg.line_gap
    crossing = (hor & across(rest, span, True)) | (ver & across(rest, span, False))
    out = ink.copy()
    out[lines & ~crossing] = 0.0
    return out
