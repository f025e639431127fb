"""Fitting a run's field-confidence calibration (:mod:`recognizer.fields.calibrate`).

After the run's epochs the model (with its splitter) reads fields synthesized from the *validation* digits
(which it has not trained on): half of them real forms (lines, backgrounds,
separators, underlines), half plain rows with touching pairs. How often a reading of a
given raw confidence and length is right fits the calibration the checkpoint carries.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from recognizer.data.forms import make_form_field
from recognizer.data.synth_fields import as_digits_u8, make_field
from recognizer.fields.calibrate import Calibration, fit
from recognizer.results import FieldResult

#: Digits per plain calibration field, drawn from these lengths.
PLAIN_LENGTHS = (1, 8)
#: Share of neighbouring pairs that touch in the plain fields.
TOUCHING = 0.1


def _fields(digits: np.ndarray, labels: np.ndarray, count: int, rng: np.random.Generator
            ) -> tuple[list[np.ndarray], list[str]]:
    """``count`` synthesized fields, every other one a real form, and their texts."""
    images, texts = [], []
    for n in range(count):
        picks = rng.integers(0, len(digits), int(rng.integers(PLAIN_LENGTHS[0], PLAIN_LENGTHS[1] + 1)))
        chosen = [digits[i] for i in picks]
        texts.append("".join(str(int(labels[i])) for i in picks))
        if n % 2:
            images.append(make_form_field(chosen, [int(labels[i]) for i in picks], rng).image)
        else:
            images.append(make_field(chosen, rng, TOUCHING))
    return images, texts


def fit_calibration(model: torch.nn.Module, meta: dict, splitter: bytes | None,
                    digits: np.ndarray, labels: np.ndarray, count: int, seed: int
                    ) -> Calibration | None:
    """The calibration of ``model`` (with its checkpoint ``meta`` and ``splitter``
    weights) from ``count`` fields of the validation ``digits``; None when its readings
    are all right or all wrong (nothing to fit)."""
    from recognizer.checkpoint import SPLITTER_FILE, state_dict
    from recognizer.fields import read_fields
    from recognizer.predict import Recognizer
    from recognizer.splitter import from_state

    split = from_state(state_dict(splitter, SPLITTER_FILE)) if splitter is not None else None
    reader = Recognizer(copy.deepcopy(model).cpu(), {**meta, "version": "calibrating"},
                        torch.device("cpu"), splitter=split)
    images, texts = _fields(as_digits_u8(digits), labels, count, np.random.default_rng(seed))
    read = [(r, t) for r, t in zip(read_fields(reader, images), texts, strict=True)
            if isinstance(r, FieldResult)]
    raw = np.array([r.confidence for r, _ in read])
    lengths = np.array([len(r.text) for r, _ in read])
    right = np.array([r.text == t for r, t in read])
    try:
        return fit(raw, lengths, right, f"{len(read)} fields synthesized from the validation digits")
    except ValueError:
        return None
