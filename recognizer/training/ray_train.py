"""Data-parallel training on Ray Train: the one loop (:func:`recognizer.training.loop.fit`)
on N workers of a ``TorchTrainer``, a checkpoint per epoch.

Rerunning with the same ``output`` and ``name`` resumes from the newest checkpoint, and
a worker that dies mid-run is replaced and restarts from the last checkpoint
(``FailureConfig``). After the epochs, the splitter of touching digits is trained in a
Ray task (holding the run's CPUs, or a GPU) and the final checkpoint written
(:mod:`recognizer.training.finish`).
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch

from recognizer.errors import ConfigError
from recognizer.runtime import storage
from recognizer.training.checkpoints import checkpoint_name, read_resume, write_checkpoint
from recognizer.training.config import TrainConfig, TrainResult
from recognizer.training.finish import finish_run
from recognizer.training.loop import EpochEnd, World, fit, progress
from recognizer.training.prepare import prepare_run, train_splitter


def _quiet_train_reports() -> None:
    """Silence Ray Train's INFO line for every ``report()`` (our progress lines say the same).

    Ray 2.60 logs it through a logger named after its source file, outside the ``ray``
    hierarchy that ``LoggingConfig(log_level=...)`` sets, so it needs its own level.
    """
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: its lines stay, nothing breaks
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _ray_world() -> World:
    """This Ray Train worker's place in the run: rank, size, device, DDP and all-reduce."""
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    ctx = ray.train.get_context()
    size = ctx.get_world_size()
    return World(rank=ctx.get_world_rank(), size=size, device=ray.train.torch.get_device(),
                 prepare=ray.train.torch.prepare_model,
                 all_reduce=dist.all_reduce if size > 1 else World.all_reduce)


def train_loop_per_worker(loop: dict) -> None:
    """Runs on every Ray Train worker: the one loop on the digit model's task (or, in a
    run's reader phase, the reader's), reporting (and, on rank 0, checkpointing) every
    epoch."""
    import ray

    _quiet_train_reports()
    cfg: TrainConfig = loop["cfg"]
    world = _ray_world()
    if world.device.type == "cpu":
        torch.set_num_threads(max(1, loop["threads"]))
    if loop.get("reader_ref") is not None:
        from recognizer.training.reader import reader_task
        from recognizer.training.reader_run import read_reader_resume, write_reader_checkpoint

        train, val = ray.get(loop["reader_ref"])
        if loop.get("start_ref") is not None:  # fine-tuning a checkpoint's reader
            from recognizer.training.fine_tune import write_epoch

            name, start = ray.get(loop["start_ref"])
            task = reader_task(name, cfg.fine_tune_hyper, train, val, world, start)
            record = loop["record"]
            _fit_and_report(cfg, world, None, task, lambda tmp, end: write_epoch(tmp, cfg, end, record),
                            read_reader_resume)
            return
        task = reader_task(cfg.reader, cfg.reader_hyper, train, val, world)
        _fit_and_report(cfg, world, None, task,
                        lambda tmp, end: write_reader_checkpoint(tmp, cfg, cfg.reader, end),
                        read_reader_resume)
        return
    splitter = ray.get(loop["splitter_ref"]) if world.rank == 0 and loop["splitter_ref"] else None
    _fit_and_report(cfg, world, ray.get(loop["data_ref"]), None,
                    lambda tmp, end: write_checkpoint(tmp, cfg, loop["info"], end, world.size, splitter),
                    read_resume)


