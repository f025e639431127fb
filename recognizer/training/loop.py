"""The one training loop: :func:`fit` trains the digit model on one worker of a world of
``size`` workers, a checkpoint's worth of state handed to ``on_epoch`` after every epoch.

Ray Train runs it on each of its workers (:mod:`recognizer.training.ray_train`); training
in this process runs it once, as a world of one (:mod:`recognizer.training.local`). Each
worker trains on its shard of every epoch's shuffled order and scores its slice of the
validation set; the sums are added up across the world, so every worker reports the
same metrics.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from recognizer import settings
from recognizer.models import build
from recognizer.training.augment import augment
from recognizer.training.config import Hyper, TrainConfig
from recognizer.training.optim import batches, make_ema, one_cycle, one_cycle_schedule, optimizer_step

#: Share of the steps the one-cycle learning rate warms up for.
WARMUP = 0.15
#: Validation images scored per model call.
EVAL_BATCH = 1000


def progress(line: str) -> None:
    """Print one progress line at once (also from a Ray worker or task)."""
    # Ray Train turns print() into INFO log records, which its WARNING log level (set to
    # hide its own per-report chatter) would swallow; the stream itself still reaches
    # the driver's console.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _keep(t: torch.Tensor) -> None:
    """The all-reduce of a world of one: the sums are already complete."""


@dataclass
class World:
    """Where one copy of the loop runs: worker ``rank`` of ``size``, on ``device``;
    ``prepare`` wraps the model for the world (data-parallel across workers) and
    ``all_reduce`` sums a tensor across it in place."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prepare: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model
    all_reduce: Callable[[torch.Tensor], None] = _keep


@dataclass
class LoopData:
    """The run's whole training set (images float32 (N, 28, 28), labels) and validation
    set; each worker takes its own share of both."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass
class Task:
    """What the loop trains: the digit classifier (:func:`digit_task`) or the field reader
    (:func:`recognizer.training.reader.reader_task`).

    ``size`` training examples; ``build`` makes the network; ``step(model, idx, g,
    device)`` returns the mean loss and the number right of the training examples
    ``idx``; ``validate(model, device)`` the loss sum, number right and count of this
    worker's share of the validation set. ``draw(epoch)``, when given, runs before each
    epoch and gives this worker examples of its own for it, ``size // world size`` of
    them, in place of a share of one set that every epoch goes over again."""

    name: str
    hyper: Hyper
    size: int
    build: Callable[[], torch.nn.Module]
    step: Callable[[torch.nn.Module, torch.Tensor, torch.Generator, torch.device], tuple[torch.Tensor, int]]
    validate: Callable[[torch.nn.Module, torch.device], tuple[float, int, int]]
    draw: Callable[[int], None] | None = None


@dataclass
class Resume:
    """A checkpoint to go on from: the averaged weights users get (``model.pt``), the
    training state beside them (``train_state.pt``), and where it was."""

    weights: dict
    state: dict
    where: str


@dataclass
class EpochEnd:
    """What one epoch leaves: its metrics, the history so far, the model to evaluate
    and save (the moving average, when there is one) and the state to resume from."""

    epoch: int
    metrics: dict
    history: list[dict]
    served: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None

    def train_state(self) -> dict:
        """Optimizer, schedule, epoch, history, raw weights and moving-average steps."""
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "epoch": self.epoch, "history": self.history,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "ema_steps": int(self.ema.n_averaged) if self.ema is not None else 0}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def evaluate_sums(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device) -> tuple[float, int]:
    """Sum of losses and number correct over (x, y)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(y), EVAL_BATCH):
            xb, yb = x[i:i + EVAL_BATCH].to(device), y[i:i + EVAL_BATCH].to(device)
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            # Scored as users get it: the most likely of the ten digits.
            correct += (out[:, :settings.DIGITS].argmax(1) == yb).sum().item()
    return loss_sum, correct


def digit_task(cfg: TrainConfig, data: LoopData, world: World) -> Task:
    """The digit classifier: cross-entropy with label smoothing on augmented digits,
    scored as users get it (the most likely of the ten digits)."""
    train_x, train_y = torch.tensor(data.train_x).unsqueeze(1), torch.tensor(data.train_y)
    test_x = torch.tensor(data.test_x[world.rank::world.size]).unsqueeze(1)
    test_y = torch.tensor(data.test_y[world.rank::world.size])

    def step(model: torch.nn.Module, idx: torch.Tensor, g: torch.Generator, device: torch.device):
        xb, yb = train_x[idx], train_y[idx]
        if cfg.augment:
            xb = augment(xb, cfg.augment_config, g)
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)
        loss = F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing)
        return loss, int((out.argmax(1) == yb).sum())

    def validate(model: torch.nn.Module, device: torch.device) -> tuple[float, int, int]:
        return (*evaluate_sums(model, test_x, test_y, device), len(test_y))

    hyper = Hyper(cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.ema_decay, cfg.seed)
    return Task("digits", hyper, len(train_y), lambda: build(cfg.model, cfg.classes), step, validate)


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                schedule: torch.optim.lr_scheduler.LRScheduler, task: Task, order: torch.Tensor,
                batch_size: int, g: torch.Generator, device: torch.device,
                ema: torch.optim.swa_utils.AveragedModel | None = None) -> tuple[float, int]:
    """One pass over the task's examples in ``order``, in batches; returns (sum of
    losses, number right)."""
    model.train()
    loss_sum, correct = 0.0, 0
    for idx in batches(order, batch_size):
        loss, right = task.step(model, idx, g, device)
        optimizer_step(optimizer, schedule, loss)
        if ema is not None:
            ema.update_parameters(_unwrap(model))
        loss_sum += loss.item() * len(idx)
        correct += right
    return loss_sum, correct


