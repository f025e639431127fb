"""Paper, ink and background: how much darker than its surroundings each pixel is.

Paper is light unless the light pixels are thin strokes (light ink on dark paper, like
raw MNIST). The background (the paper, its tint, stains, uneven light, printed
backgrounds of low contrast) is the image closed by a disc wider than the pen's strokes,
so that strokes vanish from it; a pixel's ink is how much darker than its background it
is. Wide dark areas reaching the image's edge (masks, scanner borders) are background
too, so they hold no ink.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from recognizer.clean.config import CleanConfig
from recognizer.errors import BlankImage
from recognizer.normalize import MIN_CONTRAST, blank_message


def light_paper(grey: np.ndarray) -> bool:
    """True for dark ink on light paper; False when the light pixels are thin strokes
    (light ink on dark paper)."""
    _, light = cv2.threshold(grey, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if light.mean() > 0.6 or not light.any():
        return True
    dt = cv2.distanceTransform(light, cv2.DIST_L2, 3)
    thin = float((dt[light > 0] <= max(2.0, 0.05 * min(grey.shape))).mean())
    return thin < 0.7


def stroke_width(strokes: np.ndarray, cap: float | None = None) -> float:
    """Typical pen width (pixels) of a binary stroke image: twice the median distance to
    the paper along the strokes' ridges; ridges wider than ``cap`` (masks, blots) are
    left out."""
    if not strokes.any():
        return 1.0
    dt = cv2.distanceTransform(strokes.astype(np.uint8), cv2.DIST_L2, 3)
    values = dt[(dt >= ndimage.maximum_filter(dt, 3)) & (strokes > 0)]
    if cap is not None and (values <= cap).any():
        values = values[values <= cap]
    return float(2 * np.median(values))


def open_by(binary: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Morphological opening of a uint8 image by a rectangle, with paper beyond the
    image's edge (OpenCV's default counts the outside as ink, which would make a short
    run at the edge pass for a long one)."""
    kernel = np.ones(shape, np.uint8)
    eroded = cv2.erode(binary, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.dilate(eroded, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def pen_width(strokes: np.ndarray, cfg: CleanConfig, cap: float) -> float:
    """The pen's stroke width in a uint8 0/1 stroke image, long straight runs (ruling
    lines, thinner than most pens) left out."""
    h, w = strokes.shape
    hor = open_by(strokes, (1, max(3, int(cfg.line_width_share * w))))
    ver = open_by(strokes, (max(3, int(cfg.line_height_share * h)), 1))
    rest = (strokes > 0) & ~(cv2.dilate(hor | ver, np.ones((5, 5), np.uint8)) > 0)
    return stroke_width(rest if rest.any() else strokes > 0, cap)


def _masks(background: np.ndarray, cfg: CleanConfig, reach: int = 3) -> np.ndarray:
    """Where the background itself is dark and reaches the image's edge, grown by
    ``reach`` pixels: masks, scanner borders, the page's edge (a dark blot inside the
    field is ink, not a mask)."""
    dark = background < cfg.mask_level * np.percentile(background, 90)
    if not dark.any():
        return dark
    labels, _ = ndimage.label(dark)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    masked = np.isin(labels, edge[edge > 0])
    return cv2.dilate(masked.astype(np.uint8), np.ones((reach, reach), np.uint8)) > 0


def scale_of(ink: np.ndarray) -> float:
    """The ink level of the strongest strokes: found where the blurred ink is strong, so
    that paper grain and JPEG speckle (single pixels) do not set it."""
    smooth = cv2.GaussianBlur(ink, (0, 0), 1.0)
    core = smooth >= 0.5 * float(np.percentile(smooth, 99.9))
    return float(np.percentile(ink[core], 90)) if core.any() else float(ink.max())


def _dense(ink: np.ndarray, strokes: np.ndarray, cfg: CleanConfig) -> bool:
    """Whether a printed pattern passes for strokes: they cover the image evenly
    (handwriting, even a tight crop of it, leaves parts of the image bare), and most of
    them are fainter than the strongest (the pattern is lighter than the pen)."""
    faint = float(np.mean(ink[strokes] < cfg.pattern_level)) if strokes.any() else 0.0
    if faint < cfg.pattern_share:
        return False
    h, w = strokes.shape
    rows = max(1, min(cfg.dense_tiles, h // cfg.min_tile))
    cols = max(1, min(cfg.dense_tiles, w // cfg.min_tile))
    shares = [tile.mean() for band in np.array_split(strokes, rows, axis=0)
              for tile in np.array_split(band, cols, axis=1)]
    return float(np.mean(np.array(shares) > cfg.dense_share)) >= cfg.dense_cover


def ink_map(grey: np.ndarray, cfg: CleanConfig) -> tuple[np.ndarray, float]:
    """Ink (float32, 0 paper .. 1 strongest strokes) with the background, stains,
    uneven light, masks and scanner borders taken out; and the pen's stroke width.

    Raises :class:`BlankImage` when no stroke stands out from its background by
    ``MIN_CONTRAST`` grey levels.
    """
    g = grey.astype(np.float32) if light_paper(grey) else 255.0 - grey.astype(np.float32)
    spread = float(g.max() - g.min()) if g.size else 0.0
    if spread < MIN_CONTRAST:  # no stroke can stand out: nothing to measure a pen on
        raise BlankImage(blank_message(spread))
    cap = max(cfg.min_ridge_cap, 0.04 * min(grey.shape))
    rough = cv2.threshold(g.astype(np.uint8), 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)[1]
    k = int(max(cfg.min_kernel, round(cfg.background_strokes * pen_width(rough, cfg, cap)))) | 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    closed = cv2.morphologyEx(g, cv2.MORPH_CLOSE, disc)
    background = np.maximum(cv2.GaussianBlur(closed, (0, 0), k / 2), g)
    darker = background - g
    # Masks are found before the blur, which smears their edge into a band of "ink";
    # the band goes with them.
    darker[_masks(closed, cfg, reach=k)] = 0.0
    contrast = scale_of(darker)
    if contrast < MIN_CONTRAST:
        raise BlankImage(blank_message(contrast))
    ink = np.clip(darker / np.maximum(background, 1.0), 0.0, 1.0)
    ink = np.clip(ink / max(scale_of(ink), 1e-3), 0.0, 1.0).astype(np.float32)
    strokes = ink >= cfg.stroke_level
    if _dense(ink, strokes, cfg):
        level = cv2.threshold(np.rint(ink * 255).astype(np.uint8), 0, 255,
                              cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255.0
        ink = np.clip((ink - level) / max(1e-3, 1.0 - level), 0.0, 1.0).astype(np.float32)
        strokes = ink >= cfg.stroke_level
    return ink, pen_width(strokes.astype(np.uint8), cfg, cap)
