"""A run's last step, after its epochs: the splitter of touching digits and the field
calibration, written with the last epoch's weights as the run's final checkpoint.

They come after the epochs, not before, so that the first epochs' checkpoints (already
good digit models) are written within a minute or two of the start; the splitter needs
only the training digits, and the calibration reads fields with the splitter in place.
"""

from __future__ import annotations

import hashlib

import numpy as np

from recognizer import checkpoint
from recognizer.runtime import storage
from recognizer.settings import DIGITS
from recognizer.training.config import TrainConfig
from recognizer.training.loop import progress
from recognizer.training.prepare import RunInputs, SplitterTrainer

#: Appended to the last epoch's folder name: the final checkpoint sorts after it.
FINAL_SUFFIX = "_final"
#: Meta keys that :func:`checkpoint.load` adds and a saved meta must not carry.
#: Meta keys that loading a checkpoint adds; not saved with it.
LOADED_KEYS = ("version", "uri")


def final_name(last: str) -> str:
    """The final checkpoint's folder, beside the last epoch's ``last``."""
    return last.rstrip("/") + FINAL_SUFFIX


def _calibrates(cfg: TrainConfig) -> bool:
    """Whether the recipe calibrates field confidences (a model with the not-a-digit class)."""
    return bool(cfg.calibration_fields) and cfg.classes > DIGITS


def _needs_finishing(cfg: TrainConfig) -> bool:
    return bool(cfg.splitter_epochs) or _calibrates(cfg) or bool(cfg.reader_epochs)


def _reader(cfg: TrainConfig, folder: str | None, val) -> tuple[bytes | None, dict | None]:
    """The reader's weights and meta from its last epoch's checkpoint, calibrated."""
    if not cfg.reader_epochs or folder is None:
        return None, None
    from recognizer.training.reader_run import final_reader

    return final_reader(cfg, folder, val)


def _splitter(cfg: TrainConfig, inputs: RunInputs, fit_splitter: SplitterTrainer
              ) -> tuple[bytes | None, dict | None]:
    if not cfg.splitter_epochs:
        return None, None
    if inputs.splitter is not None:  # resumed: the run already trained one
        return inputs.splitter, inputs.info.splitter_metrics
    progress(f"training the splitter of touching digits ({cfg.splitter_examples:,} marks, "
             f"{cfg.splitter_epochs} epochs)")
    raw, metrics = fit_splitter(inputs.train_digits, cfg)
    progress(f"splitter: {metrics['pixel_accuracy']:.2%} of held-out stroke pixels on the "
             f"right side, {metrics['seconds']:6.1f}s")
    return raw, metrics


def _calibration(cfg: TrainConfig, model, meta: dict, splitter: bytes | None,
                 validation: tuple[np.ndarray, np.ndarray]) -> dict | None:
    if not _calibrates(cfg):
        return None
    from recognizer.training.calibrate import fit_calibration

    progress(f"calibrating field confidences on {cfg.calibration_fields:,} fields of the "
             "validation digits")
    found = fit_calibration(model, meta, splitter, *validation, cfg.calibration_fields, cfg.seed)
    return found.to_meta() if found is not None else None


def finish_run(cfg: TrainConfig, last: str, inputs: RunInputs,
               fit_splitter: SplitterTrainer, reader: str | None = None, reader_val=None) -> str:
    """Write the run's final checkpoint from its last epoch's ``last`` (local or s3://):
    the same weights, with the splitter and the calibration the recipe asks for, and
    the field reader of the reader checkpoint ``reader`` (calibrated on ``reader_val``,
    its validation fields). Returns
    its folder; ``last`` itself when the recipe needs neither, or the final checkpoint
    already there when a finished run is run again (with the reader's newer epochs, if
    it went on, and its calibration refitted if it predates the measure readers use now)."""
    if not _needs_finishing(cfg):
        return last
    folder = last if last.rstrip("/").endswith(FINAL_SUFFIX) else final_name(last)
    if storage.exists(storage.join(folder, checkpoint.META_FILE)):
        # A finished run run again: the final checkpoint stands unless the reader went on
        # or its calibration maps another of a reading's probabilities than readers use now.
        if _has_reader(folder, reader) and (reader is None or _calibrated_now(folder)):
            return folder
        return _with_reader(cfg, folder, reader, reader_val)
    from recognizer.fields.calibrate import META_KEY

    model, meta = checkpoint.load(last)
    for key in LOADED_KEYS:
        meta.pop(key, None)
    splitter, metrics = _splitter(cfg, inputs, fit_splitter)
    meta["splitter"] = metrics
    calibration = _calibration(cfg, model, meta, splitter, (inputs.data.test_x, inputs.data.test_y))
    if calibration is not None:
        meta[META_KEY] = calibration
    reader_raw, meta["reader"] = _reader(cfg, reader, reader_val)
    checkpoint.save(folder, model, meta, checkpoint.load_train_state(last), splitter, reader_raw)
    return folder


def _reader_recipe(cfg: TrainConfig) -> dict:
    return {k: v for k, v in cfg.recipe().items() if k.startswith("reader")}


def _has_reader(folder: str, reader: str | None) -> bool:
    """Whether the final checkpoint ``folder`` holds the reader of checkpoint ``reader``."""
    if reader is None:
        return True
    weights = storage.read_bytes(storage.join(reader, checkpoint.READER_FILE))
    return checkpoint.read_meta(folder).get(checkpoint.READER_HASH) == hashlib.sha256(weights).hexdigest()


def _calibrated_now(folder: str) -> bool:
    """Whether the final checkpoint ``folder``'s reader calibration maps the measure
    readers use now (:data:`recognizer.fields.calibrate.READER_MEASURE`)."""
    from recognizer.fields.calibrate import READER_MEASURE

    found = (checkpoint.read_meta(folder).get("reader") or {}).get("calibration")
    return not isinstance(found, dict) or found.get("measure") == READER_MEASURE


def _with_reader(cfg: TrainConfig, folder: str, reader: str, reader_val) -> str:
    """Rewrite the final checkpoint ``folder`` with the reader of checkpoint ``reader``."""
    model, meta = checkpoint.load(folder)
    splitter = checkpoint.read_splitter(meta)
    for key in LOADED_KEYS:
        meta.pop(key, None)
    # The reader may have gone on with other settings (more epochs or fields): the recipe
    # says what made the reader it now holds.
    meta["recipe"] = {**meta.get("recipe", {}), **_reader_recipe(cfg)}
    reader_raw, meta["reader"] = _reader(cfg, reader, reader_val)
    checkpoint.save(folder, model, meta, checkpoint.load_train_state(folder), splitter, reader_raw)
    return folder
