"""Form cleaning: what real forms put round the digits comes out, the digits stay."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from recognizer.clean import CleanConfig, clean, needs_cleaning
from recognizer.data import synth
from recognizer.data.synth_fields import make_field_with_spans
from recognizer.errors import BlankImage, NoDigits
from recognizer.normalize import normalize
from recognizer.preprocess import preprocess, preprocess_many

STROKE = CleanConfig().stroke_level


def _field(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A plain 3-digit field (dark ink on light paper), digits apart, and their columns."""
    rng = np.random.default_rng(seed)
    return make_field_with_spans([images[i] for i in rng.integers(0, len(images), 3)], rng, 0.0)


def _marks(ink: np.ndarray) -> int:
    return ndimage.label(ink >= STROKE, structure=np.ones((3, 3), bool))[1]


def _ruled(field: np.ndarray) -> np.ndarray:
    """The field in a ledger's cell: taller, a black mask at the left, a vertical ruling
    line left of the digits and one at the right edge, a horizontal line at the top."""
    h, w = field.shape
    cell = np.full((h + 60, w + 70), 235, np.uint8)
    cell[30:30 + h, 50:50 + w] = field
    cell[:, :30] = 12                      # the scanner's mask
    cell[:, 40:42] = 60                    # ruling line beside the digits
    cell[:, -3:-1] = 60                    # and at the cell's edge
    cell[8:10, 30:] = 60                   # the cell's top border
    return cell


def test_ruled_cell_with_a_mask_comes_out_as_the_digits_alone(mnist_test_raw):
    images, _ = mnist_test_raw
    for seed in range(5):
        field, spans = _field(images, seed)
        plain = clean(field)
        ruled = clean(_ruled(field))
        # No line, mask or border survives: the same marks as the plain field, ...
        assert _marks(ruled.ink) == _marks(plain.ink), seed
        # ... nothing runs the height of the cell, and the crop starts at the digits.
        assert ruled.origin[0] >= 40
        tall = (ruled.ink >= STROKE).sum(axis=0).max()
        assert tall < 0.8 * ruled.ink.shape[0]


def test_a_cell_border_cut_short_by_the_crop_goes(mnist_test_raw):
    # A table's vertical rule that enters the crop from its top edge but ends halfway
    # down (the next row's cell begins there) is a line, not a 1 beside the digits.
    images, _ = mnist_test_raw
    for seed in range(3):
        field, _ = _field(images, seed)
        h, w = field.shape
        cell = np.full((3 * h, w + 80), 235, np.uint8)
        cell[h:2 * h, 40:40 + w] = field
        cell[:int(1.6 * h), w + 60:w + 62] = 60   # from the top edge to below the digits
        plain, cut = clean(field), clean(cell)
        assert _marks(cut.ink) == _marks(plain.ink), seed
        assert cut.origin[0] + cut.ink.shape[1] < w + 58     # the crop ends at the digits


def test_crossing_strokes_survive_a_line_through_the_digits(mnist_test_raw):
    images, _ = mnist_test_raw
    field, _ = _field(images, 7)
    h, w = field.shape
    crossed = field.copy()
    mid = h // 2
    crossed[mid:mid + 2, :] = 70           # a ruling line through the middle of the row
    ink = clean(crossed).ink
    plain = clean(field).ink
    # The line is gone (no row is inked across most of the field) ...
    assert (ink >= STROKE).mean(axis=1).max() < 0.6
    # ... and the digits are not cut in two by its removal: no more marks than without it
    # but the few pixels where a stroke ran along the line.
    assert _marks(ink) <= _marks(plain) + 2


def test_a_field_of_lines_and_background_has_no_digits():
    page = np.full((90, 300), 230, np.uint8)
    page[20:22, :] = 40
    page[70:72, :] = 40
    page[:, 100:102] = 40
    page[:, :25] = 10
    with pytest.raises(NoDigits, match="no digits found"):
        clean(page)
    with pytest.raises(BlankImage):  # a blank page is no ink at all
        clean(np.full((90, 300), 230, np.uint8))


def test_underlines_go_and_the_digits_stay(mnist_test_raw):
    images, _ = mnist_test_raw
    field, spans = _field(images, 3)
    h, w = field.shape
    lined = np.full((h + 20, w), 235, np.uint8)
    lined[:h] = field
    lined[h + 2:h + 5, 2:w - 2] = 30       # a pen underline, longer than the number
    assert _marks(clean(lined).ink) == _marks(clean(field).ink)


def test_clean_inputs_take_the_plain_path_unchanged(mnist_test_raw):
    images, labels = mnist_test_raw
    digits = images[:300]
    assert not needs_cleaning(digits).any()  # raw MNIST: dark paper all round
    for x, raw in zip(preprocess_many(list(digits))[0], digits, strict=True):
        np.testing.assert_array_equal(x, normalize(raw))
    rng = np.random.default_rng(0)
    scans = [synth.as_scan(d, rng, size=64) for d in digits[:50]]
    assert not needs_cleaning(np.stack(scans)).any()


def _ledger_cell(scan: np.ndarray, width: int) -> np.ndarray:
    """A 64x64 digit scan in a ledger cell ``width`` wide: a mask at the left, ruling
    lines either side."""
    cell = np.full((110, width), 238, np.uint8)
    cell[25:89, 30:94] = scan
    cell[:, :18] = 10                      # mask
    cell[:, 22:24] = 50                    # ruling lines either side
    cell[:, width - 10:width - 8] = 50
    return cell


