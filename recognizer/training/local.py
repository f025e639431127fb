"""Training in this process, without Ray: the one loop as a world of one worker.

For tests, quick experiments and machines without a cluster. The run is laid out as
Ray Train lays it out (``OUTPUT/NAME/checkpoint_epochNNNN``, the newest
``num_to_keep`` kept), each checkpoint of the same kind, and running it again resumes
from the newest one.
"""

from __future__ import annotations

import os

from recognizer import checkpoint
from recognizer.errors import CheckpointError
from recognizer.runtime import storage
from recognizer.training.checkpoints import checkpoint_name, read_resume, write_checkpoint
from recognizer.training.config import TrainConfig, TrainResult
from recognizer.training.finish import finish_run
from recognizer.training.loop import EpochEnd, Resume, World, fit
from recognizer.training.prepare import prepare_run, train_splitter


def _newest(cfg: TrainConfig) -> str | None:
    """The run's newest complete checkpoint, or None when it has none yet."""
    try:
        return checkpoint.resolve(cfg.run_uri)
    except CheckpointError:
        return None


def _prune(cfg: TrainConfig, run: str | None = None) -> None:
    """Keep the run's newest ``num_to_keep`` checkpoints, as Ray Train does."""
    done = [d for d in storage.list_dirs(run or cfg.run_uri)
            if os.path.basename(d.rstrip("/")).startswith("checkpoint_")]
    for folder in done[:-cfg.num_to_keep]:
        storage.delete_dir(folder)


def run(cfg: TrainConfig) -> TrainResult:
    """Train in this process (CPU, or a GPU with ``cfg.use_gpu``); returns the final
    checkpoint's folder and metrics."""
    from recognizer.predict import select_device

    world = World(device=select_device(cfg.use_gpu))
    if cfg.fields is not None:
        return _fine_tune(cfg, world)
    inputs = prepare_run(cfg)
    newest = _newest(cfg)
    resume: Resume | None = read_resume(newest) if newest else None

    def on_epoch(end: EpochEnd) -> None:
        nonlocal newest
        newest = storage.join(cfg.run_uri, checkpoint_name(end.epoch))
        write_checkpoint(newest, cfg, inputs.info, end, world.size, inputs.splitter)
        _prune(cfg)

    metrics = fit(cfg, inputs.data, world, on_epoch, resume)
    reader, val = _train_reader(cfg, world)
    return TrainResult(checkpoint=finish_run(cfg, newest, inputs, train_splitter, reader, val),
                       metrics=metrics)


def _train_reader(cfg: TrainConfig, world: World):
    """The reader phase, after the digit model's epochs: (its newest checkpoint, its
    validation fields), or (None, None) when the recipe trains no reader."""
    if not cfg.reader_epochs:
        return None, None
    from recognizer.training.reader import reader_task
    from recognizer.training.reader_run import (
        newest_reader,
        read_reader_resume,
        reader_data,
        write_reader_checkpoint,
    )

    train, val = reader_data(cfg)
    newest = newest_reader(cfg)
    resume = read_reader_resume(newest) if newest else None

    def on_epoch(end: EpochEnd) -> None:
        nonlocal newest
        newest = storage.join(cfg.reader_uri, checkpoint_name(end.epoch))
        write_reader_checkpoint(newest, cfg, cfg.reader, end)
        _prune(cfg, cfg.reader_uri)

    fit(cfg, None, world, on_epoch, resume, reader_task(cfg.reader, cfg.reader_hyper, train, val, world))
    return newest, val


def _fine_tune(cfg: TrainConfig, world: World) -> TrainResult:
    """``digits train --fields``: the reader of the starting checkpoint, fine-tuned."""
    from recognizer.training import fine_tune as ft
    from recognizer.training.reader import reader_task
    from recognizer.training.reader_run import read_reader_resume

    run = ft.prepare(cfg)
    newest = run.newest
    resume = read_reader_resume(newest) if newest else None

    def on_epoch(end: EpochEnd) -> None:
        nonlocal newest
        newest = storage.join(ft.epochs_uri(cfg), checkpoint_name(end.epoch))
        ft.write_epoch(newest, cfg, end, run.data.record)
        _prune(cfg, ft.epochs_uri(cfg))

    task = reader_task(run.name, cfg.fine_tune_hyper, run.data.train, run.data.val, world, run.weights)
    metrics = fit(cfg, None, world, on_epoch, resume, task)
    return TrainResult(checkpoint=ft.finish(cfg, run.start, newest, run.data.val, run.data.record),
                       metrics=metrics)
