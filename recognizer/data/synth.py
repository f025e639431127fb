"""Synthesized scans: MNIST digits rendered the way forms and scanners deliver them.

Used by ``digits shards make --as-scans``, the tests and the benchmarks, so that
everything downstream sees the kind of input real users send: dark ink on light paper,
larger than 28x28, off-centre, sometimes coloured, JPEG-compressed or on a whole page.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

#: Kinds of variant that :func:`variant` can produce.
VARIANTS = ("clean", "shifted", "scaled", "inverted", "coloured", "jpeg", "page",
            "thick", "binarized", "postal16")


def encode(arr: np.ndarray, fmt: str = "PNG", quality: int = 85) -> bytes:
    """Encode a uint8 greyscale or RGB array as PNG, JPEG, BMP or TIFF bytes."""
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    if fmt.upper() in ("JPEG", "JPG"):
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format=fmt.upper())
    return buf.getvalue()


def _resize(digit: np.ndarray, size: int, resample=Image.Resampling.BICUBIC) -> np.ndarray:
    img = Image.fromarray(digit).resize((size, size), resample)
    return np.asarray(img)


def as_scan(digit: np.ndarray, rng: np.random.Generator, size: int = 64,
            canvas: int | None = None) -> np.ndarray:
    """Render a light-on-dark 28x28 digit as dark ink on light paper, size px per side,
    placed at a random spot of a canvas (default 1.25x size) with paper grain."""
    canvas = canvas or int(size * 1.25)
    ink = _resize(digit, size).astype(np.float32) / 255.0
    paper = rng.uniform(215, 250)
    page = np.full((canvas, canvas), paper, dtype=np.float32)
    top, left = rng.integers(0, canvas - size + 1, size=2)
    darkness = rng.uniform(0.75, 1.0) * paper
    page[top:top + size, left:left + size] -= ink * darkness
    page += rng.normal(0, 3.0, page.shape)
    return np.clip(page, 0, 255).astype(np.uint8)


def variant(digit: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """Encode one 28x28 MNIST digit as a synthesized scan of the given kind."""
    if kind == "clean":
        return encode(digit)
    if kind == "shifted":
        page = np.zeros((48, 48), np.uint8)
        top, left = rng.integers(0, 21, size=2)
        page[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
        return encode(page)
    if kind == "scaled":
        return encode(_resize(digit, int(rng.integers(56, 160))))
    if kind == "inverted":
        return encode(255 - _resize(digit, 56))
    if kind == "coloured":
        scan = as_scan(digit, rng).astype(np.float32) / 255.0
        ink_rgb = rng.uniform(0, 0.5, 3) * np.array([0.3, 0.3, 1.0])  # a blue-ish pen
        paper_rgb = rng.uniform(0.85, 1.0, 3)
        rgb = scan[..., None] * paper_rgb + (1 - scan[..., None]) * ink_rgb
        return encode((rgb * 255).astype(np.uint8))
    if kind == "jpeg":
        return encode(as_scan(digit, rng), "JPEG", quality=int(rng.integers(30, 70)))
    if kind == "page":
        page = np.full((600, 800), 245, np.uint8)
        crop = as_scan(digit, rng, size=60, canvas=60)
        top, left = int(rng.integers(0, 540)), int(rng.integers(0, 740))
        page[top:top + 60, left:left + 60] = crop
        return encode(page)
    if kind == "thick":
        img = Image.fromarray(_resize(digit, 84)).filter(ImageFilter.MaxFilter(5))
        return encode(255 - np.asarray(img))
    if kind == "binarized":
        scan = as_scan(digit, rng)
        return encode(np.where(scan < 160, 0, 255).astype(np.uint8), "BMP")
    if kind == "postal16":
        # 16x16 capture, digit filling its box, stored as TIFF.
        rows = np.flatnonzero(digit.max(1) > 30)
        cols = np.flatnonzero(digit.max(0) > 30)
        crop = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        small = np.asarray(Image.fromarray(crop).resize((16, 16), Image.Resampling.BILINEAR))
        return encode(255 - small, "TIFF")
    raise ValueError(f"unknown variant {kind!r}; choose one of {', '.join(VARIANTS)}")
