"""What the form's printer put on the page: words, signs, security backgrounds, ruling
lines, cell borders and comb boxes."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from recognizer.data.forms.config import FormConfig


@lru_cache(maxsize=16)
def _font(size: int, serif: bool) -> ImageFont.FreeTypeFont:
    # matplotlib (a dependency) ships the DejaVu fonts on every machine.
    import matplotlib

    folder = f"{matplotlib.get_data_path()}/fonts/ttf"
    name = "DejaVuSerif.ttf" if serif else "DejaVuSans.ttf"
    return ImageFont.truetype(f"{folder}/{name}", size)


def print_text(text: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Printed text as float ink, cropped to itself."""
    face = _font(max(6, size), bool(rng.random() < 0.5))
    left, top, right, bottom = face.getbbox(text)
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), text, fill=255, font=face)
    return np.asarray(img, np.float32) / 255.0


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Darkening (0..1) of printed security patterns, stains and uneven light."""
    dark = np.zeros((h, w), np.float32)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # guilloche-like waves of fine lines
        f = rng.uniform(0.15, 0.6)
        phase = rng.uniform(0, 6.3)
        waves = np.sin(f * xx + 3 * np.sin(0.05 * yy + phase)) + np.sin(f * 0.8 * yy + 2 * np.sin(0.04 * xx))
        dark += rng.uniform(0.06, 0.3) * (waves > rng.uniform(0.8, 1.6))
    elif kind == 1:  # a tint with grain
        dark += rng.uniform(0.05, 0.3) + rng.normal(0, rng.uniform(0.01, 0.06), (h, w)).astype(np.float32)
    elif kind == 2:  # printed dot screen
        step = int(rng.integers(3, 7))
        dots = ((xx.astype(int) % step == 0) & (yy.astype(int) % step == 0)).astype(np.float32)
        dark += rng.uniform(0.2, 0.5) * cv2.GaussianBlur(dots, (0, 0), 0.6) * 2
    else:  # repeated printed microtext
        text = print_text("SECURITY 0123456789 " * 6, int(rng.integers(6, 10)), rng)
        reps_y = h // max(1, text.shape[0]) + 1
        tile = np.tile(text, (reps_y, w // max(1, text.shape[1]) + 2))[:h, :w]
        dark[:tile.shape[0], :tile.shape[1]] += rng.uniform(0.08, 0.25) * tile
    # uneven light and stains: broad blurred blobs
    for _ in range(int(rng.integers(0, 3))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.2, 0.8) * max(h, w)
        dark += rng.uniform(0.05, 0.25) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    dark += rng.uniform(-0.1, 0.15) * (xx / max(w, 1))
    return np.clip(dark, 0, 0.6)


def rule(page_dark: np.ndarray, horizontal: bool, at: int, width: int, strength: float,
          rng: np.random.Generator) -> None:
    """A printed ruling line, slightly skewed, across the whole page."""
    h, w = page_dark.shape
    layer = np.zeros((h, w), np.uint8)
    skew = rng.uniform(-0.01, 0.01)
    if horizontal:
        p0, p1 = (0, at), (w - 1, int(round(at + skew * w)))
    else:
        p0, p1 = (at, 0), (int(round(at + skew * h)), h - 1)
    cv2.line(layer, p0, p1, 255, max(1, width), cv2.LINE_AA)
    np.maximum(page_dark, strength * layer.astype(np.float32) / 255.0, out=page_dark)


def form_lines(printed: np.ndarray, spans: list, m: list[int], base: int, height: float,
                cfg: FormConfig, rng: np.random.Generator) -> None:
    """Ruling lines, cell borders and comb boxes, printed into ``printed``."""
    h, w = printed.shape
    width = int(rng.integers(1, 4))
    strength = rng.uniform(0.35, 1.0)
    if rng.random() < cfg.p_boxes and spans:
        top = max(0, m[0] - int(rng.uniform(0.05, 0.3) * height))
        bottom = min(h - 1, m[0] + base + int(rng.uniform(0.0, 0.3) * height))
        rule(printed, True, top, width, strength, rng)
        rule(printed, True, bottom, width, strength, rng)
        edges = [spans[0][0] - int(0.15 * height)]
        edges += [(a[1] + b[0]) // 2 for a, b in zip(spans, spans[1:], strict=False)]
        edges.append(spans[-1][1] + int(0.15 * height))
        for x in edges:
            if 0 <= x < w:
                rule(printed, False, int(x), width, strength, rng)
        return
    if rng.random() < cfg.p_hlines:
        for _ in range(int(rng.integers(1, 4))):
            y = int(rng.choice([m[0] + base + int(rng.uniform(-0.3, 0.3) * height),
                                int(rng.uniform(0, h)), 0, h - 1 - int(rng.integers(0, 3))]))
            rule(printed, True, int(np.clip(y, 0, h - 1)), width, strength * rng.uniform(0.3, 1), rng)
    if rng.random() < cfg.p_vlines:
        for _ in range(int(rng.integers(1, 3))):
            x = int(rng.choice([int(rng.integers(0, max(1, m[2] + 1))),
                                w - 1 - int(rng.integers(0, max(1, m[3] + 1))),
                                int(rng.uniform(0, w))]))
            rule(printed, False, int(np.clip(x, 0, w - 1)), width, strength, rng)
