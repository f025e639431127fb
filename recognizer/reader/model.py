"""The field reader's network: a learned localizer, then a CRNN-style reader with a CTC
head, in one module.

The whole crop goes in as :mod:`recognizer.reader.field_input` fits it: a
(N, 1, CANVAS_H, CANVAS_W) canvas, ink bright on dark. A number may be small in a tall
ledger cell or fill a cheque strip, so reading the canvas as it is would give the
digits anything from 10 to 100 pixels of height. The *localizer* looks at a coarse
copy of the canvas and says where the handwriting is (a box); the box is cut out of
the canvas at a fixed digit height (``CROP_H`` x ``CROP_W``, by ``grid_sample``) and
the *reader* reads that strip, its contrast stretched to its own ink: convolutions and
pooling to 4 rows, a learned attention over the rows per column, context across the
columns (a bidirectional LSTM in the default ``crnn-lstm``; two 1-D convolutions in the
older ``crnn``), and per column the outputs over blank and the alphabet
(:mod:`recognizer.reader.codec`).

Training teaches the localizer the synthesized box and feeds the reader strips cut at
jittered true boxes and at the localizer's own (:func:`crop_theta`). At inference the
localizer also looks again (:meth:`FieldReader.look_again`): the window round its first
box, fitted to a canvas of its own, shows a small number at up to a few times the
resolution the whole crop gave it, and the box found there is sharper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recognizer.errors import ConfigError
from recognizer.reader.codec import CLASSES

#: The canvas every field is fitted into (pixels, height x width).
CANVAS_H, CANVAS_W = 128, 256
#: The strip the reader reads, and the strip pixels one output column covers.
CROP_H, CROP_W, STRIDE = 32, 192, 4
#: Output columns per field.
COLUMNS = CROP_W // STRIDE
#: The box's height takes this share of the strip's height; paper is left before the box
#: (in box heights) so the first stroke is not cut.
BOX_FILL, LEAD = 0.6, 0.2
#: Coarse canvas the localizer sees: the canvas averaged over LOCATE_POOL x LOCATE_POOL.
LOCATE_POOL = 2
#: The least height and width a box is taken to have (canvas pixels): a degenerate box
#: still cuts a strip.
MIN_BOX = 4.0
#: A strip whose strongest ink is below this level is not stretched (nothing to read).
STRIP_FLOOR = 0.05
#: The window the localizer looks at again: its first box with this many box heights of
#: paper on every side (docs/reader.md, "Looking again").
WINDOW_PAD = 1.0


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Localizer(nn.Module):
    """Coarse canvas -> the handwriting's box (x0, y0, x1, y1), as shares of the canvas."""

    def __init__(self, width: int = 32):
        super().__init__()
        rows, cols = CANVAS_H // LOCATE_POOL // 16, CANVAS_W // LOCATE_POOL // 16
        self.net = nn.Sequential(
            nn.Conv2d(1, width // 2, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(width // 2),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
            *_conv(width // 2, width), nn.MaxPool2d(2),
            *_conv(width, 2 * width), nn.MaxPool2d(2),
            *_conv(2 * width, 2 * width),
            nn.Flatten(), nn.Linear(2 * width * rows * cols, 128), nn.ReLU(inplace=True),
            nn.Linear(128, 4),
        )

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        return self.coarse(F.avg_pool2d(canvas, LOCATE_POOL))

    def coarse(self, small: torch.Tensor) -> torch.Tensor:
        """The box from a canvas already at the localizer's coarse resolution."""
        centre_size = torch.sigmoid(self.net(small))
        cx, cy, w, h = centre_size.unbind(1)
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


class HeightAttention(nn.Module):
    """Per column, a softmax over the feature rows, learned: the weighted sum of rows."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * torch.softmax(self.score(x), dim=2)).sum(dim=2)


class RecurrentContext(nn.Module):
    """Context across columns: a 1-D convolution, then a bidirectional LSTM over all 48
    columns, so that each column's output sees the whole field (where a digit starts and
    ends, whether its neighbour was already read)."""

    def __init__(self, channels: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(channels, 2 * hidden, 3, padding=1), nn.BatchNorm1d(2 * hidden),
                                  nn.ReLU(inplace=True))
        self.lstm = nn.LSTM(2 * hidden, hidden, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.conv(x).transpose(1, 2))
        return self.drop(y).transpose(1, 2)


class StripReader(nn.Module):
    """(N, 1, CROP_H, CROP_W) strip -> (N, COLUMNS, CLASSES) logits. ``recurrent``: the
    context across columns is :class:`RecurrentContext` with ``context // 2`` units each
    way, else two 1-D convolutions (a few columns either side)."""

    def __init__(self, widths: tuple[int, int, int, int] = (16, 48, 96, 128), context: int = 128,
                 dropout: float = 0.1, recurrent: bool = False):
        super().__init__()
        a, b, c, d = widths
        self.features = nn.Sequential(
            nn.Conv2d(1, a, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(a),
            nn.ReLU(inplace=True),                  # 16 x 96
            *_conv(a, b), nn.MaxPool2d(2),          # 8 x 48
            *_conv(b, c), nn.MaxPool2d((2, 1)),     # 4 x 48
            *_conv(c, d),
        )
        self.pool = HeightAttention(d)
        self.context = RecurrentContext(d, context // 2, dropout) if recurrent else nn.Sequential(
            nn.Conv1d(d, context, 3, padding=1), nn.BatchNorm1d(context), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv1d(context, context, 5, padding=2), nn.BatchNorm1d(context), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.head = nn.Conv1d(context, CLASSES, 1)
        #: The dtype the convolutions run in (None: float32): bfloat16 at inference where
        #: the hardware runs it natively (recognizer.predict). The localizer, the context
        #: and the head stay float32: in bfloat16 they cost readings, the convolutions
        #: do not (docs/reader.md).
        self.features_dtype: torch.dtype | None = None

    def forward(self, strip: torch.Tensor) -> torch.Tensor:
        if self.features_dtype is None:
            x = self.features(strip)
        else:
            with torch.autocast(strip.device.type, dtype=self.features_dtype):
                x = self.features(strip).float()
        return self.head(self.context(self.pool(x))).transpose(1, 2)


def box_heights(boxes: torch.Tensor) -> torch.Tensor:
    """Each box's height (canvas pixels, (N, 4) -> (N,)), at least :data:`MIN_BOX`."""
    return (boxes[:, 3] - boxes[:, 1]).clamp(min=MIN_BOX)


def strip_scale(boxes: torch.Tensor) -> torch.Tensor:
    """Strip pixels per canvas pixel for each box (canvas pixels, (N, 4))."""
    bh = box_heights(boxes)
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=MIN_BOX)
    return torch.minimum(CROP_H * BOX_FILL / bh, CROP_W / (bw + 2 * LEAD * bh))


