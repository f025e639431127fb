"""A user's labelled fields: Parquet shards of ``image`` (encoded bytes) and ``text`` (the
field as written, ``18.014`` or ``18014``) under a local folder or ``s3://`` prefix, read
into the reader's input the one way every image is (:mod:`recognizer.reader.read`).

Nothing is dropped silently: every row that cannot train (a shard without the columns,
a label with a character outside the reader's alphabet, an empty or too long label, an
image that does not decode or holds no ink) is counted by reason and the first ids are
named in :class:`LabelledReport`. A prefix with no usable row is a :class:`DataError`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recognizer.data.reader_fields import ReaderFields
from recognizer.errors import DataError, ImageError
from recognizer.reader.codec import ALPHABET, digits_of
from recognizer.runtime import storage

#: Columns a shard of labelled fields holds; ``id`` is optional (rows are then named
#: ``shard#row``).
IMAGE_COLUMN, TEXT_COLUMN, ID_COLUMN = "image", "text", "id"
#: The longest label the reader can be taught (characters, separators included).
MAX_LABEL = 24
#: Bad rows named in the report, per run.
NAMED_BAD = 20


@dataclass
class LabelledReport:
    """What was read from a prefix: rows seen, rows used, bad rows by reason and the
    first ``NAMED_BAD`` of them as (id, reason), and a hash of the used rows' ids."""

    prefix: str
    rows: int = 0
    used: int = 0
    bad: dict[str, int] = field(default_factory=dict)
    first_bad: list[tuple[str, str]] = field(default_factory=list)
    ids_hash: str = ""

    def to_meta(self) -> dict:
        return {"prefix": self.prefix, "rows": self.rows, "used": self.used, "bad": self.bad,
                "first_bad": [list(b) for b in self.first_bad], "ids_hash": self.ids_hash}

    def summary(self) -> str:
        """One line for the console."""
        line = f"{self.prefix}: {self.used:,} of {self.rows:,} rows usable"
        if self.bad:
            reasons = ", ".join(f"{n:,} {r}" for r, n in sorted(self.bad.items()))
            named = ", ".join(i for i, _ in self.first_bad[:5])
            line += f"; bad: {reasons} (first: {named})"
        return line


@dataclass
class LabelledFields:
    """Usable rows: ``fields`` (canvases, no known boxes: NaN, and each row's label as
    ``raws``), their ``ids``, and the report."""

    fields: ReaderFields
    ids: list[str]
    report: LabelledReport


def label_problem(text: object) -> str | None:
    """Why ``text`` cannot be a label (a reason code), or None when it can."""
    if not isinstance(text, str) or not text.strip():
        return "empty_label"
    text = text.strip()
    if any(ch not in ALPHABET for ch in text):
        return "label_outside_alphabet"
    if not digits_of(text):
        return "label_without_digits"
    if len(text) > MAX_LABEL:
        return "label_too_long"
    return None


def _shards(prefix: str) -> list[str]:
    try:
        found = storage.list_files(prefix, ".parquet", recursive=True)
    except FileNotFoundError:
        found = []
    if not found:
        raise DataError(f"no Parquet files (*.parquet) under {prefix}: give a folder or s3:// prefix of "
                        f"shards with columns {IMAGE_COLUMN!r} (encoded image bytes) and {TEXT_COLUMN!r}")
    return found


def _table(uri: str) -> pa.Table:
    try:
        return pq.read_table(pa.BufferReader(storage.read_bytes(uri)))
    except pa.ArrowInvalid as exc:
        raise DataError(f"{uri} is not a Parquet file: {str(exc)[:200]}") from exc


@dataclass
class LabelledRows:
    """Rows whose labels can be taught: encoded ``images``, ``labels`` as written, ``ids``;
    and the report of the rows so far."""

    images: list[bytes]
    labels: list[str]
    ids: list[str]
    report: LabelledReport
    bad: Counter = field(default_factory=Counter)

    def reject(self, row_id: str, reason: str) -> None:
        self.bad[reason] += 1
        if len(self.report.first_bad) < NAMED_BAD:
            self.report.first_bad.append((row_id, reason))


