"""Real forms: synthesized form fields, restyled digits, separators in the raw reading,
calibrated confidences and fields with no digits."""

from __future__ import annotations

import numpy as np
import pytest

import recognizer
from recognizer.data.forms import SEPARATORS, FormConfig, make_form_field, make_form_fields
from recognizer.data.styles import STYLED, cross_seven, flag_one, flat_top_three, hook_seven, restyled_set
from recognizer.data.synth_fields import render_digit
from recognizer.errors import NoDigits
from recognizer.fields import FieldResult, read_fields
from recognizer.fields.calibrate import Calibration, fit


@pytest.fixture(scope="module")
def model(trained_checkpoint) -> recognizer.Recognizer:
    return recognizer.load(trained_checkpoint)


def _first(images: np.ndarray, labels: np.ndarray, digit: int) -> np.ndarray:
    return images[int(np.flatnonzero(labels == digit)[0])]


def test_form_fields_record_digits_separators_and_columns(mnist_test_raw):
    images, labels = mnist_test_raw
    forms = make_form_fields(images, labels, 60, np.random.default_rng(4))
    seen_marks = 0
    for f in forms:
        assert f.image.dtype == np.uint8 and f.image.ndim == 2
        assert 1 <= len(f.text) <= 8 and f.text.isdigit()
        # The raw reading is the text with separators among and after the digits.
        assert "".join(c for c in f.raw if c.isdigit()) == f.text
        assert set(f.raw) <= set("0123456789" + SEPARATORS)
        assert len(f.spans) == len(f.text)
        assert [a for a, _ in f.spans] == sorted(a for a, _ in f.spans)
        assert all(0 <= a < b <= f.image.shape[1] for a, b in f.spans)
        seen_marks += f.raw != f.text
    assert seen_marks >= 10  # separators and end marks are common, not rare


def test_forms_can_be_plain_when_every_feature_is_off(mnist_test_raw):
    images, labels = mnist_test_raw
    off = FormConfig(p_thousands=0, p_decimal=0, p_end_mark=0, p_start_sign=0, p_underline=0,
                     p_hlines=0, p_vlines=0, p_boxes=0, p_background=0, p_printed_text=0,
                     p_mask=0, p_bleed=0, p_specks=0, p_jpeg=0, p_blur=0, p_large_cell=0)
    f = make_form_field([images[0], images[1]], [int(labels[0]), int(labels[1])],
                        np.random.default_rng(0), off)
    assert f.raw == f.text
    # Nothing but paper (and its grain) outside the digits' columns.
    outside = np.ones(f.image.shape[1], bool)
    for a, b in f.spans:
        outside[max(0, a - 3):b + 3] = False
    assert f.image[:, outside].min() > 100


def test_a_tight_crop_leaves_the_first_and_last_strokes_at_the_image_edges(mnist_test_raw):
    images, labels = mnist_test_raw
    plain = dict(p_thousands=0, p_decimal=0, p_end_mark=0, p_start_sign=0, p_underline=0,
                 p_hlines=0, p_vlines=0, p_boxes=0, p_background=0, p_printed_text=0,
                 p_mask=0, p_bleed=0, p_specks=0, p_jpeg=0, p_blur=0, p_large_cell=0, margin=(0.0, 0.0))
    digits, text = [images[i] for i in range(4)], [int(labels[i]) for i in range(4)]
    tight = make_form_field(digits, text, np.random.default_rng(0), FormConfig(**plain, tight_columns=1.0))
    loose = make_form_field(digits, text, np.random.default_rng(0), FormConfig(**plain))
    left, _, right, _ = tight.box
    assert left <= 1 and right >= tight.image.shape[1] - 1
    assert all(0 <= a < b <= tight.image.shape[1] for a, b in tight.spans)
    # Without it the layout keeps paper beside the row: half a digit height at least.
    assert loose.box[0] >= 5 and loose.box[2] <= loose.image.shape[1] - 5


