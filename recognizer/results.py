"""Results, in one shape for every way out of the product.

* :class:`Predictions`: digits, one entry per image (``recognizer.load(uri).predict``,
  the Serve handle, digit jobs).
* :class:`FieldResult`: one field read (``recognizer.fields.read_fields``, ``/v1/read``,
  field jobs).
* :class:`Failure`: why one image gave no result, as structure (``code``, ``message``).

Serving renders them as JSON (:meth:`Predictions.entry`, :func:`field_entry`), batch
jobs as Arrow rows (``jobs.schema``); neither builds a result of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recognizer.errors import ImageError
from recognizer.settings import DIGITS


@dataclass(frozen=True)
class Failure:
    """Why an image gave no result: the :class:`ImageError`'s ``code`` and message."""

    code: str
    message: str

    @classmethod
    def of(cls, error: ImageError) -> Failure:
        return cls(error.code, str(error))

    def to_dict(self) -> dict:
        """``{"code", "message"}``."""
        return {"code": self.code, "message": self.message}

    def to_json(self) -> dict:
        """The error entry of the HTTP API: ``{"error": {"code", "message"}}``."""
        return {"error": self.to_dict()}

    def __str__(self) -> str:
        # The one-line text of a job's ``error`` column.
        return f"{self.code}: {self.message}"


def failures(errors: Sequence[ImageError | None]) -> list[Failure | None]:
    """Per entry None or its :class:`Failure`."""
    return [None if e is None else Failure.of(e) for e in errors]


@dataclass
class Predictions:
    """Results for a batch, one entry per input image, in order.

    Where an image could not be used, its label is -1, its confidence 0, its
    probabilities zeros, and ``errors[i]`` holds the typed :class:`ImageError`.
    """

    labels: np.ndarray
    confidences: np.ndarray
    probabilities: np.ndarray
    errors: list[ImageError | None] = field(default_factory=list)

    @classmethod
    def from_probabilities(cls, probs: np.ndarray, errors: Sequence[ImageError | None]) -> Predictions:
        """The results for (N, 10) digit probabilities (zeros where ``errors[i]`` is set):
        each label the most likely digit, its confidence that digit's probability."""
        ok = np.array([e is None for e in errors], dtype=bool)
        labels = np.where(ok, probs.argmax(1), -1).astype(np.int64)
        return cls(labels, probs.max(1, initial=0.0), probs, list(errors))

    @classmethod
    def concat(cls, parts: Sequence[Predictions]) -> Predictions:
        """One :class:`Predictions` of several batches' (in order)."""
        if not parts:
            return cls.from_probabilities(np.zeros((0, DIGITS), np.float32), [])
        return cls(np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.confidences for p in parts]),
                   np.concatenate([p.probabilities for p in parts]),
                   [e for p in parts for e in p.errors])

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def ok(self) -> np.ndarray:
        """A bool mask of the images that have a label."""
        return np.array([e is None for e in self.errors], dtype=bool)

    def entry(self, i: int, model_version: str) -> dict:
        """Image ``i`` as the HTTP API answers it: label, confidence, probabilities and
        model version, or its error entry."""
        error = self.errors[i]
        if error is not None:
            return Failure.of(error).to_json()
        return digit_entry(self.probabilities[i], model_version)


def digit_entry(probabilities: np.ndarray, model_version: str) -> dict:
    """One digit's JSON entry from its (10,) probabilities."""
    return {"label": int(probabilities.argmax()), "confidence": float(probabilities.max()),
            "probabilities": [float(p) for p in probabilities], "model_version": model_version}


@dataclass(frozen=True)
class FieldResult:
    """One field read.

    ``text`` holds the digits left to right; ``raw`` the same reading with the
    separators and end marks in place (``18.014``, ``250,-``), which ``text`` never
    holds; ``confidences[i]`` is the model's probability for ``text[i]``; ``confidence``
    is the chance that ``text`` is right as a whole (0..1, never above the lowest
    digit's); ``boxes[i]`` is digit i's (left, top, right, bottom) in input pixels.
    """

    text: str
    confidences: tuple[float, ...]
    confidence: float
    boxes: tuple[tuple[int, int, int, int], ...]
    raw: str = ""

    def to_dict(self) -> dict:
        """JSON-ready form: ``text``, ``raw``, ``confidences``, ``confidence`` and ``boxes``."""
        return {"text": self.text, "raw": self.raw or self.text,
                "confidences": list(self.confidences), "confidence": self.confidence,
                "boxes": [list(b) for b in self.boxes]}


def field_entry(result: FieldResult, model_version: str) -> dict:
    """One field's JSON entry (``/v1/read``)."""
    return {**result.to_dict(), "model_version": model_version}
