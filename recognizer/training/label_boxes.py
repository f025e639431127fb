"""Boxes for a user's labelled fields, found by the reader itself.

A user's fields say what is written, not where. Before fine-tuning, each field is read at
the box reading uses (the localizer's, after it looks again: ``FieldReader.locate``)
and, where the label does not read well there, at candidate boxes round it (its edges
widened, moved up or down, taller or shorter) and at the same box centred on rows spread
over the canvas; the candidate whose reading best fits the label becomes the field's
box, when the label reads there with at least probability 1/e (CTC loss under 1). The
localizer then learns from those boxes as from synthesized ones, and the reader reads
round them; fields where no candidate fits keep no box and are read at the localizer's.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from recognizer.data.reader_fields import ReaderFields
from recognizer.reader.codec import encode_batch
from recognizer.reader.model import CANVAS_H, box_heights, cut_strips, stretch
from recognizer.reader.search import HEIGHTS, ROWS
from recognizer.training.reader import MAX_LABEL, ctc_loss

#: Box heights added to the localizer's box on the left and on the right.
EDGES = (0.0, 0.6)
#: Vertical moves of the box, in box heights; the box is also centred on the rows of the
#: canvas that reading searches when the localizer misses a number whole, and each box is
#: tried at the heights that search tries (recognizer.reader.search).
MOVES = (-0.3, 0.0, 0.3)
#: A candidate counts when the label's CTC loss there is below this (probability 1/e).
FITS = 1.0
#: Fields per network call.
BATCH = 128


def _candidates(own: torch.Tensor) -> list[torch.Tensor]:
    """The boxes tried round each of ``own``'s, less the own box itself (read already)."""
    h = box_heights(own)
    centre = (own[:, 1] + own[:, 3]) / 2
    centres = [centre + m * h for m in MOVES] + [torch.full_like(centre, r * CANVAS_H) for r in ROWS]
    itself = (0.0, 0.0, MOVES.index(0.0), 1.0)  # no edge added, not moved, same height
    out = []
    for left, right, at, scale in itertools.product(EDGES, EDGES, range(len(centres)), HEIGHTS):
        if (left, right, at, scale) == itself:
            continue
        cy, half = centres[at], h * scale / 2
        out.append(torch.stack([own[:, 0] - left * h, cy - half, own[:, 2] + right * h, cy + half], 1))
    return out


def find_boxes(net: torch.nn.Module, fields: ReaderFields) -> np.ndarray:
    """Each field's box (canvas pixels) where its label reads best, or NaN where the
    label reads nowhere near well enough; ``net`` is a field reader."""
    net.eval()
    boxes = np.full((len(fields), 4), np.nan, np.float32)
    targets = torch.from_numpy(encode_batch(fields.raws, MAX_LABEL))
    with torch.inference_mode():
        for at in range(0, len(fields), BATCH):
            x = torch.from_numpy(fields.canvas[at:at + BATCH]).unsqueeze(1).float().div_(255.0)
            y = targets[at:at + BATCH]
            own = net.locate(x)
            best = ctc_loss(net.reader(stretch(cut_strips(x, own))), y, reduction="none")
            found = own.clone()
            # Only where the localizer's own box does not fit the label: the search is
            # the run's costliest part.
            miss = torch.nonzero(best >= FITS).flatten()
            if len(miss):
                for cand in _candidates(own[miss]):
                    loss = ctc_loss(net.reader(stretch(cut_strips(x[miss], cand))), y[miss], reduction="none")
                    better = loss < best[miss]
                    best[miss[better]] = loss[better]
                    found[miss[better]] = cand[better]
            fits = (best < FITS).numpy()
            boxes[at:at + BATCH][fits] = found.numpy()[fits]
    return boxes
