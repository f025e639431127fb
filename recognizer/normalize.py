"""Normalising: a greyscale page or crop in, a 28x28 MNIST-style digit out.

The output follows the MNIST convention: light ink on a dark background, cropped to the
ink, the longer side fitted into a 20x20 box keeping the aspect ratio, placed in a 28x28
field so that the ink's centre of mass sits in the middle, values in [0, 1]. Before it is
fitted, the crop is deslanted (sheared so that its ink's principal axis is upright), so
that writers who slant their digits and writers who do not give the model the same shapes.

:func:`ink_levels` is the one rule for telling ink from paper; field segmentation
(:mod:`recognizer.fields.marks`) uses it too, so a one-digit field reads as a digit would.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from recognizer import settings
from recognizer.errors import BlankImage, ImageError

#: Ink must differ from the paper by at least this many grey levels (of 255).
MIN_CONTRAST = 40.0
#: After scaling the darkest ink to 1, values below this are paper noise (JPEG ringing,
#: scanner grain) and do not count when the digit is cropped.
INK_THRESHOLD = 0.15
#: Paper brighter than this grey level is light paper (dark ink); darker is dark paper.
LIGHT_PAPER = 127
#: The largest slant deslanting undoes, in columns per row of height (about 39 degrees);
#: a steeper lean is more often the shape of the digit (a 7's bar, a 2's base) than the
#: writer's slant.
MAX_SLANT = 0.8


def ink_levels(greys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ink of an (N, H, W) uint8 stack: (ink, peak, first).

    ``ink`` (uint8, like ``greys``) is how far each pixel lies from its image's paper
    towards the ink; ``peak`` (int64, per image) its largest value; ``first`` (per
    image) the smallest ink level that counts, ``INK_THRESHOLD`` of the peak: below it
    is paper noise.
    """
    n = len(greys)
    # Paper is what most of the border is (its median); ink is whatever differs from it
    # in the opposite direction, so dark-on-light and light-on-dark come out the same.
    border = np.concatenate((greys[:, 0], greys[:, -1], greys[:, 1:-1, 0], greys[:, 1:-1, -1]),
                            axis=1)
    mid = (border.shape[1] + 1) // 2 - 1
    paper = np.partition(border, mid, axis=1)[:, mid][:, None, None]
    ink = _ink(greys, paper)
    peak = ink.reshape(n, -1).max(axis=1).astype(np.int64)
    return ink, peak, np.ceil(INK_THRESHOLD * peak)