def strip_origin(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The canvas point (x, y) at the strip's left edge, vertical middle."""
    bh = box_heights(boxes)
    return boxes[:, 0] - LEAD * bh, (boxes[:, 1] + boxes[:, 3]) / 2


def crop_theta(boxes: torch.Tensor) -> torch.Tensor:
    """Affine grids (N, 2, 3) that cut each box (canvas pixels) out as a strip."""
    s = strip_scale(boxes)
    left, cy = strip_origin(boxes)
    theta = torch.zeros(len(boxes), 2, 3, dtype=boxes.dtype, device=boxes.device)
    theta[:, 0, 0] = CROP_W / (s * CANVAS_W)
    theta[:, 0, 2] = 2 / CANVAS_W * (left + CROP_W / (2 * s)) - 1
    theta[:, 1, 1] = CROP_H / (s * CANVAS_H)
    theta[:, 1, 2] = 2 * cy / CANVAS_H - 1
    return theta


def cut_strips(canvas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """The strips the reader reads: each box cut from its canvas. Where the strip shrinks
    the canvas by half or more it is sampled from a 2x2-averaged copy, so thin strokes
    are not lost between samples."""
    theta = crop_theta(boxes)
    size = (len(canvas), 1, CROP_H, CROP_W)
    grid = F.affine_grid(theta, size, align_corners=False)
    fine = F.grid_sample(canvas, grid, align_corners=False)
    coarse = F.grid_sample(F.avg_pool2d(canvas, 2), grid, align_corners=False)
    shrink = (strip_scale(boxes) < 0.5).view(-1, 1, 1, 1)
    return torch.where(shrink, coarse, fine)


def stretch(strips: torch.Tensor) -> torch.Tensor:
    """Each strip scaled so that its strongest ink reaches 1. The canvas was stretched for
    the whole crop, where a black mask, a border or a heading can outshine a pale number;
    the strip holds the number alone."""
    peak = strips.flatten(1).amax(1).clamp(min=STRIP_FLOOR)
    return strips / peak.view(-1, 1, 1, 1)


def _window(boxes: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each box's window (canvas pixels): its left, top, width and height."""
    bh = box_heights(boxes)
    ww = (boxes[:, 2] - boxes[:, 0]).clamp(min=0.0) + 2 * WINDOW_PAD * bh
    return boxes[:, 0] - WINDOW_PAD * bh, boxes[:, 1] - WINDOW_PAD * bh, ww, bh + 2 * WINDOW_PAD * bh


def window_scale(boxes: torch.Tensor) -> torch.Tensor:
    """How many times :func:`windows` magnifies each box's window (canvas pixels, (N, 4))."""
    _, _, ww, wh = _window(boxes)
    return torch.minimum(CANVAS_H / wh, CANVAS_W / ww)


def windows(canvas: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box (canvas pixels) with :data:`WINDOW_PAD` box heights of paper round it, cut
    from its canvas and fitted to a canvas of its own as ``field_input.fit`` fits a crop
    (aspect kept, at the left, centred in height, dark elsewhere, ink stretched to 1), at
    the localizer's coarse resolution (``LOCATE_POOL`` times smaller). Returns the windows
    (N, 1, CANVAS_H // LOCATE_POOL, CANVAS_W // LOCATE_POOL) and per window (scale, x, y):
    the full-size window's pixel (u, v) is the canvas's (x + u / scale, y + v / scale)."""
    x0, y0, ww, wh = _window(boxes)
    s = window_scale(boxes)
    top = (CANVAS_H - wh * s) / 2
    oy = y0 - top / s
    theta = torch.zeros(len(boxes), 2, 3, dtype=canvas.dtype, device=canvas.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / s
    theta[:, 0, 2] = 2 * x0 / CANVAS_W + 1 / s - 1
    theta[:, 1, 2] = 2 * oy / CANVAS_H + 1 / s - 1
    h, w = CANVAS_H // LOCATE_POOL, CANVAS_W // LOCATE_POOL
    grid = F.affine_grid(theta, (len(canvas), 1, h, w), align_corners=False)
    out = F.grid_sample(canvas, grid, align_corners=False)
    u = ((torch.arange(w, device=canvas.device, dtype=canvas.dtype) + 0.5) * LOCATE_POOL).view(1, 1, 1, -1)
    v = ((torch.arange(h, device=canvas.device, dtype=canvas.dtype) + 0.5) * LOCATE_POOL).view(1, 1, -1, 1)
    top, bottom, right = (t.view(-1, 1, 1, 1) for t in (top, top + wh * s, ww * s))
    inside = (u < right) & (v >= top) & (v < bottom)
    return stretch(out * inside), torch.stack([s, x0, oy], 1)


def to_pixels(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes as shares of the canvas -> canvas pixels."""
    return boxes * boxes.new_tensor([CANVAS_W, CANVAS_H, CANVAS_W, CANVAS_H])


class FieldReader(nn.Module):
    """Canvas (N, 1, CANVAS_H, CANVAS_W) in [0, 1] -> (logits (N, COLUMNS, CLASSES), the
    localizer's boxes as shares of the canvas (N, 4), the boxes read at in canvas pixels).

    ``read_at`` (training): boxes in canvas pixels to read at instead of the localizer's;
    a row of NaNs reads at the localizer's own box (its gradient stops there, so the
    reader's loss does not move the localizer).
    """

    def __init__(self, localizer: int = 32, widths: tuple[int, int, int, int] = (16, 48, 96, 128),
                 context: int = 128, recurrent: bool = False):
        super().__init__()
        self.localizer = Localizer(localizer)
        self.reader = StripReader(widths, context, recurrent=recurrent)

    def forward(self, canvas: torch.Tensor, read_at: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        located = self.localizer(canvas)
        boxes = to_pixels(located)
        if read_at is not None:
            boxes = torch.where(torch.isnan(read_at), boxes.detach(), read_at)
        return self.reader(stretch(cut_strips(canvas, boxes))), located, boxes

    def locate(self, canvas: torch.Tensor) -> torch.Tensor:
        """Inference: the boxes (canvas pixels) reading uses, the localizer's after it
        looks again round its first (:meth:`look_again`)."""
        return self.look_again(canvas, to_pixels(self.localizer(canvas)))

    def read(self, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: (logits (N, COLUMNS, CLASSES), the boxes read at in canvas pixels),
        read at :meth:`locate`'s boxes."""
        boxes = self.locate(canvas)
        return self.reader(stretch(cut_strips(canvas, boxes))), boxes

    def look_again(self, canvas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (canvas pixels) sharpened by a second look: the localizer's box in the
        :func:`windows` round ``boxes``, mapped back to the canvas, its rows taken and its
        columns widened to cover the first box's. A box whose window would not magnify
        (a field that already fills its canvas) is kept as it is."""
        gain = torch.nonzero(window_scale(boxes) > 1).flatten()
        if not len(gain):
            return boxes
        first = boxes[gain]
        zoomed, where = windows(canvas[gain], first)
        found = to_pixels(self.localizer.coarse(zoomed))
        s, x, y = (where[:, i:i + 1] for i in range(3))
        found = torch.cat([x, y, x, y], 1) + found / s
        # Rows from the second look, columns never narrower than the first's: a second
        # box inside the first digit reads a confidently shorter number (docs/reader.md).
        out = boxes.clone()
        out[gain] = torch.stack([torch.minimum(found[:, 0], first[:, 0]), found[:, 1],
                                 torch.maximum(found[:, 2], first[:, 2]), found[:, 3]], 1)
        return out


def fold_batch_norms(net: nn.Module) -> nn.Module:
    """``net`` (eval mode) with every batch norm that follows a convolution in a
    ``Sequential`` folded into it, in place: the same function, fewer passes over memory."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        layers = list(seq)
        for i in range(1, len(layers)):
            conv, norm = layers[i - 1], layers[i]
            if isinstance(conv, nn.Conv1d | nn.Conv2d) and isinstance(norm, nn.BatchNorm1d | nn.BatchNorm2d):
                seq[i - 1], seq[i] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return net


#: Reader architectures by name; a checkpoint's meta names the one its weights fit.
READERS: dict[str, Callable[[], nn.Module]] = {
    "crnn": FieldReader,
    "crnn-wide": lambda: FieldReader(48, (24, 64, 128, 160), 160),
    "crnn-lstm": lambda: FieldReader(context=192, recurrent=True),
}
#: The reader ``digits train`` trains unless told otherwise.
DEFAULT_READER = "crnn-lstm"


def build_reader(name: str) -> FieldReader:
    """A new reader of architecture ``name`` (:data:`READERS`)."""
    if name not in READERS:
        raise ConfigError(f"unknown reader {name!r}; choose one of: {', '.join(READERS)}")
    return READERS[name]()
