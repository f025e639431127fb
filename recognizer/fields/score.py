"""Scoring candidate readings and choosing a field's best chain of them.

A candidate's score (in nats) is the model's belief in each of its digits plus priors on
piece sizes, cuts, merges and piece counts (:class:`ScoreConfig`). Without the priors
the model would happily read half a wide 2 or one half of a broken 4 as a confident
digit; with them cuttings into different numbers of digits compare on a fair footing.
How the defaults were chosen is in docs/fields.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from recognizer.fields.lattice import Candidate, Lattice
from recognizer.fields.marks import Piece
from recognizer.settings import DIGITS, NOT_A_DIGIT


@dataclass(frozen=True)
class ScoreConfig:
    """Priors and weights of the reader's scores, in nats added to a reading's
    log-probability; the defaults were fitted on fields of *training* digits."""

    #: A cost per digit read, ...
    digit_cost: float = 1.0
    #: ... per piece shorter than ``short_ratio`` of the reference height, per unit of
    #: height missing, ...
    short_ratio: float = 0.7
    short_cost: float = 20.0
    #: ... per piece wider than ``wide_ratio`` of it, per unit of extra width, ...
    wide_ratio: float = 0.8
    wide_cost: float = 5.0
    #: ... per cut through a mark and per merge of separate marks, ...
    cut_cost: float = 0.75
    merge_cost: float = 2.0
    #: ... per reference height of stroke pixels the cut severs (cutting through
    #: strokes makes pieces a model may still read with confidence), ...
    junction_cost: float = 3.0
    #: ... and, for a cut, per digit of difference between the number of pieces and the
    #: number of digits its width suggests (its width over the lattice's digit width):
    #: a wide pair cut in three pays, whatever the model reads.
    count_cost: float = 2.0
    #: How sure the model is of a piece counts beyond its top log-probability:
    #: fragments, halves of a cut digit and two digits read as one leave the model in
    #: doubt where a true digit does not. Per piece, a cost of ``doubt_cost`` times the
    #: larger of -log(top) and -log(``doubt_level``), so readings the model doubts pay
    #: their log-probability twice, a cost per nat of entropy of its probabilities, and
    #: a gain per nat of margin of the best over the second-best class (capped at
    #: ``margin_cap``).
    doubt_level: float = 0.5
    doubt_cost: float = 1.0
    entropy_cost: float = 0.5
    margin_gain: float = 0.5
    margin_cap: float = 10.0
    #: Models trained on field pieces (recognizer.training.field_pieces) also give the
    #: chance q that a piece is not one digit at all; a piece pays this times -log(1 - q).
    not_a_digit_cost: float = 4.0
    #: A mark read as no digit (a separator, an end mark) costs ``mark_cost``, plus
    #: ``mark_size_cost`` per reference height it is taller than ``mark_height`` of it,
    #: less ``mark_belief`` times the log of the model's belief that it is not a digit.
    mark_cost: float = 1.0
    mark_height: float = 0.45
    mark_size_cost: float = 10.0
    mark_belief: float = 1.0
    #: A field holds digits: reading it as marks alone must beat its best reading with
    #: digits by this many nats.
    empty_margin: float = 5.0
    #: Probabilities are clipped to at least this before taking logarithms.
    floor: float = 1e-12


def piece_prior(piece: Piece, ref_height: float, cfg: ScoreConfig) -> float:
    """Log prior (nats, <= 0) of a piece being one digit, from its size alone."""
    left, top, right, bottom = piece.box
    short = max(0.0, cfg.short_ratio - (bottom - top) / ref_height)
    wide = max(0.0, (right - left) / ref_height - cfg.wide_ratio)
    return -cfg.digit_cost - cfg.short_cost * short - cfg.wide_cost * wide


def piece_belief(probs: np.ndarray, cfg: ScoreConfig) -> float:
    """Log score (nats) of the model's reading of one piece from its probabilities (11:
    the digits and NOT_A_DIGIT): the top digit's log-probability among the digits, less a
    cost for doubt and entropy, plus a gain for a clear margin over the runner-up, less
    a cost per nat of the model's belief that the piece is not one digit at all."""
    digits = probs[:DIGITS]
    p = np.maximum(digits / max(float(digits.sum()), cfg.floor), cfg.floor)
    second, top = np.sort(p)[-2:]
    log_top = math.log(top)
    doubt = max(-log_top, -math.log(cfg.doubt_level))
    entropy = -float(np.sum(p * np.log(p)))
    margin = min(math.log(top / second), cfg.margin_cap)
    whole = math.log(max(1.0 - float(probs[NOT_A_DIGIT]), cfg.floor)) if len(probs) > DIGITS else 0.0
    return (log_top - cfg.doubt_cost * doubt - cfg.entropy_cost * entropy
            + cfg.margin_gain * margin + cfg.not_a_digit_cost * whole)


