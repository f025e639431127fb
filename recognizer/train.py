"""Data-parallel training on Ray Train: one TorchTrainer, N workers, a checkpoint per epoch.

Rerunning with the same ``output`` and ``name`` resumes from the newest checkpoint, and
a worker that dies mid-run is replaced and restarts from the last checkpoint
(``FailureConfig``).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from recognizer import checkpoint, data, settings, storage
from recognizer.augment import AugmentConfig, augment
from recognizer.errors import CheckpointError, ConfigError
from recognizer.models import MODELS, build
from recognizer.splitter import SplitterConfig


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults are the recommended recipe."""

    data: str | None = None
    model: str = settings.DEFAULT_MODEL
    workers: int = 2
    use_gpu: bool = False
    epochs: int = 30
    batch_size: int = 128
    lr: float = 4e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    #: Decay of the exponential moving average of the weights that is evaluated and
    #: checkpointed (0 turns it off); it smooths out the noise of high learning rates.
    ema_decay: float = 0.995
    augment: bool = True
    output: str = "runs"
    name: str = "digits"
    seed: int = 0
    max_failures: int = 3
    num_to_keep: int = 2
    train_limit: int | None = None
    test_limit: int | None = None
    #: Fields synthesized from the training digits and cut by the segmenter; their pieces
    #: join the training data, the ones that are not one digit as an eleventh class
    #: (recognizer.field_pieces), so that field reading can tell cuts from digits.
    #: 0 trains a plain ten-digit classifier.
    field_pieces: int = 1000
    #: The splitter of touching digits (recognizer.splitter) trained with the model and
    #: saved in its checkpoints: marks synthesized from the training digits, and epochs.
    #: 0 epochs trains none; fields are then cut by geometry alone.
    splitter_examples: int = SplitterConfig.examples
    splitter_epochs: int = SplitterConfig.epochs
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        for name in ("workers", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < self.workers:
            raise ConfigError("batch_size must be at least the number of workers")
        if self.field_pieces < 0:
            raise ConfigError(f"field_pieces must not be negative, got {self.field_pieces}")
        if self.splitter_epochs < 0:
            raise ConfigError(f"splitter_epochs must not be negative, got {self.splitter_epochs}")
        if self.splitter_epochs and self.splitter_examples < 1:
            raise ConfigError("splitter_examples must be at least 1 when a splitter is trained "
                              f"(got {self.splitter_examples}; --splitter-epochs 0 trains none)")

    @property
    def splitter_config(self) -> SplitterConfig:
        return SplitterConfig(examples=self.splitter_examples, epochs=self.splitter_epochs,
                              seed=self.seed)

    @property
    def classes(self) -> int:
        """10 digits, or 11 with the not-a-digit class when field pieces are learned."""
        return settings.DIGITS + 1 if self.field_pieces else settings.DIGITS

    @property
    def output_root(self) -> str:
        """Where runs live: an s3:// prefix as given, a local folder made absolute (Ray
        Train wants absolute paths, and a run must resume from any working directory)."""
        return self.output if storage.is_s3(self.output) else os.path.abspath(self.output)


@dataclass
class TrainResult:
    checkpoint: str
    metrics: dict


def _seconds_fmt(s: float) -> str:
    return f"{s:6.1f}s"


def _progress(line: str) -> None:
    # Ray Train turns print() into INFO log records, which its WARNING log level (set to
    # hide its own per-report chatter) would swallow; the stream itself still reaches
    # the driver's console.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _evaluate(model, x: torch.Tensor, y: torch.Tensor, device, batch: int = 1000) -> tuple[float, int]:
    """Sum of losses and number correct over (x, y)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(y), batch):
            xb, yb = x[i:i + batch].to(device), y[i:i + batch].to(device)
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            # Scored as users get it: the most likely of the ten digits.
            correct += (out[:, :settings.DIGITS].argmax(1) == yb).sum().item()
    return loss_sum, correct


def make_ema(model: torch.nn.Module, decay: float):
    """An exponential moving average of model's weights and BatchNorm statistics.

    The decay warms up as (1 + n) / (10 + n) so the first steps do not drag in the
    random initial weights.
    """
    from torch.optim.swa_utils import AveragedModel

    def average(avg: torch.Tensor, new: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg * d + new * (1.0 - d)

    return AveragedModel(model, avg_fn=average, use_buffers=True)


def train_epoch(model, optimizer, schedule, x: torch.Tensor, y: torch.Tensor,
                order: torch.Tensor, batch_size: int, cfg: dict, aug_cfg: AugmentConfig,
                g: torch.Generator, device, ema=None) -> tuple[float, int]:
    """One pass over x[order] in batches; returns (sum of losses, number correct)."""
    model.train()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        xb, yb = x[idx], y[idx]
        if cfg["augment"]:
            xb = augment(xb, aug_cfg, g)
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        loss = F.cross_entropy(out, yb, label_smoothing=cfg["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
        loss_sum += loss.item() * len(yb)
        correct += int((out.argmax(1) == yb).sum())
    return loss_sum, correct


def make_schedule(optimizer, cfg: dict, total_steps: int):
    """One-cycle learning rate: warm up for 15% of the steps, then anneal."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg["lr"], total_steps=total_steps, pct_start=0.15)


def make_optimizer(model, cfg: dict, steps_per_epoch: int):
    """AdamW with a one-cycle learning-rate schedule over the whole run."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return optimizer, make_schedule(optimizer, cfg, cfg["epochs"] * steps_per_epoch)


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


def train_loop_per_worker(cfg: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    _quiet_train_reports()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cfg["seed"])
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.get("threads_per_worker", 1))))

    train_x, train_y = ray.get(cfg["train_ref"])
    splitter = ray.get(cfg["splitter_ref"]) if rank == 0 and cfg.get("splitter_ref") else None
    test_x, test_y = ray.get(cfg["test_ref"])
    train_x = torch.tensor(train_x).unsqueeze(1)
    train_y = torch.tensor(train_y)
    # Each worker scores its own slice of the test set; the sums are all-reduced.
    test_x = torch.tensor(test_x[rank::world]).unsqueeze(1)
    test_y = torch.tensor(test_y[rank::world])

    model = ray.train.torch.prepare_model(build(cfg["model"], cfg["classes"]))
    per_worker = max(1, cfg["batch_size"] // world)
    shard_len = len(train_y) // world
    steps = math.ceil(shard_len / per_worker)
    optimizer, schedule = make_optimizer(model, cfg, steps)
    aug_cfg = AugmentConfig(**cfg["augment_config"])
    unwrapped = model.module if hasattr(model, "module") else model
    ema = make_ema(unwrapped, cfg["ema_decay"]) if cfg["ema_decay"] > 0 else None

    start_epoch, history = 0, []
    resume = ray.train.get_checkpoint()
    if resume:
        with resume.as_directory() as folder:
            restored, _ = checkpoint.load(folder)
            state = checkpoint.load_train_state(folder) or {}
        # model.pt holds the averaged weights users get; training goes on from the raw ones.
        unwrapped.load_state_dict(state.get("model", restored.state_dict()))
        if ema is not None:
            ema.module.load_state_dict(restored.state_dict())
            ema.n_averaged.fill_(int(state.get("ema_steps", 0)))
        start_epoch = int(state.get("epoch", 0))
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            if state["schedule"].get("total_steps") == cfg["epochs"] * steps:
                schedule.load_state_dict(state["schedule"])
            else:
                # The run was extended (or shortened): a new one-cycle over what is left.
                schedule = make_schedule(optimizer, cfg, max(1, cfg["epochs"] - start_epoch) * steps)
        history = list(state.get("history", []))
        if rank == 0:
            _progress(f"resuming from {resume.path} at epoch {start_epoch + 1}")

    train_seconds = history[-1]["train_seconds"] if history else 0.0
    for epoch in range(start_epoch, cfg["epochs"]):
        g = torch.Generator().manual_seed(cfg["seed"] * 100_003 + epoch)
        order = torch.randperm(len(train_y), generator=g)[: shard_len * world][rank::world]
        t0 = time.perf_counter()
        loss_sum, correct = train_epoch(model, optimizer, schedule, train_x, train_y, order,
                                        per_worker, cfg, aug_cfg, g, device, ema)
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds

        served = ema.module if ema is not None else unwrapped
        val_loss, val_correct = _evaluate(served, test_x, test_y, device)
        totals = torch.tensor([loss_sum, correct, shard_len,
                               val_loss, val_correct, len(test_y)], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(totals)
        n_train, n_val = totals[2].item(), totals[5].item()
        metrics = {
            "epoch": epoch + 1,
            "loss": totals[0].item() / n_train,
            "accuracy": totals[1].item() / n_train,
            "val_loss": totals[3].item() / n_val,
            "val_accuracy": totals[4].item() / n_val,
            "images_per_s": n_train / epoch_seconds,
            "train_seconds": train_seconds,
        }
        history.append(metrics)
        if rank == 0:
            _progress(f"epoch {epoch + 1:3d}/{cfg['epochs']}  loss {metrics['loss']:.4f}  "
                      f"acc {metrics['accuracy']:.2%}  val_loss {metrics['val_loss']:.4f}  "
                      f"val_acc {metrics['val_accuracy']:.2%}  {metrics['images_per_s']:,.0f} img/s  "
                      f"[{_seconds_fmt(train_seconds)} training]")
            with tempfile.TemporaryDirectory() as tmp:
                meta = {"model": cfg["model"], "data": cfg["data_source"],
                        "epochs": epoch + 1, "epochs_planned": cfg["epochs"],
                        "accuracy": metrics["val_accuracy"], "loss": metrics["val_loss"],
                        "train_images": cfg["train_images"], "field_pieces": cfg["field_pieces_cut"],
                        "splitter": cfg["splitter_metrics"], "workers": world,
                        "code_version": cfg["code_version"], "history": history,
                        "recipe": cfg["recipe"]}
                state = {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                         "epoch": epoch + 1, "history": history,
                         "model": {k: v.detach().cpu() for k, v in unwrapped.state_dict().items()},
                         "ema_steps": int(ema.n_averaged) if ema is not None else 0}
                checkpoint.save(tmp, served, meta, state, splitter)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                                 checkpoint_dir_name=f"checkpoint_epoch{epoch + 1:04d}")
        else:
            ray.train.report(metrics)


def _limit(d: data.Digits, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return d.images, d.labels
    return d.images[:n], d.labels[:n]


def training_set(train_d: data.Digits, cfg: TrainConfig, progress: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """(images, labels, pieces): the training digits and, with ``cfg.field_pieces``, the
    pieces cut from fields synthesized from them (``cfg.classes`` classes in all)."""
    # Here, not at the top: Ray Train workers import this module, and have no use for
    # the segmenter (scipy) that field_pieces brings.
    from recognizer import field_pieces

    x, y = _limit(train_d, cfg.train_limit)
    if not cfg.field_pieces:
        return x, y, 0
    px, py = field_pieces.cut_pieces(x, y, cfg.field_pieces, np.random.default_rng(cfg.seed),
                                     progress=progress)
    return np.concatenate([x, px]), np.concatenate([y, py]), len(py)


def train_splitter(images: np.ndarray, cfg: TrainConfig, progress: bool = False,
                   report: Callable[[str], None] | None = None) -> tuple[bytes, dict]:
    """Train the splitter of touching digits on marks synthesized from ``images`` (the
    training digits): its weights (for ``checkpoint.save``) and metrics."""
    from recognizer.predict import select_device
    from recognizer.splitter import state_bytes, train

    net, metrics = train(images, cfg.splitter_config, select_device(cfg.use_gpu),
                         progress, report)
    return state_bytes(net), metrics


def _splitter_for_run(cfg: TrainConfig, images: np.ndarray) -> tuple[bytes | None, dict | None]:
    """The run's splitter: the one its checkpoints already hold when it resumes, else a
    new one trained in a Ray task (on a GPU when the run has them) before the workers
    start; (None, None) when the recipe has none."""
    import ray

    if not cfg.splitter_epochs:
        return None, None
    try:
        meta = checkpoint.identify(storage.join(cfg.output_root, cfg.name))
    except CheckpointError:
        meta = None
    if meta is not None and meta.get(checkpoint.SPLITTER_HASH):
        _progress(f"using the splitter of {meta['uri']}")
        return checkpoint.read_splitter(meta), meta.get("splitter")
    _progress(f"training the splitter of touching digits ({cfg.splitter_examples:,} marks, "
              f"{cfg.splitter_epochs} epochs)")
    task = ray.remote(_splitter_task).options(num_cpus=cfg.workers, num_gpus=1 if cfg.use_gpu else 0)
    raw, metrics = ray.get(task.remote(images, cfg))
    _progress(f"splitter: {metrics['pixel_accuracy']:.2%} of held-out stroke pixels on the "
              f"right side, {_seconds_fmt(metrics['seconds'])}")
    return raw, metrics


def _splitter_task(images: np.ndarray, cfg: TrainConfig) -> tuple[bytes, dict]:
    # A task holding all the run's CPUs, before the workers start: use them all.
    torch.set_num_threads(max(1, cfg.workers))
    return train_splitter(images, cfg, report=_progress)


def check_resumable(cfg: TrainConfig) -> None:
    """Refuse, before any work, to resume a run whose checkpoints have another number of
    classes than ``cfg`` trains (a run begun with or without ``field_pieces``)."""
    run_uri = storage.join(cfg.output_root, cfg.name)
    try:
        meta = checkpoint.read_meta(checkpoint.resolve(run_uri))
    except CheckpointError:
        return  # nothing to resume
    have, want = int(meta.get("classes", settings.DIGITS)), cfg.classes
    if have != want:
        hint = "--field-pieces 0" if have == settings.DIGITS else "--field-pieces N (N > 0)"
        raise ConfigError(f"run {run_uri} holds a {have}-class model but this recipe trains {want} "
                          f"classes: resume it with {hint}, or start a new run with another --name")


def run(cfg: TrainConfig) -> TrainResult:
    """Train with Ray Train on the connected Ray cluster; returns the final checkpoint URI."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg.validate()
    check_resumable(cfg)
    train_d = data.load(settings.data_dir(cfg.data), "train")
    test_d = data.load(settings.data_dir(cfg.data), "test")
    recipe = {k: v for k, v in asdict(cfg).items()
              if k in ("model", "epochs", "batch_size", "lr", "weight_decay",
                       "label_smoothing", "ema_decay", "augment", "seed", "field_pieces",
                       "splitter_examples", "splitter_epochs")}
    train_x, train_y, pieces = training_set(train_d, cfg, progress=True)
    splitter, splitter_metrics = _splitter_for_run(cfg, _limit(train_d, cfg.train_limit)[0])
    loop_cfg = {
        **recipe,
        "classes": cfg.classes,
        "train_images": len(train_y) - pieces,
        "field_pieces_cut": pieces,
        "augment_config": asdict(cfg.augment_config),
        "train_ref": ray.put((train_x, train_y)),
        "splitter_ref": ray.put(splitter) if splitter is not None else None,
        "splitter_metrics": splitter_metrics,
        "test_ref": ray.put(_limit(test_d, cfg.test_limit)),
        "data_source": train_d.source,
        "code_version": checkpoint.code_version(),
        "recipe": recipe,
        "threads_per_worker": 1,
    }
    storage_fs, storage_path = None, cfg.output_root
    if storage.is_s3(storage_path):
        storage_fs, storage_path = storage.resolve(storage_path)
    resources = {"CPU": 1, "GPU": 1} if cfg.use_gpu else {"CPU": 1}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
            # Ray Train's per-report INFO lines would drown the per-epoch progress lines.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise ConfigError("training finished without a checkpoint")
    path = result.checkpoint.path
    uri = f"s3://{path}" if storage.is_s3(cfg.output) else path
    return TrainResult(checkpoint=uri, metrics=dict(result.metrics or {}))


def fit_in_process(cfg: TrainConfig, train_d: data.Digits, test_d: data.Digits,
                   folder: str) -> dict:
    """Train in this process without Ray and save a checkpoint to folder.

    For test fixtures and quick experiments on one machine; `run` is the product path.
    Returns the final metrics.
    """
    cfg.validate()
    loop = {**asdict(cfg)}
    torch.manual_seed(cfg.seed)
    train_x, train_y, pieces = training_set(train_d, cfg)
    x = torch.tensor(train_x).unsqueeze(1)
    y = torch.tensor(train_y)
    tx = torch.tensor(test_d.images).unsqueeze(1)
    ty = torch.tensor(test_d.labels)
    model = build(cfg.model, cfg.classes)
    steps = math.ceil(len(y) / cfg.batch_size)
    optimizer, schedule = make_optimizer(model, loop, steps)
    history: list[dict] = []
    device = torch.device("cpu")
    train_seconds = 0.0
    for epoch in range(cfg.epochs):
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(y), generator=g)
        t0 = time.perf_counter()
        loss_sum, correct = train_epoch(model, optimizer, schedule, x, y, order, cfg.batch_size,
                                        loop, cfg.augment_config, g, device)
        train_seconds += time.perf_counter() - t0
        val_loss, val_correct = _evaluate(model, tx, ty, device)
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(y), "accuracy": correct / len(y),
                        "val_loss": val_loss / len(ty), "val_accuracy": val_correct / len(ty),
                        "train_seconds": train_seconds})
    last = history[-1]
    splitter, splitter_metrics = None, None
    if cfg.splitter_epochs:
        splitter, splitter_metrics = train_splitter(_limit(train_d, cfg.train_limit)[0], cfg)
    checkpoint.save(folder, model, {
        "model": cfg.model, "data": train_d.source, "epochs": cfg.epochs,
        "accuracy": last["val_accuracy"], "loss": last["val_loss"],
        "train_images": len(y) - pieces, "field_pieces": pieces, "splitter": splitter_metrics,
        "workers": 1, "code_version": checkpoint.code_version(), "history": history,
        "recipe": {k: loop[k] for k in ("model", "epochs", "lr", "field_pieces",
                                        "splitter_examples", "splitter_epochs")},
    }, splitter=splitter)
    return last
