"""Cutting marks with a learned splitter (:mod:`recognizer.splitter`): peel the leftmost
digit off, again and again; after j peels a mark is read as j + 1 digits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from recognizer.fields.config import SegmentConfig
from recognizer.fields.cuts import Cutting, junction
from recognizer.fields.marks import EIGHT, Mark, grown_mask, piece_of

#: A learned splitter (:class:`recognizer.splitter.Splitter`): given marks' ink, it
#: returns for each the chance, per pixel, that the pixel belongs to the mark's leftmost
#: digit.
SplitFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def peel_cuttings(found: dict[int, Mark], ink: np.ndarray, most: dict[int, int],
                  ref_height: float, split: SplitFn, cfg: SegmentConfig) -> dict[int, list[Cutting]]:
    """The cuttings of marks ``found[i]`` by peeling, each into at most ``most[i]``
    digits; one splitter call per round for all the marks."""
    most = dict(most)
    owners = {i: np.zeros(m.mask.shape, np.int32) for i, m in found.items()}
    rests = {i: m.mask.copy() for i, m in found.items()}
    grown = {i: grown_mask(m.mask) for i, m in found.items()}
    out: dict[int, list[Cutting]] = {i: [] for i in found}
    for k in range(2, max(most.values(), default=1) + 1):
        active = [i for i in found
                  if k <= most[i] and np.count_nonzero(rests[i]) >= 2 * cfg.min_stroke_pixels]
        boxes, regions = [], []
        for i in active:
            rest = rests[i]
            rows, cols = np.flatnonzero(rest.any(1)), np.flatnonzero(rest.any(0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            boxes.append(box)
            regions.append(np.where(grown_mask(rest[box]), found[i].region(ink)[box], 0.0))
        for i, box, p in zip(active, boxes, split(regions), strict=True):
            cutting = _peel_once(found[i], ink, rests[i], owners[i], grown[i], box, p, k, cfg)
            if cutting is not None:
                out[i].append(cutting)
            cols = np.flatnonzero(rests[i].any(0))
            if not cols.size or cols[-1] - cols[0] + 1 < cfg.peel_width * ref_height:
                most[i] = k  # what is left is one digit at most
    return out


def _peel_once(mark: Mark, ink: np.ndarray, rest: np.ndarray, owner: np.ndarray,
               grown: np.ndarray, box: tuple[slice, slice], leftmost: np.ndarray, k: int,
               cfg: SegmentConfig) -> Cutting | None:
    """Take the leftmost digit (where the splitter's map ``leftmost`` says so) off
    ``rest`` as digit k - 1 of ``owner`` (both updated in place): the mark as k digits,
    or None when a piece is too small to be one."""
    first = np.zeros_like(rest)
    first[box] = rest[box] & (leftmost >= cfg.peel_level)
    owner[first] = k - 1
    rest &= ~first
    full = owner.copy()
    full[rest] = k
    full = _tidy(full, mark.mask)
    spread = _spread(full)
    pieces = [piece_of(mark, ink, cfg, spread == j, grown) for j in range(1, k + 1)]
    if any(piece is None for piece in pieces):
        return None
    return Cutting(pieces, junction(full, mark.mask))


def _tidy(owner: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each digit keeps its largest connected part; stray islands go to the nearest digit."""
    kept = np.zeros_like(owner)
    for k in np.unique(owner[mask]):
        if k == 0:
            continue
        parts, _ = ndimage.label(owner == k, structure=EIGHT)
        sizes = np.bincount(parts.ravel())[1:]
        kept[parts == int(sizes.argmax()) + 1] = k
    return np.where(mask, _spread(kept), 0)


def _spread(owner: np.ndarray) -> np.ndarray:
    """Every pixel takes the label of the nearest labelled pixel."""
    _, (iy, ix) = ndimage.distance_transform_edt(owner == 0, return_indices=True)
    return owner[iy, ix]
