"""Fine-tuning the learned field reader on a user's own labelled fields
(``digits train --fields PREFIX``).

The run starts from a checkpoint with a reader (the bundled model unless told otherwise)
and trains its reader through the one loop on the user's fields, read the way every
image is (:mod:`recognizer.data.labelled_fields`), mixed with fields synthesized from
the training digits so that other forms are not forgotten. A user's fields have no
boxes: the starting reader finds them (:mod:`recognizer.training.label_boxes`: where the
label reads best), so the localizer learns where the user's numbers are; fields where
the label reads nowhere keep none and are read at the localizer's own box. Each epoch is
checkpointed under ``RUN/fine-tune/`` (a run resumes, and refuses to resume with other
settings or other fields); the epoch with the best validation exact rate is kept in
``RUN/fine-tune-best/``. The final checkpoint, ``RUN/checkpoint_fine_tuned``, is the
starting checkpoint with that reader, calibrated on the user's validation fields, its
meta recording the data (prefix, rows, bad rows, a hash of the ids) and the validation
exact rate; every command takes it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from recognizer import checkpoint, data, settings
from recognizer.data.labelled_fields import read_labelled, split
from recognizer.data.reader_fields import Mapper, ReaderFields, synthesize
from recognizer.errors import CheckpointError, ConfigError
from recognizer.runtime import storage
from recognizer.training.config import TrainConfig
from recognizer.training.loop import EpochEnd, progress
from recognizer.training.reader_run import READER_HOLDOUT, read_reader_meta, write_reader_checkpoint

#: Inside the run: each epoch's checkpoint, and the best epoch's.
EPOCHS_DIR, BEST_DIR = "fine-tune", "fine-tune-best"
#: The final checkpoint's folder in the run (sorts after any ``checkpoint_epoch*``).
FINAL_DIR = "checkpoint_fine_tuned"
#: The run's report: the data read, bad rows, the epochs and the best one.
REPORT_FILE = "fine_tune.json"


@dataclass
class FineTuneData:
    """What a fine-tuning run trains on: ``train`` (the labelled training fields, repeated
    up to the epoch's minimum, and the synthesized ones), ``val`` (labelled), and what
    the checkpoint records about them."""

    train: ReaderFields
    val: ReaderFields
    record: dict


def epochs_uri(cfg: TrainConfig) -> str:
    return storage.join(cfg.run_uri, EPOCHS_DIR)


def best_uri(cfg: TrainConfig) -> str:
    return storage.join(cfg.run_uri, BEST_DIR)


def start_reader(cfg: TrainConfig) -> tuple[str, dict, dict]:
    """The checkpoint the run starts from: its folder, meta and reader weights."""
    from recognizer.bundled import default_checkpoint

    uri = checkpoint.resolve(default_checkpoint(cfg.start))
    meta = checkpoint.identify(uri)
    raw = checkpoint.read_reader(meta)
    if raw is None:
        raise CheckpointError(f"checkpoint {uri} has no learned field reader to fine-tune: train one with "
                              "`digits train --reader-epochs N`, or start from the bundled model")
    return uri, meta, checkpoint.state_dict(raw, checkpoint.READER_FILE)


def _concat(parts: list[ReaderFields]) -> ReaderFields:
    return ReaderFields(np.concatenate([p.canvas for p in parts]), np.concatenate([p.boxes for p in parts]),
                        [r for p in parts for r in p.raws])


def _synthesized(cfg: TrainConfig, count: int, mapper: Mapper | None) -> ReaderFields | None:
    if count < 1:
        return None
    digits = data.load_as_written(settings.data_dir(cfg.data), "train")
    images = digits.images[:-READER_HOLDOUT]
    return synthesize(images, digits.labels[:-READER_HOLDOUT], count, cfg.seed + 7, mapper=mapper,
                      progress=True)


def fine_tune_data(cfg: TrainConfig, start: tuple[str, dict], mapper: Mapper | None = None) -> FineTuneData:
    """The labelled fields (split for validation unless ``cfg.val_fields`` names them),
    their boxes found by the ``start`` reader (name, weights), and the synthesized fields
    mixed in."""
    import time

    import torch

    from recognizer.reader.model import build_reader, fold_batch_norms
    from recognizer.training.label_boxes import find_boxes

    labelled = read_labelled(cfg.fields, cfg.fields_limit)
    progress(labelled.report.summary())
    if cfg.val_fields:
        train, val = labelled, read_labelled(cfg.val_fields)
        progress(f"validation: {val.report.summary()}")
    else:
        train, val = split(labelled, cfg.val_fraction)
    mine = train.fields
    t0 = time.perf_counter()
    net = build_reader(start[0])
    net.load_state_dict(start[1])
    mine.boxes[:] = find_boxes(fold_batch_norms(net.eval()).to(memory_format=torch.channels_last), mine)
    found = int(np.isfinite(mine.boxes).all(1).sum())
    progress(f"boxes found by the reader for {found:,} of {len(mine):,} labelled fields "
             f"({time.perf_counter() - t0:.0f} s)")
    repeats = max(1, math.ceil(cfg.fine_tune_min_epoch / len(train.ids)))
    repeated = ReaderFields(np.tile(mine.canvas, (repeats, 1, 1)), np.tile(mine.boxes, (repeats, 1)),
                            mine.raws * repeats)
    synth = _synthesized(cfg, round(cfg.synth_mix * len(repeated)), mapper)
    progress(f"fine-tuning on {len(train.ids):,} labelled fields"
             + (f" (each {repeats} times an epoch)" if repeats > 1 else "")
             + (f" and {len(synth):,} synthesized ones" if synth is not None else "")
             + f", validating on {len(val.ids):,}")
    record = {"data": labelled.report.to_meta(), "train_rows": len(train.ids), "val_rows": len(val.ids),
              "val": val.report.to_meta() if cfg.val_fields else {"fraction": cfg.val_fraction},
              "synthesized": len(synth) if synth is not None else 0, "boxes_found": found,
              "recipe": cfg.fine_tune_recipe()}
    return FineTuneData(_concat([repeated] + ([synth] if synth is not None else [])), val.fields, record)


@dataclass
class FineTuneRun:
    """What both paths (in process, Ray Train) start from: the starting checkpoint's
    folder, its reader's name and weights, the data, and the newest epoch checkpoint (None
    on a fresh run), already checked against this run's settings."""

    start: str
    name: str
    weights: dict
    data: FineTuneData
    newest: str | None