def test_a_digit_in_a_ruled_cell_is_cleaned_and_read_as_in_a_clean_one(mnist_test_raw, trained_checkpoint):
    import recognizer

    model = recognizer.load(trained_checkpoint)
    images, labels = mnist_test_raw
    rng = np.random.default_rng(1)
    cells, clean_scans, truth = [], [], []
    for i in rng.choice(len(images), 60, replace=False):
        scan = synth.as_scan(images[i], rng, size=48, canvas=64)
        cell = _ledger_cell(scan, 110)
        cells.append(cell)
        clean_scans.append(scan)
        truth.append(int(labels[i]))
    assert needs_cleaning(np.stack(cells)).all()
    ruled = model.predict(cells).labels
    plain = model.predict(clean_scans).labels
    assert np.mean(ruled == np.array(truth)) >= np.mean(plain == np.array(truth)) - 0.05
    assert np.mean(ruled == np.array(truth)) >= 0.85
    # Without cleaning the lines and mask would be read as the digit.
    assert preprocess(cells[0]).shape == (28, 28)


def test_a_short_underline_under_one_digit_goes_and_flat_strokes_in_the_row_stay(mnist_test_raw):
    # A clerk's underline under a single digit is about as long as the digit is wide:
    # too short for the long-underline rule, but wholly below the row's base line.
    images, labels = mnist_test_raw
    rng = np.random.default_rng(0)
    for index in np.flatnonzero(labels == 2)[:3]:
        field, ((left, right),) = make_field_with_spans([images[index]], rng, 0.0)
        h, w = field.shape
        rows = np.flatnonzero((field < 128).any(axis=1))
        foot = rows[-1] + 3
        page = np.full((h + 12, w), 235, np.uint8)
        page[:h] = field
        lined = page.copy()
        lined[foot:foot + 2, left:right] = 30
        assert _marks(clean(lined).ink) == _marks(clean(page).ink), index
        # The same stroke level with the digits' middle is a dash, not an underline.
        dashed = np.full((h + 12, w + 30), 235, np.uint8)
        dashed[:h, :w] = field
        mid = (rows[0] + rows[-1]) // 2
        dashed[mid:mid + 2, w + 5:w + 5 + (right - left)] = 30
        assert _marks(clean(dashed).ink) == _marks(clean(page).ink) + 1, index


def test_a_single_digit_in_a_ruled_cell_loses_the_dot_written_after_it(mnist_test_raw):
    images, _ = mnist_test_raw
    rng = np.random.default_rng(2)
    for i in rng.choice(len(images), 5, replace=False):
        scan = synth.as_scan(images[i], rng, size=48, canvas=64)
        cell = _ledger_cell(scan, 130)
        dotted = cell.copy()
        rows = np.flatnonzero((scan < 128).any(axis=1))
        foot = 25 + rows[-1]
        dotted[foot - 4:foot, 100:104] = 30  # the clerk's full stop after the number
        plain = preprocess(cell)
        assert np.abs(preprocess(dotted) - plain).max() < 0.05, i
        # A field keeps it: field reading spells separators out.
        assert _marks(clean(dotted).ink) == _marks(clean(cell).ink) + 1, i


def test_a_long_dash_in_the_cell_does_not_take_the_place_of_a_small_number(mnist_test_raw):
    # Ledgers mark a blank row with a long pen dash (a ditto mark); the row's number may
    # stand small below it. The dash outweighs the number in ink, never in shape.
    images, _ = mnist_test_raw
    field = cv2.resize(_field(images, 5)[0], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    h, w = field.shape
    cell = np.full((h + 120, max(w, 260) + 20), 235, np.uint8)
    xs = np.arange(10, 250)
    ys = (30 + 6 * np.sin(xs / 40.0) + (xs - 10) / 24).astype(np.int32)
    cv2.polylines(cell, [np.stack([xs, ys], axis=1)], False, 30, 3)
    cell[100:100 + h, 10:10 + w] = field
    cleaned = clean(cell)
    assert _marks(cleaned.ink) == _marks(clean(field).ink)
    assert cleaned.origin[1] >= 100 - h  # cropped to the number, not to the dash


def test_a_faint_number_is_found_beside_darker_print(mnist_test_raw):
    # Grey, faded scans: a printed line at the foot of the cell is far darker than the
    # pen. The print sets the ink's scale; the whole number must still be the row.
    images, _ = mnist_test_raw
    field, spans = _field(images, 2)
    paper = 225.0
    faint = (paper - (255.0 - field.astype(np.float32)) * 0.45).astype(np.uint8)
    h, w = faint.shape
    cell = np.full((h + 110, w + 40), int(paper), np.uint8)
    cell[30:30 + h, 20:20 + w] = faint
    cv2.putText(cell, "Printed for the parish", (4, h + 90), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1)
    cleaned = clean(cell)
    left, top = cleaned.origin
    assert top <= 30 + h // 2  # the number's row, not the print's
    # Every digit is in the crop, the first as well as the last.
    assert left <= 20 + spans[0][0] and left + cleaned.ink.shape[1] >= 20 + spans[-1][1]
