"""Reading fields with the learned reader: image bytes -> canvases -> the network ->
strings, per-character confidences and boxes.

Split in two like the segmenting reader, so that serving and batch jobs can batch the
network across requests and shards: :func:`prepare` (decode and fit, in the caller),
:func:`run` (the network, where the model lives) and :func:`assemble` (decoding the
outputs into :class:`~recognizer.results.FieldResult`).

Each field is read where the localizer puts it and again with the box moved a little
(:data:`SHIFTS`). Each of these views gives a reading; the one kept is the string the
views find likeliest together (the largest product of its probabilities in every view),
and its confidence is how *steady* it is: the least of those probabilities. A reading
that holds only where the box happens to sit (a leading digit half in the strip, a mark
at its edge) is less sure than its own probability says, and a digit misread at one
box is often outvoted by the other two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from recognizer.decode import decode
from recognizer.errors import ImageError, NoDigits
from recognizer.reader.codec import CLASSES, Reading, decode_batch, sequence_probabilities
from recognizer.reader.field_input import Fitted, fit
from recognizer.reader.model import (
    CANVAS_H,
    CANVAS_W,
    COLUMNS,
    STRIDE,
    box_heights,
    cut_strips,
    stretch,
    strip_origin,
    strip_scale,
)
from recognizer.reader.search import reread_missed
from recognizer.results import FieldResult


class Calibrate(Protocol):
    """Maps a reading's probability and digit count to the chance it is right
    (:class:`recognizer.fields.calibrate.Calibration`); ``measure`` names which of the
    reading's probabilities it was fitted on ("steady", "sequence" or "path")."""

    measure: str

    def __call__(self, raw: float, digits: int) -> float: ...


#: Fields per network call.
BATCH = 256
#: The box moves a reading is read again at, in box heights (all four edges moved alike):
#: up-left and down-right by a tenth, well inside the 20% the reader's training moves its
#: boxes by, so that a steady reading reads the same there.
SHIFTS = (-0.1, 0.1)


@dataclass
class Outputs:
    """The network's outputs for M canvases: per-column probabilities (M, COLUMNS,
    CLASSES), the boxes read at (M, 4, canvas pixels), and the probabilities read at the
    boxes moved by each of :data:`SHIFTS` (M, len(SHIFTS), COLUMNS, CLASSES)."""

    probs: np.ndarray
    boxes: np.ndarray
    shifted: np.ndarray

    def rows(self, start: int, stop: int) -> Outputs:
        """The outputs of canvases ``start:stop``."""
        return Outputs(self.probs[start:stop], self.boxes[start:stop], self.shifted[start:stop])

    @staticmethod
    def empty() -> Outputs:
        """The outputs of no canvas."""
        return Outputs(np.zeros((0, COLUMNS, CLASSES), np.float32), np.zeros((0, 4), np.float32),
                       np.zeros((0, len(SHIFTS), COLUMNS, CLASSES), np.float32))


@dataclass
class CanvasPlan:
    """Fields fitted for the reader, waiting for the network: ``inputs`` (M, CANVAS_H,
    CANVAS_W) uint8, one per field that decoded; ``entries`` per image its
    :class:`Fitted` placement (with the image's shape) or the :class:`ImageError` it
    raised."""

    inputs: np.ndarray
    entries: list[tuple[Fitted, tuple[int, int]] | ImageError]


def prepare(images: Sequence[bytes | np.ndarray]) -> CanvasPlan:
    """Decode each image and fit it to the canvas; errors stay in their places."""
    canvases, entries = [], []
    for item in images:
        try:
            grey = decode(item)
            x, where = fit(grey)
        except ImageError as exc:
            entries.append(exc)
            continue
        canvases.append(np.rint(x * 255.0).astype(np.uint8))
        entries.append((where, grey.shape))
    inputs = np.stack(canvases) if canvases else np.zeros((0, CANVAS_H, CANVAS_W), np.uint8)
    return CanvasPlan(inputs, entries)


def _moved(boxes: torch.Tensor, shift: float) -> torch.Tensor:
    """Boxes (canvas pixels) moved right and down by ``shift`` box heights."""
    return boxes + (shift * box_heights(boxes)).unsqueeze(1)


def run(net: torch.nn.Module, canvas: np.ndarray, device: torch.device, batch: int = BATCH) -> Outputs:
    """The network on uint8 canvases (:class:`Outputs`): read where the localizer finds
    the number when it looks again round its first box (a field whose box reads no digit
    is read again on rows of the canvas, :mod:`recognizer.reader.search`), and again at
    that box moved by each of :data:`SHIFTS`."""
    probs, boxes, shifted = [], [], []
    with torch.inference_mode():
        for at in range(0, len(canvas), batch):
            # A copy: arrays from the Ray object store are read-only.
            x = torch.from_numpy(np.array(canvas[at:at + batch], dtype=np.uint8)).to(device)
            x = x.unsqueeze(1).float().div_(255.0).contiguous(memory_format=torch.channels_last)
            logits, read_at = net.read(x)
            p, read_at = reread_missed(net, x, torch.softmax(logits.float(), dim=2), read_at.float())
            again = p.new_zeros(len(p), len(SHIFTS), *p.shape[1:])
            for k, s in enumerate(SHIFTS):
                logits = net.reader(stretch(cut_strips(x, _moved(read_at, s))))
                again[:, k] = torch.softmax(logits.float(), dim=2)
            probs.append(p.cpu().numpy())
            boxes.append(read_at.cpu().numpy())
            shifted.append(again.cpu().numpy())
    if not probs:
        return Outputs.empty()
    return Outputs(np.concatenate(probs), np.concatenate(boxes), np.concatenate(shifted))


