"""Cut a field image (several handwritten digits in a row) into candidate readings.

The steps, each tunable in :class:`~recognizer.fields.config.SegmentConfig`:

1. Ink map (:func:`~recognizer.fields.marks.ink_map`): preprocessing's paper/ink rule,
   so dark-on-light and light-on-dark fields come out the same; no ink -> ``BlankImage``.
2. Marks (:func:`~recognizer.fields.marks.marks`): connected components (8-connected,
   ``scipy.ndimage.label``) of the ink above a threshold, specks dropped (more than
   ``max_components`` left -> ``TooManyComponents``), broken strokes merged.
3. Candidate readings, scored later by the model: every mark read whole; every mark at
   least ``pair_ratio`` times the reference height wide cut into 2..k digits
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

from recognizer.fields.config import SegmentConfig
from recognizer.fields.cuts import Cutting, core_cuttings, seam_cuttings
from recognizer.fields.marks import Mark, Piece, gap, ink_map, marks, piece_of, union
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


def _peeled(found: list[Mark], ink: np.ndarray, ref_height: float, cfg: SegmentConfig,
            cut_all: bool, split: SplitFn) -> list[Candidate]:
    """The candidates a learned splitter makes, peeling digits off each wide mark."""
    peel = {i: m for i, m in enumerate(found) if cut_all or m.width >= cfg.peel_ratio * ref_height}
    if not peel:
        return []
    most = {i: min(cfg.max_cut, max(2, round(m.width / (cfg.digit_ratio * ref_height)) + 1))
            for i, m in peel.items()}
    return [Candidate.cut(i, c)
            for i, cuttings in peel_cuttings(peel, ink, most, ref_height, split, cfg).items()
            for c in cuttings]


def _whole_and_cut(found: list[Mark], ink: np.ndarray, ref_height: float, cfg: SegmentConfig,
                   cut_all: bool) -> list[Candidate]:
    """Each mark read whole and, when it is wide, cut by geometry into 2..k digits."""
    out = []
    for i, mark in enumerate(found):
        whole = piece_of(mark, ink, cfg)
        # A mark with too little solid stroke to be a digit may be skipped as noise, so
        # that a chain through every mark always exists.
        out.append(Candidate(i, i + 1, [whole] if whole is not None else []))
        if not (cut_all or mark.width >= cfg.pair_ratio * ref_height):
            continue
        guess = round(mark.width / (cfg.digit_ratio * ref_height))
        for k in range(2, min(cfg.max_cut, max(2, guess + 1)) + 1):
            if mark.width >= cfg.min_cut_width * k:
                out.extend(Candidate.cut(i, c) for c in seam_cuttings(mark, ink, k, cfg))
        out.extend(Candidate.cut(i, c) for c in core_cuttings(mark, ink, cfg))
    return out


def _merged(found: list[Mark], ink: np.ndarray, ref_height: float,
            cfg: SegmentConfig) -> list[Candidate]:
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
            if whole is not None:
                out.append(Candidate(i, j + 1, [whole], merges=j - i))
    return out


def segment(grey: np.ndarray, cfg: SegmentConfig | None = None,
            length: int | None = None, split: SplitFn | None = None) -> Lattice:
    """Cut a greyscale field into a lattice of digit candidates, left to right.

    ``length``, when the field's number of digits is known (a five-digit postal code)
    and there are fewer marks than that, makes every mark a candidate for two digits,
    so that touching pairs narrower than one digit (``11``) can still be cut.
    ``split``, a learned splitter (:mod:`recognizer.splitter`), adds the cuttings it
    makes by peeling the leftmost digit off each wide mark.
    Raises :class:`BlankImage` when there is no ink and :class:`TooManyComponents` when
    there are more separate marks than ``cfg.max_components``.
    """
    cfg = cfg or SegmentConfig()
    cfg.validate()
    ink = ink_map(grey)
    found = marks(ink, cfg)
    # Digit height is steadier than width; taller marks are touching digits at different
    # baselines, so the median height is the reference for the size of one digit.
    ref_height = float(np.median([m.height for m in found]))
    cut_all = length is not None and len(found) < length
    candidates = _peeled(found, ink, ref_height, cfg, cut_all, split) if split is not None else []
    candidates += _whole_and_cut(found, ink, ref_height, cfg, cut_all)
    candidates += _merged(found, ink, ref_height, cfg)
    return Lattice(len(found), candidates, ref_height, cfg.digit_ratio * ref_height)
