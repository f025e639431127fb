"""A run's reader phase, around the one loop: its synthesized fields (new ones every
epoch for training; the validation fields made once and cached in the run), its
per-epoch checkpoints (``RUN/reader/checkpoint_epochNNNN``), and the calibration of its
steady probability (:func:`recognizer.reader.read.read_outputs`), fitted after the last
epoch.

The reader trains on fields of the training digits less the last ``READER_HOLDOUT``;
its validation and calibration fields are written with those held-out digits, so that
neither touches the test digits the benchmarks read. Both are written with the digits as
their writers wrote them (:func:`recognizer.data.load_as_written`), slant and all.
"""

from __future__ import annotations

import json
import os

import numpy as np

from recognizer import checkpoint, data, settings
from recognizer.data.reader_fields import FieldDraw, Mapper, ReaderFields, cache_key, synthesize
from recognizer.data.styles import restyled_set
from recognizer.errors import CheckpointError
from recognizer.runtime import storage
from recognizer.training.config import TrainConfig
from recognizer.training.loop import EpochEnd, Resume, progress

#: Training digits kept out of the reader's training fields: its validation fields are
#: written with them.
READER_HOLDOUT = 1000
#: meta.json format of the reader's per-epoch checkpoints.
READER_FORMAT = "formdigits-reader-checkpoint"
#: Environment variable naming where fields of runs written to S3 are cached locally.
CACHE_ENV = "DIGITS_CACHE"


def _cache_folder(cfg: TrainConfig) -> str:
    """The run's own folder when it is local; a local cache for runs on S3."""
    if not storage.is_s3(cfg.output):
        return cfg.run_uri
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "formdigits")


def _cached(folder: str, key: str, make) -> ReaderFields:
    path = os.path.join(folder, f"reader-fields-{key}.npz")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return ReaderFields.from_bytes(f.read())
    fields = make()
    os.makedirs(folder, exist_ok=True)
    with open(path + ".part", "wb") as f:
        f.write(fields.to_bytes())
    os.replace(path + ".part", path)
    return fields


def reader_data(cfg: TrainConfig, mapper: Mapper | None = None,
                processes: int | None = None) -> tuple[FieldDraw, ReaderFields]:
    """The reader's training fields, drawn anew every epoch by each worker with
    ``processes`` processes (default one per CPU), and its validation fields, synthesized
    on first use (by ``mapper``: Ray tasks on the Ray path, else a process per CPU) and
    cached beside the run."""
    digits = data.load_as_written(settings.data_dir(cfg.data), "train")
    images, labels = digits.images, digits.labels
    if len(labels) <= 2 * READER_HOLDOUT:
        raise CheckpointError(f"the reader needs more than {2 * READER_HOLDOUT} training digits "
                              f"({len(labels)} in {digits.source}); --reader-epochs 0 trains none")
    train_x, train_y = images[:-READER_HOLDOUT], labels[:-READER_HOLDOUT]
    sx, sy = restyled_set(train_x, train_y, cfg.style_share, np.random.default_rng(cfg.seed))
    train = FieldDraw(np.concatenate([train_x, sx]), np.concatenate([train_y, sy]), cfg.reader_fields,
                      cfg.seed, processes or os.cpu_count() or 1)
    folder = _cache_folder(cfg)
    progress(f"reader fields: {cfg.reader_fields:,} new ones every epoch for training, "
             f"{cfg.reader_val_fields:,} for validation (cached in {folder})")
    val_key = cache_key(digits.source + "#holdout-as-written", cfg.reader_val_fields, cfg.seed + 1)
    val = _cached(folder, val_key, lambda: synthesize(images[-READER_HOLDOUT:], labels[-READER_HOLDOUT:],
                                                      cfg.reader_val_fields, cfg.seed + 1, mapper=mapper))
    return train, val


