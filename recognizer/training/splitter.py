"""Training the splitter of touching digits (:mod:`recognizer.splitter`).

Training examples are free: fields of 2 to 4 *training* digits are synthesized with
every neighbouring pair touching, and the synthesizer knows which digit drew each pixel
(:func:`recognizer.data.synth_fields.make_field_with_owners`). The network learns, per
stroke pixel of a mark, whether it belongs to the mark's leftmost digit.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recognizer.models import splitter_net
from recognizer.splitter import HEIGHT, logits, scaled
from recognizer.training.optim import batches, one_cycle, optimizer_step

#: Training marks are padded (or, wider than this, squeezed) to this width.
TRAIN_WIDTH = 96
#: Digits per synthesized training field, drawn with these weights: pairs most often,
#: since pairs are what touching digits mostly are.
FIELD_LENGTHS = (2, 3, 4)
LENGTH_WEIGHTS = (0.5, 0.35, 0.15)


@dataclass(frozen=True)
class SplitterConfig:
    """How the splitter is trained (defaults: about 1.5 minutes on 2 CPU cores, after the
    digit model's epochs; 30,000 marks and 6 epochs take 8x longer)."""

    examples: int = 8_000
    epochs: int = 2
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 1e-4
    seed: int = 0
    #: Held-out marks scored after training: one per this many training marks, within
    #: these bounds.
    held_out_every: int = 10
    held_out_range: tuple[int, int] = (100, 2000)


def _scaled_labels(labels: np.ndarray, width: int) -> np.ndarray:
    t = torch.from_numpy(labels.astype(np.float32))[None, None]
    return F.interpolate(t, size=(HEIGHT, width), mode="nearest")[0, 0].numpy()


def peel_examples(digits: np.ndarray, count: int, rng: np.random.Generator,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` marks of touching training digits, as network inputs and targets.

    Returns (inputs, leftmost, weight), each (count, HEIGHT, TRAIN_WIDTH) float32: the
    mark's ink, 1 where a pixel belongs to the mark's leftmost digit, and 1 on the
    mark's stroke pixels (the loss counts those only; padding and paper have weight 0).
    ``digits``: light-on-dark digits, uint8 or float in [0, 1].
    """
    from tqdm import tqdm

    from recognizer.clean import clean
    from recognizer.data.synth_fields import as_digits_u8, make_field_with_owners
    from recognizer.errors import ImageError
    from recognizer.fields.config import SegmentConfig
    from recognizer.fields.marks import grown_mask, marks

    if count < 1 or not len(digits):
        raise ValueError("need at least one example and one digit")
    digits_u8 = as_digits_u8(digits)
    cfg = SegmentConfig()
    shape = (count, HEIGHT, TRAIN_WIDTH)
    inputs, leftmost, weight = (np.zeros(shape, np.float32) for _ in range(3))
    n = 0
    with tqdm(total=count, desc="synthesizing touching digits", unit="mark",
              disable=not progress) as bar:
        while n < count:
            length = int(rng.choice(FIELD_LENGTHS, p=LENGTH_WEIGHTS))
            picks = rng.integers(0, len(digits_u8), length)
            image, owners = make_field_with_owners([digits_u8[i] for i in picks], rng, 1.0)
            try:
                cleaned = clean(image)
            except ImageError:
                continue
            # The marks are found in the cleaned field, as field reading finds them.
            ink, (left, top) = cleaned.ink, cleaned.origin
            owners = owners[top:top + ink.shape[0], left:left + ink.shape[1]]
            total = np.bincount(owners[owners >= 0], minlength=length)
            for mark in marks(ink, cfg):
                own = mark.region(owners)
                held = np.bincount(own[mark.mask & (own >= 0)], minlength=length)
                drawn = np.flatnonzero(held >= 0.5 * total)
                if len(drawn) < 2 or n == count:
                    continue
                region = np.where(grown_mask(mark.mask), mark.region(ink), 0.0)
                width = min(TRAIN_WIDTH, max(4, round(mark.width * HEIGHT / mark.height)))
                inputs[n, :, :width] = scaled(region, width)
                leftmost[n, :, :width] = _scaled_labels(own == drawn[0], width)
                weight[n, :, :width] = _scaled_labels(mark.mask & (own >= 0), width)
                n += 1
                bar.update()
    return inputs, leftmost, weight


def _loss(net: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the marks' stroke pixels only."""
    return (F.binary_cross_entropy_with_logits(logits(net, xb), yb, reduction="none")
            * wb).sum() / wb.sum().clamp(min=1)


def train(digits: np.ndarray, cfg: SplitterConfig, device: torch.device | None = None,
          progress: bool = False, report: Callable[[str], None] | None = None
          ) -> tuple[torch.nn.Module, dict]:
    """Train a splitter on marks synthesized from ``digits`` (training digits only, uint8
    or float in [0, 1]).
    ``progress`` shows progress bars; ``report``, if given, gets a line per epoch (for a
    Ray task, whose output reaches the driver line by line).

    Returns the eval-mode network (on the CPU) and metrics: the final epoch's loss, the
    share of stroke pixels of held-out marks given to the right side, and seconds.
    """
    from tqdm import tqdm

    device = device or torch.device("cpu")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    x, y, w = (torch.from_numpy(a) for a in peel_examples(digits, cfg.examples, rng, progress))
    lo, hi = cfg.held_out_range
    held_out = min(hi, max(lo, cfg.examples // cfg.held_out_every))
    hx, hy, hw = (torch.from_numpy(a) for a in peel_examples(digits, held_out, rng))
    if report is not None:
        report(f"splitter: synthesized {cfg.examples:,} marks of touching digits "
               f"[{time.perf_counter() - t0:.0f} s]")
    net = splitter_net().to(device)
    steps_per_epoch = max(1, len(x) // cfg.batch_size)
    optimizer, schedule = one_cycle(net.parameters(), cfg.lr, cfg.weight_decay,
                                    cfg.epochs * steps_per_epoch)
    loss_value = float("nan")
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x))
        total = 0.0
        steps = itertools.islice(batches(order, cfg.batch_size), steps_per_epoch)
        for batch in tqdm(steps, total=steps_per_epoch, desc=f"splitter epoch {epoch + 1}/{cfg.epochs}",
                          unit="batch", disable=not progress, leave=False):
            loss = _loss(net, *(t[batch, None].to(device) for t in (x, y, w)))
            optimizer_step(optimizer, schedule, loss)
            total += loss.item()
        loss_value = total / steps_per_epoch
        if report is not None:
            report(f"splitter epoch {epoch + 1}/{cfg.epochs}  loss {loss_value:.4f}  "
                   f"[{time.perf_counter() - t0:.0f} s]")
    net = net.cpu().eval()
    with torch.inference_mode():
        right = ((logits(net, hx[:, None]) >= 0) == (hy[:, None] >= 0.5)).float()
        pixel_accuracy = float((right * hw[:, None]).sum() / hw.sum())
    return net, {"loss": loss_value, "pixel_accuracy": pixel_accuracy,
                 "examples": cfg.examples, "epochs": cfg.epochs,
                 "seconds": time.perf_counter() - t0}
