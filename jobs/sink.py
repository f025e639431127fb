"""Where results leave a job: one output shard per input shard (the rows and their
schema are :mod:`jobs.schema`), and ``_job.json``.

Every object is serialised in memory and written with one atomic PUT (or a rename on
local disk), so an output is either complete or absent: that is what makes resuming
and retrying shards safe.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from recognizer.runtime import storage

SUMMARY_NAME = "_job.json"


def output_uri(output_prefix: str, shard_name: str) -> str:
    """Where the output of input shard ``shard_name`` goes (the same name)."""
    return storage.join(output_prefix, shard_name)


def completed_outputs(output_prefix: str) -> set[str]:
    """Names of the output shards already present (each is complete: writes are atomic)."""
    return {u.rstrip("/").rsplit("/", 1)[-1] for u in storage.list_files(output_prefix, ".parquet")}


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
    """Write the job's summary as ``OUTPUT/_job.json``; returns its URI."""
    uri = storage.join(output_prefix, SUMMARY_NAME)
    storage.write_bytes(uri, json.dumps(summary, indent=2, sort_keys=True).encode())
    return uri
