"""What a synthesized form field may hold (:class:`FormConfig`), and what one holds
(:class:`FormField`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recognizer.data.forms.cursive import Cursive
from recognizer.data.forms.shape import DigitShape
from recognizer.data.forms.strokes import StrokeDigits

#: Separators that keep their place in a field's raw reading.
SEPARATORS = ".,-/="


@dataclass(frozen=True)
class FormConfig:
    """How often each feature of real forms appears in a synthesized field."""

    lengths: tuple[int, int] = (1, 8)
    touching: float = 0.15
    #: Amount-like separators: a thousands mark every three digits, a decimal mark.
    p_thousands: float = 0.15
    p_decimal: float = 0.15
    #: A mark after the number: '.', '-', '=', '/', '-/' and the like.
    p_end_mark: float = 0.3
    #: A printed or handwritten sign before the number ('$', '*', '#', '€', '£').
    p_start_sign: float = 0.12
    p_underline: float = 0.25
    #: Printed ruling: horizontal lines (base line, cell top/bottom), vertical cell
    #: borders, and comb boxes round each digit.
    p_hlines: float = 0.45
    p_vlines: float = 0.45
    p_boxes: float = 0.12
    p_background: float = 0.35
    p_printed_text: float = 0.2
    p_mask: float = 0.3
    p_bleed: float = 0.15
    p_specks: float = 0.3
    #: The cell around the digits, in digit heights of margin on each side; with
    #: ``p_large_cell``, a small number in a large cell.
    margin: tuple[float, float] = (0.05, 2.5)
    p_large_cell: float = 0.35
    p_jpeg: float = 0.4
    p_blur: float = 0.25
    #: How dark the pen is, as a share of the paper's brightness: faded and pale inks
    #: beside a black scanner border or mask are common in archives.
    ink_level: tuple[float, float] = (0.65, 1.0)
    #: The share of fields written by one hand: one slant and digit size for the whole
    #: field, each digit varying a little about them (else each digit draws its own).
    same_hand: float = 0.0
    #: How much thinner or thicker than the digits' own strokes each field's pen is, as a
    #: share of the digit height (negative: thinner): steel nibs and fine ball pens write
    #: far thinner strokes than the digits they are drawn from. (0, 0): the digits' own.
    pen_change: tuple[float, float] = (0.0, 0.0)
    #: Share of fields whose digits are spaced widely (gaps of up to ``wide_gap`` digit
    #: heights: digits in comb boxes, spaced postal codes) rather than up to 0.45.
    spaced: float = 0.0
    wide_gap: float = 1.5
    #: Share of fields cut to their handwriting's columns before the margins are added,
    #: so that paper beside the number comes from the margins alone and a tight crop
    #: (a box cut round the number) leaves the first and last strokes at the image's edge.
    tight_columns: float = 0.0
    #: Other writers' proportions and wobble: each digit's aspect, angle and strokes
    #: changed before it is written (off by default).
    digit_shape: DigitShape = DigitShape()
    #: Digits joined by the pen's path and runs started with a lead-in stroke (off by
    #: default).
    cursive: Cursive = Cursive()
    #: Fields whose digits are drawn by a pen model, in shapes the training digits lack
    #: (off by default).
    strokes: StrokeDigits = StrokeDigits()


@dataclass
class FormField:
    """A synthesized field: the image (uint8 grey, dark ink on light paper), the digit
    string, the string with its separators, and each digit's ink columns [left, right)
    in the image."""

    image: np.ndarray
    text: str
    raw: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    #: The columns of every mark that is not a digit (separators, signs).
    mark_spans: list[tuple[int, int]] = field(default_factory=list)
    #: The handwritten row's ink (digits and separators, no underline): (left, top,
    #: right, bottom) in the image's pixels.
    box: tuple[int, int, int, int] = (0, 0, 0, 0)
