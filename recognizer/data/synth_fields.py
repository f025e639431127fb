"""Synthesized digit fields: several MNIST digits handwritten in a row in one box.

Used by ``digits shards make --fields LENGTH``, the field tests and the field benchmark.
Each field is rendered like :func:`recognizer.data.synth.as_scan` renders one digit: dark ink
on light paper with grain. The digits vary in size, slant, spacing and baseline, and a
chosen share of neighbouring pairs touch, so that segmentation meets what real forms
hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

#: Height in pixels of a digit at scale 1 (its ink, not its 28x28 box).
BASE_HEIGHT = 40
#: Pixels of MNIST ink above this value count when a digit is cropped to its ink.
_CROP_LEVEL = 30


def as_digits_u8(digits: np.ndarray) -> np.ndarray:
    """Light-on-dark digits as uint8, from raw MNIST (kept as it is) or from floats in
    [0, 1] (the training set after preprocessing), so that any data source works."""
    if digits.dtype == np.uint8:
        return digits
    return np.clip(np.rint(np.asarray(digits) * 255.0), 0, 255).astype(np.uint8)


def _crop_to_ink(digit: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(digit.max(1) > _CROP_LEVEL)
    cols = np.flatnonzero(digit.max(0) > _CROP_LEVEL)
    if rows.size == 0:
        raise ValueError("a digit image holds no ink")
    return digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def render_digit(digit: np.ndarray, rng: np.random.Generator, height: float,
                  slant: float) -> np.ndarray:
    """One light-on-dark MNIST digit -> float32 ink in [0, 1], scaled and slanted,
    cropped to its ink."""
    crop = _crop_to_ink(digit)
    h, w = crop.shape
    scale = height / h
    nh, nw = max(2, round(h * scale)), max(2, round(w * scale))
    img = Image.fromarray(crop).resize((nw, nh), Image.Resampling.BILINEAR)
    # Shear about the bottom row: x_src = x_dst + slant * (y - nh); the canvas widens
    # by |slant| * nh so no ink is cut off.
    pad = int(np.ceil(abs(slant) * nh))
    offset = -pad if slant < 0 else 0
    img = img.transform((nw + pad, nh), Image.Transform.AFFINE,
                        (1.0, slant, offset - slant * nh, 0.0, 1.0, 0.0),
                        resample=Image.Resampling.BILINEAR)
    ink = np.asarray(img, dtype=np.float32) / 255.0
    cols = np.flatnonzero(ink.max(0) > 0.02)
    return ink[:, cols[0]:cols[-1] + 1] if cols.size else ink


def touch_offset(canvas: np.ndarray, ink: np.ndarray, top: int, start: int) -> int:
    """The largest left position <= start where ink first overlaps the canvas ink."""
    h, w = ink.shape
    mine = ink > 0.5
    for left in range(start, max(start - w, 0) - 1, -1):
        theirs = canvas[top:top + h, left:left + w] > 0.5
        if np.count_nonzero(mine & theirs) >= 2:
            return left
    return start


def make_field(digits_u8: Sequence[np.ndarray], rng: np.random.Generator,
               touching_prob: float = 0.1, height: int = BASE_HEIGHT) -> np.ndarray:
    """Render MNIST digits (light-on-dark uint8 28x28 arrays) as one handwritten field.

    Returns a uint8 greyscale image, dark ink on light paper. Each neighbouring pair
    touches with probability ``touching_prob``; otherwise a gap of 2 px to 0.6 x the
    digit height separates them. Digit heights vary by -20%..+25%, slant by +-0.25 and
    baseline by about 8% of the height.
    """
    return make_field_with_spans(digits_u8, rng, touching_prob, height)[0]


def make_field_with_spans(digits_u8: Sequence[np.ndarray], rng: np.random.Generator,
                          touching_prob: float = 0.1, height: int = BASE_HEIGHT
                          ) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """:func:`make_field`, and where each digit's ink lies: its columns [left, right)."""
    image, _, spans = _compose(digits_u8, rng, touching_prob, height)
    return image, spans


