"""Where data enters a job: listing input shards and reading them batch by batch."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.errors import JobError, ShardError
from recognizer.errors import StorageError
from recognizer.runtime import storage

SUFFIX = ".parquet"


def list_shards(input_uri: str) -> list[str]:
    """URIs of the ``*.parquet`` shards directly under an input prefix, sorted."""
    try:
        shards = storage.list_files(input_uri, SUFFIX)
    except StorageError as exc:
        raise JobError(f"cannot list input shards: {exc}") from exc
    if not shards:
        raise JobError(f"no *{SUFFIX} shards under {input_uri}; write them with `digits shards make`")
    return shards


def shard_name(uri: str) -> str:
    """The file name of a shard (``NAME.parquet``), which names its output too."""
    return posixpath.basename(uri.rstrip("/"))


def open_shard(uri: str, id_column: str, image_column: str) -> pq.ParquetFile:
    """Download one shard (with retries on transient errors) and check its columns.

    The whole object is fetched in one GET: shards are bounded in size by whoever wrote
    them, and one read is cheaper and easier to retry than many ranged reads.
    Raises :class:`ShardError` when the shard is not Parquet or lacks a column.
    """
    data = storage.read_bytes(uri)
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise ShardError(f"not a Parquet file ({len(data):,} bytes): {str(exc)[:200]}") from exc
    names = pf.schema_arrow.names
    missing = [c for c in (id_column, image_column) if c not in names]
    if missing:
        raise ShardError(f"missing column(s) {', '.join(map(repr, missing))}; the shard has "
                         f"{', '.join(map(repr, names)) or 'no columns'} (see --id-column, --image-column)")
    return pf


def iter_batches(pf: pq.ParquetFile, id_column: str, image_column: str,
                 batch_rows: int) -> Iterator[tuple[pa.Array, list]]:
    """(ids, images) per batch of at most batch_rows rows, so memory stays bounded."""
    for batch in pf.iter_batches(batch_size=batch_rows, columns=[id_column, image_column]):
        ids = batch.column(id_column)
        yield ids, batch.column(image_column).to_pylist()