def test_a_field_whose_strokes_are_all_faint_still_has_a_box(mnist_dir):
    from recognizer import data
    from recognizer.data.reader_fields import READER_FORMS
    from recognizer.data.synth_fields import as_digits_u8

    digits = data.load(mnist_dir, "test")
    # Found by search: a "1" drawn small with a thin, pale pen, no stroke above 0.3. It
    # crashed the synthesis (an epoch's draw of 100,000 fields met one).
    one = int(np.flatnonzero(digits.labels == 1)[31])
    field = make_form_field([as_digits_u8(digits.images[one:one + 1])[0]], [1], np.random.default_rng(17631),
                            READER_FORMS)
    left, top, right, bottom = field.box
    assert 0 <= left < right <= field.image.shape[1] and 0 <= top < bottom <= field.image.shape[0]
    assert field.text == "1"


def _ink_columns(digit: np.ndarray) -> int:
    return int(np.count_nonzero(digit.max(0) >= 128))


def test_reshaping_widens_or_narrows_a_digit_and_keeps_its_ink(mnist_test_raw):
    from recognizer.data.forms.shape import DigitShape, reshape

    images, _ = mnist_test_raw
    still = DigitShape(p=1.0, rotate_deg=0.0, p_elastic=0.0)
    wobbly = DigitShape(p=1.0)
    rng = np.random.default_rng(0)
    kept = []
    for digit in images[:40]:
        wide, narrow = reshape(digit, 1.3, still, rng), reshape(digit, 0.77, still, rng)
        assert _ink_columns(narrow) < _ink_columns(digit) < _ink_columns(wide)
        # Nothing is cut off at the edges; elastic moves stretch and squeeze strokes, so
        # a digit's ink changes, but not on average.
        moved = reshape(digit, 1.0, wobbly, rng).astype(float)
        assert moved[0].max() == moved[-1].max() == moved[:, 0].max() == moved[:, -1].max() == 0
        kept.append(moved.sum() / float(digit.sum()))
    assert 0.6 < min(kept) and max(kept) < 1.5 and abs(np.median(kept) - 1) < 0.1


def test_a_field_of_reshaped_digits_is_another_field_with_the_same_truth(mnist_test_raw):
    from dataclasses import replace

    from recognizer.data.forms.shape import DigitShape

    images, labels = mnist_test_raw
    digits, text = [images[i] for i in range(5)], [int(labels[i]) for i in range(5)]
    plain = FormConfig(same_hand=1.0)
    wide = replace(plain, digit_shape=DigitShape(p=1.0, aspect=(1.3, 1.3)))
    narrow = replace(plain, digit_shape=DigitShape(p=1.0, aspect=(0.77, 0.77)))
    fields = {name: make_form_field(digits, text, np.random.default_rng(5), cfg)
              for name, cfg in (("plain", plain), ("wide", wide), ("narrow", narrow))}
    assert {f.text for f in fields.values()} == {"".join(map(str, text))}

    def width(f):
        return sum(b - a for a, b in f.spans)

    assert width(fields["narrow"]) < width(fields["wide"])
    assert not np.array_equal(fields["plain"].image, fields["wide"].image)


def _placed_pair(images: np.ndarray, gap: int) -> tuple[np.ndarray, list, int]:
    """A canvas with two rendered digits ``gap`` pixels apart on one base line."""
    rng = np.random.default_rng(0)
    a, b = (render_digit(images[i], rng, 40.0, 0.0) for i in (0, 1))
    canvas = np.zeros((80, 200), np.float32)
    baseline, placed, left = 70, [], 20
    for ink in (a, b):
        top = baseline - ink.shape[0]
        region = canvas[top:baseline, left:left + ink.shape[1]]
        np.maximum(region, ink, out=region)
        placed.append(("d", top, left, ink))
        left += ink.shape[1] + gap
    return canvas, placed, baseline