def labelled_rows(prefix: str, limit: int | None = None) -> LabelledRows:
    """Every row of every shard under ``prefix`` (sorted by path), up to ``limit`` rows,
    with the rows whose columns or labels cannot be used rejected into the report."""
    rows = LabelledRows([], [], [], LabelledReport(prefix))
    report = rows.report
    for uri in _shards(prefix):
        if limit is not None and report.rows >= limit:
            break
        table = _table(uri)
        name = storage.relative(prefix, uri)
        n = table.num_rows if limit is None else min(table.num_rows, limit - report.rows)
        report.rows += n
        names = [f"{name}#{i}" for i in range(n)]
        if ID_COLUMN in table.column_names:
            names = [str(v) if v is not None else names[i]
                     for i, v in enumerate(table.column(ID_COLUMN).to_pylist()[:n])]
        missing = [c for c in (IMAGE_COLUMN, TEXT_COLUMN) if c not in table.column_names]
        if missing:
            for row_id in names:
                rows.reject(row_id, "missing_column_" + "_and_".join(missing))
            continue
        for row_id, image, text in zip(names, table.column(IMAGE_COLUMN).to_pylist()[:n],
                                       table.column(TEXT_COLUMN).to_pylist()[:n], strict=True):
            problem = label_problem(text)
            if problem is None and not isinstance(image, bytes | bytearray):
                problem = "empty_image" if not image else "image_not_bytes"
            if problem is not None:
                rows.reject(row_id, problem)
                continue
            rows.images.append(bytes(image))
            rows.labels.append(text.strip())
            rows.ids.append(row_id)
    report.used = len(rows.ids)
    report.bad = dict(sorted(rows.bad.items()))
    return rows


def read_labelled(prefix: str, limit: int | None = None) -> LabelledFields:
    """:func:`labelled_rows`, each image read into the reader's input (images that do
    not decode or hold no ink are rejected too); raises :class:`DataError` when no row
    is usable."""
    from recognizer.reader.read import prepare  # torch: only when fields are read

    rows = labelled_rows(prefix, limit)
    plan = prepare(rows.images)
    keep = []
    for i, entry in enumerate(plan.entries):
        if isinstance(entry, ImageError):
            rows.reject(rows.ids[i], entry.code)
        else:
            keep.append(i)
    report = rows.report
    report.used = len(keep)
    report.bad = dict(sorted(rows.bad.items()))
    if not keep:
        raise DataError(f"no usable labelled fields under {prefix}: {report.summary()}")
    used_ids = [rows.ids[i] for i in keep]
    report.ids_hash = hashlib.sha256("\n".join(sorted(used_ids)).encode()).hexdigest()[:16]
    boxes = np.full((len(keep), 4), np.nan, np.float32)  # where the number is: not labelled
    return LabelledFields(ReaderFields(plan.inputs, boxes, [rows.labels[i] for i in keep]), used_ids, report)


def split(fields: LabelledFields, val_fraction: float) -> tuple[LabelledFields, LabelledFields]:
    """(train, validation): each row goes to validation by a hash of its id, so the split
    does not depend on the rows' order or on the other rows."""
    if not 0 < val_fraction < 1:
        raise DataError(f"the validation share must be between 0 and 1, got {val_fraction}")
    to_val = np.array([int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 16**8 < val_fraction
                       for i in fields.ids])
    if to_val.all() or not to_val.any():
        raise DataError(f"{len(fields.ids)} labelled fields cannot be split {1 - val_fraction:.0%} / "
                        f"{val_fraction:.0%} for validation: give more fields or --val PREFIX")
    return _subset(fields, ~to_val), _subset(fields, to_val)


def _subset(fields: LabelledFields, mask: np.ndarray) -> LabelledFields:
    f = fields.fields
    idx = np.flatnonzero(mask)
    return LabelledFields(ReaderFields(f.canvas[idx], f.boxes[idx], [f.raws[i] for i in idx]),
                          [fields.ids[i] for i in idx], fields.report)
