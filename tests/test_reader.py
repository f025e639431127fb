"""The learned field reader's parts: its codec, its input, its geometry, its synthesized
fields, and its training through the one loop (in this process and on Ray Train)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import recognizer
from recognizer import checkpoint
from recognizer.errors import BlankImage, ConfigError
from recognizer.reader.codec import ALPHABET, BLANK, CLASSES, LabelError, encode, greedy_decode
from recognizer.reader.field_input import fit
from recognizer.reader.model import (
    BOX_FILL,
    CANVAS_H,
    CANVAS_W,
    COLUMNS,
    CROP_H,
    CROP_W,
    DEFAULT_READER,
    LOCATE_POOL,
    READERS,
    STRIP_FLOOR,
    build_reader,
    cut_strips,
    fold_batch_norms,
    stretch,
    windows,
)
from recognizer.training.config import TrainConfig


def test_the_codec_reads_back_what_it_encodes():
    assert encode("18.014-") == [2, 9, 11, 1, 2, 5, 13]
    with pytest.raises(LabelError, match="'a'.*not one of"):
        encode("5a")
    # Per column: blank, 1, 1 (repeated: one 1), blank, 1 (a second 1), '.', blank, 5.
    path = [BLANK, 2, 2, BLANK, 2, 11, BLANK, 6]
    probs = np.full((len(path), CLASSES), 0.01, np.float32)
    probs[np.arange(len(path)), path] = 0.9
    reading = greedy_decode(probs)
    assert reading.raw == "11.5" and reading.text == "115"
    assert reading.columns == ((1, 2), (4, 4), (5, 5), (7, 7))
    assert len(reading.confidences) == 4 and 0 < reading.path_probability < 0.9 ** len(path) + 1e-6
    assert set(ALPHABET) == set("0123456789.,-/=")


def test_a_readings_probability_sums_over_its_alignments():
    import itertools

    from recognizer.reader.codec import decode_batch, sequence_probabilities

    # A sure 7 whose column is split between the 7 and the blank: the greedy path is
    # only half likely, the reading "7" is sure.
    probs = np.zeros((1, 3, CLASSES), np.float32)
    probs[0, 0, 8] = 1.0
    probs[0, 1, [BLANK, 8]] = 0.5
    probs[0, 2, BLANK] = 1.0
    (reading,) = decode_batch(probs)
    assert reading.raw == "7" and reading.path_probability == pytest.approx(0.5)
    assert reading.probability == pytest.approx(1.0, abs=1e-5)
    # Over every string that 3 columns can collapse to, the probabilities sum to 1.
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=3).astype(np.float32)
    field = np.zeros((1, 3, CLASSES), np.float32)
    field[0, :, [BLANK, 2, 3]] = p.T  # blank, "1", "2"
    strings = {"".join(s) for n in range(4) for s in itertools.product("12", repeat=n)}
    total = sum(float(sequence_probabilities(field, [s])[0]) for s in strings)
    assert total == pytest.approx(1.0, abs=1e-4)


def test_a_reading_that_changes_when_the_box_moves_is_less_sure():
    from recognizer.reader.read import Outputs, read_outputs

    def columns(*path: int) -> np.ndarray:
        p = np.full((COLUMNS, CLASSES), 1e-6, np.float32)
        p[:, BLANK] = 1.0
        for i, c in enumerate(path):
            p[4 * i + 1, c], p[4 * i + 1, BLANK] = 1.0, 1e-6
        return p / p.sum(1, keepdims=True)

    twelve, two = columns(2, 3), columns(3)  # "12" read sure; at a moved box only "2"
    steady = Outputs(np.stack([twelve, twelve]), np.zeros((2, 4), np.float32),
                     np.stack([np.stack([twelve, twelve]), np.stack([twelve, two])]))
    (a, steady_a, view_a), (b, steady_b, view_b) = read_outputs(steady)
    assert a.raw == b.raw == "12" and a.probability == pytest.approx(1.0, abs=1e-3)
    assert view_a == view_b == 0  # read alike in two views of three: kept where it was read
    assert steady_a == pytest.approx(a.probability)  # reads the same wherever the box sits
    assert steady_b < 1e-3 < b.probability  # the leading 1 holds at one box only
    assert read_outputs(Outputs.empty()) == []


def test_a_digit_misread_at_one_box_is_outvoted_by_the_moved_boxes():
    from recognizer.reader.read import SHIFTS, Outputs, read_outputs, view_box

    def field(second: dict[int, float]) -> np.ndarray:
        p = np.full((COLUMNS, CLASSES), 1e-6, np.float32)
        p[:, BLANK] = 1.0
        p[1, 2], p[1, BLANK] = 1.0, 1e-6  # a sure "1"
        p[5, BLANK] = 1e-6
        for c, q in second.items():
            p[5, c] = q
        return p / p.sum(1, keepdims=True)

    here = field({8: 0.6, 3: 0.4})  # "17" where the box sits, "12" not far behind
    moved = field({3: 0.9, 8: 0.1})  # "12" at both moved boxes
    outputs = Outputs(here[None], np.array([[10, 20, 60, 40]], np.float32), np.stack([moved, moved])[None])
    ((reading, steady, view),) = read_outputs(outputs)
    assert reading.raw == "12" and view == 1  # 0.4 x 0.9 x 0.9 against 0.6 x 0.1 x 0.1
    assert steady == pytest.approx(0.4, abs=1e-3)  # its least probability, where it was read
    moved_box = view_box(outputs.boxes[0], view)
    assert moved_box == pytest.approx(outputs.boxes[0] + SHIFTS[0] * 20)  # a tenth of its height
    # A form's known length: a view's reading of that length is kept before the others.
    short, long = field({BLANK: 0.7, 3: 0.3}), field({BLANK: 0.4, 3: 0.6})  # "1", and "12" at one box
    outputs = Outputs(short[None], np.array([[10, 20, 60, 40]], np.float32), np.stack([long, short])[None])
    assert read_outputs(outputs)[0][0].raw == "1"  # 0.7 x 0.4 x 0.7 against 0.3 x 0.6 x 0.3
    ((reading, steady, view),) = read_outputs(outputs, length=2)
    assert (reading.raw, view) == ("12", 1) and steady == pytest.approx(0.3, abs=1e-3)
    assert read_outputs(outputs, length=3)[0][0].raw == "1"  # no view reads 3 digits: as without
    assert read_outputs(Outputs.empty(), length=2) == []  # a batch whose every field failed


def test_the_input_keeps_the_crop_whole_and_refuses_blank_paper():
    tall = np.full((200, 130), 230, np.uint8)
    tall[90:120, 50:70] = 40  # a small dark number low in a tall cell
    x, where = fit(tall)
    assert x.shape == (CANVAS_H, CANVAS_W) and x.max() == pytest.approx(1.0)
    rows, cols = np.flatnonzero(x.max(1) > 0.5), np.flatnonzero(x.max(0) > 0.5)
    # Aspect kept: the ink sits where it sat, at the same scale both ways.
    assert rows[0] == pytest.approx(90 * where.scale + where.top, abs=1.5)
    assert cols[0] == pytest.approx(50 * where.scale, abs=1.5)
    with pytest.raises(BlankImage):
        fit(np.full((40, 120), 200, np.uint8))


def test_the_ink_is_the_median_paper_and_percentile_peak_taken_from_counts():
    from recognizer.normalize import LIGHT_PAPER, MIN_CONTRAST
    from recognizer.reader.field_input import PEAK_PERCENTILE, ink_of

    rng = np.random.default_rng(4)
    shapes = [(1, 1), (1, 2), (2, 2), (7, 3), (40, 180), (127, 33)]
    checked = 0
    for shape in shapes * 20:
        grey = rng.integers(0, 256, shape, dtype=np.uint8)
        if rng.random() < 0.5:  # mostly paper, some ink, as fields are
            grey = np.where(rng.random(shape) < 0.9, grey // 8 + 200, grey).astype(np.uint8)
        g = grey.astype(np.float32)
        paper = float(np.median(g))
        ink = paper - g if paper > LIGHT_PAPER else g - paper
        if ink.max() < MIN_CONTRAST:
            continue
        want = np.clip(ink / max(float(np.percentile(ink, PEAK_PERCENTILE)), 0.5 * float(ink.max())), 0, 1)
        np.testing.assert_allclose(ink_of(grey), want, atol=1e-6)
        checked += 1
    assert checked > 60


def test_a_box_is_cut_out_as_a_strip_at_reading_height():
    canvas = torch.zeros(1, 1, CANVAS_H, CANVAS_W)
    canvas[0, 0, 60:80, 100:140] = 1.0  # a 20 x 40 block of "ink"
    strip = cut_strips(canvas, torch.tensor([[100.0, 60.0, 140.0, 80.0]]))
    rows = np.flatnonzero(strip[0, 0].max(1).values.numpy() > 0.5)
    assert len(rows) == pytest.approx(BOX_FILL * CROP_H, abs=2)
    for name in READERS:
        net = build_reader(name).eval()
        logits, located, read_at = net(canvas)
        assert logits.shape == (1, COLUMNS, CLASSES) and located.shape == read_at.shape == (1, 4), name
        # Folding the batch norms at load keeps the function (the recurrent context's too).
        for norm in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
        before = net(canvas)[0]
        assert torch.allclose(fold_batch_norms(net)(canvas)[0], before, atol=1e-4), name


def test_each_strip_is_stretched_to_its_own_ink_and_an_empty_one_is_left_alone():
    strips = torch.zeros(3, 1, CROP_H, CROP_W)
    strips[0, 0, 10:20, 50:60] = 0.3  # a pale number: the canvas was stretched for a black mask
    strips[1, 0, 10:20, 50:60] = 1.0
    strips[2, 0, 5, 5] = STRIP_FLOOR / 2  # a speck on empty paper
    out = stretch(strips)
    assert out[0].max() == pytest.approx(1.0) and out[1].max() == pytest.approx(1.0)
    assert out[2].max() == pytest.approx(0.5) and torch.equal(out[0] > 0, strips[0] > 0)


class _InkReader(torch.nn.Module):
    """A reader that reads '7' across a strip holding ink and nothing across an empty
    one, with the share of ink as its certainty."""

    def forward(self, strip: torch.Tensor) -> torch.Tensor:
        ink = strip.flatten(1).gt(0.5).float().mean(1).clamp(max=1.0)
        certain = (ink * 20).clamp(max=0.99)
        out = torch.zeros(len(strip), COLUMNS, CLASSES)
        out[:, :, BLANK] = 1 - certain.view(-1, 1)
        out[:, COLUMNS // 2, encode("7")[0]] = 2 * certain  # one column says 7 when there is ink
        return out.log().nan_to_num(neginf=-30.0)


class _InkLocalizer(torch.nn.Module):
    """A localizer that boxes exactly the ink it sees (as shares of what it sees)."""

    def coarse(self, small: torch.Tensor) -> torch.Tensor:
        out = []
        for img in small[:, 0]:
            ys, xs = torch.nonzero(img > 0.5, as_tuple=True)
            h, w = img.shape
            out.append(torch.stack([xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]))
        return torch.stack(out).float()


def test_looking_again_finds_a_small_number_where_it_is_and_leaves_large_fields_alone():
    net = build_reader(DEFAULT_READER)
    net.localizer = _InkLocalizer()
    canvas = torch.zeros(2, 1, CANVAS_H, CANVAS_W)
    canvas[0, 0, 60:72, 100:130] = 1.0  # a small number in a large cell
    canvas[1, 0, 20:108, 0:250] = 1.0  # a field that fills its canvas
    # Loose boxes: the first starts inside the ink and ends well after it.
    first = torch.tensor([[105.0, 52.0, 140.0, 78.0], [0.0, 16.0, 250.0, 112.0]])
    zoomed, where = windows(canvas, first)
    assert zoomed.shape[-2:] == (CANVAS_H // LOCATE_POOL, CANVAS_W // LOCATE_POOL)
    assert where[0, 0] > 1 > where[1, 0]  # the first window magnifies, the second does not
    again = net.look_again(canvas, first)
    # The rows where the ink is; the columns cover the ink and the first box.
    assert torch.allclose(again[0], torch.tensor([100.0, 60.0, 140.0, 72.0]), atol=1.5), again[0]
    assert torch.equal(again[1], first[1])  # nothing to gain: the first box stays


def test_a_number_the_localizer_missed_is_found_on_the_canvas_rows():
    from recognizer.reader.search import MORE_LIKELY, reread_missed

    net = torch.nn.Module()
    net.reader = _InkReader()
    canvas = torch.zeros(2, 1, CANVAS_H, CANVAS_W)
    low = int(0.875 * CANVAS_H)
    canvas[0, 0, low - 6:low + 6, 60:200] = 1.0  # field 0: a number low in its cell; field 1: empty
    boxes = torch.tensor([[50.0, 20.0, 210.0, 44.0]] * 2)  # the localizer looked near the top
    probs = torch.softmax(net.reader(stretch(cut_strips(canvas, boxes))), 2)
    assert greedy_decode(probs[0].numpy()).text == ""
    found, read_at = reread_missed(net, canvas, probs, boxes)
    reading = greedy_decode(found[0].numpy())
    assert reading.text == "7" and reading.path_probability >= MORE_LIKELY
    assert abs((read_at[0, 1] + read_at[0, 3]).item() / 2 - low) < 1  # read where the ink is
    assert greedy_decode(found[1].numpy()).text == ""  # nothing to find: still no digit
    assert torch.equal(read_at[1], boxes[1])


def test_a_fields_pen_can_be_thinner_or_thicker_than_its_digits(mnist_dir):
    from dataclasses import replace

    from recognizer import data
    from recognizer.data.forms import FormConfig
    from recognizer.data.forms.layout import restroke
    from recognizer.data.reader_fields import READER_FORMS, synthesize
    from recognizer.data.synth_fields import as_digits_u8, render_digit

    d = data.load(mnist_dir, "test")
    digit = render_digit(as_digits_u8(d.images[:1])[0], np.random.default_rng(0), 40.0, 0.0)
    area = (digit > 0.5).sum()
    assert (restroke(digit, -4.0) > 0.5).sum() < 0.7 * area < area < (restroke(digit, 2.0) > 0.5).sum()
    assert restroke(digit, -40.0).max() > 0.5  # never thinned away entirely
    assert READER_FORMS.pen_change[0] < 0 < READER_FORMS.spaced

    def ink_share(cfg: FormConfig) -> float:
        plain = replace(cfg, p_background=0, p_hlines=0, p_vlines=0, p_boxes=0, p_printed_text=0,
                        p_mask=0, p_specks=0, p_underline=0, p_start_sign=0, p_large_cell=0)
        f = synthesize(as_digits_u8(d.images[:300]), d.labels[:300], 60, seed=5, cfg=plain)
        return float(np.mean([(c > 128).sum() / max(1.0, (b[2] - b[0]) * (b[3] - b[1]))
                              for c, b, r in zip(f.canvas, f.boxes, f.raws, strict=True) if r]))

    assert ink_share(replace(READER_FORMS, pen_change=(-0.09, -0.06))) < 0.8 * ink_share(READER_FORMS)


def test_every_epoch_draws_new_fields_and_a_resumed_epoch_draws_the_same(mnist_dir):
    from recognizer import data
    from recognizer.data.reader_fields import FieldDraw
    from recognizer.data.synth_fields import as_digits_u8

    d = data.load(mnist_dir, "test")
    draw = FieldDraw(as_digits_u8(d.images[:300]), d.labels[:300], 40, seed=2)
    first, again, second = draw.share(0), draw.share(0), draw.share(1)
    assert len(first) == 40 and first.raws == again.raws and (first.canvas == again.canvas).all()
    assert first.raws != second.raws
    # Two workers each draw half, and not the same half.
    one, other = draw.share(0, 0, 2), draw.share(0, 1, 2)
    assert len(one) == len(other) == 20 and one.raws != other.raws


def test_synthesized_fields_hold_their_boxes_and_some_blank_cells(mnist_dir):
    from recognizer import data
    from recognizer.data.reader_fields import ReaderFields, synthesize
    from recognizer.data.synth_fields import as_digits_u8

    d = data.load(mnist_dir, "test")
    fields = synthesize(as_digits_u8(d.images[:500]), d.labels[:500], 600, seed=3)
    again = ReaderFields.from_bytes(fields.to_bytes())
    assert again.raws == fields.raws and (again.canvas == fields.canvas).all()
    assert fields.canvas.shape == (600, CANVAS_H, CANVAS_W) and fields.canvas.dtype == np.uint8
    assert any(r == "" for r in fields.raws) and any(set(r) & set(".,-/=") for r in fields.raws)
    inked = [i for i, r in enumerate(fields.raws) if r]
    inside = []
    for i in inked[:100]:
        x0, y0, x1, y1 = fields.boxes[i].round().astype(int)
        assert 0 <= x0 < x1 <= CANVAS_W and 0 <= y0 < y1 <= CANVAS_H
        inside.append(fields.canvas[i, y0:y1, x0:x1].max() > 100)
    assert np.mean(inside) > 0.95  # the handwriting is in its box (a few pale pens aside)


def test_reader_settings_are_checked():
    with pytest.raises(ConfigError, match="unknown reader"):
        TrainConfig(reader="nope").validate()
    with pytest.raises(ConfigError, match="reader_epochs must not be negative"):
        TrainConfig(reader_epochs=-1).validate()
    with pytest.raises(ConfigError, match="at least one batch"):
        TrainConfig(reader_fields=10).validate()


def _tiny(mnist_dir: str, output: str, epochs: int) -> TrainConfig:
    return TrainConfig(data=mnist_dir, model="best", epochs=1, output=output, name="r", train_limit=600,
                       test_limit=300, batch_size=64, field_pieces=0, splitter_epochs=0,
                       calibration_fields=0, reader_epochs=epochs, reader_fields=256,
                       reader_val_fields=64, reader_batch_size=32)


def test_the_reader_trains_in_the_one_loop_into_the_final_checkpoint_and_resumes(mnist_dir, tmp_path):
    from recognizer.training import local

    first = local.run(_tiny(mnist_dir, str(tmp_path), epochs=1))
    assert first.checkpoint.endswith("checkpoint_epoch0001_final")
    model = recognizer.load(first.checkpoint)
    assert model.reader is not None and model.meta["reader"]["name"] == DEFAULT_READER
    assert os.path.exists(os.path.join(first.checkpoint, checkpoint.READER_FILE))
    assert [h["epoch"] for h in model.meta["reader"]["history"]] == [1]
    assert model.meta["reader"]["fields_drawn"] == 256
    # Its validation fields were made once, cached in the run, and are used again; its
    # training fields are drawn anew every epoch and not kept.
    cached = sorted(p.name for p in (tmp_path / "r").glob("reader-fields-*.npz"))
    assert len(cached) == 1
    stamps = [os.path.getmtime(tmp_path / "r" / p) for p in cached]
    # Two reader epochs: the run goes on from its first (digits done, reader resumed).
    second = local.run(_tiny(mnist_dir, str(tmp_path), epochs=2))
    resumed = recognizer.load(second.checkpoint)
    assert [h["epoch"] for h in resumed.meta["reader"]["history"]] == [1, 2]
    assert resumed.meta["reader"]["history"][0] == model.meta["reader"]["history"][0]
    assert resumed.meta["reader"]["fields_drawn"] == 512
    assert model.meta["recipe"]["reader_epochs"] == 1
    assert resumed.meta["recipe"]["reader_epochs"] == 2  # the recipe says what made the reader
    assert [os.path.getmtime(tmp_path / "r" / p) for p in cached] == stamps
    # Run again, a final checkpoint calibrated on another measure than readers use now
    # (here the greedy path alone) has its reader calibration fitted again.
    meta_path = os.path.join(second.checkpoint, checkpoint.META_FILE)
    with open(meta_path) as f:
        meta = json.load(f)
    old = {"slope": 1.0, "per_digit": 0.1, "bias": 1.0, "fields": 9, "source": "old", "form": "logit"}
    meta["reader"]["calibration"] = old
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    third = local.run(_tiny(mnist_dir, str(tmp_path), epochs=2))
    refitted = recognizer.load(third.checkpoint).meta["reader"]["calibration"]
    assert refitted != old and (refitted is None or refitted["measure"] == "chosen")
    # The reader reads whole fields: every answer is a result or a typed error.
    from recognizer.data.forms import make_form_fields

    images, labels, _ = recognizer.data.load_idx_raw(mnist_dir, "test")
    forms = make_form_fields(images[:100], labels[:100], 5, np.random.default_rng(0))
    from recognizer.fields import read_fields

    assert len(read_fields(resumed, [f.image for f in forms], reader="learned")) == 5
    # A checkpoint without one says so, and how to get one.
    from recognizer.errors import ConfigError as Refused

    no_reader = recognizer.load(first.checkpoint)
    no_reader.reader = None
    with pytest.raises(Refused, match="no learned field reader.*--reader-epochs"):
        read_fields(no_reader, [forms[0].image], reader="learned")


def test_the_reader_trains_on_ray_train(ray_cluster, mnist_dir, tmp_path):
    from recognizer.training.ray_train import run

    result = run(_tiny(mnist_dir, str(tmp_path), epochs=1))
    model = recognizer.load(result.checkpoint)
    assert model.reader is not None and model.meta["reader"]["epochs"] == 1
    assert (tmp_path / "r" / "reader" / "checkpoint_epoch0001" / checkpoint.READER_FILE).exists()
