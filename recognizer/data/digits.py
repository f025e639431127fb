"""Labelled digits for training and evaluation: MNIST IDX files and Parquet shards.

A data source is a string:

* a folder or ``s3://`` prefix holding MNIST IDX files (gzip or raw; the standard names
  or the ``train-10k`` names),
* a folder or ``s3://`` prefix holding Parquet shards with an image-bytes column and a
  label column (users' own scans),
* ``download``: fetch MNIST with torchvision into a cache folder (needs the internet).

Every image goes through :func:`recognizer.preprocess.preprocess_many`, the same path
used by serving and batch jobs.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from recognizer import settings
from recognizer.errors import DataError, StorageError
from recognizer.preprocess import preprocess_many
from recognizer.runtime import storage

IDX_NAMES = {
    "train": [("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              ("train-10k-images-idx3-ubyte", "train-10k-labels-idx1-ubyte")],
    "test": [("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")],
}


@dataclass
class Digits:
    """Labelled digits, (N, 28, 28) light ink on dark, and int64 labels: float32 in
    [0, 1] as the model reads them (:func:`load`), or uint8 as written
    (:func:`load_as_written`)."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an MNIST IDX file (gzip or raw) into a uint8 array."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError("not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise DataError(f"IDX payload holds {payload.size} bytes, header says {tuple(dims)}")
    return payload.reshape(tuple(dims))


def _find_idx(folder: str, split: str) -> tuple[str, str]:
    present = {os.path.basename(u.rstrip("/")) for u in storage.list_files(folder)}
    for images, labels in IDX_NAMES[split]:
        for ext in (".gz", ""):
            if images + ext in present and labels + ext in present:
                return storage.join(folder, images + ext), storage.join(folder, labels + ext)
    wanted = " or ".join(f"{i}[.gz]" for i, _ in IDX_NAMES[split])
    raise DataError(f"no MNIST {split} files in {folder}: expected {wanted} with its labels")


def load_idx_raw(folder: str, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Raw uint8 (N, 28, 28) images and labels of one split from an IDX folder."""
    img_uri, lbl_uri = _find_idx(folder, split)
    images = parse_idx(storage.read_bytes(img_uri))
    labels = parse_idx(storage.read_bytes(lbl_uri)).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise DataError(f"{img_uri} and {lbl_uri} disagree: {images.shape} vs {labels.shape}")
    return images, labels, img_uri


def download_mnist(root: str) -> str:
    """Download MNIST with torchvision into root; returns the folder of IDX files."""
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(root, train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError variously
        raise DataError(
            f"could not download MNIST ({exc}); offline, point --data or $DIGITS_DATA "
            "at a folder of MNIST IDX files"
        ) from exc
    return os.path.join(root, "MNIST", "raw")


def _has_parquet(folder: str) -> bool:
    try:
        return bool(storage.list_files(folder, ".parquet"))
    except StorageError:
        return False


def load_parquet_raw(folder: str, image_column: str = "image",
                     label_column: str = "label") -> tuple[list[bytes], np.ndarray]:
    """Encoded images and labels from every Parquet shard under folder."""
    images: list[bytes] = []
    labels: list[int] = []
    for uri in storage.list_files(folder, ".parquet"):
        fs, path = storage.resolve(uri)
        try:
            table = pq.read_table(path, filesystem=fs, columns=[image_column, label_column])
        except Exception as exc:
            raise DataError(f"cannot read {uri} as Parquet with columns "
                            f"{image_column!r} and {label_column!r}: {exc}") from exc
        images.extend(table.column(image_column).to_pylist())
        labels.extend(table.column(label_column).to_pylist())
    return images, np.asarray(labels, dtype=np.int64)


def prepare(images: list | np.ndarray, labels: np.ndarray, source: str,
            skip_bad: bool = True) -> Digits:
    """Preprocess raw images; rows whose image is unusable are dropped (or raise)."""
    x, errors = preprocess_many(images)
    bad = [i for i, e in enumerate(errors) if e is not None]
    if bad and not skip_bad:
        raise DataError(f"{len(bad)} unusable images in {source}, first: {errors[bad[0]]}")
    keep = np.ones(len(labels), dtype=bool)
    keep[bad] = False
    return Digits(x[keep], labels[keep], source)


def _resolve(source: str | None, split: str, cache_dir: str) -> str:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}")
    if not source or source == "download":
        return download_mnist(os.path.expanduser(cache_dir))
    return source


def _rows(n: int, split: str, val_fraction: float) -> slice:
    """A Parquet source's rows of ``split``: the last ``val_fraction`` is 'test'."""
    cut = int(n * (1 - val_fraction))
    return slice(0, cut) if split == "train" else slice(cut, None)


def load(source: str | None, split: str, cache_dir: str = "~/.cache/formdigits",
         val_fraction: float = 0.1) -> Digits:
    """Load and preprocess one split ('train' or 'test') of a data source.

    For Parquet sources the last val_fraction of rows is the 'test' split.
    """
    source = _resolve(source, split, cache_dir)
    if _has_parquet(source):
        raw, labels = load_parquet_raw(source)
        part = _rows(len(labels), split, val_fraction)
        return prepare(raw[part], labels[part], source)
    try:
        raw_images, labels, uri = load_idx_raw(source, split)
    except StorageError as exc:
        raise DataError(str(exc)) from exc
    return prepare(list(raw_images), labels, uri)


def load_as_written(source: str | None, split: str, cache_dir: str = "~/.cache/formdigits",
                    val_fraction: float = 0.1) -> Digits:
    """One split of a data source as the writers wrote it, for synthesizing fields: uint8
    (N, 28, 28), light ink on dark, not deslanted. IDX digits are taken as stored; Parquet
    scans are decoded and fitted into 28x28 as :func:`load` does, less the deslanting.
    Fields written with deslanted digits lack the slants of real handwriting, and a reader
    trained on them reads real fields worse (docs/reader.md)."""
    source = _resolve(source, split, cache_dir)
    if not _has_parquet(source):
        try:
            images, labels, uri = load_idx_raw(source, split)
        except StorageError as exc:
            raise DataError(str(exc)) from exc
        return Digits(images, labels, uri)
    raw, labels = load_parquet_raw(source)
    part = _rows(len(labels), split, val_fraction)
    images, keep = _as_written(raw[part])
    return Digits(images, labels[part][keep], source)


def _as_written(items: list) -> tuple[np.ndarray, np.ndarray]:
    """Encoded scans -> uint8 (N, 28, 28) digits keeping their slant, and which rows were
    usable (the others do not decode or hold no ink)."""
    from recognizer.normalize import normalize_stack
    from recognizer.preprocess import decoded_stacks

    errors: list = [None] * len(items)
    size = settings.IMAGE_SIZE
    out = np.zeros((len(items), size, size), dtype=np.uint8)
    keep = np.zeros(len(items), dtype=bool)
    for indices, greys in decoded_stacks(items, settings.MAX_IMAGE_PIXELS, errors):
        x, blank = normalize_stack(greys, upright=False)
        for j, i in enumerate(indices):
            if blank[j] is None:
                out[i] = np.rint(x[j] * 255.0).astype(np.uint8)
                keep[i] = True
    return out[keep], keep
