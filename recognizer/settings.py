"""Defaults in one place, and the environment variables that override them.

Every tunable number the product uses lives here; modules take it as an argument
so that callers (CLI, tests, benchmarks) pass configuration explicitly.
"""

from __future__ import annotations

import os

#: Environment variable naming the MNIST folder (local path or s3:// prefix).
DATA_ENV = "DIGITS_DATA"

#: Version of the preprocessing recipe; stored in checkpoints so a model is never fed
#: inputs prepared differently from its training data.
PREPROCESS_VERSION = 2

#: Decompression-bomb guard: images with more pixels than this are refused.
MAX_IMAGE_PIXELS = 40_000_000

#: Largest encoded image accepted, in bytes.
MAX_IMAGE_BYTES = 20 * 1024 * 1024

#: Images are normalised into this many pixels per side ...
IMAGE_SIZE = 28
#: ... with the digit's longer side fitted to this many.
DIGIT_BOX = 20

#: The digit classes 0-9 ...
DIGITS = 10
#: ... and the index of the extra class of models trained on field pieces: a piece of a
#: field that is not one whole digit (see recognizer.training.field_pieces).
NOT_A_DIGIT = 10

#: How whole fields are read: "segmenting" (cut into pieces for the digit model, with
#: the checkpoint's splitter and calibration) or "learned" (the checkpoint's learned
#: field reader, recognizer.reader). Segmenting stays the default until the learned
#: reader reads every dev set at least as well (docs/reader.md, bench/RESULTS.md).
FIELD_READERS = ("segmenting", "learned")
DEFAULT_FIELD_READER = "segmenting"

#: Default model of the registry.
DEFAULT_MODEL = "wide"

#: Environment variable choosing the precision of the field reader's convolutions at
#: inference: "auto" (bfloat16 where the hardware runs it natively: CPUs with AVX-512
#: BF16 or AMX, CUDA GPUs with bf16; float32 elsewhere) or "float32". Dev-set readings
#: agree within their noise either way (docs/reader.md), and bfloat16 reads faster.
READER_PRECISION_ENV = "DIGITS_READER_PRECISION"
READER_PRECISIONS = ("auto", "float32")


def reader_precision() -> str:
    """``$DIGITS_READER_PRECISION``, default "auto"; anything else is refused."""
    from recognizer.errors import ConfigError

    value = os.environ.get(READER_PRECISION_ENV) or "auto"
    if value not in READER_PRECISIONS:
        raise ConfigError(f"{READER_PRECISION_ENV}={value!r}: choose one of {', '.join(READER_PRECISIONS)}")
    return value


#: Images per inference batch: predict()'s default, and a batch job's (JobConfig.batch_size).
PREDICT_BATCH_SIZE = 512


def data_dir(explicit: str | None = None) -> str | None:
    """The MNIST folder: an explicit value, else ``$DIGITS_DATA``, else None (download)."""
    return explicit or os.environ.get(DATA_ENV) or None
