"""Training examples for reading fields: the pieces the segmenter cuts out of
synthesized fields of *training* digits, labelled with what they really are.

A model trained on single digits alone reads confidently what is not one digit: two
touching digits taken as one (a "37" read as a 3), half of a cut digit, a digit with a
stroke of its neighbour. Field reading weighs candidate cuttings by the model's belief,
so it needs a model that can say "this is not one digit". Training on the segmenter's own
pieces gives it that class (``settings.NOT_A_DIGIT``) and shows it the right cuts of
touching digits as the digits they are.

Half the fields (``form_share``) are synthesized as real forms (:mod:`recognizer.data.forms`):
their separators, signs, underlines and remnants of lines and backgrounds are pieces
too, and not digits. A piece is labelled from where the synthesizer put each digit's ink
(its columns):

* one digit's: it spans at least ``WHOLE`` of that digit and at least ``PURE`` of it
  is that digit -> the digit's label;
* not one digit: it spans half or more of two digits or more, or no digit's half, or
  clearly less than one digit or clearly more -> ``NOT_A_DIGIT``;
* in between: left out, so that borderline cuts teach nothing either way.
"""

from __future__ import annotations

import numpy as np

from recognizer.data.forms import make_form_field
from recognizer.data.synth_fields import as_digits_u8, make_field_with_spans
from recognizer.errors import ImageError
from recognizer.fields.config import SegmentConfig
from recognizer.fields.lattice import Lattice, segment
from recognizer.fields.marks import Piece
from recognizer.fields.read import model_inputs
from recognizer.settings import IMAGE_SIZE, NOT_A_DIGIT

#: A piece is one digit when it spans this share of the digit's columns ...
WHOLE = 0.85
#: ... and this share of the piece's columns belong to that digit.
PURE = 0.8
#: Below these it is not one digit (a fragment, or a digit with much of its neighbour).
FRAGMENT = 0.7
IMPURE = 0.6
#: Digits per synthesized field, and the share of neighbouring pairs that touch (more
#: than in the benchmark's fields: touching pairs are where the segmenter errs).
FIELD_LENGTH = 5
TOUCHING = 0.3


def label_piece(piece: Piece, spans: list[tuple[int, int]], labels: list[int]) -> int | None:
    """The class of a piece cut from a field whose digits' ink lies in columns ``spans``
    (left to right, with their ``labels``): a digit, ``NOT_A_DIGIT``, or None (unclear)."""
    left, right = piece.box[0], piece.box[2]
    shared = [max(0, min(right, r) - max(left, lo)) for lo, r in spans]
    cover = [s / (r - lo) for s, (lo, r) in zip(shared, spans, strict=True)]
    inside = [k for k, c in enumerate(cover) if c >= 0.5]
    if len(inside) != 1:
        return NOT_A_DIGIT
    k = inside[0]
    purity = shared[k] / max(1, right - left)
    if cover[k] >= WHOLE and purity >= PURE:
        return labels[k]
    if cover[k] < FRAGMENT or purity < IMPURE:
        return NOT_A_DIGIT
    return None


def _field(digits: np.ndarray, labels: np.ndarray, form: bool, rng: np.random.Generator
           ) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """A synthesized field: image, its digits' columns and their labels."""
    if form:
        picks = rng.integers(0, len(digits), int(rng.integers(1, 9)))
        made = make_form_field([digits[i] for i in picks], [int(labels[i]) for i in picks], rng)
        return made.image, made.spans, [int(labels[i]) for i in picks]
    picks = rng.integers(0, len(digits), FIELD_LENGTH)
    image, spans = make_field_with_spans([digits[i] for i in picks], rng, TOUCHING)
    return image, spans, [int(labels[i]) for i in picks]


def _labelled(lattice: Lattice, spans: list[tuple[int, int]], truth: list[int]
              ) -> tuple[list[Piece], list[int]]:
    """The lattice's pieces that have a clear label, and their labels."""
    pieces, classes = [], []
    for cand in lattice.candidates:
        if cand.mark:
            continue  # the same piece as the mark read whole
        for piece in cand.pieces:
            label = label_piece(piece, spans, truth)
            if label is not None:
                pieces.append(piece)
                classes.append(label)
    return pieces, classes


#: Fields per chunk: each chunk draws from its own generator, seeded from the caller's,
#: so that chunks do not depend on each other and could be cut in parallel, same pieces.
CHUNK = 25


def _cut_chunk(digits: np.ndarray, labels: np.ndarray, fields: int, seed: int,
               config: SegmentConfig, form_share: float) -> tuple[list[np.ndarray], list[int]]:
    """The labelled pieces of ``fields`` synthesized fields, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for _ in range(fields):
        image, spans, truth = _field(digits, labels, rng.random() < form_share, rng)
        try:
            lattice = segment(image, config)
        except ImageError:
            continue  # a field cleaning left nothing of: nothing to learn from it
        pieces, classes = _labelled(lattice, spans, truth)
        if pieces:
            xs.append(model_inputs(pieces))
            ys.extend(classes)
    return xs, ys


def cut_pieces(digits: np.ndarray, labels: np.ndarray, fields: int, rng: np.random.Generator,
               config: SegmentConfig | None = None, form_share: float = 0.5,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (M, 28, 28) float32 and labels (M,) int64 of the pieces that
    :func:`recognizer.fields.lattice.segment` cuts from ``fields`` synthesized fields,
    ``form_share`` of them real forms.

    ``digits``: light-on-dark digits, uint8 or float in [0, 1] (raw MNIST or the training
    set after preprocessing, so any data source works); ``labels`` their classes.
    """
    from tqdm import tqdm

    config = config or SegmentConfig()
    if len(digits) != len(labels) or not len(digits):
        raise ValueError("digits and labels must be non-empty and of the same length")
    digits = as_digits_u8(digits)
    sizes = [min(CHUNK, fields - start) for start in range(0, fields, CHUNK)]
    seeds = rng.integers(0, 2**63 - 1, size=len(sizes)).tolist()
    xs: list[np.ndarray] = []
    ys: list[int] = []
    with tqdm(total=fields, desc="cutting field pieces", unit="field", disable=not progress) as bar:
        for n, seed in zip(sizes, seeds, strict=True):
            cx, cy = _cut_chunk(digits, labels, n, seed, config, form_share)
            xs.extend(cx)
            ys.extend(cy)
            bar.update(n)
    if not xs:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.float32), np.zeros(0, np.int64)
    return np.concatenate(xs), np.asarray(ys, dtype=np.int64)