def make_field_with_owners(digits_u8: Sequence[np.ndarray], rng: np.random.Generator,
                           touching_prob: float = 0.1, height: int = BASE_HEIGHT
                           ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`make_field`, and which digit drew each pixel: an int8 map of the field's
    shape holding the index (left to right) of the digit whose ink is darkest there,
    where that ink is at least ``OWNED_INK``, and -1 elsewhere (paper). Teaches the
    splitter of touching digits (:mod:`recognizer.splitter`) where one digit ends."""
    image, owners, _ = _compose(digits_u8, rng, touching_prob, height)
    return image, owners


#: Ink (0..1) a digit must lay down for a pixel to count as that digit's.
OWNED_INK = 0.3


def _compose(digits_u8: Sequence[np.ndarray], rng: np.random.Generator, touching_prob: float,
             height: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """The field image, its pixel owners and each digit's columns."""
    if not len(digits_u8):
        raise ValueError("a field needs at least one digit")
    rendered = [render_digit(d, rng, height * rng.uniform(0.8, 1.25), rng.uniform(-0.25, 0.25))
                for d in digits_u8]
    tallest = max(r.shape[0] for r in rendered)
    margin = int(rng.integers(6, 16))
    canvas_h = tallest + 2 * margin + int(0.3 * height)
    canvas_w = sum(r.shape[1] for r in rendered) + int(0.6 * height) * len(rendered) + 2 * margin
    canvas = np.zeros((canvas_h, canvas_w), dtype=np.float32)
    owners = np.full((canvas_h, canvas_w), -1, dtype=np.int8)
    baseline = margin + tallest + int(0.15 * height)
    x = margin
    spans = []
    for i, ink in enumerate(rendered):
        h, w = ink.shape
        jitter = int(round(rng.normal(0, 0.08 * height)))
        top = int(np.clip(baseline - h + jitter, 0, canvas_h - h))
        if i == 0:
            left = x
        elif rng.random() < touching_prob:
            left = touch_offset(canvas, ink, top, x)
        else:
            left = x + int(rng.integers(2, max(3, int(0.6 * height))))
        region = canvas[top:top + h, left:left + w]
        owners[top:top + h, left:left + w][(ink >= OWNED_INK) & (ink > region)] = i
        np.maximum(region, ink, out=region)
        spans.append((left, left + w))
        x = left + w
    canvas, owners = canvas[:, :x + margin], owners[:, :x + margin]
    paper = rng.uniform(215, 250)
    darkness = rng.uniform(0.75, 1.0) * paper
    page = paper - canvas * darkness + rng.normal(0, 3.0, canvas.shape)
    return np.clip(page, 0, 255).astype(np.uint8), owners, spans


def make_fields(images: np.ndarray, labels: np.ndarray, length: int, count: int,
                rng: np.random.Generator, touching_prob: float = 0.1
                ) -> tuple[list[np.ndarray], list[str]]:
    """``count`` fields of ``length`` digits each, with their true strings.

    Digits are drawn without replacement from a shuffled order of ``images`` (raw uint8
    MNIST, light on dark) and reshuffled only when used up, so 2,000 fields of 5 digits
    from the 10,000 test digits use each digit exactly once.
    """
    if length < 1 or count < 0:
        raise ValueError(f"need length >= 1 and count >= 0, got {length} and {count}")
    if len(images) != len(labels) or not len(images):
        raise ValueError("images and labels must be non-empty and of the same length")
    order = rng.permutation(len(images))
    pos = 0
    fields: list[np.ndarray] = []
    texts: list[str] = []
    for _ in range(count):
        picks = []
        for _ in range(length):
            if pos == len(order):
                order, pos = rng.permutation(len(images)), 0
            picks.append(int(order[pos]))
            pos += 1
        fields.append(make_field([images[i] for i in picks], rng, touching_prob))
        texts.append("".join(str(int(labels[i])) for i in picks))
    return fields, texts
