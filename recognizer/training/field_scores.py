"""How well fields were read against their true strings: exact rate with its noise,
character error rate, and the reject option's accepted shares. Shared by
``digits evaluate --fields``, fine-tuning reports and the benchmarks."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from recognizer.results import FieldResult

#: Error rates at which the reject option's accepted share is reported.
ACCEPT_AT = (0.01, 0.005)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def accepted_share(right: np.ndarray, confidence: np.ndarray, error_rate: float) -> float:
    """The largest share of fields, most confident first, whose errors stay within
    ``error_rate``."""
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(~right[order]) / np.arange(1, len(right) + 1)
    ok = np.flatnonzero(errors <= error_rate)
    return float((ok.max() + 1) / len(right)) if ok.size else 0.0


def half_width(p: float, n: int) -> float:
    """The 95% half-width of a proportion ``p`` measured on ``n`` fields."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1.0 / n) / n) if n else float("nan")


def score_fields(results: Sequence, texts: Sequence[str]) -> dict:
    """Exact rate (± its 95% half-width), character error rate (edits per true digit),
    wrong-length share, accepted shares at :data:`ACCEPT_AT` and error rows by code, of
    ``results`` (FieldResult or ImageError each) against the true digit strings."""
    read = [r.text if isinstance(r, FieldResult) else "" for r in results]
    right = np.array([r == t for r, t in zip(read, texts, strict=True)], dtype=bool)
    confidence = np.array([r.confidence if isinstance(r, FieldResult) else 0.0 for r in results])
    digits = max(1, sum(len(t) for t in texts))
    exact = float(right.mean()) if len(right) else float("nan")
    out = {"fields": len(texts), "exact": exact, "plus_minus": half_width(exact, len(texts)),
           "char_error_rate": sum(edit_distance(r, t) for r, t in zip(read, texts, strict=True)) / digits,
           "wrong_length": float(np.mean([len(r) != len(t) for r, t in zip(read, texts, strict=True)])),
           "errors": dict(Counter(getattr(r, "code", "error") for r in results
                                  if not isinstance(r, FieldResult)))}
    for rate in ACCEPT_AT:
        out[f"accepted_at_{rate * 100:g}%"] = accepted_share(right, confidence, rate) if len(right) else 0.0
    return out
