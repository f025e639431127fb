"""The pieces every training loop here shares: AdamW under a one-cycle schedule, one
optimizer step, batches of a shuffled order, and the moving average of the weights.

The digit model (:mod:`recognizer.training.loop`) and the splitter of touching digits
(:mod:`recognizer.training.splitter`) learn different data with different losses, but
step, schedule and batch alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import torch


def one_cycle(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
              total_steps: int, pct_start: float = 0.3
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW and a one-cycle learning rate peaking at ``lr`` after ``pct_start`` of
    ``total_steps`` (the schedule sets the optimizer's learning rate from its first step)."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return optimizer, one_cycle_schedule(optimizer, lr, total_steps, pct_start)


def one_cycle_schedule(optimizer: torch.optim.Optimizer, lr: float, total_steps: int,
                       pct_start: float = 0.3) -> torch.optim.lr_scheduler.OneCycleLR:
    """A new one-cycle schedule for ``optimizer`` (also when a resumed run is extended)."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps,
                                               pct_start=pct_start)


def optimizer_step(optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
                   loss: torch.Tensor) -> None:
    """Backpropagate ``loss``, update the weights and advance the schedule."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def batches(order: torch.Tensor, batch_size: int, drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``order`` (indices), ``batch_size`` at a time; with
    ``drop_last`` the last, shorter one is left out."""
    count = len(order) // batch_size if drop_last else math.ceil(len(order) / batch_size)
    for step in range(count):
        yield order[step * batch_size:(step + 1) * batch_size]


def make_ema(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of model's weights and BatchNorm statistics.

    The decay warms up as (1 + n) / (10 + n) so the first steps do not drag in the
    random initial weights.
    """
    from torch.optim.swa_utils import AveragedModel

    def average(avg: torch.Tensor, new: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        return avg * d + new * (1.0 - d)

    return AveragedModel(model, avg_fn=average, use_buffers=True)