def _views(outputs: Outputs) -> list[np.ndarray]:
    """The per-column probabilities of every view: where read, then each moved box."""
    return [outputs.probs] + [outputs.shifted[:, k] for k in range(outputs.shifted.shape[1])]


def view_box(box: np.ndarray, view: int) -> np.ndarray:
    """The box (canvas pixels) that view ``view`` read: 0 where the field was read, then
    the box moved by each of :data:`SHIFTS`."""
    if view == 0:
        return box
    return _moved(torch.from_numpy(box[None].astype(np.float32)), SHIFTS[view - 1])[0].numpy()


def read_outputs(outputs: Outputs, length: int | None = None) -> list[tuple[Reading, float, int]]:
    """Each field's reading, how steady it is, and the view it was read in (for its
    boxes: :func:`view_box`). Every view's greedy reading is a candidate; the one kept
    has the largest product of its string's probabilities over the views (the first
    view wins ties, so a field read alike everywhere keeps the reading where it was
    read), and its steadiness is the least of them. With ``length`` (the digits the
    form holds), a candidate of that many digits is kept before any other."""
    views = _views(outputs)
    readings = [decode_batch(v) for v in views]
    n = len(outputs.probs)
    # scores[i, c, v]: the probability, in view v, of the string view c read in field i.
    scores = np.empty((n, len(views), len(views)))
    for c, candidates in enumerate(readings):
        raws = [r.raw for r in candidates]
        for v, probs in enumerate(views):
            scores[:, c, v] = ([r.probability for r in candidates] if v == c
                               else sequence_probabilities(probs, raws))
    together = np.log(np.maximum(scores, 1e-300)).sum(2)
    if length is not None:
        fits = np.array([[len(r.text) == length for r in candidates] for candidates in readings],
                        dtype=bool).reshape(len(views), n).T
        together = np.where(fits | ~fits.any(1, keepdims=True), together, -np.inf)
    chosen = together.argmax(1)
    return [(readings[c][i], float(scores[i, c].min()), int(c)) for i, c in enumerate(chosen)]


def _char_boxes(reading: Reading, box: np.ndarray, where: Fitted, shape: tuple[int, int]
                ) -> list[tuple[int, int, int, int]]:
    """Each character's columns in the image, from the output columns it was read at;
    its rows are the box the reader read."""
    b = torch.from_numpy(box[None].astype(np.float32))
    s = float(strip_scale(b)[0])
    left = float(strip_origin(b)[0][0])
    h, w = shape
    top = int(np.clip((box[1] - where.top) / where.scale, 0, h))
    bottom = int(np.clip((box[3] - where.top) / where.scale, top, h))
    out = []
    for first, last in reading.columns:
        x0 = (left + first * STRIDE / s) / where.scale
        x1 = (left + (last + 1) * STRIDE / s) / where.scale
        out.append((int(np.clip(x0, 0, w)), top, int(np.clip(np.ceil(x1), 0, w)), bottom))
    return out


def _result(reading: Reading, steady: float, box: np.ndarray, where: Fitted, shape: tuple[int, int],
            calibration: Calibrate | None, length: int | None) -> FieldResult | ImageError:
    digits = [i for i, ch in enumerate(reading.raw) if ch.isdigit()]
    if not digits:
        return NoDigits("no digits found: the reader read no digit in the field"
                        + (f" (only {reading.raw!r})" if reading.raw else ""))
    boxes = _char_boxes(reading, box, where, shape)
    confs = tuple(reading.confidences[i] for i in digits)
    confidence = steady
    if calibration is not None:
        measured = {"path": reading.path_probability, "sequence": reading.probability}.get(
            calibration.measure, steady)
        confidence = calibration(measured, len(digits))
    if length is not None and len(digits) != length:
        confidence = 0.0  # a reading of another length than the form's is never accepted
    return FieldResult(reading.text, confs, confidence, tuple(boxes[i] for i in digits), reading.raw)


def assemble(plan: CanvasPlan, outputs: Outputs, calibration: Calibrate | None = None,
             length: int | None = None) -> list[FieldResult | ImageError]:
    """Decode each field's outputs (:func:`run`'s): one :class:`FieldResult` or
    :class:`ImageError` per image, in order. ``length``: the number of digits the form
    holds, when known: a view's reading of that length is kept before the others, and a
    reading of another length gets confidence 0."""
    out: list[FieldResult | ImageError] = []
    readings = iter(read_outputs(outputs, length))
    at = 0
    for entry in plan.entries:
        if isinstance(entry, ImageError):
            out.append(entry)
            continue
        where, shape = entry
        reading, steady, view = next(readings)
        out.append(_result(reading, steady, view_box(outputs.boxes[at], view), where, shape, calibration,
                           length))
        at += 1
    return out
