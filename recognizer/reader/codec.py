"""The reader's label codec: field strings to CTC targets, and the network's per-column
outputs back to strings, per-character confidences and column spans.

The alphabet is the ten digits and the separators a form may hold between or after them
(``. , - / =``); index 0 is CTC's blank. ``raw`` is what the reader reads, separators in
place; ``text`` is the digits of ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The characters the reader knows, in output order after the blank.
ALPHABET = "0123456789.,-/="
#: Output index of CTC's blank.
BLANK = 0
#: Outputs of the reader's last layer: blank plus the alphabet.
CLASSES = len(ALPHABET) + 1

_INDEX = {ch: i + 1 for i, ch in enumerate(ALPHABET)}


class LabelError(ValueError):
    """A label holds a character outside :data:`ALPHABET`."""


def encode(raw: str) -> list[int]:
    """A field string -> its target indices (1-based: 0 is the blank)."""
    try:
        return [_INDEX[ch] for ch in raw]
    except KeyError as exc:
        raise LabelError(f"label {raw!r} holds {exc.args[0]!r}, which is not one of the reader's "
                         f"characters {ALPHABET!r}") from None


def encode_batch(raws: list[str], width: int) -> np.ndarray:
    """Targets padded with the blank to ``width`` columns: (N, width) int64."""
    out = np.zeros((len(raws), width), dtype=np.int64)
    for i, r in enumerate(raws):
        codes = encode(r)[:width]
        out[i, :len(codes)] = codes
    return out


def digits_of(raw: str) -> str:
    """``text`` from ``raw``: the digits alone."""
    return "".join(ch for ch in raw if ch.isdigit())


@dataclass(frozen=True)
class Reading:
    """One field as the reader read it: ``raw`` (separators in place), each character's
    probability, and the output columns [first, last] each character was read at."""

    raw: str
    confidences: tuple[float, ...]
    columns: tuple[tuple[int, int], ...]
    #: Probability of the whole greedy path's collapsed string (product over columns of
    #: the chosen outputs): the sequence probability the calibration maps.
    path_probability: float

    @property
    def text(self) -> str:
        return digits_of(self.raw)


def greedy_decode(probs: np.ndarray) -> Reading:
    """Best path of one field's (T, CLASSES) output probabilities: repeated outputs
    collapse, blanks drop. A character's confidence is its best column's probability."""
    best = probs.argmax(1)
    peak = probs[np.arange(len(best)), best]
    chars, confs, cols = [], [], []
    prev = BLANK
    for t, k in enumerate(best):
        if k != BLANK and k != prev:
            chars.append(ALPHABET[k - 1])
            confs.append(float(peak[t]))
            cols.append([t, t])
        elif k != BLANK:
            confs[-1] = max(confs[-1], float(peak[t]))
            cols[-1][1] = t
        prev = k
    return Reading("".join(chars), tuple(confs), tuple((a, b) for a, b in cols),
                   float(np.exp(np.log(np.maximum(peak, 1e-12)).sum())))
