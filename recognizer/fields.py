"""Read whole digit fields: a postal code, a cheque amount, an account number.

>>> import recognizer
>>> from recognizer.fields import read_field
>>> model = recognizer.load("/path/to/checkpoint")               # doctest: +SKIP
>>> result = read_field(model, open("postcode.png", "rb").read())  # doctest: +SKIP
>>> result.text, result.confidence                                # doctest: +SKIP
('75013', 0.97)

Each field is decoded with :func:`recognizer.preprocess.decode`, cut into digits by
:mod:`recognizer.segment`, each piece normalised by the one preprocessing path
(:func:`recognizer.preprocess.normalize`), and every piece of every field in a call goes
through the model in one batch (``model.predict_tensors``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recognizer.errors import ImageError
from recognizer.preprocess import as_image_list, decode, normalize
from recognizer.segment import Piece, SegmentConfig, Slot, segment

if TYPE_CHECKING:  # the model (and torch) is needed only by read_fields' caller
    from recognizer.predict import Recognizer

#: Zero pixels around a piece so that normalize() sees paper at the border.
_PAD = 2


@dataclass(frozen=True)
class FieldResult:
    """One field read.

    ``text`` holds the digits left to right; ``confidences[i]`` is the model's
    probability for ``text[i]``; ``confidence`` is their product (the chance that the
    whole string is right if digits err independently; 0..1, never above the lowest
    digit's); ``boxes[i]`` is digit i's (left, top, right, bottom) in input pixels.
    """

    text: str
    confidences: tuple[float, ...]
    confidence: float
    boxes: tuple[tuple[int, int, int, int], ...]

    def to_dict(self) -> dict:
        """JSON-ready form for the batch job's rows and the HTTP API."""
        return {"text": self.text, "confidences": list(self.confidences),
                "confidence": self.confidence, "boxes": [list(b) for b in self.boxes]}


def _model_input(piece: Piece) -> np.ndarray:
    # The piece's ink is light on dark; padded with paper it is a small greyscale image
    # that normalize() treats exactly like any single-digit upload.
    grey = np.pad(np.rint(piece.ink * 255.0).astype(np.uint8), _PAD)
    return normalize(grey)


def _log_score(p: np.ndarray) -> float:
    return float(np.sum(np.log(np.maximum(p.max(axis=1), 1e-12))))


def _choose_all(scored: list[list[np.ndarray]], length: int | None) -> list[int]:
    """The cutting of each slot: each slot's most confident one, or, when the number of
    digits is known and reachable, the most confident combination with that many."""
    free = [_choose(per_cutting) for per_cutting in scored]
    if length is None or sum(len(c[i]) for c, i in zip(scored, free, strict=True)) == length:
        return free
    # best[n] = (log score, choices) of the first slots holding n digits in all.
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
    for per_cutting in scored:
        step: dict[int, tuple[float, list[int]]] = {}
        for n, (score, picks) in best.items():
            for j, p in enumerate(per_cutting):
                total, value = n + len(p), score + _log_score(p)
                if total <= length and (total not in step or value > step[total][0]):
                    step[total] = (value, [*picks, j])
        best = step
    return best[length][1] if length in best else free


def _choose(probs: list[np.ndarray]) -> int:
    """Index of the cutting the model is most confident about (highest product)."""
    # The product is the probability of the whole reading, so cuttings into different
    # numbers of digits compare on the same footing.
    return int(np.argmax([_log_score(p) for p in probs]))


@dataclass
class FieldPlan:
    """Fields cut into pieces, waiting for the model: ``inputs`` (M, 28, 28) holds every
    candidate piece of every field, in order; ``entries`` holds per image either its
    slots or the :class:`ImageError` it raised."""

    inputs: np.ndarray
    entries: list[list[Slot] | ImageError]
    length: int | None = None


def prepare_fields(images: Sequence[bytes | np.ndarray] | np.ndarray,
                   config: SegmentConfig | None = None, length: int | None = None) -> FieldPlan:
    """Decode and segment fields; the model-free half of :func:`read_fields`.

    Batch jobs run this in their decoding tasks and send ``plan.inputs`` to the model
    actors; :func:`assemble_fields` turns the probabilities back into strings.
    """
    config = config or SegmentConfig()
    config.validate()
    entries: list[list[Slot] | ImageError] = []
    inputs: list[np.ndarray] = []
    for item in as_image_list(images):
        try:
            slots = segment(decode(item), config, length)
            pieces = [_model_input(p) for s in slots for c in s.cuttings for p in c]
        except ImageError as exc:
            entries.append(exc)
            continue
        entries.append(slots)
        inputs.extend(pieces)
    stacked = np.stack(inputs) if inputs else np.zeros((0, 28, 28), np.float32)
    return FieldPlan(stacked, entries, length)


def assemble_fields(plan: FieldPlan, probs: np.ndarray) -> list[FieldResult | ImageError]:
    """Pick each slot's best cutting from the pieces' probabilities (N, 10) and spell out
    the strings: one :class:`FieldResult` or :class:`ImageError` per image."""
    results: list[FieldResult | ImageError] = []
    at = 0
    for entry in plan.entries:
        if isinstance(entry, ImageError):
            results.append(entry)
            continue
        text, confs, boxes = [], [], []
        scored = []
        for slot in entry:
            per_cutting = []
            for cutting in slot.cuttings:
                per_cutting.append(probs[at:at + len(cutting)])
                at += len(cutting)
            scored.append(per_cutting)
        for slot, per_cutting, best in zip(entry, scored, _choose_all(scored, plan.length), strict=True):
            for piece, p in zip(slot.cuttings[best], per_cutting[best], strict=True):
                text.append(str(int(p.argmax())))
                confs.append(float(p.max()))
                boxes.append(piece.box)
        results.append(FieldResult("".join(text), tuple(confs), math.prod(confs), tuple(boxes)))
    return results


def read_fields(model: Recognizer, images: Sequence[bytes | np.ndarray] | np.ndarray,
                config: SegmentConfig | None = None,
                length: int | None = None) -> list[FieldResult | ImageError]:
    """Read a batch of field images (encoded bytes or uint8 arrays, any size).

    Returns one entry per image, in order: a :class:`FieldResult`, or the typed
    :class:`ImageError` that image raised (``BlankImage`` for no ink,
    ``TooManyComponents`` for more marks than ``config.max_components``, and the
    decoding errors of :func:`recognizer.preprocess.decode`). Never raises for a bad image.
    Every piece of every field goes through the model in one batch. ``length``, when
    the number of digits is known (postal codes, account numbers), steers segmentation
    and the choice of cuttings towards readings of that length.
    """
    plan = prepare_fields(images, config, length)
    probs = model.predict_tensors(plan.inputs) if len(plan.inputs) else np.zeros((0, 10), np.float32)
    return assemble_fields(plan, probs)


def read_field(model: Recognizer, image: bytes | np.ndarray,
               config: SegmentConfig | None = None, length: int | None = None) -> FieldResult:
    """Read one field image; raises its typed :class:`ImageError` if it cannot be read."""
    result = read_fields(model, [image], config, length)[0]
    if isinstance(result, ImageError):
        raise result
    return result
