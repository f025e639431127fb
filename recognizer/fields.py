"""Read whole digit fields: a postal code, a cheque amount, an account number.

>>> import recognizer
>>> from recognizer.fields import read_field
>>> model = recognizer.load("/path/to/checkpoint")               # doctest: +SKIP
>>> result = read_field(model, open("postcode.png", "rb").read())  # doctest: +SKIP
>>> result.text, result.confidence                                # doctest: +SKIP
('75013', 0.97)

Each field is decoded with :func:`recognizer.preprocess.decode`, cut into digits by
:mod:`recognizer.segment`, each piece normalised by the one preprocessing path
(:func:`recognizer.preprocess.normalize`), and every piece of every field in a call goes
through the model in one batch (``model.predict_tensors``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from recognizer.errors import ImageError
from recognizer.preprocess import as_image_list, decode, normalize_stack
from recognizer.segment import Candidate, Lattice, Piece, SegmentConfig, SplitFn, segment
from recognizer.settings import DIGITS, NOT_A_DIGIT

if TYPE_CHECKING:  # the model (and torch) is needed only by read_fields' caller
    from recognizer.predict import Recognizer

#: Zero pixels around a piece so that normalize() sees paper at the border.
_PAD = 2


@dataclass(frozen=True)
class FieldResult:
    """One field read.

    ``text`` holds the digits left to right; ``confidences[i]`` is the model's
    probability for ``text[i]``; ``confidence`` is their product (the chance that the
    whole string is right if digits err independently; 0..1, never above the lowest
    digit's); ``boxes[i]`` is digit i's (left, top, right, bottom) in input pixels.
    """

    text: str
    confidences: tuple[float, ...]
    confidence: float
    boxes: tuple[tuple[int, int, int, int], ...]

    def to_dict(self) -> dict:
        """JSON-ready form for the batch job's rows and the HTTP API."""
        return {"text": self.text, "confidences": list(self.confidences),
                "confidence": self.confidence, "boxes": [list(b) for b in self.boxes]}


def model_inputs(pieces: list[Piece]) -> np.ndarray:
    """Model inputs for a field's pieces, normalised together as one stack.

    A piece's ink is light on dark; on a canvas of paper (zeros) it is a small greyscale
    image that normalize() treats exactly like any single-digit upload. A shared canvas
    with at least _PAD of paper round every piece gives each the same result as its own.
    """
    height = max(p.ink.shape[0] for p in pieces) + 2 * _PAD
    width = max(p.ink.shape[1] for p in pieces) + 2 * _PAD
    canvas = np.zeros((len(pieces), height, width), dtype=np.uint8)
    for i, p in enumerate(pieces):
        h, w = p.ink.shape
        canvas[i, _PAD:_PAD + h, _PAD:_PAD + w] = np.rint(p.ink * 255.0)
    x, errors = normalize_stack(canvas)
    for err in errors:
        if err is not None:
            raise err
    return x


def _piece_prior(piece: Piece, ref_height: float, cfg: SegmentConfig) -> float:
    """Log prior (nats, <= 0) of a piece being one digit, from its size alone."""
    left, top, right, bottom = piece.box
    short = max(0.0, cfg.short_ratio - (bottom - top) / ref_height)
    wide = max(0.0, (right - left) / ref_height - cfg.wide_ratio)
    return -cfg.digit_cost - cfg.short_cost * short - cfg.wide_cost * wide


def _piece_belief(probs: np.ndarray, cfg: SegmentConfig) -> float:
    """Log score (nats) of the model's reading of one piece from its probabilities (11:
    the digits and NOT_A_DIGIT): the top digit's log-probability among the digits, less a
    cost for doubt and entropy, plus a gain for a clear margin over the runner-up, less
    a cost per nat of the model's belief that the piece is not one digit at all."""
    digits = probs[:DIGITS]
    p = np.maximum(digits / max(float(digits.sum()), 1e-12), 1e-12)
    second, top = np.sort(p)[-2:]
    log_top = math.log(top)
    doubt = max(-log_top, -math.log(cfg.doubt_level))
    entropy = -float(np.sum(p * np.log(p)))
    margin = min(math.log(top / second), cfg.margin_cap)
    whole = math.log(max(1.0 - float(probs[NOT_A_DIGIT]), 1e-12)) if len(probs) > DIGITS else 0.0
    return (log_top - cfg.doubt_cost * doubt - cfg.entropy_cost * entropy
            + cfg.margin_gain * margin + cfg.not_a_digit_cost * whole)


def _candidate_score(cand: Candidate, probs: np.ndarray, ref_height: float,
                     cfg: SegmentConfig) -> float:
    """Log score of reading a candidate: the model's belief in each of its digits
    (:func:`_piece_belief`) plus the priors on piece sizes, cuts, piece counts and merges."""
    # Without the priors the model would happily read half a wide 2 or one half of a
    # broken 4 as a confident digit; with them cuttings into different numbers of
    # digits compare on a fair footing.
    model = sum(_piece_belief(p, cfg) for p in probs)
    prior = sum(_piece_prior(p, ref_height, cfg) for p in cand.pieces)
    # Digits that only touch meet in a few pixels; cutting through a whole stroke
    # (a 0 into two halves) severs many more.
    severed = cfg.junction_cost * cand.junction / ref_height
    return (model + prior - cfg.cut_cost * cand.cuts - cfg.merge_cost * cand.merges - severed
            - _count_penalty(cand, ref_height, cfg))


def _count_penalty(cand: Candidate, ref_height: float, cfg: SegmentConfig) -> float:
    """Cost (nats, >= 0) of cutting a component into a number of digits its width does
    not suggest; the model can read a confident digit in a third of a touching pair."""
    if not cand.cuts:
        return 0.0
    span = max(p.box[2] for p in cand.pieces) - min(p.box[0] for p in cand.pieces)
    return cfg.count_cost * abs(len(cand.pieces) - span / (cfg.digit_ratio * ref_height))


def _best_path(lattice: Lattice, scores: list[float], length: int | None) -> list[int]:
    """Indices of the candidates forming the best-scoring chain from component 0 to the
    last: the best of any length, or of exactly ``length`` digits when one exists."""
    # best[node][digits] = (score, chain): the best chain covering components [0, node).
    best: list[dict[int, tuple[float, list[int]]]] = [{} for _ in range(lattice.size + 1)]
    best[0][0] = (0.0, [])
    ending: list[list[int]] = [[] for _ in range(lattice.size + 1)]
    for i, cand in enumerate(lattice.candidates):
        ending[cand.end].append(i)
    for node in range(1, lattice.size + 1):
        for i in ending[node]:
            cand = lattice.candidates[i]
            for digits, (score, chain) in best[cand.start].items():
                total, value = digits + len(cand.pieces), score + scores[i]
                if total not in best[node] or value > best[node][total][0]:
                    best[node][total] = (value, [*chain, i])
    final = best[lattice.size]
    if length is not None and length in final:
        return final[length][1]
    return max(final.values(), key=lambda sc: sc[0])[1] if final else []


@dataclass
class FieldPlan:
    """Fields cut into pieces, waiting for the model: ``inputs`` (M, 28, 28) holds every
    candidate piece of every field, in order; ``entries`` holds per image either its
    lattice of candidates or the :class:`ImageError` it raised."""

    inputs: np.ndarray
    entries: list[Lattice | ImageError]
    length: int | None = None
    config: SegmentConfig = field(default_factory=SegmentConfig)


def prepare_fields(images: Sequence[bytes | np.ndarray] | np.ndarray,
                   config: SegmentConfig | None = None, length: int | None = None,
                   split: SplitFn | None = None) -> FieldPlan:
    """Decode and segment fields; the half of :func:`read_fields` before the digit model.

    Batch jobs run this in their shard tasks and send ``plan.inputs`` to the model
    actors; :func:`assemble_fields` turns the probabilities back into strings. ``split``:
    the checkpoint's splitter of touching digits (``Recognizer.splitter``), if it has one.
    """
    config = config or SegmentConfig()
    config.validate()
    entries: list[Lattice | ImageError] = []
    inputs: list[np.ndarray] = []
    for item in as_image_list(images):
        try:
            lattice = segment(decode(item), config, length, split)
            pieces = model_inputs([p for c in lattice.candidates for p in c.pieces])
        except ImageError as exc:
            entries.append(exc)
            continue
        entries.append(lattice)
        inputs.extend(pieces)
    stacked = np.stack(inputs) if inputs else np.zeros((0, 28, 28), np.float32)
    return FieldPlan(stacked, entries, length, config)


def assemble_fields(plan: FieldPlan, probs: np.ndarray) -> list[FieldResult | ImageError]:
    """Pick each field's best chain of candidates from the pieces' probabilities and spell
    out the strings: one :class:`FieldResult` or :class:`ImageError` per image.

    ``probs``: (N, 11) from ``predict_tensors(plan.inputs, not_a_digit=True)``, or (N, 10)
    from a model without the not-a-digit class. A digit's confidence is the model's
    probability that its piece is that digit.
    """
    results: list[FieldResult | ImageError] = []
    at = 0
    for entry in plan.entries:
        if isinstance(entry, ImageError):
            results.append(entry)
            continue
        per_candidate, scores = [], []
        for cand in entry.candidates:
            p = probs[at:at + len(cand.pieces)]
            at += len(cand.pieces)
            per_candidate.append(p)
            scores.append(_candidate_score(cand, p, entry.ref_height, plan.config))
        text, confs, boxes = [], [], []
        for i in _best_path(entry, scores, plan.length):
            for piece, p in zip(entry.candidates[i].pieces, per_candidate[i], strict=True):
                text.append(str(int(p[:DIGITS].argmax())))
                confs.append(float(p[:DIGITS].max()))
                boxes.append(piece.box)
        results.append(FieldResult("".join(text), tuple(confs), math.prod(confs), tuple(boxes)))
    return results


def read_fields(model: Recognizer, images: Sequence[bytes | np.ndarray] | np.ndarray,
                config: SegmentConfig | None = None,
                length: int | None = None) -> list[FieldResult | ImageError]:
    """Read a batch of field images (encoded bytes or uint8 arrays, any size).

    Returns one entry per image, in order: a :class:`FieldResult`, or the typed
    :class:`ImageError` that image raised (``BlankImage`` for no ink,
    ``TooManyComponents`` for more marks than ``config.max_components``, and the
    decoding errors of :func:`recognizer.preprocess.decode`). Never raises for a bad image.
    Every piece of every field goes through the model in one batch. ``length``, when
    the number of digits is known (postal codes, account numbers), steers segmentation
    and the choice of cuttings towards readings of that length.
    """
    plan = prepare_fields(images, config, length, model.splitter)
    probs = model.predict_tensors(plan.inputs, not_a_digit=True)
    return assemble_fields(plan, probs)


def read_field(model: Recognizer, image: bytes | np.ndarray,
               config: SegmentConfig | None = None, length: int | None = None) -> FieldResult:
    """Read one field image; raises its typed :class:`ImageError` if it cannot be read."""
    result = read_fields(model, [image], config, length)[0]
    if isinstance(result, ImageError):
        raise result
    return result
