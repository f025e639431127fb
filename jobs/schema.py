"""The output shards' declared schemas, and the rows built from the product's results.

A digit job writes ``id, label, confidence, error, error_code, model_version``; a field
job ``id, text, raw, digit_confidences, confidence, review, error, error_code,
model_version`` (``raw``: the reading with its separators in place; ``review``: whether
the row falls below the job's ``--min-confidence`` or failed, null without one). The
``id`` column keeps the input's type; ``error`` is the one-line ``code: message`` text
and ``error_code`` the code alone (both null on rows that succeeded). Rows are built from
:class:`recognizer.results.Predictions` and :class:`recognizer.results.FieldResult`,
the same results the library and the Serve application return.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recognizer.errors import ImageError
from recognizer.results import FieldResult, Predictions, failures

#: Columns after ``id`` shared by both modes' outputs, at their end.
_TAIL = [pa.field("error", pa.string()), pa.field("error_code", pa.string()),
         pa.field("model_version", pa.string())]
DIGIT_COLUMNS = [pa.field("label", pa.int8()), pa.field("confidence", pa.float32()), *_TAIL]
FIELD_COLUMNS = [pa.field("text", pa.string()), pa.field("raw", pa.string()),
                 pa.field("digit_confidences", pa.list_(pa.float32())),
                 pa.field("confidence", pa.float32()), pa.field("review", pa.bool_()), *_TAIL]


def output_schema(mode: str, id_type: pa.DataType) -> pa.Schema:
    """The schema of a ``mode`` ("digit" or "field") job's output shards."""
    columns = DIGIT_COLUMNS if mode == "digit" else FIELD_COLUMNS
    return pa.schema([pa.field("id", id_type), *columns])


def _error_columns(errors: list[ImageError | None], model_version: str) -> dict:
    found = failures(errors)
    return {"error": pa.array([None if f is None else str(f) for f in found], pa.string()),
            "error_code": pa.array([None if f is None else f.code for f in found], pa.string()),
            "model_version": pa.array([model_version] * len(found), pa.string())}


def digit_table(ids: pa.Array, results: Predictions, model_version: str) -> pa.Table:
    """A digit job's output rows: label (int8) and confidence, null where a row failed."""
    failed = ~results.ok
    return pa.table({
        "id": ids,
        "label": pa.array(results.labels.astype(np.int8), type=pa.int8(), mask=failed),
        "confidence": pa.array(results.confidences.astype(np.float32), type=pa.float32(), mask=failed),
        **_error_columns(results.errors, model_version),
    }, schema=output_schema("digit", ids.type))


def field_table(ids: pa.Array, results: list[FieldResult | ImageError], model_version: str,
                min_confidence: float | None = None) -> pa.Table:
    """A field job's output rows: text, raw reading, digit confidences and confidence,
    null where a row failed; ``review`` true where the confidence is below
    ``min_confidence`` or the row failed (null for every row without a threshold)."""
    read = [r if isinstance(r, FieldResult) else None for r in results]
    failed = np.array([r is None for r in read], dtype=bool)
    confidences = np.array([r.confidence if r else 0.0 for r in read], np.float64).astype(np.float32)
    review = (pa.nulls(len(read), pa.bool_()) if min_confidence is None
              else pa.array(failed | (confidences < np.float32(min_confidence)), pa.bool_()))
    return pa.table({
        "id": ids,
        "text": pa.array([r.text if r else None for r in read], pa.string()),
        "raw": pa.array([(r.raw or r.text) if r else None for r in read], pa.string()),
        "digit_confidences": pa.array([list(r.confidences) if r else None for r in read],
                                      pa.list_(pa.float32())),
        "confidence": pa.array(confidences, type=pa.float32(), mask=failed),
        "review": review,
        **_error_columns([r if isinstance(r, ImageError) else None for r in results], model_version),
    }, schema=output_schema("field", ids.type))


def error_codes(table: pa.Table) -> dict[str, int]:
    """How many rows of an output table failed, by error code."""
    counts = table.column("error_code").drop_null().value_counts()
    return {str(item["values"]): int(item["counts"]) for item in counts.to_pylist()}
