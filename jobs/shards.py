"""Making input shards: MNIST IDX files or a folder of images -> Parquet shards on S3.

Used for demos, tests and benchmarks. Each row has ``id``, ``image`` (encoded bytes)
and the true ``label`` (null when unknown), so accuracy can be checked afterwards.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.errors import JobError
from recognizer.data import load_idx_raw, synth
from recognizer.data.synth_fields import make_fields
from recognizer.errors import DataError, StorageError
from recognizer.runtime import storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Pixels per side of the digit in a synthesized scan (form-crop sized).
SCAN_SIZE = 64


def _idx_rows(folder: str, split: str, as_scans: bool, limit: int | None,
              seed: int) -> Iterator[tuple[bytes, int | None]]:
    images, labels, _ = load_idx_raw(folder, split)
    n = len(images) if limit is None else min(limit, len(images))
    rng = np.random.default_rng(seed)
    for i in range(n):
        digit = images[i]
        pixels = synth.as_scan(digit, rng, size=SCAN_SIZE) if as_scans else digit
        yield synth.encode(pixels, "PNG"), int(labels[i])


def _field_rows(folder: str, split: str, length: int, limit: int | None,
                seed: int) -> Iterator[tuple[bytes, str]]:
    """Synthesized fields of ``length`` digits (uneven spacing, size, slant, baseline;
    some touching pairs) with their true strings; each digit is used once per pass."""
    images, labels, _ = load_idx_raw(folder, split)
    digits = len(images) if limit is None else min(limit, len(images))
    rng = np.random.default_rng(seed)
    for _ in range(digits // length):
        fields, texts = make_fields(images, labels, length, 1, rng)
        yield synth.encode(fields[0], "PNG"), texts[0]


def _folder_rows(folder: str, limit: int | None) -> Iterator[tuple[bytes, int | None]]:
    """Image files under folder (recursively); a parent folder named 0-9 gives the label."""
    paths = []
    for root, _, files in os.walk(folder):
        paths += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    paths.sort()
    for path in paths[:limit]:
        parent = os.path.basename(os.path.dirname(path))
        with open(path, "rb") as f:
            yield f.read(), int(parent) if parent.isdigit() and len(parent) == 1 else None


def rows(data: str, split: str = "test", as_scans: bool = False, limit: int | None = None,
         seed: int = 0, fields: int | None = None) -> Iterator[tuple[bytes, int | str | None]]:
    """(encoded image, label) pairs from an IDX folder (local or s3://) or an image folder.

    With ``fields=LENGTH`` each image is a field of LENGTH digits and its label the string.
    """
    try:
        if fields:
            yield from _field_rows(data, split, fields, limit, seed)
        else:
            yield from _idx_rows(data, split, as_scans, limit, seed)
        return
    except DataError as idx_error:
        if storage.is_s3(data) or not os.path.isdir(data):
            raise JobError(f"cannot make shards from {data}: {idx_error}") from idx_error
    if as_scans or fields:
        raise JobError("--as-scans and --fields render MNIST digits: they need IDX files, "
                       "not an image folder")
    yield from _folder_rows(data, limit)


def make_shards(data: str, output: str, rows_per_shard: int, split: str = "test",
                as_scans: bool = False, limit: int | None = None, seed: int = 0,
                prefix: str = "part", fields: int | None = None) -> list[str]:
    """Write shards ``PREFIX-00000.parquet``... under output; returns their URIs.

    Digit shards carry the true ``label`` (int8); field shards (``fields=LENGTH``) the
    true ``text``.
    """
    if rows_per_shard < 1:
        raise JobError(f"--rows-per-shard must be at least 1, got {rows_per_shard}")
    if fields is not None and fields < 1:
        raise JobError(f"--fields must be at least 1, got {fields}")
    written: list[str] = []
    images: list[bytes] = []
    labels: list = []
    next_id = 0
    truth = ("text", pa.string()) if fields else ("label", pa.int8())

    def flush() -> None:
        nonlocal next_id
        table = pa.table({
            "id": pa.array(range(next_id, next_id + len(images)), pa.int64()),
            "image": pa.array(images, pa.binary()),
            truth[0]: pa.array(labels, truth[1]),
        })
        buf = io.BytesIO()
        # Images are already compressed: Parquet compression would only cost time.
        pq.write_table(table, buf, compression="none")
        uri = storage.join(output, f"{prefix}-{len(written):05d}.parquet")
        try:
            storage.write_bytes(uri, buf.getvalue())
        except StorageError as exc:
            raise JobError(str(exc)) from exc
        written.append(uri)
        next_id += len(images)
        images.clear()
        labels.clear()

    for image, label in rows(data, split, as_scans, limit, seed, fields):
        images.append(image)
        labels.append(label)
        if len(images) == rows_per_shard:
            flush()
    if images:
        flush()
    if not written:
        raise JobError(f"no images found in {data}")
    return written
