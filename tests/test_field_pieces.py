"""Field pieces: what the segmenter cuts from synthesized fields, labelled for training,
and the not-a-digit class they teach the model."""

from __future__ import annotations

import math

import numpy as np
import pytest

import recognizer
from recognizer.data.synth_fields import make_field, make_field_with_spans
from recognizer.fields import model_inputs, segment
from recognizer.fields.marks import Piece
from recognizer.fields.score import ScoreConfig, piece_belief
from recognizer.settings import NOT_A_DIGIT
from recognizer.training.field_pieces import cut_pieces, label_piece

#: Three digits' ink, by columns: a 3, a 7 and a 1 that touches the 7.
SPANS = [(10, 30), (34, 54), (52, 60)]
LABELS = [3, 7, 1]


def _piece(left: int, right: int) -> Piece:
    return Piece(np.ones((40, right - left), np.float32), (left, 0, right, 40))


@pytest.mark.parametrize(("left", "right", "expected"), [
    (10, 30, 3),             # one digit, exactly
    (12, 30, 3),             # most of it (90%)
    (34, 55, 7),             # the 7 with a sliver of the touching 1
    (34, 60, NOT_A_DIGIT),   # the 7 and the 1 read as one
    (10, 54, NOT_A_DIGIT),   # two whole digits
    (10, 20, NOT_A_DIGIT),   # half a 3
    (14, 30, None),          # 80% of a 3: neither clearly whole nor clearly a fragment
])
def test_pieces_are_labelled_by_the_digits_they_span(left, right, expected):
    assert label_piece(_piece(left, right), SPANS, LABELS) == expected


def test_spans_say_where_each_digit_was_drawn(mnist_test_raw):
    images, _ = mnist_test_raw
    field, spans = make_field_with_spans(list(images[:4]), np.random.default_rng(3))
    # Same pixels as make_field from the same random state.
    assert np.array_equal(field, make_field(list(images[:4]), np.random.default_rng(3)))
    assert len(spans) == 4 and all(a < b for a, b in spans)
    assert [a for a, _ in spans] == sorted(a for a, _ in spans)
    ink = (field < 128).any(axis=0)
    for a, b in spans:
        assert ink[a:b].any() and b <= field.shape[1]


def test_cut_pieces_teach_digits_and_not_digits(mnist_test_raw):
    images, labels = mnist_test_raw
    x, y = cut_pieces(images[:500], labels[:500], 20, np.random.default_rng(0))
    assert x.shape == (len(y), 28, 28) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    kinds = np.bincount(y, minlength=NOT_A_DIGIT + 1)
    assert kinds[NOT_A_DIGIT] > 0 and kinds[:NOT_A_DIGIT].sum() >= 20 * 3
    # Same seed, same pieces: a resumed training run learns the same data.
    x2, y2 = cut_pieces(images[:500], labels[:500], 20, np.random.default_rng(0))
    assert np.array_equal(y, y2) and np.array_equal(x, x2)
    # Preprocessed digits ([0, 1] floats) give the same fields as raw uint8 ones.
    xf, yf = cut_pieces(images[:500] / 255.0, labels[:500], 20, np.random.default_rng(0))
    assert np.array_equal(yf, y)


def test_belief_pays_for_what_the_model_thinks_is_not_a_digit():
    cfg = ScoreConfig()
    digits = np.array([0.9, 0.05] + [0.00625] * 8, np.float32)
    plain = piece_belief(digits, cfg)
    # The same reading, half of whose mass says "not one digit": the digits' share is
    # renormalised and the piece pays the not-a-digit cost on log(1 - 0.5).
    doubted = np.append(digits * 0.5, 0.5).astype(np.float32)
    assert piece_belief(doubted, cfg) == pytest.approx(plain + cfg.not_a_digit_cost * math.log(0.5),
                                                       rel=1e-5)
    # A ten-class model's probabilities (or an eleventh column of 0) pay nothing extra.
    assert piece_belief(np.append(digits, 0.0), cfg) == pytest.approx(plain, rel=1e-6)


def _whole_pieces(fields: list[np.ndarray]) -> np.ndarray:
    """Model inputs of every field's marks read whole (one piece per component)."""
    pieces = []
    for f in fields:
        lattice = segment(f)
        pieces += [c.pieces[0] for c in lattice.candidates
                   if len(c.pieces) == 1 and not c.cuts and not c.merges]
    return model_inputs(pieces)


def test_trained_model_tells_touching_pairs_from_digits(trained_checkpoint, mnist_test_raw):
    model = recognizer.load(trained_checkpoint)
    assert model.classes == 11
    images, _ = mnist_test_raw
    rng = np.random.default_rng(8)
    picks = rng.choice(len(images), size=(40, 2), replace=False)
    pairs = [make_field([images[a], images[b]], rng, touching_prob=1.0) for a, b in picks]
    pairs = [f for f in pairs if segment(f).size == 1]  # really one mark
    singles = [make_field([images[a]], rng) for a, _ in picks]
    assert len(pairs) >= 20
    q_pairs = model.predict_tensors(_whole_pieces(pairs), not_a_digit=True)[:, NOT_A_DIGIT]
    q_singles = model.predict_tensors(_whole_pieces(singles), not_a_digit=True)[:, NOT_A_DIGIT]
    # Two digits in one mark are "not a digit"; one digit is a digit. The reader weighs
    # the belief as a cost, so what counts is that a pair outranks a single digit.
    outranks = float((q_pairs[:, None] > q_singles[None, :]).mean())
    assert outranks >= 0.85 and np.median(q_pairs) > 0.1 > np.median(q_singles), (
        outranks, q_pairs, q_singles)
    digits_only = model.predict_tensors(_whole_pieces(singles))
    assert digits_only.shape[1] == 10 and np.allclose(digits_only.sum(1), 1.0, atol=1e-5)
