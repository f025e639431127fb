"""Paper, ink and the scanner: the field's pixels from its handwriting and print."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from recognizer.data.forms.config import FormConfig
from recognizer.data.forms.printed import background


def page(hand: np.ndarray, printed: np.ndarray, pen: float, cfg: FormConfig,
          rng: np.random.Generator) -> np.ndarray:
    """Paper, background, ink, masks and scanner effects: the uint8 image."""
    h, w = hand.shape
    paper = rng.uniform(150, 250)
    dark = np.zeros((h, w), np.float32)
    if rng.random() < cfg.p_background:
        dark = np.maximum(dark, background(h, w, rng))
    if rng.random() < cfg.p_bleed:
        ghost = cv2.GaussianBlur(hand[::-1, ::-1].copy(), (0, 0), 1.5)
        dark = np.maximum(dark, rng.uniform(0.08, 0.25) * ghost)
    dark = np.maximum(dark, printed * rng.uniform(0.6, 1.0))
    if rng.random() < cfg.p_specks:
        for _ in range(int(rng.integers(1, 8))):
            y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
            cv2.circle(dark, (x, y), int(rng.integers(0, max(1, int(pen)))), float(rng.uniform(0.4, 1)), -1)
    ink_level = rng.uniform(*cfg.ink_level)
    img = paper * (1 - dark) * (1 - ink_level * hand)
    if rng.random() < cfg.p_mask:
        mask(img, hand, rng)
    if rng.random() < cfg.p_blur:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
    img = img + rng.normal(0, rng.uniform(1, 6), img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < cfg.p_jpeg:
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(rng.integers(30, 90)))
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    return out


def mask(img: np.ndarray, hand: np.ndarray, rng: np.random.Generator) -> None:
    """A dark scanner border or mask along one or two edges, over the margin only (a
    mask over the digits would hide what the label says is there)."""
    h, w = img.shape
    rows = np.flatnonzero(hand.max(1) > 0.05)
    cols = np.flatnonzero(hand.max(0) > 0.05)
    free = (int(cols[0]), w - 1 - int(cols[-1]), int(rows[0]), h - 1 - int(rows[-1])) if rows.size \
        else (w, w, h, h)
    level = rng.uniform(0, 60)
    for _ in range(int(rng.integers(1, 3))):
        side = int(rng.integers(0, 4))
        d = int(min(free[side], rng.uniform(0.03, 0.4) * (w if side < 2 else h)))
        ramp = int(rng.integers(0, 4))
        if d < 1:
            continue
        if side in (0, 1):
            sl = np.s_[:, :d] if side == 0 else np.s_[:, w - d:]
        else:
            sl = np.s_[:d, :] if side == 2 else np.s_[h - d:, :]
        img[sl] = level + rng.normal(0, 3, img[sl].shape)
        if ramp:
            edge = cv2.GaussianBlur(img, (0, 0), ramp)
            img[...] = np.minimum(img, edge)
