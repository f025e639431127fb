"""Where data enters a job: listing input shards and reading them row group by row group."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.errors import JobError, ShardError
from recognizer.errors import StorageError
from recognizer.runtime import storage

SUFFIX = ".parquet"


def list_shards(input_uri: str) -> list[str]:
    """URIs of the ``*.parquet`` shards under an input prefix, at any depth, sorted.

    Names starting with "." or "_" (at any level) are not shards. Listings of more than
    1,000 keys come in pages; every page is read.
    """
    try:
        shards = storage.list_files(input_uri, SUFFIX, recursive=True)
    except StorageError as exc:
        raise JobError(f"cannot list input shards: {exc}") from exc
    if not shards:
        raise JobError(f"no *{SUFFIX} shards under {input_uri}; write them with `digits shards make`")
    return shards


def shard_name(input_uri: str, uri: str) -> str:
    """A shard's path below the input prefix (``NAME.parquet`` or ``2024/05/NAME.parquet``),
    which is also its output's path below the output prefix."""
    return storage.relative(input_uri, uri)


def _is_bytes(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


class ShardReader:
    """One input shard, opened for reading one row group at a time.

    Only the footer is read on opening; each row group's two columns are fetched when
    their turn comes (ranged GETs on S3), so a task holds one row group of a shard, not
    the whole file, however large the file. A read that fails is retried from a freshly
    opened file.
    """

    def __init__(self, uri: str, id_column: str, image_column: str):
        self.uri, self.columns = uri, [id_column, image_column]
        self.id_column, self.image_column = id_column, image_column
        self._fs, self._path = storage.resolve(uri)
        self._file = None
        try:
            self.pf = storage.with_retries(f"reading {uri}", self._open, "read")
        except FileNotFoundError as exc:
            raise ShardError(f"{uri} does not exist (deleted while the job ran?)") from exc
        self._check_columns()

    def _open(self) -> pq.ParquetFile:
        """Open the file and read its footer (one attempt)."""
        self.close()
        self._file = self._fs.open_input_file(self._path)
        try:
            return pq.ParquetFile(self._file)
        except pa.ArrowInvalid as exc:  # not Parquet at all: no retry helps
            raise ShardError(f"not a Parquet file ({self._file.size():,} bytes): "
                             f"{str(exc)[:200]}") from exc

    def _check_columns(self) -> None:
        schema = self.pf.schema_arrow
        missing = [c for c in self.columns if c not in schema.names]
        if missing:
            raise ShardError(f"missing column(s) {', '.join(map(repr, missing))}; the shard has "
                             f"{', '.join(map(repr, schema.names)) or 'no columns'} "
                             "(see --id-column, --image-column)")
        kind = schema.field(self.image_column).type
        if not _is_bytes(kind):
            raise ShardError(f"column {self.image_column!r} holds {kind} values; it must hold each "
                             "image's encoded bytes (Parquet BYTE_ARRAY, Arrow binary): PNG, JPEG, "
                             "BMP or TIFF files as they are")

    @property
    def id_type(self) -> pa.DataType:
        return self.pf.schema_arrow.field(self.id_column).type

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _row_group(self, index: int) -> pa.Table:
        def read() -> pa.Table:
            if self.pf is None:  # the last attempt failed: its connection may be broken
                self.pf = self._open()
            try:
                return self.pf.read_row_group(index, columns=self.columns)
            except OSError:
                self.pf = None
                raise

        return storage.with_retries(f"reading row group {index} of {self.uri}", read, "read")

    def batches(self, batch_rows: int) -> Iterator[tuple[pa.Array, list]]:
        """(ids, images) per batch of at most batch_rows rows, row group after row group.

        A null image is given as empty bytes, so its row fails as ``empty_image``.
        """
        for index in range(self.pf.num_row_groups):
            table = self._row_group(index)
            for batch in table.to_batches(max_chunksize=batch_rows):
                images = pc.fill_null(batch.column(self.image_column), b"")
                yield batch.column(self.id_column), images.to_pylist()
            del table  # one row group at a time


def duplicate_ids(ids: pa.Array) -> int:
    """How many rows of ``ids`` repeat an id seen earlier in them (nulls count as ids)."""
    if len(ids) == 0:
        return 0
    return len(ids) - pc.count_distinct(ids, mode="all").as_py()