def test_cursive_strokes_join_near_digits_and_lead_into_a_run(mnist_test_raw):
    from recognizer.data.forms.cursive import Cursive, connect

    images, _ = mnist_test_raw
    joined, placed, baseline = _placed_pair(images, 8)
    plain = joined.copy()
    connect(joined, placed, Cursive(p=1.0, p_join=1.0, p_lead_in=0.0), np.random.default_rng(1),
            4.0, 40.0, baseline)
    _, t0, l0, ink0 = placed[0]
    _, t1, l1, _ = placed[1]
    added = (joined > 0.5) & ~(plain > 0.5)
    # New ink lies between the digits' boxes, and none left of the first digit.
    assert added[:, l0 + ink0.shape[1]:l1].any()
    assert not added[:, :l0].any()

    lead, placed, baseline = _placed_pair(images, 8)
    plain = lead.copy()
    connect(lead, placed, Cursive(p=1.0, p_join=0.0, p_lead_in=1.0), np.random.default_rng(1),
            4.0, 40.0, baseline)
    added = (lead > 0.5) & ~(plain > 0.5)
    first_ink = int(np.flatnonzero(plain.max(0) > 0.5)[0])
    assert added[:, :first_ink].any() and added[baseline - 3:, :first_ink].any()

    # Digits further apart than a pen travels joined stay apart; p=0 draws nothing.
    far, placed, baseline = _placed_pair(images, 40)
    plain = far.copy()
    connect(far, placed, Cursive(p=1.0, p_join=1.0, p_lead_in=0.0), np.random.default_rng(1),
            4.0, 40.0, baseline)
    assert np.array_equal(far, plain)
    connect(far, placed, Cursive(p=0.0, p_join=1.0, p_lead_in=1.0), np.random.default_rng(1),
            4.0, 40.0, baseline)
    assert np.array_equal(far, plain)


def test_a_cursive_row_is_the_same_digits_with_strokes_added(mnist_test_raw):
    from dataclasses import replace

    from recognizer.data.forms.cursive import Cursive
    from recognizer.data.forms.layout import compose

    images, labels = mnist_test_raw
    digits, text = [images[i] for i in range(6)], [int(labels[i]) for i in range(6)]
    plain = FormConfig(same_hand=1.0)
    cursive = replace(plain, cursive=Cursive(p=1.0, p_join=1.0, p_lead_in=1.0))
    glyphs = [str(d) for d in text]
    a, spans_a, _, _ = compose(glyphs, digits, plain, np.random.default_rng(3), 40.0)
    b, spans_b, _, _ = compose(glyphs, digits, cursive, np.random.default_rng(3), 40.0)
    assert spans_a == spans_b and a.shape == b.shape
    # Strokes are only added: every digit's ink stays, and there is more of it.
    assert np.all(b >= a) and np.count_nonzero(b > 0.5) > np.count_nonzero(a > 0.5)
    field = make_form_field(digits, text, np.random.default_rng(3), cursive)
    assert field.text == "".join(map(str, text)) and len(field.spans) == len(text)


def test_pen_model_digits_are_digits_that_a_digit_model_reads(mnist_test_raw):
    from dataclasses import replace

    from recognizer.data.forms.strokes import SHAPES, StrokeDigits, draw, writer

    rng = np.random.default_rng(0)
    spec = StrokeDigits(p=1.0)
    labels = np.arange(600) % 10
    hands = [writer(spec, rng) for _ in labels]
    drawn = np.stack([draw(hand, int(d), rng) for hand, d in zip(hands, labels, strict=True)])
    assert drawn.shape == (600, 28, 28) and drawn.dtype == np.uint8
    # Every shape of every digit is written by some writer.
    for digit, shapes in SHAPES.items():
        assert len({id(h.shapes[digit]) for h in hands}) == len(shapes)
    # The bundled digit model, trained on other writers' digits, reads them as their
    # digits (a 1 with a long up-stroke may pass for a 7: that is the shape it lacks).
    read = np.array(recognizer.load().predict(255 - drawn).labels)
    assert (read == labels).mean() >= 0.95
    assert all((read[labels == d] == d).mean() >= 0.8 for d in range(10))
    # One writer keeps its shape: two of its 4s are closer to each other than to
    # another writer's 4 of another shape.
    a, b = hands[4], next(h for h in hands[4::10] if h.shapes[4] is not hands[4].shapes[4])
    first, again, other = (draw(h, 4, rng).astype(float) for h in (a, a, b))
    assert np.abs(first - again).sum() < np.abs(first - other).sum()
    # In a field they keep the field's truth.
    images, truth = mnist_test_raw
    digits, text = [images[i] for i in range(6)], [int(truth[i]) for i in range(6)]
    cfg = replace(FormConfig(same_hand=1.0), strokes=spec)
    field = make_form_field(digits, text, np.random.default_rng(3), cfg)
    plain = make_form_field(digits, text, np.random.default_rng(3), FormConfig(same_hand=1.0))
    assert field.text == plain.text == "".join(map(str, text)) and len(field.spans) == len(text)
    assert field.image.shape != plain.image.shape or not np.array_equal(field.image, plain.image)


