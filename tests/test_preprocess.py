"""The one preprocessing path: MNIST convention out, typed errors for bad images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import recognizer
from recognizer import errors
from recognizer.data import synth
from recognizer.preprocess import decode, preprocess, preprocess_many


def _png(arr: np.ndarray) -> bytes:
    return synth.encode(arr)


def _dark_bar(h: int = 60, w: int = 40) -> np.ndarray:
    page = np.full((h, w), 255, np.uint8)
    page[10:50, 15:22] = 0  # a vertical stroke, like a "1"
    return page


def test_output_follows_mnist_convention():
    x = preprocess(_png(_dark_bar()))
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == pytest.approx(1.0)
    rows = np.flatnonzero(x.max(1) > 0.15)
    cols = np.flatnonzero(x.max(0) > 0.15)
    assert rows[-1] - rows[0] + 1 == 20            # longer side fitted to 20
    assert cols[-1] - cols[0] + 1 < 8              # aspect ratio kept (thin stroke)
    ys, xs = np.indices(x.shape)
    assert (x * ys).sum() / x.sum() == pytest.approx(13.5, abs=1.0)  # centred by mass
    assert (x * xs).sum() / x.sum() == pytest.approx(13.5, abs=1.0)


def test_a_slanted_stroke_is_set_upright():
    # A "1" written with a forward slant (its top to the right) and one written upright
    # must reach the model as the same shape.
    import cv2

    upright = preprocess(_png(_dark_bar()))
    page = np.full((60, 60), 255, np.uint8)
    cv2.line(page, (38, 10), (22, 49), 0, 6)  # leans 16 px over 40 rows: 22 degrees
    slanted = preprocess(_png(page))
    cols = np.flatnonzero(slanted.max(0) > 0.15)
    assert cols[-1] - cols[0] + 1 < 7                   # a thin upright stroke again
    assert np.abs(slanted - upright).mean() < 0.05


def test_polarity_colour_and_formats_agree():
    page = _dark_bar()
    reference = preprocess(_png(page))
    rgb = np.stack([page, page, np.full_like(page, 255)], -1)  # blue ink on white
    for blob in (_png(255 - page), synth.encode(page, "BMP"), synth.encode(page, "TIFF"),
                 synth.encode(page, "JPEG", 95), _png(rgb), page, rgb):
        assert np.abs(preprocess(blob) - reference).mean() < 0.05


def test_mnist_digits_are_nearly_unchanged(mnist_test_raw):
    images, _ = mnist_test_raw
    x, errs = preprocess_many(list(images[:200]))
    assert not any(errs)
    assert np.abs(x - images[:200] / 255.0).mean() < 0.1


@pytest.mark.parametrize("blob, error", [
    (b"", errors.EmptyImage),
    (b"this is not an image at all", errors.NotAnImage),
    ("a string", errors.NotAnImage),
    (np.zeros((0, 5), np.uint8), errors.EmptyImage),
    (np.zeros((28, 28), np.float64), errors.NotAnImage),
])
def test_non_images_get_typed_errors(blob, error):
    with pytest.raises(error):
        preprocess(blob)


def test_truncated_file_is_refused():
    blob = _png(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(errors.TruncatedImage):
        preprocess(blob[: len(blob) // 2])
    jpeg = synth.encode(np.random.default_rng(1).integers(0, 255, (200, 200), dtype=np.uint8), "JPEG")
    with pytest.raises(errors.TruncatedImage):
        preprocess(jpeg[: len(jpeg) // 3])


@pytest.mark.parametrize("value", [0, 128, 255])
def test_blank_images_are_refused(value):
    with pytest.raises(errors.BlankImage, match="no ink"):
        preprocess(_png(np.full((40, 40), value, np.uint8)))


def test_faint_noise_is_blank():
    noise = np.clip(np.random.default_rng(0).normal(240, 4, (64, 64)), 0, 255).astype(np.uint8)
    with pytest.raises(errors.BlankImage):
        preprocess(_png(noise))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size: a decompression bomb's opening."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(10_000, 10_000), (50_000, 50_000)])
def test_decompression_bombs_are_refused(size):
    with pytest.raises(errors.ImageTooLarge, match="pixels"):
        decode(_png_header_only(*size))


def test_pixel_limit_is_configurable():
    blob = _png(_dark_bar(100, 100))
    with pytest.raises(errors.ImageTooLarge):
        decode(blob, max_pixels=5_000)


def test_unsupported_format_is_named():
    buf = io.BytesIO()
    Image.fromarray(_dark_bar()).save(buf, format="GIF")
    with pytest.raises(errors.UnsupportedFormat, match="GIF"):
        preprocess(buf.getvalue())


def test_batch_keeps_going_past_bad_images():
    good = _png(_dark_bar())
    x, errs = preprocess_many([good, b"junk", good])
    assert errs[0] is None and errs[2] is None
    assert isinstance(errs[1], errors.NotAnImage)
    assert np.array_equal(x[0], x[2]) and not x[1].any()


def test_an_unexpected_decoder_failure_is_that_rows_error(monkeypatch):
    # A decoder bug (an exception outside the typed ones) must fail its image alone.
    from recognizer import preprocess as pp

    real = pp.decode

    def flaky(item, max_pixels):
        if item == b"trigger":
            raise RuntimeError("decoder bug")
        return real(item, max_pixels)

    monkeypatch.setattr(pp, "decode", flaky)
    good = synth.encode(np.pad(np.full((20, 6), 255, np.uint8), 4))
    x, errs = preprocess_many([good, b"trigger", good])
    assert errs[0] is None and errs[2] is None
    assert isinstance(errs[1], errors.UndecodableImage)
    assert errs[1].code == "undecodable_image" and "RuntimeError: decoder bug" in str(errs[1])
    assert not x[1].any() and np.array_equal(x[0], x[2]) and x[0].max() == 1.0


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_fast_png_path_gives_pillows_pixels(mode):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (37, 53) if mode == "L" else (37, 53, 3), dtype=np.uint8)
    blob = _png(arr)
    expected = np.asarray(Image.open(io.BytesIO(blob)).convert("L"))
    assert np.array_equal(decode(blob), expected)


def test_batch_equals_image_by_image(mnist_test_raw):
    """preprocess_many normalises same-sized images together; the result must not
    depend on that: every image comes out exactly as preprocess() makes it alone."""
    images, _ = mnist_test_raw
    rng = np.random.default_rng(5)
    batch: list = [synth.variant(images[i], kind, rng)
                   for i in range(12) for kind in ("clean", "inverted", "coloured", "jpeg")]
    batch += [synth.as_scan(images[i], rng) for i in range(20)]       # one size, many inks
    batch += [_png(np.full((28, 28), 255, np.uint8)), b"junk"]           # blank, not an image
    batch += list(images[:30])                                           # uint8 arrays
    rng.shuffle(batch)
    x, errs = preprocess_many(batch)
    for item, row, err in zip(batch, x, errs, strict=True):
        if err is None:
            assert np.array_equal(row, preprocess(item))
        else:
            with pytest.raises(type(err)):
                preprocess(item)
            assert not row.any()
    assert sum(e is not None for e in errs) == 2


SCAN_KINDS = ["shifted", "scaled", "inverted", "coloured", "jpeg", "page", "thick",
              "binarized", "postal16"]


def test_synthesized_scans_keep_their_label(trained_checkpoint, mnist_test_raw):
    """Scans of test digits get the clean digit's label in most cases.

    Measured agreement per kind is printed; the assertion asks at least 90% for every
    kind with this small test checkpoint (the trained default model does better:
    see bench/RESULTS.md).
    """
    images, _ = mnist_test_raw
    model = recognizer.load(trained_checkpoint)
    rng = np.random.default_rng(7)
    picks = rng.choice(len(images), 300, replace=False)
    clean = model.predict(images[picks]).labels
    rates = {}
    for kind in SCAN_KINDS:
        result = model.predict([synth.variant(images[i], kind, rng) for i in picks])
        assert not any(result.errors), kind
        rates[kind] = float((result.labels == clean).mean())
    print("agreement with the clean digit:", {k: f"{v:.1%}" for k, v in rates.items()})
    assert min(rates.values()) >= 0.90, rates


def test_crop_fitting_gives_pillows_bilinear_pixels_exactly():
    # The model was trained on Pillow's bilinear resize; the faster call path must not
    # move a single pixel.
    from recognizer.normalize import _fit

    rng = np.random.default_rng(3)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 120, size=2))
        crop = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        scale = 20 / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        expected = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
        assert np.array_equal(_fit(crop, 20), expected), (h, w)


def test_ink_is_measured_from_the_paper_in_each_images_own_direction():
    from recognizer.normalize import _ink

    rng = np.random.default_rng(4)
    greys = rng.integers(0, 256, size=(9, 12, 12), dtype=np.uint8)
    for papers in ([200] * 9, [30] * 9, [200, 30, 128, 127, 255, 0, 90, 180, 140]):
        paper = np.array(papers, np.uint8)[:, None, None]
        expected = np.where(paper > 127, paper - np.minimum(greys, paper),
                            np.maximum(greys, paper) - paper)
        assert np.array_equal(_ink(greys, paper), expected)


def test_digits_as_written_keep_their_slant_and_drop_unusable_rows(tmp_path, mnist_dir, mnist_test_raw):
    # Reader fields are written with these digits: IDX digits come as stored, scans are
    # fitted into 28x28 but not deslanted as the model's input is.
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recognizer import data

    idx = data.load_as_written(mnist_dir, "test")
    assert np.array_equal(idx.images, mnist_test_raw[0]) and np.array_equal(idx.labels, mnist_test_raw[1])
    page = np.full((60, 60), 255, np.uint8)
    cv2.line(page, (38, 10), (22, 49), 0, 6)
    rows = [_png(page)] * 9 + [b"not an image", _png(np.full((60, 60), 255, np.uint8))] + [_png(page)]
    pq.write_table(pa.table({"image": rows, "label": [1] * len(rows)}), tmp_path / "a.parquet")
    written = data.load_as_written(str(tmp_path), "train", val_fraction=0.5)
    model_input = data.load(str(tmp_path), "train", val_fraction=0.5)
    assert written.images.dtype == np.uint8 and written.images.shape == (6, 28, 28)
    assert len(model_input) == 6

    def ink_columns(x: np.ndarray) -> int:
        cols = np.flatnonzero(x.max(0) > 0.15 * x.max())
        return cols[-1] - cols[0] + 1

    assert ink_columns(written.images[0]) >= 10 > 7 > ink_columns(model_input.images[0])
    held_out = data.load_as_written(str(tmp_path), "test", val_fraction=0.5)
    assert len(held_out) == 4  # of the last six rows, the undecodable and the blank are dropped
