"""Cut a field image (several handwritten digits in a row) into candidate readings.

The steps, each tunable in :class:`~recognizer.fields.config.SegmentConfig`:

1. Cleaning (:func:`recognizer.clean.clean`): the handwriting's ink, without the
   form's background, lines, masks and underlines, cropped to its row; no ink ->
   ``BlankImage``, only lines or background -> ``NoDigits``.
2. Marks (:func:`~recognizer.fields.marks.marks`): connected components (8-connected,
   ``scipy.ndimage.label``) of the ink above a threshold, specks dropped (more than
   ``max_components`` left -> ``TooManyComponents``), broken strokes merged.
3. Candidate readings, scored later by the model: every mark read whole; every small
   mark also read as no digit (a separator or end mark); every mark at least
   ``pair_ratio`` times the reference height wide cut into 2..k digits
   (:mod:`~recognizer.fields.cuts`: least-ink seams, stroke cores) and, with a learned
   splitter, peeled (:mod:`~recognizer.fields.peel`); and runs of up to ``merge_span``
   close marks read as one digit (a stroke broken side by side).

Segmentation never runs the digit model: it returns a :class:`Lattice` of
:class:`Candidate` readings, so the reader can score every candidate of every field in
a single batch and pick the best chain (:mod:`recognizer.fields.read`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recognizer.clean import CleanConfig, clean
from recognizer.fields.config import SegmentConfig
from recognizer.fields.cuts import Cutting, core_cuttings, seam_cuttings
from recognizer.fields.marks import Mark, Piece, gap, marks, piece_of, union
from recognizer.fields.peel import SplitFn, peel_cuttings


@dataclass
class Candidate:
    """One way to read marks ``start`` to ``end`` (exclusive, left to right) of a
    field: as the digits in ``pieces``, cut out of one mark (``cuts``) or joined from
    several (``merges``)."""

    start: int
    end: int
    pieces: list[Piece]
    cuts: int = 0
    merges: int = 0
    #: Stroke pixels on either side of a cut that end up in different pieces.
    junction: int = 0
    #: The mark read as no digit (a separator, an end mark): its one piece is scored for
    #: how unlike a digit it is, and gives no digit.
    mark: bool = False

    @property
    def digits(self) -> int:
        """How many digits this reading gives."""
        return 0 if self.mark else len(self.pieces)

    @classmethod
    def cut(cls, index: int, cutting: Cutting) -> Candidate:
        """Mark ``index`` read as the pieces of ``cutting``."""
        return cls(index, index + 1, cutting.pieces, cuts=len(cutting.pieces) - 1,
                   junction=cutting.junction)


@dataclass
class Lattice:
    """A segmented field: ``size`` marks left to right and every candidate reading of
    them. A reading of the field is a chain of candidates from 0 to ``size``; every
    mark has at least the candidate of itself read whole. ``ref_height`` is the height
    of one digit (the median mark height), ``digit_width`` the width of one
    (``digit_ratio`` times it), for the priors on piece sizes and counts."""

    size: int
    candidates: list[Candidate]
    ref_height: float
    digit_width: float
    #: The row the digits stand on (the median bottom of the marks), in input pixels.
    baseline: float = 0.0


def _peeled(found: list[Mark], ink: np.ndarray, ref_height: float, cfg: SegmentConfig,
            cut_all: bool, split: SplitFn, pen: float | None) -> list[Candidate]:
    """The candidates a learned splitter makes, peeling digits off each wide mark."""
    peel = {i: m for i, m in enumerate(found)
            if (cut_all or m.width >= cfg.peel_ratio * ref_height) and not _stroke_only(m, pen, cfg)}
    if not peel:
        return []
    most = {i: min(cfg.max_cut, max(2, round(m.width / (cfg.digit_ratio * ref_height)) + 1))
            for i, m in peel.items()}
    return [Candidate.cut(i, c)
            for i, cuttings in peel_cuttings(peel, ink, most, ref_height, split, cfg).items()
            for c in cuttings]


def _stroke_only(mark: Mark, pen: float | None, cfg: SegmentConfig) -> bool:
    """Whether a mark is a single stroke's height (a dash, a dot): never a digit."""
    return pen is not None and mark.height <= cfg.stroke_mark * pen


