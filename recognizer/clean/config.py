"""The tunable numbers of form cleaning (:class:`CleanConfig`) and its result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CleanConfig:
    """Tunable numbers of form cleaning; the defaults suit scans of 8-100 px digits."""

    #: The background is closed by a disc this many stroke widths across (at least
    #: ``min_kernel`` pixels), so that strokes vanish from it and wider dark areas stay.
    background_strokes: float = 3.0
    min_kernel: int = 7
    #: Background darker than this share of the paper's level, reaching the image's
    #: edge, is a mask or a scanner border.
    mask_level: float = 0.4
    #: Ink at or above this (after the strongest strokes are scaled to 1) is stroke ...
    stroke_level: float = 0.35
    #: ... and when strokes cover more than ``dense_share`` of ``dense_cover`` of the
    #: image's tiles (a grid of at most ``dense_tiles`` a side, tiles at least
    #: ``min_tile`` pixels), a printed pattern passes for ink: the level then rises to
    #: Otsu's threshold between pattern and handwriting.
    dense_share: float = 0.1
    #: ... and more than ``pattern_share`` of the strokes are fainter than
    #: ``pattern_level`` (a pattern is lighter than the pen; handwriting's faint pixels
    #: are only its strokes' edges).
    pattern_level: float = 0.65
    pattern_share: float = 0.5
    dense_cover: float = 0.25
    dense_tiles: int = 4
    min_tile: int = 16
    #: Stroke ridges wider than 4% of the image's smaller side, and than this many
    #: pixels, are masks or blots: the pen's width is measured without them.
    min_ridge_cap: float = 4.0
    #: Faint ink, down to this level, still counts when lines are traced.
    faint_level: float = 0.2
    #: A row whose own strongest strokes are fainter than this (print or a border set the
    #: ink's scale) is scaled up to its own strokes.
    faint_row: float = 0.7
    #: A ruling line runs at least this share of the image's width (horizontal) or
    #: height (vertical), and at least ``line_strokes`` stroke widths (digits' strokes
    #: are rarely that long) or, in an image shorter than that, ``line_span`` of it.
    line_width_share: float = 0.75
    line_height_share: float = 0.8
    line_strokes: float = 20.0
    line_span: float = 0.95
    #: Gaps up to ``line_gap`` pixels in a dashed or broken line are bridged, and in a
    #: vertical line up to ``line_gap_share`` of the height (a row of digits has gaps
    #: between its horizontal strokes, not between strokes stacked over each other); a
    #: line is inked along ``line_coverage`` of its length.
    line_gap: int = 5
    line_gap_share: float = 0.08
    line_coverage: float = 0.5
    #: A vertical rule entering the image from its top or bottom edge (within
    #: ``edge_reach`` pixels) is a line at ``edge_line_share`` of the height already, and
    #: at least ``line_strokes`` stroke widths: a cell's border cut short by the crop.
    edge_line_share: float = 0.4
    edge_reach: int = 2
    #: A line's ink reaches at most this many pixels either side of its core (printed
    #: rules are thin; a wider band would take strokes along with them).
    line_reach: int = 3
    #: The row of handwriting grows by marks overlapping its band by ``row_overlap`` of
    #: the smaller height, at most ``row_gap`` band heights away, at most ``row_tallest``
    #: band heights tall.
    row_overlap: float = 0.3
    row_gap: float = 1.2
    row_tallest: float = 2.5
    #: Marks touching the image's edge weigh this much less when the row is chosen
    #: (they are mostly cut-off pieces of the next cell).
    edge_weight: float = 0.3
    #: Flat marks (at least ``underline_flat`` times as wide as tall: dashes, ditto
    #: marks, underlines, end-of-amount strokes) weigh this much less when the row is
    #: chosen: a long dash outweighs a small number by its ink, never by its shape.
    flat_weight: float = 0.1
    #: Marks smaller than this share of the largest one (or than ``min_mark_pixels``)
    #: are specks.
    speck_share: float = 0.02
    min_mark_pixels: int = 4
    #: An underline is a flat run of stroke at least ``underline_length`` digit heights
    #: long; a separate flat mark that long and at most ``underline_height`` of a digit
    #: tall goes whole.
    underline_length: float = 1.3
    underline_height: float = 0.45
    #: Underlines lie below the row's base line, or above it by at most this share of a
    #: digit's height.
    underline_reach: float = 0.3
    #: A flat run touching the digits is an underline when it reaches this share of a
    #: digit's height beyond them, left or right.
    underline_overhang: float = 0.2
    #: A separate flat mark wholly under the row (its top at or below the digits' base
    #: line) is an underline once it is ``underline_short`` of a digit's height long and
    #: ``underline_flat`` times as wide as tall: a short stroke under one digit.
    underline_short: float = 0.5
    underline_flat: float = 3.0
    #: A single digit's end mark (a dot, comma or dash after it) is at most this share
    #: of the digit's height tall.
    end_mark_height: float = 0.4
    #: Paper kept round the row when it is cropped, in band heights (at least
    #: ``min_margin`` pixels).
    margin: float = 0.25
    min_margin: int = 4
    #: A single-digit image is cleaned when more than this share of its border is ink
    #: (lines, masks and backgrounds reach the edge; a clean scan's border is paper),
    #: unless it is smaller than ``min_clean_size`` a side (a normalised or postal-size
    #: digit filling its box, which touches the edge and holds nothing else).
    border_ink: float = 0.02
    min_clean_size: int = 32

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        for name in ("stroke_level", "faint_level", "faint_row", "mask_level", "line_width_share",
                     "line_height_share", "line_coverage", "edge_line_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.min_kernel < 3:
            raise ValueError(f"min_kernel must be at least 3, got {self.min_kernel}")


@dataclass
class Cleaned:
    """A cleaned field: ``ink`` (float32, 0 paper .. 1 strongest stroke) cropped to its
    row of handwriting, the crop's (left, top) in the input image, and the pen's stroke
    width in pixels."""

    ink: np.ndarray
    origin: tuple[int, int]
    stroke_width: float
