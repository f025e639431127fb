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

import numpy as np

from recognizer.errors import ImageError
from recognizer.predict import Recognizer
from recognizer.preprocess import as_image_list, decode, normalize
from recognizer.segment import Piece, SegmentConfig, Slot, segment

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


def _choose(probs: list[np.ndarray]) -> int:
    """Index of the cutting the model is most confident about (highest product)."""
    # The product is the probability of the whole reading, so cuttings into different
    # numbers of digits compare on the same footing.
    scores = [float(np.sum(np.log(np.maximum(p.max(axis=1), 1e-12)))) for p in probs]
    return int(np.argmax(scores))


@dataclass
class FieldPlan:
    """Fields cut into pieces, waiting for the model: ``inputs`` (M, 28, 28) holds every
    candidate piece of every field, in order; ``entries`` holds per image either its
    slots or the :class:`ImageError` it raised."""

    inputs: np.ndarray
    entries: list[list[Slot] | ImageError]


def prepare_fields(images: Sequence[bytes | np.ndarray] | np.ndarray,
                   config: SegmentConfig | None = None) -> FieldPlan:
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
            slots = segment(decode(item), config)
            pieces = [_model_input(p) for s in slots for c in s.cuttings for p in c]
        except ImageError as exc:
            entries.append(exc)
            continue
        entries.append(slots)
        inputs.extend(pieces)
    stacked = np.stack(inputs) if inputs else np.zeros((0, 28, 28), np.float32)
    return FieldPlan(stacked, entries)


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
        for slot in entry:
            per_cutting = []
            for cutting in slot.cuttings:
                per_cutting.append(probs[at:at + len(cutting)])
                at += len(cutting)
            best = _choose(per_cutting)
            for piece, p in zip(slot.cuttings[best], per_cutting[best], strict=True):
                text.append(str(int(p.argmax())))
                confs.append(float(p.max()))
                boxes.append(piece.box)
        results.append(FieldResult("".join(text), tuple(confs), math.prod(confs), tuple(boxes)))
    return results


def read_fields(model: Recognizer, images: Sequence[bytes | np.ndarray] | np.ndarray,
                config: SegmentConfig | None = None) -> list[FieldResult | ImageError]:
    """Read a batch of field images (encoded bytes or uint8 arrays, any size).

    Returns one entry per image, in order: a :class:`FieldResult`, or the typed
    :class:`ImageError` that image raised (``BlankImage`` for no ink,
    ``TooManyComponents`` for more marks than ``config.max_components``, and the
    decoding errors of :func:`recognizer.preprocess.decode`). Never raises for a bad image.
    Every piece of every field goes through the model in one batch.
    """
    plan = prepare_fields(images, config)
    probs = model.predict_tensors(plan.inputs) if len(plan.inputs) else np.zeros((0, 10), np.float32)
    return assemble_fields(plan, probs)


def read_field(model: Recognizer, image: bytes | np.ndarray,
               config: SegmentConfig | None = None) -> FieldResult:
    """Read one field image; raises its typed :class:`ImageError` if it cannot be read."""
    result = read_fields(model, [image], config)[0]
    if isinstance(result, ImageError):
        raise result
    return result
