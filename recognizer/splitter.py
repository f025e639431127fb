"""Splitting touching digits with a learned model: which pixels of a mark belong to its
leftmost digit.

Touching digits form one connected mark. Cuts found by geometry (least-ink paths,
stroke cores) miss a quarter of the pairs: where a 1 meets a stroke of its neighbour,
or two loops touch, the pixels at the contact look the same as those of any stroke.
What tells them apart is the shape of each digit, so a small fully convolutional
network is trained to say, per pixel of a mark, how likely it belongs to the mark's
*leftmost* digit. Peeling the leftmost digit off repeatedly splits a mark into 2, 3 or
more digits (:func:`recognizer.segment.segment` does this, and the digit model scores
the pieces like any other candidate).

Training examples are free: fields of 2 to 4 *training* digits are synthesized with
every neighbouring pair touching, and the synthesizer knows which digit drew each pixel
(:func:`recognizer.synth_fields.make_field_with_owners`).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from recognizer.models import splitter_net

#: Marks are scaled to this height (keeping their aspect) before the network sees them.
HEIGHT = 32
#: Training marks are padded (or, wider than this, squeezed) to this width.
TRAIN_WIDTH = 96
#: Digits per synthesized training field, drawn with these weights: pairs most often,
#: since pairs are what touching digits mostly are.
FIELD_LENGTHS = (2, 3, 4)
LENGTH_WEIGHTS = (0.5, 0.35, 0.15)


@dataclass(frozen=True)
class SplitterConfig:
    """How the splitter is trained (defaults: about 10 minutes on 2 CPU cores)."""

    examples: int = 30_000
    epochs: int = 6
    batch_size: int = 64
    lr: float = 4e-3
    seed: int = 0


def scaled(region: np.ndarray, width: int | None = None) -> np.ndarray:
    """A mark's ink (H x W float) scaled to HEIGHT rows, keeping its aspect (or to
    ``width`` columns when given)."""
    h, w = region.shape
    cols = width if width is not None else max(4, round(w * HEIGHT / h))
    t = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(HEIGHT, cols), mode="bilinear", align_corners=False)[0, 0].numpy()


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

    # Here, not at the top: model actors and servers load splitters, and need neither
    # the segmenter (scipy) nor the synthesizer.
    from recognizer.segment import SegmentConfig, grown_mask, ink_map, marks
    from recognizer.synth_fields import as_digits_u8, make_field_with_owners

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
            ink = ink_map(image)
            total = np.bincount(owners[owners >= 0], minlength=length)
            for blob in marks(ink, cfg):
                own = owners[blob.top:blob.bottom, blob.left:blob.right]
                held = np.bincount(own[blob.mask & (own >= 0)], minlength=length)
                digits = np.flatnonzero(held >= 0.5 * total)
                if len(digits) < 2 or n == count:
                    continue
                region = np.where(grown_mask(blob.mask),
                                  ink[blob.top:blob.bottom, blob.left:blob.right], 0.0)
                width = min(TRAIN_WIDTH, max(4, round(blob.width * HEIGHT / blob.height)))
                inputs[n, :, :width] = scaled(region, width)
                leftmost[n, :, :width] = _scaled_labels(own == digits[0], width)
                weight[n, :, :width] = _scaled_labels(blob.mask & (own >= 0), width)
                n += 1
                bar.update()
    return inputs, leftmost, weight


def _logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The network works at half resolution; its output is scaled back to the input's.
    return F.interpolate(net(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def train(digits: np.ndarray, cfg: SplitterConfig, device: torch.device | None = None,
          progress: bool = False, report: Callable[[str], None] | None = None
          ) -> tuple[torch.nn.Module, dict]:
    """Train a splitter on marks synthesized from ``digits`` (training digits only, uint8
    or float in [0, 1]).
    ``progress`` shows progress bars; ``report``, if given, gets a line per epoch (for a
    Ray task, whose output reaches the driver line by line).

    Returns the eval-mode network (on the CPU) and metrics: the final epoch's loss, the
    share of stroke pixels of held-out marks (a tenth as many as the training marks, at
    most 2,000) given to the right side, and seconds.
    """
    from tqdm import tqdm

    device = device or torch.device("cpu")
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    x, y, w = (torch.from_numpy(a) for a in peel_examples(digits, cfg.examples, rng, progress))
    held_out = min(2000, max(100, cfg.examples // 10))
    hx, hy, hw = (torch.from_numpy(a) for a in peel_examples(digits, held_out, rng))
    if report is not None:
        report(f"splitter: synthesized {cfg.examples:,} marks of touching digits "
               f"[{time.perf_counter() - t0:.0f} s]")
    net = splitter_net().to(device)
    steps_per_epoch = max(1, len(x) // cfg.batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), cfg.lr / 2, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr,
                                                   total_steps=cfg.epochs * steps_per_epoch)
    loss_value = float("nan")
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(len(x))
        total = 0.0
        for step in tqdm(range(steps_per_epoch), desc=f"splitter epoch {epoch + 1}/{cfg.epochs}",
                         unit="batch", disable=not progress, leave=False):
            batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, yb, wb = (t[batch, None].to(device) for t in (x, y, w))
            loss = (F.binary_cross_entropy_with_logits(_logits(net, xb), yb, reduction="none")
                    * wb).sum() / wb.sum().clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        loss_value = total / steps_per_epoch
        if report is not None:
            report(f"splitter epoch {epoch + 1}/{cfg.epochs}  loss {loss_value:.4f}  "
                   f"[{time.perf_counter() - t0:.0f} s]")
    net = net.cpu().eval()
    with torch.inference_mode():
        right = ((_logits(net, hx[:, None]) >= 0) == (hy[:, None] >= 0.5)).float()
        pixel_accuracy = float((right * hw[:, None]).sum() / hw.sum())
    return net, {"loss": loss_value, "pixel_accuracy": pixel_accuracy,
                 "examples": cfg.examples, "epochs": cfg.epochs,
                 "seconds": time.perf_counter() - t0}


class Splitter:
    """A trained splitter, ready for :func:`recognizer.segment.segment`: called with marks'
    ink (each H x W float, any size), it returns for each the chance, per pixel, that the
    pixel belongs to the mark's leftmost digit."""

    def __init__(self, net: torch.nn.Module, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        self.net = net.to(self.device).eval()

    def __call__(self, regions: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not regions:
            return []
        xs = [scaled(r) for r in regions]
        # One batch, padded on the right with paper as the training marks are: the
        # network is convolutional, so a mark's map barely depends on the padding (only
        # its last columns are within reach of it).
        width = max(x.shape[1] for x in xs)
        batch = np.zeros((len(xs), 1, HEIGHT, width), np.float32)
        for i, x in enumerate(xs):
            batch[i, 0, :, :x.shape[1]] = x
        with torch.inference_mode():
            logits = _logits(self.net, torch.from_numpy(batch).to(self.device)).cpu()
        out = []
        for region, x, logit in zip(regions, xs, logits, strict=True):
            own = logit[:, :, :x.shape[1]]
            out.append(torch.sigmoid(F.interpolate(own[None], size=region.shape, mode="bilinear",
                                                   align_corners=False))[0, 0].numpy())
        return out


def state_bytes(net: torch.nn.Module) -> bytes:
    """The network's weights as a tensor file (what checkpoints store)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return buf.getvalue()


def from_state(state: dict, device: torch.device | None = None) -> Splitter:
    """A :class:`Splitter` from a state dict of tensors (``torch.load(weights_only=True)``);
    raises ``ValueError`` when the weights do not fit the network."""
    net = splitter_net()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"the weights do not fit the splitter network: {exc}") from exc
    return Splitter(net, device)