def _fit_and_report(cfg: TrainConfig, world: World, data, task, write, read) -> None:
    """``fit`` from Ray Train's checkpoint (``read`` turns its folder into a Resume),
    rank 0 writing each epoch's checkpoint with ``write(folder, end)``."""
    import ray.train

    def on_epoch(end: EpochEnd) -> None:
        if world.rank != 0:
            ray.train.report(end.metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            write(tmp, end)
            ray.train.report(end.metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=checkpoint_name(end.epoch))

    resume = None
    found = ray.train.get_checkpoint()
    if found:
        with found.as_directory() as folder:
            resume = read(folder)
        resume.where = found.path
    fit(cfg, data, world, on_epoch, resume, task)


def _splitter_task(images: np.ndarray, cfg: TrainConfig) -> tuple[bytes, dict]:
    # A task holding all the run's CPUs, after the workers have finished: use them all.
    torch.set_num_threads(max(1, cfg.workers))
    return train_splitter(images, cfg, report=progress)


def _splitter_in_task(images: np.ndarray, cfg: TrainConfig) -> tuple[bytes, dict]:
    """Train the run's splitter in a Ray task (on a GPU when the run has them)."""
    import ray

    task = ray.remote(_splitter_task).options(num_cpus=cfg.workers, num_gpus=1 if cfg.use_gpu else 0)
    return ray.get(task.remote(images, cfg))


def run(cfg: TrainConfig) -> TrainResult:
    """Train with Ray Train on the connected Ray cluster; returns the final checkpoint URI."""
    import ray

    threads = cfg.threads_per_worker or int(ray.cluster_resources().get("CPU", 1)) // cfg.workers
    if cfg.fields is not None:
        return _fine_tune(cfg, threads)
    inputs = prepare_run(cfg)
    loop = {"cfg": cfg, "info": inputs.info, "data_ref": ray.put(inputs.data), "threads": threads,
            "splitter_ref": ray.put(inputs.splitter) if inputs.splitter is not None else None}
    result = _trainer(cfg, loop, cfg.name, cfg.output_root).fit()
    uri = _checkpoint_uri(cfg, result)
    reader, val = None, None
    if cfg.reader_epochs:
        from recognizer.training.reader_run import reader_data

        train, val = reader_data(cfg, _ray_map, processes=threads)
        reader_loop = {"cfg": cfg, "threads": threads, "reader_ref": ray.put((train, val))}
        reader = _checkpoint_uri(cfg, _trainer(cfg, reader_loop, "reader", cfg.run_uri).fit())
    return TrainResult(checkpoint=finish_run(cfg, uri, inputs, _splitter_in_task, reader, val),
                       metrics=dict(result.metrics or {}))


def _fine_tune(cfg: TrainConfig, threads: int) -> TrainResult:
    """``digits train --fields``: the starting checkpoint's reader fine-tuned on Ray Train."""
    import ray

    from recognizer.training import fine_tune as ft

    run = ft.prepare(cfg, _ray_map)
    loop = {"cfg": cfg, "threads": threads, "reader_ref": ray.put((run.data.train, run.data.val)),
            "start_ref": ray.put((run.name, run.weights)), "record": run.data.record}
    result = _trainer(cfg, loop, ft.EPOCHS_DIR, cfg.run_uri).fit()
    last = _checkpoint_uri(cfg, result)
    return TrainResult(checkpoint=ft.finish(cfg, run.start, last, run.data.val, run.data.record),
                       metrics=dict(result.metrics or {}))


def _call(fn, *job):
    return fn(job)


def _ray_map(fn, jobs: list):
    """``fn`` over ``jobs`` as Ray tasks across the cluster, results in order. The jobs'
    first two items (the digits and labels every job shares) go to the object store once."""
    import ray

    task = ray.remote(_call)
    shared = [ray.put(part) for part in jobs[0][:2]] if jobs else []
    refs = [task.remote(fn, *shared, *job[2:]) for job in jobs]
    for ref in refs:
        yield ray.get(ref)


def _checkpoint_uri(cfg: TrainConfig, result) -> str:
    """The URI of a finished Ray Train run's last checkpoint (s3:// for runs on S3)."""
    if result.checkpoint is None:
        raise ConfigError("training finished without a checkpoint")
    path = result.checkpoint.path
    return f"s3://{path}" if storage.is_s3(cfg.output) else path


def _trainer(cfg: TrainConfig, loop: dict, name: str, root: str):
    """A TorchTrainer running :func:`train_loop_per_worker` as run ``name`` under ``root``."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    storage_fs, storage_path = None, root
    if storage.is_s3(storage_path):
        storage_fs, storage_path = storage.resolve(storage_path)
    resources = {"CPU": 1, "GPU": 1} if cfg.use_gpu else {"CPU": 1}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
            # Ray Train's per-report INFO lines would drown the per-epoch progress lines.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
