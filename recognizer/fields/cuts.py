"""Geometric cuts of a wide mark into digits: least-ink seams from top to bottom, and
the mark's stroke cores coming apart at a faint or thin junction.

Each way to cut a mark is a :class:`Cutting`: its pieces left to right and how many
stroke pixels the cut severs (the reader's priors weigh both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from recognizer.fields.config import SegmentConfig
from recognizer.fields.marks import EIGHT, Mark, Piece, grown_mask, piece_of


@dataclass
class Cutting:
    """One way to cut a mark: its ``pieces`` (digit candidates) and ``junction``, the
    stroke pixels on either side of a cut that end up in different pieces."""

    pieces: list[Piece]
    junction: int


def junction(owner: np.ndarray, mask: np.ndarray) -> int:
    """Stroke pixels next to a stroke pixel of another piece (4-neighbours)."""
    across = np.zeros_like(mask)
    horizontal = mask[:, 1:] & mask[:, :-1] & (owner[:, 1:] != owner[:, :-1])
    vertical = mask[1:] & mask[:-1] & (owner[1:] != owner[:-1])
    across[:, 1:] |= horizontal
    across[:, :-1] |= horizontal
    across[1:] |= vertical
    across[:-1] |= vertical
    return int(np.count_nonzero(across))


def _seams(cost: np.ndarray, lo: int, hi: int, cfg: SegmentConfig, count: int) -> list[np.ndarray]:
    """Up to ``count`` cheapest top-to-bottom 8-connected paths through ``cost`` within
    columns [lo, hi), ending at different columns: one column per row each."""
    h = cost.shape[0]
    band = cost[:, lo:hi]
    w = band.shape[1]
    if w < 1:
        return []
    drift = cfg.seam_drift
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
        if all(abs(c - o) > cfg.seam_spacing for o in chosen):
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


def _seam_paths(cost: np.ndarray, k: int, cfg: SegmentConfig) -> list[list[np.ndarray]]:
    """The sets of k - 1 cut paths to try: for a pair several paths, for more digits the
    cheapest path near each evenly spaced position (none when they would cross)."""
    w = cost.shape[1]
    if k == 2:
        lo, hi = cfg.pair_band
        return [[p] for p in _seams(cost, int(lo * w), int(np.ceil(hi * w)), cfg, cfg.cut_candidates)]
    paths: list[np.ndarray] = []
    for j in range(1, k):
        centre = j * w / k
        reach = cfg.seam_window * w / k
        found = _seams(cost, int(centre - reach), int(np.ceil(centre + reach)), cfg, 1)
        if not found or (paths and np.any(found[0] <= paths[-1])):
            return []
        paths.append(found[0])
    return [paths]


def seam_cuttings(mark: Mark, ink: np.ndarray, k: int, cfg: SegmentConfig) -> list[Cutting]:
    """Cut a mark into k pieces along least-ink paths from top to bottom. A path bends
    round the strokes, so digits that interlock (a 1 in the open side of a 4) come apart
    where a straight cut would slice one of them."""
    w = mark.width
    region = np.where(mark.mask, mark.region(ink), 0.0)
    # Crossing ink costs its darkness; a small cost per pixel keeps the path short.
    cost = region.astype(np.float32) + cfg.seam_pixel_cost
    grown = grown_mask(mark.mask)
    xs = np.arange(w)[None, :]
    out = []
    for paths in _seam_paths(cost, k, cfg):
        # Pixel (y, x) belongs to the piece of the number of paths left of it.
        owner = np.sum([xs > p[:, None] for p in paths], axis=0)
        pieces = [piece_of(mark, ink, cfg, owner == j, grown) for j in range(k)]
        if all(p is not None for p in pieces):
            out.append(Cutting(pieces, junction(owner, mark.mask)))
    return out


def core_cuttings(mark: Mark, ink: np.ndarray, cfg: SegmentConfig) -> list[Cutting]:
    """Cut a mark where its digits only touch: the stroke cores (the ink above a higher
    threshold, or the mask eroded) come apart at a faint or thin junction; every pixel
    goes to the nearest core. Unlike a cut line this follows any shape, however far the
    digits reach into each other's space."""
    region = np.where(mark.mask, mark.region(ink), 0.0)
    cores = [region >= t for t in cfg.core_thresholds]
    cores += [ndimage.binary_erosion(mark.mask, iterations=n) for n in cfg.core_erosions]
    grown = grown_mask(mark.mask)
    seen: set[bytes] = set()
    out = []
    for core in cores:
        labels, count = ndimage.label(core, structure=EIGHT)
        if count < 2:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        ranked = np.argsort(-areas) + 1
        significant = int(np.count_nonzero(areas >= cfg.core_fraction * mark.area))
        # The k largest cores seed k digits; smaller ones (a stroke end that thinned
        # out) go with whichever seed is nearest.
        for k in range(2, min(significant, cfg.max_cut) + 1):
            seeds = np.where(np.isin(labels, ranked[:k]), labels, 0)
            _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
            owner = seeds[iy, ix]
            key = owner[mark.mask].tobytes()
            if key in seen:
                continue
            seen.add(key)
            pieces = [piece_of(mark, ink, cfg, owner == lab, grown) for lab in ranked[:k]]
            if all(p is not None for p in pieces):
                pieces.sort(key=lambda p: p.box[0] + p.box[2])
                out.append(Cutting(pieces, junction(owner, mark.mask)))
    return out
