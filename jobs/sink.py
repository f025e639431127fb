"""Where results leave a job: one output shard per input shard, and ``_job.json``.

Every object is serialised in memory and written with one atomic PUT (or a rename on
local disk), so an output is either complete or absent: that is what makes resuming
and retrying shards safe.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recognizer import storage

SUMMARY_NAME = "_job.json"


def output_uri(output_prefix: str, shard_name: str) -> str:
    return storage.join(output_prefix, shard_name)


def completed_outputs(output_prefix: str) -> set[str]:
    """Names of the output shards already present (each is complete: writes are atomic)."""
    return {u.rstrip("/").rsplit("/", 1)[-1] for u in storage.list_files(output_prefix, ".parquet")}


def build_table(ids: pa.Array, labels: np.ndarray, confidences: np.ndarray,
                errors: list[str | None], model_version: str) -> pa.Table:
    """The output columns: id, label (int8, null on error), confidence, error, model_version."""
    failed = np.array([e is not None for e in errors], dtype=bool)
    return pa.table({
        "id": ids,
        "label": pa.array(labels.astype(np.int8), type=pa.int8(), mask=failed),
        "confidence": pa.array(confidences.astype(np.float32), type=pa.float32(), mask=failed),
        "error": pa.array(errors, type=pa.string()),
        "model_version": pa.array([model_version] * len(errors), type=pa.string()),
    })


def build_field_table(ids: pa.Array, texts: list[str | None], digit_confidences: list[list[float] | None],
                      confidences: np.ndarray, errors: list[str | None], model_version: str) -> pa.Table:
    """Field-mode columns: id, text (the digit string, null on error), digit_confidences,
    confidence (the product of the digits'), error, model_version."""
    failed = np.array([e is not None for e in errors], dtype=bool)
    return pa.table({
        "id": ids,
        "text": pa.array(texts, type=pa.string()),
        "digit_confidences": pa.array(digit_confidences, type=pa.list_(pa.float32())),
        "confidence": pa.array(confidences.astype(np.float32), type=pa.float32(), mask=failed),
        "error": pa.array(errors, type=pa.string()),
        "model_version": pa.array([model_version] * len(errors), type=pa.string()),
    })


def write_table(uri: str, table: pa.Table) -> None:
    """Serialise a table to Parquet in memory and put it in one piece."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    storage.write_bytes(uri, buf.getvalue())


def count_output_rows(uri: str) -> tuple[int, int]:
    """(ok rows, failed rows) of an existing output shard (for skipped shards on resume)."""
    table = pq.read_table(pa.BufferReader(storage.read_bytes(uri)), columns=["error"])
    ok = table.column("error").null_count  # error is null exactly on rows that succeeded
    return ok, table.num_rows - ok


def write_summary(output_prefix: str, summary: dict) -> str:
    uri = storage.join(output_prefix, SUMMARY_NAME)
    storage.write_bytes(uri, json.dumps(summary, indent=2, sort_keys=True).encode())
    return uri
