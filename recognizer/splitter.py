"""The splitter of touching digits, at inference: which pixels of a mark belong to its
leftmost digit.

Touching digits form one connected mark. Cuts found by geometry (least-ink paths,
stroke cores) miss a quarter of the pairs: where a 1 meets a stroke of its neighbour,
or two loops touch, the pixels at the contact look the same as those of any stroke.
What tells them apart is the shape of each digit, so a small fully convolutional
network (:func:`recognizer.models.splitter_net`) says, per pixel of a mark, how likely
it belongs to the mark's *leftmost* digit. Peeling the leftmost digit off repeatedly
splits a mark into 2, 3 or more digits (:mod:`recognizer.fields.peel`).

A checkpoint carries its splitter (``splitter.pt``), so it is loaded with the model
(:func:`recognizer.predict.load`); it is trained by :mod:`recognizer.training.splitter`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recognizer.models import splitter_net

#: Marks are scaled to this height (keeping their aspect) before the network sees them.
HEIGHT = 32


def scaled(region: np.ndarray, width: int | None = None) -> np.ndarray:
    """A mark's ink (H x W float) scaled to HEIGHT rows, keeping its aspect (or to
    ``width`` columns when given)."""
    h, w = region.shape
    cols = width if width is not None else max(4, round(w * HEIGHT / h))
    t = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(HEIGHT, cols), mode="bilinear", align_corners=False)[0, 0].numpy()


def logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The network's per-pixel logits at the input's resolution."""
    # The network works at half resolution; its output is scaled back to the input's.
    return F.interpolate(net(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class Splitter:
    """A trained splitter, ready for :func:`recognizer.fields.lattice`: called with marks'
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
            out_logits = logits(self.net, torch.from_numpy(batch).to(self.device)).cpu()
        out = []
        for region, x, logit in zip(regions, xs, out_logits, strict=True):
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
