"""Synthesized form fields: training digits written on what real forms put round them.

Real scans of forms hold more than the digits: ruling lines and box borders that cross
or touch the ink, printed security backgrounds, stains and uneven light, dark scanner
borders and masks at the edges, printed words and signs, thousands separators and
end-of-amount marks, underlines, and a small number in a large cell. A field reader
trained and tuned on clean rows of MNIST digits meets none of that. This package renders
fields of *training* digits with all of it, at random (:class:`FormConfig`), and records
the truth (:class:`FormField`): the digit string, the string with its separators, and
which columns each digit's ink holds.

* :mod:`.layout`: the row of digits and the marks among them;
* :mod:`.shape`: each digit in another writer's proportions and wobble;
* :mod:`.strokes`: digits drawn by a pen model, in shapes the training digits lack;
* :mod:`.cursive`: strokes that join neighbouring digits and lead into a run of them;
* :mod:`.pen`: separators, end marks and underlines;
* :mod:`.printed`: words, signs, backgrounds, ruling lines and boxes;
* :mod:`.scan`: paper, ink, masks and the scanner's blur, noise and JPEG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recognizer.data.forms.config import SEPARATORS, FormConfig, FormField
from recognizer.data.forms.layout import compose, crop_columns, crop_rows, layout, raw
from recognizer.data.forms.pen import underline
from recognizer.data.forms.printed import form_lines, print_text
from recognizer.data.forms.scan import page
from recognizer.data.synth_fields import BASE_HEIGHT

__all__ = ["SEPARATORS", "FormConfig", "FormField", "make_form_field", "make_form_fields"]

#: Printed signs that may stand before an amount, and printed words of a form's cells.
SIGNS = ("$", "€", "£", "#", "*", "R$", "Kr")
WORDS = ("Amount", "No.", "Total", "Date", "Pay", "Sum", "Nr", "Printed for the parish")


def _paste(canvas: np.ndarray, ink: np.ndarray, top: int, left: int) -> None:
    """Lay ``ink`` onto ``canvas`` at (top, left), clipped to the canvas."""
    h, w = min(ink.shape[0], canvas.shape[0] - top), min(ink.shape[1], canvas.shape[1] - left)
    if h > 0 and w > 0:
        np.maximum(canvas[top:top + h, left:left + w], ink[:h, :w], out=canvas[top:top + h, left:left + w])


def _margins(height: float, cfg: FormConfig, rng: np.random.Generator) -> list[int]:
    """Paper above, below, left and right of the row, in pixels."""
    lo, hi = cfg.margin
    m = [int(height * rng.uniform(lo, hi) * (rng.random() < 0.8)) for _ in range(4)]
    if rng.random() < cfg.p_large_cell:
        m = [int(x + height * rng.uniform(0.5, 3.0)) for x in m]
    return m


def _sign(printed: np.ndarray, first: tuple[int, int], bottom: int, height: float,
          rng: np.random.Generator) -> tuple[int, int]:
    """A printed sign before the first digit (whose columns are ``first``); its columns."""
    glyph = print_text(str(rng.choice(SIGNS)), int(height * 0.8), rng)
    left = max(0, first[0] - glyph.shape[1] - int(rng.integers(1, max(2, int(0.4 * height)))))
    top = int(np.clip(bottom - glyph.shape[0], 0, max(0, printed.shape[0] - glyph.shape[0])))
    _paste(printed, glyph, top, left)
    return left, min(printed.shape[1], left + glyph.shape[1])


def _words(printed: np.ndarray, height: float, rng: np.random.Generator) -> None:
    """Small printed words at the top or bottom of the cell."""
    words = print_text(str(rng.choice(WORDS)), int(height * rng.uniform(0.25, 0.5)), rng)
    top = int(rng.choice([0, max(0, printed.shape[0] - words.shape[0])]))
    left = int(rng.integers(0, max(1, printed.shape[1] - words.shape[1])))
    _paste(printed, words * rng.uniform(0.5, 1), top, left)


def make_form_field(digits_u8: Sequence[np.ndarray], labels: Sequence[int], rng: np.random.Generator,
                    cfg: FormConfig | None = None, blank: bool = False) -> FormField:
    """Render training digits (light-on-dark uint8 28x28) as one field of a real form;
    ``blank``: the same cell, print and scan with no handwriting (text and raw empty)."""
    cfg = cfg or FormConfig()
    text = "".join(str(int(v)) for v in labels)
    glyphs = layout(text, cfg, rng)
    height = BASE_HEIGHT * rng.uniform(0.5, 1.2)
    ink, spans, mark_spans, pen = compose(glyphs, list(digits_u8), cfg, rng, height)
    ink, _ = crop_rows(ink)
    # Drawn only when asked for, so that fields of other configs keep their random streams.
    if cfg.tight_columns and rng.random() < cfg.tight_columns:
        ink, left = crop_columns(ink)
        spans = [(max(0, a - left), b - left) for a, b in spans]
        mark_spans = [(max(0, a - left), b - left) for a, b in mark_spans]
    base = ink.shape[0]
    rows, cols = np.flatnonzero(ink.max(1) > 0.3), np.flatnonzero(ink.max(0) > 0.3)
    if not rows.size or not cols.size:  # a pen so faint and thin that no stroke passes 0.3
        rows, cols = np.arange(ink.shape[0]), np.arange(ink.shape[1])
    if rng.random() < cfg.p_underline:
        ink = underline(ink, height, pen, rng)
    m = _margins(height, cfg, rng)
    hand = np.zeros((ink.shape[0] + m[0] + m[1], ink.shape[1] + m[2] + m[3]), np.float32)
    hand[m[0]:m[0] + ink.shape[0], m[2]:m[2] + ink.shape[1]] = ink
    spans = [(a + m[2], b + m[2]) for a, b in spans]
    mark_spans = [(a + m[2], b + m[2]) for a, b in mark_spans]
    printed = np.zeros_like(hand)
    if rng.random() < cfg.p_start_sign:
        mark_spans.append(_sign(printed, spans[0], m[0] + base, height, rng))
    form_lines(printed, spans, m, base, height, cfg, rng)
    if rng.random() < cfg.p_printed_text:
        _words(printed, height, rng)
    box = (m[2] + int(cols[0]), m[0] + int(rows[0]), m[2] + int(cols[-1]) + 1, m[0] + int(rows[-1]) + 1)
    if blank:
        return FormField(page(np.zeros_like(hand), printed, pen, cfg, rng), "", "", [], [], box)
    return FormField(page(hand, printed, pen, cfg, rng), text, raw(glyphs), spans, mark_spans, box)


def make_form_fields(images: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator,
                     cfg: FormConfig | None = None) -> list[FormField]:
    """``count`` form fields of ``cfg.lengths`` random digits each, drawn from ``images``
    (light-on-dark uint8 28x28, with their ``labels``)."""
    cfg = cfg or FormConfig()
    lo, hi = cfg.lengths
    out = []
    for _ in range(count):
        picks = rng.integers(0, len(images), int(rng.integers(lo, hi + 1)))
        out.append(make_form_field([images[i] for i in picks], [int(labels[i]) for i in picks], rng, cfg))
    return out