def _ink(greys: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """How far each pixel lies from its image's paper towards the ink (uint8): darker than
    light paper, or lighter than dark paper; 0 on the paper's other side."""
    light = paper[:, 0, 0] > LIGHT_PAPER
    ink = np.empty_like(greys)
    # Each stack is split by paper kind rather than computing both kinds for every pixel
    # and choosing (7x slower); scans of one kind take the slice path, without copies.
    for rows, on_light in ((light, True), (~light, False)):
        if not rows.any():
            continue
        sel = slice(None) if rows.all() else rows
        g, p = greys[sel], paper[sel]
        ink[sel] = p - np.minimum(g, p) if on_light else np.maximum(g, p) - p
    return ink


def blank_message(peak: float, what: str = "") -> str:
    """The message of the :class:`BlankImage` raised when the ink's ``peak`` is too faint."""
    return (f"no ink found{what}: the darkest stroke differs from the paper by {peak:.0f} grey "
            f"levels (at least {MIN_CONTRAST:.0f} needed)")


def normalize(grey: np.ndarray) -> np.ndarray:
    """Turn a greyscale page or crop into a 28x28 float32 MNIST-style digit.

    Raises :class:`BlankImage` when there is no ink.
    """
    if grey.dtype != np.uint8:
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    out, errors = normalize_stack(grey[None])
    if errors[0] is not None:
        raise errors[0]
    return out[0]


def normalize_stack(greys: np.ndarray, upright: bool = True) -> tuple[np.ndarray, list[ImageError | None]]:
    """:func:`normalize` for an (N, H, W) uint8 stack of same-sized images at once.
    ``upright=False`` keeps each digit's slant: digits as written, for synthesizing
    fields (the model's input is always deslanted).

    Returns (N, 28, 28) float32 (zeros where an image is blank) and per image None or
    its :class:`BlankImage`. The per-image work left is the crop's resize; finding paper,
    ink and the digit's box runs over the whole stack in a few numpy calls.
    """
    n, h, w = greys.shape
    size = settings.IMAGE_SIZE
    out = np.zeros((n, size, size), dtype=np.float32)
    errors: list[ImageError | None] = [None] * n
    if n == 0:
        return out, errors
    ink, peak, first = ink_levels(greys)
    # Below the first level is paper noise: it is zeroed and does not count when the
    # digit is cropped.
    mask = ink >= first[:, None, None]
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    top, bottom = rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    left, right = cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    # One lookup table per image both zeroes the noise and stretches the ink to 0..255
    # in uint8, where Pillow resizes fastest.
    levels = np.arange(256, dtype=np.float64)
    tables = (levels * (255.0 / np.maximum(peak, 1))[:, None]).astype(np.uint8)
    tables[levels < first[:, None]] = 0

    box = settings.DIGIT_BOX
    small = np.zeros((n, box, box), dtype=np.float64)
    shapes = np.zeros((n, 2), dtype=np.int64)
    for i in range(n):
        if peak[i] < MIN_CONTRAST:
            errors[i] = BlankImage(blank_message(peak[i]))
            continue
        crop = tables[i].take(ink[i, top[i]:bottom[i], left[i]:right[i]])
        fitted = _fit(deslant(crop) if upright else crop, box)
        shapes[i] = fitted.shape
        small[i, :fitted.shape[0], :fitted.shape[1]] = fitted
    _centre(small, shapes, out, errors)
    return out, errors


def deslant(crop: np.ndarray) -> np.ndarray:
    """The uint8 crop (ink bright) sheared so that its ink leans neither way, and cropped to
    the ink's columns again. The slant is the ink's second moment mu11/mu02: how far the
    ink's horizontal centre moves per row, clipped to ``MAX_SLANT``; the shear turns about
    the ink's centre row, so that row keeps its place."""
    h, w = crop.shape
    m = cv2.moments(crop)
    if m["m00"] <= 0 or m["mu02"] <= 1e-6:
        return crop
    slant = float(np.clip(m["mu11"] / m["mu02"], -MAX_SLANT, MAX_SLANT))
    if abs(slant) * h < 0.5:  # less than half a pixel over the whole height
        return crop
    centre = m["m01"] / m["m00"]
    extra = int(np.ceil(abs(slant) * h / 2)) + 1
    shear = np.float32([[1, -slant, slant * centre + extra], [0, 1, 0]])
    out = cv2.warpAffine(np.ascontiguousarray(crop), shear, (w + 2 * extra, h),
                         flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    cols = np.flatnonzero(out.any(axis=0))
    if cols.size == 0:
        return crop
    return out[:, cols[0]:cols[-1] + 1]


def _fit(crop: np.ndarray, box: int) -> np.ndarray:
    """The crop with its longer side scaled to box pixels, aspect ratio kept (uint8)."""
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return crop
    # frombuffer/tobytes rather than fromarray/asarray: the same pixels, at less than half
    # the cost per crop, which is most of this function's time for small crops.
    img = Image.frombuffer("L", (w, h), np.ascontiguousarray(crop), "raw", "L", 0, 1)
    small = img.resize((nw, nh), Image.Resampling.BILINEAR)
    return np.frombuffer(small.tobytes(), np.uint8).reshape(nh, nw)


def _centre(small: np.ndarray, shapes: np.ndarray, out: np.ndarray,
            errors: list[ImageError | None]) -> None:
    """Place each fitted digit in the 28x28 field with its centre of mass in the middle,
    scaled so its brightest pixel is 1. Sums of integer grey levels are exact in
    float64, so the placement does not depend on how many images are in the stack."""
    size = out.shape[1]
    steps = np.arange(small.shape[1], dtype=np.float64)
    total = small.sum(axis=(1, 2))
    weight = np.where(total > 0, total, 1.0)
    cy = (small.sum(axis=2) @ steps) / weight
    cx = (small.sum(axis=1) @ steps) / weight
    top = np.clip(np.rint(size / 2 - 0.5 - cy), 0, size - shapes[:, 0]).astype(np.int64)
    left = np.clip(np.rint(size / 2 - 0.5 - cx), 0, size - shapes[:, 1]).astype(np.int64)
    brightest = small.max(axis=(1, 2))
    for i, (nh, nw) in enumerate(shapes):
        if errors[i] is not None:
            continue
        if total[i] <= 0:
            errors[i] = BlankImage("no ink left after scaling the digit down")
            continue
        out[i, top[i]:top[i] + nh, left[i]:left[i] + nw] = small[i, :nh, :nw]
        out[i] *= np.float32(1.0 / brightest[i])