def _widest_run(row: np.ndarray) -> int:
    """The longest run of stroke pixels (>= 128) in a row of a light-on-dark digit."""
    edges = np.flatnonzero(np.diff(np.r_[0, (row >= 128).astype(int), 0]))
    runs = edges[1::2] - edges[::2]
    return int(runs.max()) if runs.size else 0


def test_restyling_flags_ones_crosses_or_hooks_sevens_and_flattens_threes(mnist_test_raw):
    images, labels = mnist_test_raw
    rng = np.random.default_rng(0)
    one, seven = _first(images, labels, 1), _first(images, labels, 7)
    flagged, crossed = flag_one(one, rng), cross_seven(seven, rng)
    assert (flagged >= one).all() and (flagged > one).sum() > 10  # ink added, none taken
    assert (crossed >= seven).all() and (crossed > seven).sum() > 10
    # The flag goes down and to the left of the stem's top.
    added = np.argwhere(flagged > one.astype(int) + 60)
    top = np.argwhere(one >= 128)[:, 0].min()
    stem = np.argwhere(one >= 128)[:, 1][np.argwhere(one >= 128)[:, 0] <= top + 1].mean()
    assert added[:, 1].mean() < stem and added[:, 0].mean() > top
    # Some flags are lead-in strokes from near the base line: the 1 shaped like a lambda.
    bottom = np.argwhere(one >= 128)[:, 0].max()
    low = []
    for _ in range(20):
        ys, xs = np.nonzero(flag_one(one, rng) > one.astype(int) + 60)
        # Above the foot (a bar along the bottom, some of the time), left of the stem.
        low.append(bool(((ys >= top + 0.65 * (bottom - top)) & (ys < bottom - 3) & (xs < stem - 2)).any()))
    assert 0 < sum(low) < 20
    # A hooked 7's serif goes down from the left end of its bar, below the bar.
    hooked = hook_seven(seven, rng)
    serif = np.argwhere(hooked > seven.astype(int) + 60)
    bar = np.argwhere(seven >= 128)
    assert len(serif) > 5 and (hooked >= seven).all()
    assert serif[:, 1].mean() < bar[:, 1].mean() and serif[:, 0].mean() > bar[:, 0].min()
    # A flat-topped 3 keeps its lower bowl and gets a straight bar on top: its top rows
    # hold a long horizontal run of ink.
    three = _first(images, labels, 3)
    flat = flat_top_three(three, rng)
    rows = np.flatnonzero((flat >= 128).any(axis=1))
    lower = slice(rows[0] + 3 * (rows[-1] - rows[0]) // 4, None)
    assert np.array_equal(flat[lower], three[lower])
    assert not np.array_equal(flat[:lower.start], three[:lower.start])
    height = rows[-1] - rows[0] + 1
    assert max(_widest_run(r) for r in flat[rows[0]:rows[0] + 3]) >= 0.4 * height
    styled, styled_labels = restyled_set(images[:400], labels[:400], 1.0, rng)
    assert set(styled_labels.tolist()) <= set(STYLED)
    assert len(styled) == int(np.isin(labels[:400], STYLED).sum())


def _row(parts: list[np.ndarray], gap: int = 14) -> np.ndarray:
    """Light-on-dark parts (float, same height) side by side -> dark ink on light paper."""
    height = max(p.shape[0] for p in parts)
    ink = np.zeros((height + 24, sum(p.shape[1] for p in parts) + gap * (len(parts) + 1)))
    x = gap
    for p in parts:
        ink[12 + height - p.shape[0]:12 + height, x:x + p.shape[1]] = p
        x += p.shape[1] + gap
    return np.clip(240.0 - ink * 210.0, 0, 255).astype(np.uint8)


def test_a_dot_between_digits_is_a_separator_not_a_digit(model, mnist_test_raw):
    images, labels = mnist_test_raw
    rng = np.random.default_rng(0)
    digits = [render_digit(_first(images, labels, d), rng, 40, 0.0) for d in (4, 0, 3, 6)]
    dot = np.zeros((40, 6))
    dot[33:39, :] = 1.0                     # a pen dot on the base line
    field = _row([digits[0], digits[1], dot, digits[2], digits[3]])
    [result] = read_fields(model, [field])
    assert isinstance(result, FieldResult)
    assert len(result.text) == 4 and "." not in result.text
    assert result.raw == result.text[:2] + "." + result.text[2:]


def test_only_separators_is_no_digits_not_an_empty_string(model):
    dash = np.zeros((8, 40))
    dash[2:6, :] = 1.0
    dot = np.zeros((8, 8))
    dot[1:7, 1:7] = 1.0
    [result] = read_fields(model, [_row([dash, dot, dash])])
    assert isinstance(result, NoDigits) and result.code == "no_digits"


def test_calibration_fit_recovers_a_known_curve():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.3, 1.0, 4000)
    digits = rng.integers(1, 9, 4000)
    truth = Calibration(slope=3.0, per_digit=-0.2, bias=2.0, form="logit")
    right = rng.random(4000) < np.array([truth(r, d) for r, d in zip(raw, digits, strict=True)])
    found = fit(raw, digits, right)
    assert found.slope == pytest.approx(3.0, rel=0.25)
    assert found.per_digit == pytest.approx(-0.2, abs=0.1)
    assert found(0.99, 3) > found(0.6, 3)  # monotonic in the raw confidence
    with pytest.raises(ValueError):
        fit(raw, digits, np.ones(4000, bool))  # nothing wrong: nothing to fit