def count_penalty(cand: Candidate, digit_width: float, cfg: ScoreConfig) -> float:
    """Cost (nats, >= 0) of cutting a mark into a number of digits its width does not
    suggest (``digit_width``: the width of one digit); the model can read a confident
    digit in a third of a touching pair."""
    if not cand.cuts:
        return 0.0
    span = max(p.box[2] for p in cand.pieces) - min(p.box[0] for p in cand.pieces)
    return cfg.count_cost * abs(len(cand.pieces) - span / digit_width)


def mark_score(cand: Candidate, probs: np.ndarray, lattice: Lattice, cfg: ScoreConfig) -> float:
    """Log score of reading a mark as no digit: cheap for a small mark the model does
    not take for a digit, dear for a tall one."""
    left, top, right, bottom = cand.pieces[0].box
    tall = max(0.0, (bottom - top) / lattice.ref_height - cfg.mark_height)
    belief = math.log(max(float(probs[0][NOT_A_DIGIT]), cfg.floor)) if probs.shape[1] > DIGITS else 0.0
    return -cfg.mark_cost - cfg.mark_size_cost * tall + cfg.mark_belief * belief


def candidate_score(cand: Candidate, probs: np.ndarray, lattice: Lattice, cfg: ScoreConfig) -> float:
    """Log score of reading a candidate: the model's belief in each of its digits
    (:func:`piece_belief`) plus the priors on piece sizes, cuts, piece counts and merges;
    for a mark read as no digit, :func:`mark_score`."""
    if cand.mark:
        return mark_score(cand, probs, lattice, cfg)
    model = sum(piece_belief(p, cfg) for p in probs)
    prior = sum(piece_prior(p, lattice.ref_height, cfg) for p in cand.pieces)
    # Digits that only touch meet in a few pixels; cutting through a whole stroke
    # (a 0 into two halves) severs many more.
    severed = cfg.junction_cost * cand.junction / lattice.ref_height
    return (model + prior - cfg.cut_cost * cand.cuts - cfg.merge_cost * cand.merges - severed
            - count_penalty(cand, lattice.digit_width, cfg))


def best_path(lattice: Lattice, scores: list[float], length: int | None,
              cfg: ScoreConfig) -> tuple[list[int], float]:
    """The best-scoring chain of candidates from mark 0 to the last (their indices): the
    best of any length with at least one digit, or of exactly ``length`` digits when one
    exists; and how sure the scores are of its number of digits (the softmax over the
    best chains of each length; 1.0 when ``length`` is given and met)."""
    # best[node][digits] = (score, chain): the best chain covering marks [0, node).
    best: list[dict[int, tuple[float, list[int]]]] = [{} for _ in range(lattice.size + 1)]
    best[0][0] = (0.0, [])
    ending: list[list[int]] = [[] for _ in range(lattice.size + 1)]
    for i, cand in enumerate(lattice.candidates):
        ending[cand.end].append(i)
    for node in range(1, lattice.size + 1):
        for i in ending[node]:
            cand = lattice.candidates[i]
            for digits, (score, chain) in best[cand.start].items():
                total, value = digits + cand.digits, score + scores[i]
                if total not in best[node] or value > best[node][total][0]:
                    best[node][total] = (value, [*chain, i])
    final = best[lattice.size]
    if not final:
        return [], 0.0
    if length is not None and length in final:
        return final[length][1], 1.0
    top = max(final.values(), key=lambda sc: sc[0])
    with_digits = [v for k, v in final.items() if k]
    if with_digits and top is final.get(0):
        runner = max(with_digits, key=lambda sc: sc[0])
        if runner[0] > top[0] - cfg.empty_margin:
            top = runner
    sure = 1.0 / sum(math.exp(min(0.0, score - top[0])) for score, _ in final.values())
    return top[1], sure
