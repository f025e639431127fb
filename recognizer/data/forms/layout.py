"""The row of handwriting: digits and the marks among them, placed on a base line."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from recognizer.data.forms.config import FormConfig
from recognizer.data.forms.cursive import connect
from recognizer.data.forms.pen import mark
from recognizer.data.forms.shape import field_aspect, reshape
from recognizer.data.forms.strokes import draw, writer
from recognizer.data.synth_fields import render_digit, touch_offset


def layout(text: str, cfg: FormConfig, rng: np.random.Generator) -> list[str]:
    """The glyphs of a field, left to right: digits and the marks among them."""
    glyphs: list[str] = []
    n = len(text)
    decimal = n >= 3 and rng.random() < cfg.p_decimal
    whole = n - 2 if decimal else n
    thousands = whole >= 4 and rng.random() < cfg.p_thousands
    mark_t, mark_d = (".", ",") if rng.random() < 0.5 else (",", ".")
    for i, ch in enumerate(text):
        if thousands and 0 < i < whole and (whole - i) % 3 == 0:
            glyphs.append(mark_t)
        if decimal and i == whole:
            glyphs.append(mark_d)
        glyphs.append(ch)
    if rng.random() < cfg.p_end_mark:
        glyphs.append(str(rng.choice([".", "-", "=", "/", "-/", "/-", "--", ".-"])))
    return glyphs


def raw(glyphs: Sequence[str]) -> str:
    """The raw reading: digits and separators, an end mark's characters kept in order
    (``-/`` stays ``-/``; a long dash is ``-``)."""
    return "".join("-" if g == "--" else g for g in glyphs)


def restroke(ink: np.ndarray, change: float) -> np.ndarray:
    """``ink`` with its strokes ``change`` pixels wider (negative: thinner), by grey
    dilation or erosion with a disc; strokes are never thinned away entirely."""
    k = 1 + 2 * int(round(abs(change) / 2))
    if k == 1:
        return ink
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    if change > 0:
        return cv2.dilate(ink, disc)
    thin = cv2.erode(ink, disc)
    # A digit eroded away entirely keeps its strokes' cores instead.
    return thin if thin.max() >= 0.5 else np.clip(ink - 0.6, 0, None) / 0.4


def _write(glyphs: list[str], digits, cfg: FormConfig, rng: np.random.Generator, height: float,
           pen: float, change: float) -> list[tuple[str, np.ndarray]]:
    """Each glyph's ink, in order: ("d", a digit) or ("m", a mark); the digits drawn from
    ``digits``, in one hand (slant, size, shape) for a share of fields."""
    items = []
    one_hand = cfg.same_hand > 0 and rng.random() < cfg.same_hand
    slant = rng.uniform(-0.3, 0.3) if one_hand else 0.0
    shape = cfg.digit_shape
    # Drawn only when asked for, so that fields of other configs keep their random streams.
    reshaped = shape.p > 0 and rng.random() < shape.p
    aspect = field_aspect(shape, rng) if reshaped and one_hand else 1.0
    drawn = cfg.strokes.p > 0 and rng.random() < cfg.strokes.p
    hand = writer(cfg.strokes, rng) if drawn else None
    for g in glyphs:
        if g.isdigit():
            if one_hand:
                size, lean = height * rng.uniform(0.92, 1.08), slant + rng.normal(0, 0.04)
            else:
                size, lean = height * rng.uniform(0.8, 1.2), rng.uniform(-0.25, 0.25)
            digit = next(digits)
            if hand is not None:  # the field's digits in a pen model's shapes instead
                digit = draw(hand, int(g), rng)
            if reshaped:
                wide = (aspect * np.exp(rng.normal(0, shape.aspect_spread)) if one_hand
                        else field_aspect(shape, rng))
                digit = reshape(digit, wide, shape, rng)
            items.append(("d", restroke(render_digit(digit, rng, size, lean), change)))
        elif g == ".-":
            items.append(("m", mark(".", height, pen, rng)))
            items.append(("m", mark("-", height, pen, rng)))
        else:
            items.append(("m", mark(g, height, pen, rng)))
    return items


def compose(glyphs: list[str], digits: list[np.ndarray], cfg: FormConfig,
             rng: np.random.Generator, height: float) -> tuple[np.ndarray, list, list, float]:
    """Ink of the handwritten row; the digits' spans and the marks' spans; pen width."""
    pen = height * rng.uniform(0.07, 0.13)
    # Drawn only when asked for, so that fields of other configs keep their random streams.
    change = rng.uniform(*cfg.pen_change) * height if cfg.pen_change != (0.0, 0.0) else 0.0
    pen = max(1.0, pen + change)
    max_gap = 0.45
    if cfg.spaced > 0 and rng.random() < cfg.spaced:
        max_gap = rng.uniform(0.45, cfg.wide_gap)
    items = _write(glyphs, iter(digits), cfg, rng, height, pen, change)
    tallest = max(a.shape[0] for _, a in items)
    pad = int(0.5 * height)
    canvas_h = tallest + 2 * pad
    canvas_w = sum(a.shape[1] for _, a in items) + int((max_gap + 0.15) * height) * len(items) + 2 * pad
    canvas = np.zeros((canvas_h, canvas_w), np.float32)
    baseline = pad + tallest
    x = pad
    spans, mark_spans, placed = [], [], []
    prev_digit = False
    for kind, ink in items:
        h, w = ink.shape
        if kind == "d":
            top = int(np.clip(baseline - h + round(rng.normal(0, 0.06 * height)), 0, canvas_h - h))
            if prev_digit and rng.random() < cfg.touching:
                left = touch_offset(canvas, ink, top, x)
            else:
                left = x + int(rng.integers(1, max(2, int(max_gap * height))))
        else:
            # a mark's array holds its base line at row `height`
            top = int(np.clip(baseline - int(round(height)) + round(rng.normal(0, 0.03 * height)),
                              0, canvas_h - h))
            left = x + int(rng.integers(0, max(1, int(0.3 * height))))
        left = min(left, canvas_w - w)
        region = canvas[top:top + h, left:left + w]
        np.maximum(region, ink, out=region)
        placed.append((kind, top, left, ink))
        cols = np.flatnonzero(ink.max(0) > 0.3)
        span = (left + int(cols[0]), left + int(cols[-1]) + 1) if cols.size else (left, left + w)
        (spans if kind == "d" else mark_spans).append(span)
        x = max(x, left + w)
        prev_digit = kind == "d"
    connect(canvas, placed, cfg.cursive, rng, pen, height, baseline)
    return canvas[:, :x + pad], spans, mark_spans, pen


def crop_rows(canvas: np.ndarray) -> tuple[np.ndarray, int]:
    rows = np.flatnonzero(canvas.max(1) > 0.05)
    top = int(rows[0]) if rows.size else 0
    bottom = int(rows[-1]) + 1 if rows.size else canvas.shape[0]
    return canvas[top:bottom], top


def crop_columns(canvas: np.ndarray) -> tuple[np.ndarray, int]:
    """``canvas`` cut to its ink's columns, and the first column kept."""
    cropped, left = crop_rows(canvas.T)
    return cropped.T, left