def _restore(resume: Resume, model: torch.nn.Module, ema, optimizer, schedule, cfg: Hyper,
             steps: int, world: World) -> tuple[int, list[dict], torch.optim.lr_scheduler.LRScheduler]:
    """Load a checkpoint's weights and state; (epoch to start at, history, schedule)."""
    state = resume.state
    # model.pt holds the averaged weights users get; training goes on from the raw ones.
    model.load_state_dict(state.get("model", resume.weights))
    if ema is not None:
        ema.module.load_state_dict(resume.weights)
        ema.n_averaged.fill_(int(state.get("ema_steps", 0)))
    start_epoch = int(state.get("epoch", 0))
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
        if state["schedule"].get("total_steps") == cfg.epochs * steps:
            schedule.load_state_dict(state["schedule"])
        else:
            # The run was extended (or shortened): a new one-cycle over what is left.
            schedule = one_cycle_schedule(optimizer, cfg.lr, max(1, cfg.epochs - start_epoch) * steps,
                                          WARMUP)
    if world.rank == 0:
        progress(f"resuming from {resume.where} at epoch {start_epoch + 1}")
    return start_epoch, list(state.get("history", [])), schedule


def _epoch_line(metrics: dict, epochs: int) -> str:
    return (f"epoch {metrics['epoch']:3d}/{epochs}  loss {metrics['loss']:.4f}  "
            f"acc {metrics['accuracy']:.2%}  val_loss {metrics['val_loss']:.4f}  "
            f"val_acc {metrics['val_accuracy']:.2%}  {metrics['images_per_s']:,.0f} img/s  "
            f"[{metrics['train_seconds']:6.1f}s training]")


def _metrics(totals: torch.Tensor, epoch: int, epoch_seconds: float, train_seconds: float) -> dict:
    """An epoch's metrics from the world's sums (loss, correct, images; the same for
    validation)."""
    n_train, n_val = totals[2].item(), totals[5].item()
    return {"epoch": epoch, "loss": totals[0].item() / n_train, "accuracy": totals[1].item() / n_train,
            "val_loss": totals[3].item() / n_val, "val_accuracy": totals[4].item() / n_val,
            "images_per_s": n_train / epoch_seconds, "train_seconds": train_seconds}


def fit(cfg: TrainConfig, data: LoopData | None, world: World, on_epoch: Callable[[EpochEnd], None],
        resume: Resume | None = None, task: Task | None = None) -> dict:
    """Train ``task`` (default: the digit model ``cfg.model`` on ``data``) on this
    worker's share of its examples for the epochs ``resume`` (if any) has not done;
    ``on_epoch`` gets every epoch's :class:`EpochEnd`. Returns the last epoch's metrics."""
    if task is None:
        assert data is not None, "the digit task needs its data"
        task = digit_task(cfg, data, world)
    hyper = task.hyper
    torch.manual_seed(hyper.seed)
    model = world.prepare(task.build())
    per_worker = max(1, hyper.batch_size // world.size)
    shard_len = task.size // world.size
    steps = math.ceil(shard_len / per_worker)
    optimizer, schedule = one_cycle(model.parameters(), hyper.lr, hyper.weight_decay, hyper.epochs * steps,
                                    WARMUP)
    unwrapped = _unwrap(model)
    ema = make_ema(unwrapped, hyper.ema_decay) if hyper.ema_decay > 0 else None
    start_epoch, history = 0, []
    if resume is not None:
        start_epoch, history, schedule = _restore(resume, unwrapped, ema, optimizer, schedule, hyper,
                                                  steps, world)
    train_seconds = history[-1]["train_seconds"] if history else 0.0
    for epoch in range(start_epoch, hyper.epochs):
        g = torch.Generator().manual_seed(hyper.seed * 100_003 + epoch)
        if task.draw is not None:
            task.draw(epoch)
            order = torch.randperm(shard_len, generator=g)
        else:
            order = torch.randperm(task.size, generator=g)[: shard_len * world.size][world.rank::world.size]
        t0 = time.perf_counter()
        loss_sum, correct = train_epoch(model, optimizer, schedule, task, order, per_worker, g,
                                        world.device, ema)
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        served = ema.module if ema is not None else unwrapped
        val_loss, val_correct, val_count = task.validate(served, world.device)
        totals = torch.tensor([loss_sum, correct, shard_len, val_loss, val_correct, val_count],
                              dtype=torch.float64)
        world.all_reduce(totals)
        history.append(_metrics(totals, epoch + 1, epoch_seconds, train_seconds))
        if world.rank == 0:
            prefix = "" if task.name == "digits" else f"{task.name}: "
            progress(prefix + _epoch_line(history[-1], hyper.epochs))
        on_epoch(EpochEnd(epoch + 1, history[-1], history, served, unwrapped, optimizer, schedule, ema))
    return history[-1]