def prepare(cfg: TrainConfig, mapper: Mapper | None = None) -> FineTuneRun:
    """Start a fine-tuning run: its checkpoint, data and the epoch to go on from."""
    start, meta, weights = start_reader(cfg)
    name = meta["reader"]["name"]
    found = fine_tune_data(cfg, (name, weights), mapper)
    # The start is named by a URI whose reader may since have changed (a new bundled model).
    found.record["start_reader"] = {"name": name, "sha256": meta.get(checkpoint.READER_HASH)}
    newest = checkpoint.newest_checkpoint(epochs_uri(cfg))
    if newest:
        check_resume(newest, found.record)
    return FineTuneRun(start, name, weights, found, newest)


def check_resume(folder: str, record: dict) -> None:
    """Refuse to go on from an epoch checkpoint made with other settings, other data or
    from another starting reader."""
    before = read_reader_meta(folder).get("fine_tune") or {}
    if before.get("start_reader") != record.get("start_reader"):
        was = before.get("start_reader") or {"name": "an unrecorded reader"}
        now = record["start_reader"]
        raise ConfigError(f"{folder} was fine-tuned from another starting reader ({was['name']} "
                          f"{str(was.get('sha256') or '')[:12]}, now {now['name']} "
                          f"{str(now.get('sha256') or '')[:12]}): give the run another --name to "
                          "fine-tune the new one")
    differ = [k for k in ("recipe", "data") if before.get(k) != record.get(k)]
    if differ:
        was, now = before.get("recipe") or {}, record["recipe"]
        changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
        what = ", ".join(changed) if changed else "the labelled fields read (rows or ids)"
        raise ConfigError(f"{folder} was fine-tuned with other settings ({what}): give the run another "
                          "--name, or the same settings to resume it")


def write_epoch(folder: str, cfg: TrainConfig, end: EpochEnd, record: dict) -> None:
    """An epoch's checkpoint; the run's best one is also kept apart (by validation exact
    rate, the first of equals)."""
    # The architecture is the starting reader's, whatever --reader says.
    name = record["start_reader"]["name"]
    write_reader_checkpoint(folder, cfg, name, end, {"fine_tune": record})
    scores = [h["val_accuracy"] for h in end.history]
    if scores[-1] > max(scores[:-1], default=-1.0):
        write_reader_checkpoint(best_uri(cfg), cfg, name, end, {"fine_tune": record})


def finish(cfg: TrainConfig, start: str, last: str, val: ReaderFields, record: dict) -> str:
    """The final checkpoint: the starting checkpoint with the best epoch's reader,
    calibrated on the labelled validation fields; and the run's report (``last``: the
    run's last epoch checkpoint, whose history is the whole run's)."""
    from recognizer.training.finish import LOADED_KEYS
    from recognizer.training.reader_run import fit_reader_calibration

    best = best_uri(cfg)
    meta_best = read_reader_meta(best)
    raw = storage.read_bytes(storage.join(best, checkpoint.READER_FILE))
    model, meta = checkpoint.load(start)
    splitter = checkpoint.read_splitter(meta)
    for key in LOADED_KEYS:
        meta.pop(key, None)
    history = read_reader_meta(last)["history"]
    fine_tuned = {**record, "start": {"uri": start, "version": checkpoint.identify(start)["version"]},
                  "best_epoch": meta_best["epochs"], "val_exact": meta_best["exact"], "history": history}
    meta["reader"] = {**(meta.get("reader") or {}), "name": meta_best["name"], "epochs": meta_best["epochs"],
                      "exact": meta_best["exact"], "history": meta_best["history"],
                      "code_version": meta_best.get("code_version"),
                      "calibration": fit_reader_calibration(raw, meta_best["name"], val,
                                                            "of the user's, held out for validation"),
                      "fine_tuned": fine_tuned}
    folder = storage.join(cfg.run_uri, FINAL_DIR)
    checkpoint.save(folder, model, meta, None, splitter, raw)
    storage.write_bytes(storage.join(cfg.run_uri, REPORT_FILE), json.dumps(fine_tuned, indent=2).encode())
    progress(f"fine-tuned reader: {meta_best['exact']:.2%} of {len(val):,} validation fields exact "
             f"(epoch {meta_best['epochs']} of {len(history)})")
    return folder