def write_reader_checkpoint(folder: str, cfg: TrainConfig, name: str, end: EpochEnd,
                            extra: dict | None = None) -> None:
    """An epoch of the reader of architecture ``name``: its averaged weights, the state to
    resume, a small meta (with ``extra``'s entries)."""
    weights = {k: v.detach().cpu() for k, v in end.served.state_dict().items()}
    storage.write_bytes(storage.join(folder, checkpoint.READER_FILE), checkpoint.tensor_bytes(weights))
    storage.write_bytes(storage.join(folder, checkpoint.STATE_FILE),
                        checkpoint.tensor_bytes(end.train_state()))
    meta = {"format": READER_FORMAT, "name": name, "epochs": end.epoch, "history": end.history,
            "exact": end.metrics["val_accuracy"], "recipe": cfg.recipe(),
            "code_version": checkpoint.code_version(), **(extra or {})}
    storage.write_bytes(storage.join(folder, checkpoint.META_FILE), json.dumps(meta, indent=2).encode())


def read_reader_meta(folder: str) -> dict:
    meta = json.loads(storage.read_bytes(storage.join(folder, checkpoint.META_FILE)))
    if meta.get("format") != READER_FORMAT:
        raise CheckpointError(f"{folder} is not a reader checkpoint")
    return meta


def newest_reader(cfg: TrainConfig) -> str | None:
    """The run's newest complete reader checkpoint, or None."""
    return checkpoint.newest_checkpoint(cfg.reader_uri)


def read_reader_resume(folder: str) -> Resume:
    """The weights and state of a reader checkpoint, to go on from."""
    weights = checkpoint.state_dict(storage.read_bytes(storage.join(folder, checkpoint.READER_FILE)),
                                    checkpoint.READER_FILE)
    state = checkpoint.load_train_state(folder) or {}
    return Resume(weights, state, folder)


def final_reader(cfg: TrainConfig, folder: str, val: ReaderFields) -> tuple[bytes, dict]:
    """The final checkpoint's reader from the reader checkpoint ``folder``: its weights
    and ``meta["reader"]``, with the calibration fitted on ``val``."""
    meta = read_reader_meta(folder)
    raw = storage.read_bytes(storage.join(folder, checkpoint.READER_FILE))
    return raw, {"name": meta["name"], "epochs": meta["epochs"], "exact": meta["exact"],
                 "history": meta["history"], "fields": cfg.reader_fields,
                 "fields_drawn": cfg.reader_fields * meta["epochs"],
                 "code_version": meta.get("code_version"),
                 "calibration": fit_reader_calibration(raw, meta["name"], val)}


def fit_reader_calibration(weights: bytes, name: str, val: ReaderFields,
                           source: str = "synthesized from held-out training digits") -> dict | None:
    """The reader's calibration: how often a reading of a given steady probability
    (:func:`recognizer.reader.read.read_outputs`) and length is right, on the validation
    fields (None when all are right or all wrong); ``source`` says what those fields are,
    for the checkpoint's meta."""
    import torch

    from recognizer.fields.calibrate import READER_MEASURE, fit
    from recognizer.predict import reader_from_bytes
    from recognizer.reader.codec import digits_of
    from recognizer.reader.read import read_outputs, run

    outputs = run(reader_from_bytes(name, weights, checkpoint.READER_FILE), val.canvas, torch.device("cpu"))
    read = [(i, reading, steady) for i, (reading, steady, _) in enumerate(read_outputs(outputs))
            if reading.text]
    raw = np.array([steady for _, _, steady in read])
    lengths = np.array([len(reading.text) for _, reading, _ in read])
    right = np.array([reading.text == digits_of(val.raws[i]) for i, reading, _ in read])
    progress(f"reader: {right.sum() / len(val):.2%} of {len(val):,} held-out validation fields read "
             "right; calibrating on them")
    try:
        return fit(raw, lengths, right, f"{len(read)} fields {source}", measure=READER_MEASURE).to_meta()
    except ValueError:
        return None
