"""Pen strokes that are not digits: separators, end-of-amount marks and underlines."""

from __future__ import annotations

import math

import cv2
import numpy as np


def stroke(canvas: np.ndarray, points: np.ndarray, width: float) -> None:
    """Draw a pen stroke (anti-aliased polyline) of ink 1.0 into a float canvas."""
    scale = 4
    pts = np.round(points * scale).astype(np.int32).reshape(-1, 1, 2)
    layer = np.zeros((canvas.shape[0] * scale, canvas.shape[1] * scale), np.uint8)
    cv2.polylines(layer, [pts], False, 255, max(1, int(round(width * scale))), cv2.LINE_AA)
    small = cv2.resize(layer, (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_AREA)
    np.maximum(canvas, small.astype(np.float32) / 255.0, out=canvas)


def wobbly(x0: float, y0: float, x1: float, y1: float, rng: np.random.Generator,
            bend: float = 0.08, n: int = 8) -> np.ndarray:
    """Points of a hand-drawn straight-ish stroke from (x0, y0) to (x1, y1)."""
    t = np.linspace(0, 1, n)
    length = math.hypot(x1 - x0, y1 - y0)
    sag = rng.uniform(-bend, bend) * length * np.sin(np.pi * t)
    nx, ny = (-(y1 - y0) / max(length, 1e-6), (x1 - x0) / max(length, 1e-6))
    return np.stack([x0 + (x1 - x0) * t + nx * sag, y0 + (y1 - y0) * t + ny * sag], 1)


def mark(kind: str, height: float, pen: float, rng: np.random.Generator) -> np.ndarray:
    """A handwritten separator or end mark as float ink cropped to itself; it sits on
    the digits' base line with the bottom of its array (dots and commas a little
    below, dashes at mid height: the array's height places it)."""
    h = int(round(height))
    w = {".": 0.35, ",": 0.4, "-": 0.7, "=": 0.7, "/": 0.7, "-/": 1.1, "/-": 1.1,
         "--": 1.6, "*": 0.7}[kind]
    canvas = np.zeros((h + int(0.3 * h) + 4, int(w * h) + 4 + int(2 * pen)), np.float32)
    base = h  # the base line's row
    cw = canvas.shape[1] - 2 - pen
    if kind == ".":
        r = pen * rng.uniform(0.5, 0.9)
        stroke(canvas, np.array([[2 + pen, base - r], [2 + pen + r * 0.6, base - r * 0.8]]), 2 * r)
    elif kind == ",":
        stroke(canvas, np.array([[2 + pen * 1.5, base - pen], [2 + pen * 1.6, base],
                                  [1 + pen * 0.6, base + 0.22 * h]]), pen)
    elif kind in ("-", "--"):
        y = base - rng.uniform(0.3, 0.6) * h
        stroke(canvas, wobbly(2, y, cw, y + rng.uniform(-0.1, 0.1) * h, rng), pen)
    elif kind == "=":
        y = base - rng.uniform(0.35, 0.55) * h
        gap = rng.uniform(0.15, 0.25) * h
        for dy in (0.0, gap):
            stroke(canvas, wobbly(2, y + dy, cw, y + dy + rng.uniform(-0.05, 0.05) * h, rng), pen)
    elif kind == "/":
        stroke(canvas, wobbly(2, base, cw, base - rng.uniform(0.6, 1.0) * h, rng, 0.03), pen)
    elif kind in ("-/", "/-"):
        y = base - rng.uniform(0.3, 0.5) * h
        half = cw * 0.5
        dash, slash = (2, half), (half, cw)
        if kind == "/-":
            dash, slash = (half, cw), (2, half)
        stroke(canvas, wobbly(dash[0], y, dash[1], y, rng), pen)
        stroke(canvas, wobbly(slash[0], base, slash[1], base - 0.8 * h, rng, 0.03), pen)
    elif kind == "*":
        cx, cy, r = cw / 2 + 1, base - 0.6 * h, 0.3 * h
        for a in (0, 60, 120):
            dx, dy = r * math.cos(math.radians(a)), r * math.sin(math.radians(a))
            stroke(canvas, np.array([[cx - dx, cy - dy], [cx + dx, cy + dy]]), pen * 0.8)
    return canvas


def underline(ink: np.ndarray, height: float, pen: float, rng: np.random.Generator) -> np.ndarray:
    """The row of ink with a hand-drawn underline below it."""
    base = ink.shape[0]
    out = np.zeros((base + int(0.4 * height), ink.shape[1]), np.float32)
    out[:base] = ink
    y = base + rng.uniform(0.05, 0.3) * height
    x0 = rng.uniform(0, 0.3 * height)
    x1 = ink.shape[1] - rng.uniform(0, 0.3 * height)
    stroke(out, wobbly(x0, y, x1, y + rng.uniform(-0.15, 0.15) * height, rng, 0.05), pen)
    return out
