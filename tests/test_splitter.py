"""The splitter of touching digits: its training marks, how segmentation peels digits off
with it, what a trained one does on test digits, and checkpoints that carry it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import recognizer
from recognizer import checkpoint
from recognizer.clean import clean
from recognizer.data.synth_fields import make_field_with_owners
from recognizer.errors import CheckpointError
from recognizer.fields import SegmentConfig, read_fields, segment
from recognizer.fields.marks import marks
from recognizer.splitter import HEIGHT
from recognizer.training.splitter import TRAIN_WIDTH, peel_examples


@pytest.fixture(scope="module")
def model(trained_checkpoint) -> recognizer.Recognizer:
    return recognizer.load(trained_checkpoint)


def test_training_marks_hold_touching_digits_and_mark_the_leftmost(mnist_test_raw):
    images, _ = mnist_test_raw
    x, left, weight = peel_examples(images[:200], 24, np.random.default_rng(0))
    assert x.shape == left.shape == weight.shape == (24, HEIGHT, TRAIN_WIDTH)
    cols = np.arange(TRAIN_WIDTH)[None, :]
    for xi, li, wi in zip(x, left, weight, strict=True):
        assert xi.max() > 0.5 and set(np.unique(li)) <= {0.0, 1.0}
        mine, others = (li * wi), ((1 - li) * wi)
        # Every mark holds the leftmost digit and at least one more ...
        assert mine.sum() > 20 and others.sum() > 20
        # ... and the leftmost digit's pixels lie left of the rest, on average.
        assert (mine * cols).sum() / mine.sum() < (others * cols).sum() / others.sum()
        # Only the mark counts: the padding after it weighs nothing.
        last = int(np.flatnonzero(xi.any(0))[-1])
        assert not wi[:, last + 2:].any()


def _bars(widths: list[int], gap_bar: int = 3) -> np.ndarray:
    """A field of vertical blocks joined by a thin bar at mid-height: one mark."""
    total = sum(widths) + 20 + gap_bar * (len(widths) - 1)
    page = np.full((60, total), 240, np.uint8)
    x = 10
    for i, w in enumerate(widths):
        page[10:50, x:x + w] = 20
        x += w
        if i < len(widths) - 1:
            page[28:32, x:x + gap_bar] = 20
            x += gap_bar
    return page


def test_peeling_cuts_where_the_splitter_says_once_per_round():
    calls = []

    def left_third(regions):
        # "The leftmost digit is the left third of the mark" - a stand-in for the network.
        calls.append(len(regions))
        out = []
        for r in regions:
            p = np.zeros(r.shape, np.float32)
            p[:, :max(1, r.shape[1] // 3)] = 1.0
            out.append(p)
        return out

    field = _bars([14, 14, 14])
    cfg = SegmentConfig()
    plain = segment(field, cfg)
    peeled = segment(field, cfg, split=left_third)
    assert plain.size == peeled.size == 1
    # Peeled candidates come first: peeled once (two digits) and twice (three).
    extra = peeled.candidates[:len(peeled.candidates) - len(plain.candidates)]
    assert [len(c.pieces) for c in extra] == [2, 3]
    assert [c.cuts for c in extra] == [1, 2]
    lefts = [p.box[0] for p in extra[1].pieces]
    assert lefts == sorted(lefts) and lefts[0] == 10
    # The first digit is the mark's left third (48 columns), the second a third of the rest.
    assert extra[1].pieces[0].box[2] <= 10 + 17
    assert extra[1].pieces[1].box[2] <= 10 + 16 + 11
    assert calls == [1, 1]  # one batched call per peeling round


def test_no_splitter_means_no_peeled_candidates():
    field = _bars([14, 14])
    counted = []
    segment(field, SegmentConfig(), split=lambda regions: counted.append(1) or
            [np.zeros(r.shape, np.float32) for r in regions])
    assert counted, "a wide mark is offered to the splitter"
    assert segment(field, SegmentConfig(), split=None).candidates  # and reads without one


def _touching_marks(images: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ink, owners) crops of synthesized marks holding exactly two touching test digits."""
    rng = np.random.default_rng(7)
    out = []
    while len(out) < count:
        picks = rng.choice(len(images), 2, replace=False)
        image, owners = make_field_with_owners([images[i] for i in picks], rng, 1.0)
        cleaned = clean(image)
        ink, (left, top) = cleaned.ink, cleaned.origin
        owners = owners[top:top + ink.shape[0], left:left + ink.shape[1]]
        found = marks(ink, SegmentConfig())
        if len(found) != 1:
            continue
        b = found[0]
        own = owners[b.top:b.bottom, b.left:b.right]
        out.append((np.where(b.mask, ink[b.top:b.bottom, b.left:b.right], 0.0),
                    np.where(b.mask, own, -1)))
    return out


def test_trained_splitter_finds_the_leftmost_digit_of_touching_test_digits(model, mnist_test_raw):
    images, _ = mnist_test_raw
    pairs = _touching_marks(images, 40)
    maps = model.splitter([ink for ink, _ in pairs])
    right = []
    for (_, own), p in zip(pairs, maps, strict=True):
        on = own >= 0
        right.append(np.mean((p[on] >= 0.5) == (own[on] == 0)))
    # The fixture's splitter is small (4,000 marks, 3 epochs); the default one puts about
    # 97% of stroke pixels on the right side. Chance is about 50%.
    assert np.median(right) >= 0.85, np.round(right, 2)


def test_fields_read_with_the_splitter_at_least_as_well(model, mnist_test_raw):
    images, labels = mnist_test_raw
    rng = np.random.default_rng(5)
    fields, texts = [], []
    for _ in range(60):
        picks = rng.choice(len(images), 3, replace=False)
        image, _ = make_field_with_owners([images[i] for i in picks], rng, 0.5)
        fields.append(image)
        texts.append("".join(str(int(labels[i])) for i in picks))
    with_split = [r.text for r in read_fields(model, fields)]
    without = recognizer.Recognizer(model.model, model.meta, splitter=None)
    plain = [r.text for r in read_fields(without, fields)]
    rate = np.mean([a == t for a, t in zip(with_split, texts, strict=True)])
    base = np.mean([a == t for a, t in zip(plain, texts, strict=True)])
    assert rate >= base, (rate, base)


def test_checkpoint_carries_its_splitter_and_refuses_a_changed_one(trained_checkpoint, tmp_path):
    folder = str(tmp_path / "ckpt")
    shutil.copytree(trained_checkpoint, folder)
    assert recognizer.load(folder).splitter is not None

    path = os.path.join(folder, checkpoint.SPLITTER_FILE)
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(CheckpointError, match="does not match the hash"):
        recognizer.load(folder)

    # A checkpoint without a splitter (older, or --splitter-epochs 0) still reads fields.
    os.remove(path)
    meta_path = os.path.join(folder, checkpoint.META_FILE)
    with open(meta_path) as f:
        meta = json.load(f)
    del meta[checkpoint.SPLITTER_HASH]
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    plain = recognizer.load(folder)
    assert plain.splitter is None
    assert read_fields(plain, [_bars([14])])[0].text


def test_listed_but_missing_splitter_is_a_checkpoint_error(trained_checkpoint, tmp_path):
    folder = str(tmp_path / "ckpt")
    shutil.copytree(trained_checkpoint, folder)
    os.remove(os.path.join(folder, checkpoint.SPLITTER_FILE))
    with pytest.raises(CheckpointError, match="lists a splitter but it cannot be read"):
        recognizer.load(folder)
