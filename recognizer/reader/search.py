"""Reading again where the localizer missed: when the strip cut at the localizer's box
reads no digit (the number sits elsewhere in a large cell), the field is read at boxes
of the same width centred on rows spread over the canvas, a little shorter and taller
than the localizer's; the likeliest reading that holds a digit is kept when it is more
likely than not. Fields read the first time cost nothing more.

The same rows and heights serve fine-tuning, which looks for the box where a labelled
field's label reads best (:mod:`recognizer.training.label_boxes`).
"""

from __future__ import annotations

import itertools

import torch

from recognizer.reader.codec import ALPHABET
from recognizer.reader.model import CANVAS_H, box_heights, cut_strips, stretch

#: Rows of the canvas (shares of its height) a missed number is looked for on.
ROWS = (0.125, 0.3125, 0.5, 0.6875, 0.875)
#: Heights of the boxes tried, as shares of the localizer's box height.
HEIGHTS = (0.8, 1.0, 1.25)
#: A reading found by the search is kept when its greedy path is at least this likely:
#: more likely than not, so that a blank field is rarely read as a number.
MORE_LIKELY = 0.5
#: Which of the reader's output classes are digits (the codec's blank, then its alphabet).
_IS_DIGIT = torch.tensor([False] + [ch.isdigit() for ch in ALPHABET])


def row_boxes(own: torch.Tensor) -> list[torch.Tensor]:
    """For boxes (N, 4, canvas pixels): boxes of the same columns centred on each of
    :data:`ROWS`, at each of :data:`HEIGHTS` of the box's height."""
    h = box_heights(own)
    out = []
    for row, scale in itertools.product(ROWS, HEIGHTS):
        centre = torch.full_like(h, row * CANVAS_H)
        out.append(torch.stack([own[:, 0], centre - h * scale / 2, own[:, 2], centre + h * scale / 2], 1))
    return out


def _greedy(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per field (N, T, C): whether its greedy path holds a digit, and that path's probability."""
    peak, best = probs.max(2)
    has_digit = _IS_DIGIT.to(best.device)[best].any(1)
    return has_digit, peak.clamp(min=1e-12).log().sum(1).exp()


def reread_missed(net: torch.nn.Module, canvas: torch.Tensor, probs: torch.Tensor, boxes: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``probs`` (N, T, C) and ``boxes`` (N, 4) read at the localizer's boxes, with each
    field that read no digit there replaced by its best reading at :func:`row_boxes`
    (when :data:`MORE_LIKELY`); ``net`` is the field reader that read ``canvas``."""
    has_digit, _ = _greedy(probs)
    missed = torch.nonzero(~has_digit).flatten()
    if not len(missed):
        return probs, boxes
    probs, boxes = probs.clone(), boxes.clone()
    x = canvas[missed]
    best = torch.full((len(missed),), MORE_LIKELY, dtype=probs.dtype, device=probs.device)
    for cand in row_boxes(boxes[missed]):
        found = torch.softmax(net.reader(stretch(cut_strips(x, cand))).float(), dim=2)
        digit, likely = _greedy(found)
        better = digit & (likely >= best)
        best = torch.where(better, likely, best)
        probs[missed[better]] = found[better].to(probs.dtype)
        boxes[missed[better]] = cand[better].to(boxes.dtype)
    return probs, boxes