def _whole_and_cut(found: list[Mark], ink: np.ndarray, ref_height: float, cfg: SegmentConfig,
                   cut_all: bool, pen: float | None) -> list[Candidate]:
    """Each mark read whole and, when it is wide, cut by geometry into 2..k digits; a
    mark one stroke tall is read as no digit only."""
    out = []
    for i, mark in enumerate(found):
        whole = piece_of(mark, ink, cfg)
        if _stroke_only(mark, pen, cfg):
            out.append(Candidate(i, i + 1, [whole], mark=True) if whole is not None
                       else Candidate(i, i + 1, []))
            continue
        # A mark with too little solid stroke to be a digit may be skipped as noise, so
        # that a chain through every mark always exists.
        out.append(Candidate(i, i + 1, [whole] if whole is not None else []))
        if whole is not None and mark.height <= cfg.mark_max * ref_height:
            out.append(Candidate(i, i + 1, [whole], mark=True))
        if not (cut_all or mark.width >= cfg.pair_ratio * ref_height):
            continue
        guess = round(mark.width / (cfg.digit_ratio * ref_height))
        for k in range(2, min(cfg.max_cut, max(2, guess + 1)) + 1):
            if mark.width >= cfg.min_cut_width * k:
                out.extend(Candidate.cut(i, c) for c in seam_cuttings(mark, ink, k, cfg))
        out.extend(Candidate.cut(i, c) for c in core_cuttings(mark, ink, cfg))
    return out


def _merged(found: list[Mark], ink: np.ndarray, ref_height: float,
            cfg: SegmentConfig, pen: float | None) -> list[Candidate]:
    """Runs of close marks read as one digit (a digit broken side by side)."""
    out = []
    for i in range(len(found)):
        joined = found[i]
        for j in range(i + 1, min(i + cfg.merge_span, len(found))):
            if gap(found[j - 1], found[j]) > cfg.merge_gap * ref_height:
                break
            joined = union(joined, found[j])
            if joined.width > cfg.merge_width * ref_height:
                break
            whole = piece_of(joined, ink, cfg)
            if whole is not None and not _stroke_only(joined, pen, cfg):
                out.append(Candidate(i, j + 1, [whole], merges=j - i))
    return out


def segment(grey: np.ndarray, cfg: SegmentConfig | None = None, length: int | None = None,
            split: SplitFn | None = None, cleaning: CleanConfig | None = None) -> Lattice:
    """Clean a greyscale field and cut it into a lattice of digit candidates, left to right.

    ``length``, when the field's number of digits is known (a five-digit postal code)
    and there are fewer marks than that, makes every mark a candidate for two digits,
    so that touching pairs narrower than one digit (``11``) can still be cut.
    ``split``, a learned splitter (:mod:`recognizer.splitter`), adds the cuttings it
    makes by peeling the leftmost digit off each wide mark. Piece boxes are in the input
    image's pixels.
    Raises :class:`BlankImage` when there is no ink, :class:`NoDigits` when there are
    only lines or background, and :class:`TooManyComponents` when there are more
    separate marks than ``cfg.max_components``.
    """
    cleaned = clean(grey, cleaning)
    return segment_ink(cleaned.ink, cfg, length, split, cleaned.origin, cleaned.stroke_width)


def _reference_height(found: list[Mark], cfg: SegmentConfig, pen: float | None) -> float:
    """The height of one digit: digit height is steadier than width; taller marks are
    touching digits at different baselines, so the median height of the marks is the
    reference, dots and dashes left out."""
    heights = [m.height for m in found if not _stroke_only(m, pen, cfg)] or [
        max(m.height for m in found)]
    return float(np.median([h for h in heights if h >= cfg.tall_share * max(heights)]))


def _shifted(candidates: list[Candidate], origin: tuple[int, int]) -> None:
    """Move the candidates' piece boxes by ``origin`` (into the input image's pixels)."""
    dx, dy = origin
    if dx or dy:
        for cand in candidates:
            for p in cand.pieces:
                left, top, right, bottom = p.box
                p.box = (left + dx, top + dy, right + dx, bottom + dy)


def segment_ink(ink: np.ndarray, cfg: SegmentConfig | None = None, length: int | None = None,
                split: SplitFn | None = None, origin: tuple[int, int] = (0, 0),
                pen: float | None = None) -> Lattice:
    """:func:`segment` for a cleaned ink map (float32, 0 paper .. 1 strongest stroke);
    ``origin``: where the map's (0, 0) lies in the input image; ``pen``: the stroke
    width in pixels, when known."""
    cfg = cfg or SegmentConfig()
    cfg.validate()
    found = marks(ink, cfg)
    ref_height = _reference_height(found, cfg, pen)
    cut_all = length is not None and len(found) < length
    candidates = _peeled(found, ink, ref_height, cfg, cut_all, split, pen) if split is not None else []
    candidates += _whole_and_cut(found, ink, ref_height, cfg, cut_all, pen)
    candidates += _merged(found, ink, ref_height, cfg, pen)
    _shifted(candidates, origin)
    baseline = float(np.median([m.bottom for m in found])) + origin[1]
    return Lattice(len(found), candidates, ref_height, cfg.digit_ratio * ref_height, baseline)
