"""The reader's label codec: field strings to CTC targets, and the network's per-column
outputs back to strings, per-character confidences and column spans.

The alphabet is the ten digits and the separators a form may hold between or after them
(``. , - / =``); index 0 is CTC's blank. ``raw`` is what the reader reads, separators in
place; ``text`` is the digits of ``raw``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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
    #: Probability of the greedy path alone (product over columns of the chosen outputs).
    path_probability: float
    #: Probability of ``raw`` summed over every alignment that collapses to it (CTC's
    #: forward sum), where the reading's steady probability starts. A sure character
    #: spread over two columns halves the path's probability but not this one.
    probability: float

    @property
    def text(self) -> str:
        return digits_of(self.raw)


def _best_path(probs: np.ndarray) -> tuple[str, tuple[float, ...], tuple[tuple[int, int], ...], float]:
    """Best path of one field's (T, CLASSES) outputs: its string, each character's best
    column's probability, the columns each was read at, and the path's probability."""
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
    return ("".join(chars), tuple(confs), tuple((a, b) for a, b in cols),
            float(np.exp(np.log(np.maximum(peak, 1e-12)).sum())))


def greedy_decode(probs: np.ndarray) -> Reading:
    """Best path of one field's (T, CLASSES) output probabilities: repeated outputs
    collapse, blanks drop. A character's confidence is its best column's probability.
    Many fields at once: :func:`decode_batch`."""
    return decode_batch(probs[None])[0]


def sequence_probabilities(probs: np.ndarray, raws: list[str]) -> np.ndarray:
    """For (N, T, CLASSES) output probabilities, each field's probability of its string in
    ``raws``, summed over all alignments (exp of minus CTC's loss): (N,) float64."""
    if not len(raws):
        return np.zeros(0)
    log_probs = torch.from_numpy(np.log(np.maximum(probs, 1e-12), dtype=np.float32)).transpose(0, 1)
    targets = torch.tensor([i for r in raws for i in encode(r)], dtype=torch.long)
    lengths = torch.tensor([len(r) for r in raws], dtype=torch.long)
    frames = torch.full((len(raws),), probs.shape[1], dtype=torch.long)
    loss = torch.nn.functional.ctc_loss(log_probs, targets, frames, lengths, blank=BLANK, reduction="none")
    return np.exp(-loss.double().numpy())  # an impossible string's loss is inf: probability 0


def decode_batch(probs: np.ndarray) -> list[Reading]:
    """:func:`greedy_decode` of each field in (N, T, CLASSES) ``probs``, with each reading's
    :attr:`Reading.probability`."""
    paths = [_best_path(p) for p in probs]
    seq = sequence_probabilities(probs, [raw for raw, *_ in paths])
    return [Reading(*path, probability=float(q)) for path, q in zip(paths, seq, strict=True)]
