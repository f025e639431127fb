"""Cut a field image (several handwritten digits in a row) into one piece per digit.

The steps, each tunable in :class:`SegmentConfig`:

1. Ink map: paper is what most of the border is (as in :func:`recognizer.preprocess.normalize`),
   so dark-on-light and light-on-dark fields come out the same; no ink -> ``BlankImage``.
2. Connected components (8-connected, ``scipy.ndimage.label``) of the ink above a
   threshold. Specks far smaller than the largest component are paper noise and dropped;
   more than ``max_components`` left -> ``TooManyComponents``.
3. Merging broken strokes: components stacked over each other (overlapping strongly in
   x but not in y), one inside the other, and small fragments join their neighbour.
4. Splitting touching digits: a component much wider than a digit of its height holds
   several digits. It is cut at column-projection minima; for two digits several
   candidate cuts are kept as alternatives and the reader keeps the one the model is
   most confident about.

Segmentation never runs the model: it returns :class:`Slot` objects holding one or
more alternative cuttings, so the reader can score every candidate of every field in a
single batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from recognizer.errors import BlankImage, TooManyComponents
from recognizer.preprocess import INK_THRESHOLD, MIN_CONTRAST

#: 8-connectivity: diagonal pen strokes stay one component.
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SegmentConfig:
    """Tunable numbers of segmentation; the defaults suit scanned forms at 20-100 px digits."""

    #: Ink (scaled so the darkest stroke is 1) at or above this is a stroke pixel.
    ink_threshold: float = 0.3
    #: More components than this (after dropping specks) means the image is not a field.
    max_components: int = 40
    #: Components smaller than this share of the largest one's area are noise.
    speck_fraction: float = 0.03
    #: Components shorter than this share of the median height, or smaller than this
    #: share of the median area, are fragments of a broken digit ...
    fragment_height: float = 0.5
    fragment_area: float = 0.3
    #: ... and join the nearest component when no farther than this share of the height.
    fragment_gap: float = 0.3
    #: Boxes overlapping by at least this share of the narrower one's width, in x ...
    merge_x_overlap: float = 0.6
    #: ... and by at most this share of the shorter one's height, in y, are one digit.
    merge_y_overlap: float = 0.35
    #: A component wider than this times the reference height may hold several digits:
    #: the model decides between reading it whole and cut ...
    split_ratio: float = 1.0
    #: ... and wider than this it surely does.
    force_split_ratio: float = 1.6
    #: Typical width / height of one digit, used to guess how many a wide component holds.
    digit_ratio: float = 0.75
    #: Alternative cut positions tried (and scored by the model) for a touching pair.
    cut_candidates: int = 3
    #: Leans (dx per dy) of the cut lines tried; handwriting leans either way.
    cut_slopes: tuple[float, ...] = (-0.3, -0.15, 0.0, 0.15, 0.3)

    def validate(self) -> None:
        if self.max_components < 1:
            raise ValueError(f"max_components must be >= 1, got {self.max_components}")
        if not 0 < self.ink_threshold < 1:
            raise ValueError(f"ink_threshold must be in (0, 1), got {self.ink_threshold}")


@dataclass
class Piece:
    """One digit candidate: its ink (light on dark, float32 in [0, 1]) and its box in
    the input image as (left, top, right, bottom), right and bottom exclusive."""

    ink: np.ndarray
    box: tuple[int, int, int, int]


@dataclass
class Slot:
    """One place in the field: alternative cuttings of the same ink, each a list of
    pieces from left to right. Most slots have one cutting of one piece."""

    cuttings: list[list[Piece]] = field(default_factory=list)


@dataclass
class _Blob:
    """A component (or merged components) during segmentation."""

    mask: np.ndarray  # bool, the blob's pixels within its box
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


def ink_map(grey: np.ndarray) -> np.ndarray:
    """Greyscale image -> float32 ink in [0, 1] (1 = darkest stroke), either polarity.

    Raises :class:`BlankImage` when no stroke stands out from the paper.
    """
    a = grey.astype(np.float32, copy=False)
    border = np.concatenate((a[0], a[-1], a[1:-1, 0], a[1:-1, -1]))
    paper = float(np.median(border))
    # Same rule as preprocess.normalize, so a one-digit field reads as a digit would.
    ink = paper - a if paper > 127.5 else a - paper
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise BlankImage(
            f"no ink found in the field: the darkest stroke differs from the paper by "
            f"{peak:.0f} grey levels (at least {MIN_CONTRAST:.0f} needed)"
        )
    ink *= 1.0 / peak
    ink[ink < INK_THRESHOLD] = 0.0
    return ink


def _components(ink: np.ndarray, cfg: SegmentConfig) -> list[_Blob]:
    strokes = ink >= cfg.ink_threshold
    labels, count = ndimage.label(strokes, structure=_EIGHT)
    if count == 0:
        raise BlankImage("no ink found in the field: no stroke is dark enough to segment")
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = areas >= max(2.0, cfg.speck_fraction * float(areas.max()))
    if int(keep.sum()) > cfg.max_components:
        raise TooManyComponents(
            f"the field has {int(keep.sum())} separate marks; at most {cfg.max_components} "
            "are read (is this a whole page or a noisy scan rather than one field?)"
        )
    blobs = []
    for index, where in enumerate(ndimage.find_objects(labels)):
        if where is None or not keep[index]:
            continue
        blobs.append(_Blob(labels[where] == index + 1, where[0].start, where[1].start))
    return blobs


def _union(a: _Blob, b: _Blob) -> _Blob:
    top, left = min(a.top, b.top), min(a.left, b.left)
    bottom, right = max(a.bottom, b.bottom), max(a.right, b.right)
    mask = np.zeros((bottom - top, right - left), dtype=bool)
    for blob in (a, b):
        mask[blob.top - top:blob.bottom - top, blob.left - left:blob.right - left] |= blob.mask
    return _Blob(mask, top, left)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _belong_together(a: _Blob, b: _Blob, cfg: SegmentConfig) -> bool:
    """Two pieces of one broken digit: stacked in the same columns, or one inside the other."""
    x_share = _overlap(a.left, a.right, b.left, b.right) / min(a.width, b.width)
    y_share = _overlap(a.top, a.bottom, b.top, b.bottom) / min(a.height, b.height)
    if x_share < cfg.merge_x_overlap:
        return False
    return y_share <= cfg.merge_y_overlap or (x_share >= 0.95 and y_share >= 0.95)


def _merge_broken(blobs: list[_Blob], cfg: SegmentConfig) -> list[_Blob]:
    merged = True
    while merged and len(blobs) > 1:
        merged = False
        blobs.sort(key=lambda b: b.left)
        for i in range(len(blobs)):
            for j in range(i + 1, len(blobs)):
                if blobs[j].left >= blobs[i].right:
                    break
                if _belong_together(blobs[i], blobs[j], cfg):
                    blobs[i] = _union(blobs[i], blobs.pop(j))
                    merged = True
                    break
            if merged:
                break
    return _merge_fragments(blobs, cfg)


def _merge_fragments(blobs: list[_Blob], cfg: SegmentConfig) -> list[_Blob]:
    """Small pieces (a detached bar, half a broken loop) join the nearest blob in x when
    it is close; far from everything they stay (a small digit) or, if tiny, go."""
    while len(blobs) > 1:
        ref_h = float(np.median([b.height for b in blobs]))
        ref_area = float(np.median([b.area for b in blobs]))
        small = [i for i, b in enumerate(blobs)
                 if b.height < cfg.fragment_height * ref_h or b.area < cfg.fragment_area * ref_area]
        merged = False
        for i in sorted(small, key=lambda k: blobs[k].area):
            frag = blobs[i]

            def gap(b: _Blob, frag: _Blob = frag) -> int:
                return max(b.left - frag.right, frag.left - b.right, 0)

            j = min((k for k in range(len(blobs)) if k != i), key=lambda k: gap(blobs[k]))
            if gap(blobs[j]) <= cfg.fragment_gap * ref_h:
                joined = _union(blobs[j], frag)
                blobs = [b for k, b in enumerate(blobs) if k not in (i, j)] + [joined]
                merged = True
                break
        if not merged:
            break
    return sorted(blobs, key=lambda b: (b.left + b.right) / 2)


def _cut_positions(profile: np.ndarray, k: int, cfg: SegmentConfig) -> list[list[int]]:
    """Alternative cut positions (lists of k-1 columns) in a blob's ink profile."""
    w = len(profile)
    smooth = np.convolve(profile, np.ones(3) / 3.0, mode="same")
    if k == 2:
        lo, hi = int(0.25 * w), int(np.ceil(0.75 * w))
        window = smooth[lo:hi]
        if len(window) < 3:
            return []
        # Local minima first (where two digits meet the ink thins), lowest first.
        minima = [c for c in range(1, len(window) - 1)
                  if window[c] <= window[c - 1] and window[c] <= window[c + 1]]
        ranked = sorted(minima, key=lambda c: window[c]) + [int(np.argmin(window)), len(window) // 2]
        cuts: list[int] = []
        for c in ranked:
            col = lo + c
            if all(abs(col - other) > 2 for other in cuts):
                cuts.append(col)
            if len(cuts) == cfg.cut_candidates:
                break
        return [[c] for c in cuts]
    step = w / k
    cuts = []
    for j in range(1, k):
        lo = max(1, int(j * step - 0.3 * step))
        hi = min(w - 1, int(j * step + 0.3 * step) + 1)
        if hi <= lo:
            return []
        cuts.append(lo + int(np.argmin(smooth[lo:hi])))
    return [cuts]


def _piece(blob: _Blob, ink: np.ndarray, select: np.ndarray | None = None) -> Piece | None:
    """The blob's ink (where ``select`` is true, if given), cropped to its ink."""
    region = ink[blob.top:blob.bottom, blob.left:blob.right]
    # Grow the stroke mask by a pixel so the faint anti-aliased edge comes along.
    mask = ndimage.binary_dilation(blob.mask, structure=_EIGHT)
    if select is not None:
        mask &= select
    part = np.where(mask, region, 0.0).astype(np.float32)
    rows = np.flatnonzero(part.any(axis=1))
    cols = np.flatnonzero(part.any(axis=0))
    if rows.size == 0:
        return None
    part = part[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    top, left = blob.top + int(rows[0]), blob.left + int(cols[0])
    return Piece(part, (left, top, left + part.shape[1], top + part.shape[0]))


def _cuttings(blob: _Blob, ink: np.ndarray, k: int, slope: float,
              cfg: SegmentConfig) -> list[list[Piece]]:
    """Cut a blob into k pieces along parallel lines leaning by ``slope`` (dx per dy),
    because touching handwritten digits lean and a vertical cut would slice one."""
    h, w = blob.mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    # u is the column a pixel would have after shearing the lean away.
    u = np.round(xs - slope * (ys - (h - 1) / 2.0)).astype(np.int64)
    u -= u.min()
    profile = np.bincount(u[blob.mask], minlength=int(u.max()) + 1).astype(np.float32)
    first = np.flatnonzero(profile)
    profile = profile[first[0]:first[-1] + 1]
    out = []
    for cuts in _cut_positions(profile, k, cfg):
        edges = [-(10 ** 9), *(first[0] + c for c in cuts), 10 ** 9]
        pieces = [_piece(blob, ink, (u >= a) & (u < b)) for a, b in zip(edges, edges[1:], strict=False)]
        if all(p is not None and p.ink.size >= 4 for p in pieces):
            out.append(pieces)
    return out


def _slot(blob: _Blob, ink: np.ndarray, ref_height: float, cfg: SegmentConfig,
          may_hold_two: bool = False) -> Slot:
    height = max(float(blob.height), ref_height)
    whole = _piece(blob, ink)
    if blob.width <= cfg.split_ratio * height and not may_hold_two:
        return Slot([[whole]] if whole else [])
    guess = max(2, round(blob.width / (cfg.digit_ratio * height)))
    cuttings = [[whole]] if whole and blob.width <= cfg.force_split_ratio * height else []
    # Around the guessed count and lean, every cutting is a candidate for the model.
    for k in sorted({max(2, guess - 1), guess, guess + 1}):
        if blob.width < 3 * k:
            continue
        for slope in cfg.cut_slopes:
            cuttings.extend(_cuttings(blob, ink, k, slope, cfg))
    if not cuttings and whole:
        cuttings = [[whole]]
    return Slot(cuttings)


def segment(grey: np.ndarray, cfg: SegmentConfig | None = None,
            length: int | None = None) -> list[Slot]:
    """Cut a greyscale field into slots of digit candidates, left to right.

    ``length``, when the field's number of digits is known (a five-digit postal code),
    makes the widest marks candidates for two digits while there are fewer marks than
    digits, so that touching pairs narrower than the usual threshold can still be cut.
    Raises :class:`BlankImage` when there is no ink and :class:`TooManyComponents` when
    there are more separate marks than ``cfg.max_components``.
    """
    cfg = cfg or SegmentConfig()
    cfg.validate()
    ink = ink_map(grey)
    blobs = _merge_broken(_components(ink, cfg), cfg)
    # Digit height is steadier than width; taller blobs are touching digits at different
    # baselines, so the median height is the reference for how many digits a blob holds.
    ref_height = float(np.median([b.height for b in blobs]))
    missing = max(0, (length or 0) - len(blobs))
    widest = set(sorted(range(len(blobs)), key=lambda i: -blobs[i].width / blobs[i].height)[:missing])
    slots = [_slot(b, ink, ref_height, cfg, i in widest) for i, b in enumerate(blobs)]
    return [s for s in slots if s.cuttings]
