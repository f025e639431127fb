"""Training the field reader: its task for the one loop (:func:`recognizer.training.loop.fit`)
and its data, synthesized form fields (:mod:`recognizer.data.reader_fields`).

A run's reader draws new fields every epoch (:class:`FieldDraw`); fine-tuning goes over
one set of a user's fields and synthesized ones. Each step, the localizer learns the
handwriting's box (smooth L1, as shares of the canvas) and the reader learns the field's
``raw`` string by CTC, reading strips cut at the true box jittered by a few per cent
(most fields) or at the localizer's own box (``OWN_BOX`` of them), so that it learns to
read where the localizer will point.
Validation reads at the localizer's first box, exact ``raw`` strings (users' readings
also look again round it where that magnifies: ``FieldReader.read``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recognizer.data.reader_fields import FieldDraw, ReaderFields
from recognizer.reader.codec import BLANK, encode_batch
from recognizer.reader.model import CANVAS_H, CANVAS_W, box_heights, build_reader
from recognizer.training.config import Hyper
from recognizer.training.loop import Task, World, progress

#: Longest label a training field holds (10 digits with separators and end marks fit).
MAX_LABEL = 24
#: Share of training fields read at the localizer's own box rather than the true one.
OWN_BOX = 0.25
#: Weight of the localizer's loss beside the reader's.
BOX_WEIGHT = 20.0
#: How far the true box is jittered: its edges move by up to this share of its height.
JITTER = 0.2
#: Validation fields per model call.
EVAL_BATCH = 256


def _canvas(fields: ReaderFields, idx: torch.Tensor | slice) -> torch.Tensor:
    # A copy: a slice of an array from the Ray object store is read-only.
    x = torch.from_numpy(np.array(fields.canvas[idx])).unsqueeze(1).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


def _jittered(boxes: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    h = box_heights(boxes).unsqueeze(1)
    noise = (torch.rand(boxes.shape, generator=g) * 2 - 1) * JITTER * h
    read_at = boxes + noise
    own = torch.rand(len(boxes), generator=g) < OWN_BOX
    read_at[own] = float("nan")
    return read_at


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """CTC loss of (N, T, C) logits against blank-padded (N, L) targets."""
    log_probs = F.log_softmax(logits.float(), dim=2).transpose(0, 1)
    lengths = (targets != BLANK).sum(1)
    inputs = torch.full((len(targets),), log_probs.shape[0], dtype=torch.long)
    return F.ctc_loss(log_probs, targets, inputs, lengths, blank=BLANK, reduction=reduction,
                      zero_infinity=True)


def exact(logits: torch.Tensor, targets: torch.Tensor) -> int:
    """Fields whose best path collapses to exactly their target."""
    best = logits.argmax(2).cpu().numpy()
    want = targets.cpu().numpy()
    right = 0
    for path, target in zip(best, want, strict=True):
        keep = np.r_[True, path[1:] != path[:-1]] & (path != BLANK)
        got = path[keep]
        t = target[target != BLANK]
        right += int(len(got) == len(t) and bool((got == t).all()))
    return right


@dataclass
class _Examples:
    """The fields a worker trains on now, as the step reads them."""

    fields: ReaderFields
    targets: torch.Tensor
    boxes: torch.Tensor

    @classmethod
    def of(cls, fields: ReaderFields) -> _Examples:
        # boxes copied: object-store arrays are read-only
        return cls(fields, torch.from_numpy(encode_batch(fields.raws, MAX_LABEL)),
                   torch.from_numpy(np.array(fields.boxes)))


def reader_task(name: str, hyper: Hyper, train: ReaderFields | FieldDraw, val: ReaderFields, world: World,
                start: dict | None = None) -> Task:
    """The reader's task on ``train`` (a fixed set, or a :class:`FieldDraw` of new fields
    every epoch), validated on this worker's share of ``val``; ``start``: the weights it
    starts from (fine-tuning), else new ones. Fields whose box is unknown (NaN) are read
    at the localizer's box and do not teach it."""
    now = _Examples.of(train) if isinstance(train, ReaderFields) else None
    scale = torch.tensor([CANVAS_W, CANVAS_H, CANVAS_W, CANVAS_H], dtype=torch.float32)
    mine = slice(world.rank, None, world.size)
    val_share = ReaderFields(val.canvas[mine], val.boxes[mine], val.raws[mine])
    val_targets = torch.from_numpy(encode_batch(val_share.raws, MAX_LABEL))

    def draw(epoch: int) -> None:
        nonlocal now
        assert isinstance(train, FieldDraw)
        now = None  # the last epoch's fields go before the next are written
        t0 = time.perf_counter()
        now = _Examples.of(train.share(epoch, world.rank, world.size))
        if world.rank == 0:
            progress(f"reader: epoch {epoch + 1}'s {train.count:,} new fields drawn in "
                     f"{time.perf_counter() - t0:.0f} s")

    def step(model: torch.nn.Module, idx: torch.Tensor, g: torch.Generator, device: torch.device):
        x = _canvas(now.fields, idx.numpy()).to(device)
        y, b = now.targets[idx].to(device), now.boxes[idx]
        logits, located, _ = model(x, _jittered(b, g).to(device))
        loss = ctc_loss(logits, y)
        known = ~torch.isnan(b).any(1)  # a user's labelled fields: no box, read at the localizer's
        if known.any():
            where = (b[known] / scale).to(device)
            loss = loss + BOX_WEIGHT * F.smooth_l1_loss(located[known.to(device)], where, beta=0.02)
        return loss, exact(logits.detach(), y)

    def validate(model: torch.nn.Module, device: torch.device) -> tuple[float, int, int]:
        model.eval()
        loss_sum, right = 0.0, 0
        with torch.inference_mode():
            for at in range(0, len(val_share), EVAL_BATCH):
                x = _canvas(val_share, slice(at, at + EVAL_BATCH)).to(device)
                y = val_targets[at:at + EVAL_BATCH].to(device)
                logits, _, _ = model(x)
                loss_sum += ctc_loss(logits, y, reduction="sum").item()
                right += exact(logits, y)
        return loss_sum, right, len(val_share)

    def build() -> torch.nn.Module:
        net = build_reader(name)
        if start is not None:
            net.load_state_dict(start)
        return net.to(memory_format=torch.channels_last)

    if isinstance(train, FieldDraw):
        return Task("reader", hyper, train.count, build, step, validate, draw)
    return Task("reader", hyper, len(train), build, step, validate)