def test_a_calibrated_confidence_approaches_one_as_the_raw_one_does():
    # Readings whose chance of being right rises to 1 with their raw confidence: a curve
    # in log(raw) saturates near sigmoid(bias) and leaves thresholds like 0.99 empty.
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.01, 1.0, 4000)
    digits = rng.integers(1, 9, 4000)
    truth = Calibration(slope=1.0, per_digit=0.0, bias=0.5, form="logit")
    right = rng.random(4000) < np.array([truth(r, d) for r, d in zip(raw, digits, strict=True)])
    found = fit(raw, digits, right)
    assert found.form == "logit"
    assert found(0.9999, 2) > 0.99
    assert found(0.1, 2) == pytest.approx(truth(0.1, 2), abs=0.05)


def test_a_calibration_from_an_older_meta_keeps_its_log_curve():
    old = {"calibration": {"slope": 1.6, "per_digit": 0.12, "bias": 2.58, "fields": 779,
                           "source": "older run"}}
    calibration = Calibration.from_meta(old)
    assert calibration is not None and calibration.form == "log"
    assert calibration(1.0, 1) == pytest.approx(1 / (1 + np.exp(-(0.12 + 2.58))))
    with pytest.raises(ValueError, match="unknown calibration form"):
        Calibration(form="isotonic")


def test_the_trained_checkpoint_carries_its_calibration(model, mnist_test_raw):
    calibration = Calibration.from_meta(model.meta)
    assert calibration is not None and calibration.fields > 0
    images, labels = mnist_test_raw
    forms = make_form_fields(images, labels, 30, np.random.default_rng(9))
    for r in read_fields(model, [f.image for f in forms]):
        if isinstance(r, FieldResult):
            assert 0.0 <= r.confidence <= min(r.confidences)
