"""Calibrated field confidences: a reading's confidence as the chance that it is right.

The reader's raw confidence (the digits' probabilities multiplied, times how sure it is
of their number) ranks readings well but is not a probability: the model is
over-confident, more so on long fields. :class:`Calibration` maps it through a logistic
curve in its log-odds and the number of digits, fitted (:func:`fit`) on fields whose
truth is known; training fits it on fields synthesized from the validation digits and
stores it in the checkpoint's meta, so that a threshold on ``confidence`` (a job's
``--min-confidence``) stands for an error rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: meta.json key of a checkpoint's calibration.
META_KEY = "calibration"
#: Raw confidences are clipped to [FLOOR, 1 - FLOOR] before their logarithm is taken.
FLOOR = 1e-6
#: The feature a curve is fitted in. "logit" (log-odds of the raw confidence) lets the
#: calibrated confidence approach 1 as the raw one does; "log" (log of the raw
#: confidence) saturates at sigmoid(bias + per_digit * digits) and is kept only to read
#: checkpoints written before "logit" existed.
FORMS = ("log", "logit")
#: Which of a learned reading's probabilities a curve maps: "chosen" (the reading the
#: views of a field agree on most, and the least of its string's probabilities where it
#: was read and at the box moved a little: :mod:`recognizer.reader.read`) or, in
#: checkpoints calibrated before that existed, "steady" (the same least probability of
#: the reading where the field was read), "sequence" (that string's probability where it
#: was read) or "path" (the greedy path alone). The segmenting reader's curves map its
#: own score.
MEASURES = ("path", "sequence", "steady", "chosen")
#: The measure reader calibrations are fitted on now.
READER_MEASURE = "chosen"


@dataclass(frozen=True)
class Calibration:
    """P(right) = sigmoid(``slope`` * f(raw) + ``per_digit`` * digits + ``bias``), where f
    is the log-odds of the raw confidence (``form`` "logit") or, in older checkpoints,
    its logarithm ("log")."""

    slope: float = 1.0
    per_digit: float = 0.0
    bias: float = 0.0
    #: How many fields it was fitted on, and where they came from.
    fields: int = 0
    source: str = ""
    #: Metas without the key predate "logit": their curves were fitted in "log".
    form: str = "log"
    #: Metas without the key predate "sequence" (:data:`MEASURES`).
    measure: str = "path"

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"unknown calibration form {self.form!r}; expected one of {FORMS}")
        if self.measure not in MEASURES:
            raise ValueError(f"unknown calibration measure {self.measure!r}; expected one of {MEASURES}")

    def __call__(self, raw: float, digits: int) -> float:
        """The calibrated confidence of a reading of ``digits`` digits."""
        z = self.slope * _feature(raw, self.form) + self.per_digit * digits + self.bias
        if z < -700:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))

    def to_meta(self) -> dict:
        """The JSON form stored in a checkpoint's meta."""
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> Calibration | None:
        """The calibration a checkpoint's meta holds, or None (raw confidences)."""
        found = meta.get(META_KEY)
        return cls(**found) if isinstance(found, dict) else None


def _feature(raw, form: str):
    """log(raw) or log(raw / (1 - raw)), with raw clipped away from 0 and 1 (works on
    floats and arrays)."""
    raw = np.clip(raw, FLOOR, 1.0 - FLOOR)
    return np.log(raw) - (np.log1p(-raw) if form == "logit" else 0.0)


def _features(raw: np.ndarray, digits: np.ndarray, form: str) -> np.ndarray:
    return np.stack([_feature(raw, form), digits.astype(np.float64), np.ones(len(raw))], axis=1)


def fit(raw: np.ndarray, digits: np.ndarray, right: np.ndarray, source: str = "",
        ridge: float = 1e-3, steps: int = 50, form: str = "logit", measure: str = "path") -> Calibration:
    """Fit the logistic curve to readings' raw confidences, digit counts and whether each
    was right (Newton's method on the log-likelihood, a small ridge for stability).
    The slope is kept positive, so that a higher raw confidence never calibrates lower."""
    if len(raw) == 0 or right.all() or not right.any():
        raise ValueError("calibration needs readings both right and wrong")
    x = _features(np.asarray(raw, np.float64), np.asarray(digits), form)
    y = np.asarray(right, np.float64)
    w = np.array([1.0, 0.0, 0.0])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        grad = x.T @ (p - y) + ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(3)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Calibration(float(max(w[0], 1e-3)), float(w[1]), float(w[2]), int(len(y)), source,
                       form, measure)
