"""The tunable numbers of segmentation (:class:`SegmentConfig`): cutting a field into
candidate pieces. How candidates are scored has its own config,
:class:`recognizer.fields.score.ScoreConfig`; how the defaults were chosen is in
docs/fields.md."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentConfig:
    """Tunable numbers of segmentation; the defaults suit scanned forms at 20-100 px digits."""

    #: Ink (scaled so the darkest stroke is 1) at or above this is a stroke pixel.
    ink_threshold: float = 0.3
    #: More components than this (after dropping specks) means the image is not a field.
    max_components: int = 40
    #: Components smaller than this share of the largest one's area (and than
    #: ``min_speck_pixels``) are noise.
    speck_fraction: float = 0.03
    min_speck_pixels: int = 2
    #: Components shorter than this share of the median height, or smaller than this
    #: share of the median area, are fragments of a broken digit ...
    fragment_height: float = 0.5
    fragment_area: float = 0.3
    #: ... and join the nearest component when no farther than this share of the height.
    fragment_gap: float = 0.3
    #: Boxes overlapping by at least this share of the narrower one's width, in x ...
    merge_x_overlap: float = 0.6
    #: ... and by at most this share of the shorter one's height, in y, are one digit;
    #: so are boxes overlapping by at least ``nested_overlap`` both ways (one inside the
    #: other).
    merge_y_overlap: float = 0.35
    nested_overlap: float = 0.95
    #: A component at least this wide (times the reference height, the median height of
    #: the components) may be a touching pair: the model scores it whole and cut.
    pair_ratio: float = 0.75
    #: Typical width / height of one digit, used to guess how many a wide component holds.
    digit_ratio: float = 0.75
    #: At most this many digits are cut out of one component, each at least
    #: ``min_cut_width`` pixels wide.
    max_cut: int = 4
    min_cut_width: int = 3
    #: Alternative cut positions tried (and scored by the model) for a touching pair,
    #: ending more than ``seam_spacing`` columns apart.
    cut_candidates: int = 3
    seam_spacing: int = 2
    #: A pair's cut paths end between these shares of the component's width; a cut into
    #: more pieces ends within ``seam_window`` of a piece's width of its even position.
    pair_band: tuple[float, float] = (0.2, 0.8)
    seam_window: float = 0.3
    #: A cut path pays this much ink per sideways step, so it bends only round strokes,
    #: and this much per pixel, so it stays short.
    seam_drift: float = 0.05
    seam_pixel_cost: float = 0.02
    #: Touching digits also come apart into their stroke cores: the ink above these
    #: thresholds, or the strokes eroded by these many pixels; cores smaller than
    #: ``core_fraction`` of the component are ignored.
    core_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
    core_erosions: tuple[int, ...] = (1, 2, 3)
    core_fraction: float = 0.1
    #: With a learned splitter, the leftmost digit is peeled off every mark at least
    #: ``peel_ratio`` times the reference height wide (narrower than ``pair_ratio``:
    #: a 1 touching its neighbour makes a narrow pair), then off what is left while that
    #: is at least ``peel_width`` times it wide. A pixel the splitter gives at least
    #: ``peel_level`` belongs to the leftmost digit.
    peel_ratio: float = 0.6
    peel_width: float = 0.6
    peel_level: float = 0.5
    #: Up to this many neighbouring components, no farther apart than ``merge_gap`` and
    #: together no wider than ``merge_width`` (times the reference height), are also
    #: scored as one digit: a stroke broken side by side.
    merge_span: int = 3
    merge_gap: float = 0.3
    merge_width: float = 1.1
    #: A piece needs ``min_stroke_pixels`` pixels of solid stroke (ink at least
    #: ``solid_ink``) to be read as a digit.
    min_stroke_pixels: int = 4
    solid_ink: float = 0.5
    #: Marks no taller than ``mark_max`` of the reference height may be separators or
    #: end marks ('.', ',', '-', '='): they are also offered as no digit at all.
    mark_max: float = 0.75
    #: Small marks sitting on the base line beside a digit (dots, commas) are not
    #: fragments of that digit: marks no taller than ``dot_height`` of the reference
    #: height, their bottom within ``dot_reach`` of it from the base line, stay apart.
    dot_height: float = 0.4
    #: A mark no taller than ``stroke_mark`` pen widths is a dash, dot or comma, never a
    #: digit: a digit is many strokes tall. (Without a pen width, only its height
    #: against the other marks' decides.)
    stroke_mark: float = 2.0
    dot_reach: float = 0.3
    #: The reference height is the median height of the marks at least ``tall_share``
    #: as tall as the tallest (dots and dashes would drag it down).
    tall_share: float = 0.5

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting that cannot work."""
        if self.max_components < 1:
            raise ValueError(f"max_components must be >= 1, got {self.max_components}")
        if not 0 < self.ink_threshold < 1:
            raise ValueError(f"ink_threshold must be in (0, 1), got {self.ink_threshold}")
