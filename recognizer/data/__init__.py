"""Data that enters the product from outside: labelled digits for training and
evaluation (MNIST IDX files, Parquet shards of scans, torchvision's download) and the
synthesized scans and fields that tests, demos, benchmarks and training use.

``from recognizer import data; data.load(source, "train")`` is the entry point;
:mod:`recognizer.data.synth` and :mod:`recognizer.data.synth_fields` render digits as
the scans and fields users send.
"""

from recognizer.data.digits import (
    Digits,
    download_mnist,
    load,
    load_as_written,
    load_idx_raw,
    load_parquet_raw,
    parse_idx,
    prepare,
)

__all__ = ["Digits", "download_mnist", "load", "load_as_written", "load_idx_raw", "load_parquet_raw",
           "parse_idx", "prepare"]
