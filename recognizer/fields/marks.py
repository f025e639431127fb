"""A field's marks: the connected components of its strokes, broken strokes merged,
and the pieces (candidate digits) cut out of them. The ink they are found in is the
cleaned field's (:func:`recognizer.clean.clean`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from recognizer.errors import BlankImage, TooManyComponents
from recognizer.fields.config import SegmentConfig

#: 8-connectivity: diagonal pen strokes stay one component.
EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Piece:
    """One digit candidate: its ink (light on dark, float32 in [0, 1]) and its box in
    the input image as (left, top, right, bottom), right and bottom exclusive."""

    ink: np.ndarray
    box: tuple[int, int, int, int]


@dataclass
class Mark:
    """A connected component of a field's strokes (or several merged): its pixels
    ``mask`` (bool, within its box) and the box's top-left corner in the field."""

    mask: np.ndarray
    top: int
    left: int

    @property
    def bottom(self) -> int:
        return self.top + self.mask.shape[0]

    @property
    def right(self) -> int:
        return self.left + self.mask.shape[1]

    @property
    def height(self) -> int:
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        return self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def region(self, ink: np.ndarray) -> np.ndarray:
        """The field's ink inside this mark's box."""
        return ink[self.top:self.bottom, self.left:self.right]


def _components(ink: np.ndarray, cfg: SegmentConfig) -> list[Mark]:
    strokes = ink >= cfg.ink_threshold
    labels, count = ndimage.label(strokes, structure=EIGHT)
    if count == 0:
        raise BlankImage("no ink found in the field: no stroke is dark enough to segment")
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = areas >= max(float(cfg.min_speck_pixels), cfg.speck_fraction * float(areas.max()))
    if int(keep.sum()) > cfg.max_components:
        raise TooManyComponents(
            f"the field has {int(keep.sum())} separate marks; at most {cfg.max_components} "
            "are read (is this a whole page or a noisy scan rather than one field?)"
        )
    found = []
    for index, where in enumerate(ndimage.find_objects(labels)):
        if where is None or not keep[index]:
            continue
        found.append(Mark(labels[where] == index + 1, where[0].start, where[1].start))
    return found


def union(a: Mark, b: Mark) -> Mark:
    """One mark of two."""
    top, left = min(a.top, b.top), min(a.left, b.left)
    bottom, right = max(a.bottom, b.bottom), max(a.right, b.right)
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    for mark in (a, b):
        mask[mark.top - top:mark.bottom - top, mark.left - left:mark.right - left] |= mark.mask
    return Mark(mask, top, left)


def gap(a: Mark, b: Mark) -> int:
    """Columns of paper between two marks (0 when they overlap in x)."""
    return max(0, b.left - a.right, a.left - b.right)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _belong_together(a: Mark, b: Mark, cfg: SegmentConfig) -> bool:
    """Two pieces of one broken digit: stacked in the same columns, or one inside the other."""
    x_share = _overlap(a.left, a.right, b.left, b.right) / min(a.width, b.width)
    y_share = _overlap(a.top, a.bottom, b.top, b.bottom) / min(a.height, b.height)
    if x_share < cfg.merge_x_overlap:
        return False
    return y_share <= cfg.merge_y_overlap or (x_share >= cfg.nested_overlap
                                              and y_share >= cfg.nested_overlap)


def _merge_broken(found: list[Mark], cfg: SegmentConfig) -> list[Mark]:
    merged = True
    while merged and len(found) > 1:
        merged = False
        found.sort(key=lambda b: b.left)
        for i in range(len(found)):
            for j in range(i + 1, len(found)):
                if found[j].left >= found[i].right:
                    break
                if _belong_together(found[i], found[j], cfg):
                    found[i] = union(found[i], found.pop(j))
                    merged = True
                    break
            if merged:
                break
    return _merge_fragments(found, cfg)


def _dot(mark: Mark, base: float, ref_h: float, cfg: SegmentConfig) -> bool:
    """A small mark at the base line: a dot or a comma, not part of a broken digit."""
    return mark.height <= cfg.dot_height * ref_h and abs(mark.bottom - base) <= cfg.dot_reach * ref_h


def _merge_fragments(found: list[Mark], cfg: SegmentConfig) -> list[Mark]:
    """Small pieces (a detached bar, half a broken loop) join the nearest mark in x when
    it is close; far from everything they stay (a small digit) or, if tiny, go."""
    while len(found) > 1:
        ref_h = float(np.median([b.height for b in found]))
        ref_area = float(np.median([b.area for b in found]))
        base = float(np.median([b.bottom for b in found]))
        small = [i for i, b in enumerate(found)
                 if (b.height < cfg.fragment_height * ref_h or b.area < cfg.fragment_area * ref_area)
                 and not _dot(b, base, ref_h, cfg)]
        merged = False
        for i in sorted(small, key=lambda k: found[k].area):
            frag = found[i]
            j = min((k for k in range(len(found)) if k != i), key=lambda k: gap(found[k], frag))
            if gap(found[j], frag) <= cfg.fragment_gap * ref_h:
                joined = union(found[j], frag)
                found = [b for k, b in enumerate(found) if k not in (i, j)] + [joined]
                merged = True
                break
        if not merged:
            break
    return sorted(found, key=lambda b: (b.left + b.right) / 2)


def marks(ink: np.ndarray, cfg: SegmentConfig) -> list[Mark]:
    """The field's marks left to right: connected components, broken strokes merged.

    Raises :class:`BlankImage` when no stroke is dark enough and
    :class:`TooManyComponents` when there are more than ``cfg.max_components``.
    """
    return _merge_broken(_components(ink, cfg), cfg)


def grown_mask(mask: np.ndarray) -> np.ndarray:
    """A stroke mask grown by a pixel, so that the faint anti-aliased edge comes along."""
    return ndimage.binary_dilation(mask, structure=EIGHT)


def piece_of(mark: Mark, ink: np.ndarray, cfg: SegmentConfig, select: np.ndarray | None = None,
             grown: np.ndarray | None = None) -> Piece | None:
    """The mark's ink (where ``select`` is true, if given), cropped to its ink; None
    when fewer than ``cfg.min_stroke_pixels`` of solid stroke are left (a sliver, not a
    digit). ``grown``: the mark's :func:`grown_mask`, when the caller has it."""
    region = mark.region(ink)
    # Grow the stroke mask by a pixel so the faint anti-aliased edge comes along.
    mask = grown_mask(mark.mask) if grown is None else grown
    if select is not None:
        mask = mask & select
    part = np.where(mask, region, 0.0).astype(np.float32)
    if np.count_nonzero(part >= cfg.solid_ink) < cfg.min_stroke_pixels:
        return None
    rows = np.flatnonzero(part.any(axis=1))
    cols = np.flatnonzero(part.any(axis=0))
    part = part[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    top, left = mark.top + int(rows[0]), mark.left + int(cols[0])
    return Piece(part, (left, top, left + part.shape[1], top + part.shape[0]))
