"""Where the model runs: a loaded checkpoint that turns images into labels.

The model's splitter of touching digits (:mod:`recognizer.splitter`) is loaded with it,
for field reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from recognizer import checkpoint, settings
from recognizer.errors import CheckpointError
from recognizer.preprocess import as_image_list, preprocess_many
from recognizer.results import Predictions
from recognizer.splitter import Splitter, from_state

if TYPE_CHECKING:
    from recognizer.reader.read import Outputs

__all__ = ["Predictions", "Recognizer", "load", "load_reader", "load_splitter", "select_device"]


def select_device(use_gpu: bool | None = None) -> torch.device:
    """CUDA when asked for (or, by default, when present), else CPU."""
    if use_gpu is None:
        use_gpu = torch.cuda.is_available()
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


class Recognizer:
    """A model loaded from a checkpoint, ready to predict. ``splitter``: the checkpoint's
    splitter of touching digits, which field reading uses when present."""

    def __init__(self, model: torch.nn.Module, meta: dict, device: torch.device | None = None,
                 batch_size: int = settings.PREDICT_BATCH_SIZE, splitter: Splitter | None = None,
                 reader: torch.nn.Module | None = None):
        self.device = device or select_device()
        self.model = model.to(self.device).eval()
        self._net = _for_inference(self.model)
        self.meta = meta
        self.batch_size = batch_size
        self.splitter = splitter
        #: The learned field reader (recognizer.reader), when the checkpoint has one:
        #: field reading then runs it (batch norms folded) instead of segmenting.
        self.reader = _reader_for_inference(reader, self.device) if reader is not None else None

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def classes(self) -> int:
        """10, or 11 when the model also knows ``settings.NOT_A_DIGIT``."""
        return int(self.meta.get("classes", settings.DIGITS))

    def predict_tensors(self, x: np.ndarray, not_a_digit: bool = False) -> np.ndarray:
        """Class probabilities for preprocessed (N, 28, 28) inputs: (N, 10) over the digits,
        or with ``not_a_digit`` (N, 11) whose last column is the chance that the input is
        not one whole digit (0 from a model without that class)."""
        width = settings.DIGITS + 1 if not_a_digit else settings.DIGITS
        out = np.zeros((len(x), width), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                # A copy: arrays from the Ray object store are read-only.
                xb = torch.from_numpy(np.array(x[i:i + self.batch_size], dtype=np.float32))
                logits = self._net(xb.unsqueeze(1).to(self.device)).float()
                # A single digit is one of ten: the not-a-digit logit is left out, not
                # renormalised away.
                probs = torch.softmax(logits if not_a_digit else logits[:, :settings.DIGITS], dim=1)
                out[i:i + len(xb), :probs.shape[1]] = probs.cpu().numpy()
        return out

    def read_tensors(self, canvas: np.ndarray) -> Outputs:
        """The field reader on fitted uint8 canvases (``recognizer.reader.read.prepare``):
        its :class:`~recognizer.reader.read.Outputs` (``recognizer.reader.read.run``)."""
        from recognizer.reader.read import run

        if self.reader is None:
            raise CheckpointError(f"{self.meta.get('uri')} has no field reader: train one with "
                                  "`digits train` (--reader-epochs)")
        return run(self.reader, canvas, self.device)

    def predict(self, images: Sequence[bytes | np.ndarray] | np.ndarray) -> Predictions:
        """Recognise a batch: encoded images or uint8 arrays in, labels and confidences out."""
        items = as_image_list(images)
        x, errors = preprocess_many(items)
        return Predictions.from_probabilities(self.probabilities(x, errors), errors)

    def probabilities(self, x: np.ndarray, errors: Sequence[object | None]) -> np.ndarray:
        """(N, 10) digit probabilities of preprocessed inputs, zeros where ``errors[i]``
        is set (those rows are not run)."""
        ok = np.array([e is None for e in errors], dtype=bool)
        probs = np.zeros((len(x), settings.DIGITS), dtype=np.float32)
        if ok.any():
            probs[ok] = self.predict_tensors(x[ok])
        return probs


def _for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode model with each batch norm folded into (a copy of) the convolution
    before it, its other layers shared with ``model``: the same function to float
    rounding, and 1.2-1.5x faster on this machine's CPUs (bench/RESULTS.md).
    ``model`` itself stays as loaded (it is what gets saved).

    Folded layer by layer in the model's own ``Sequential``, not by torch.fx: fx's tracer
    patches every module's ``__call__`` while it traces, so a model loaded in one thread
    broke the forwards other threads were running (a replica loading its next checkpoint
    while it serves). Models of another shape run unfolded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not isinstance(model, torch.nn.Sequential) or model.training:
        return model
    layers: list[torch.nn.Module] = []
    for layer in model:
        if isinstance(layer, torch.nn.BatchNorm2d) and layers and isinstance(layers[-1], torch.nn.Conv2d):
            layers[-1] = fuse_conv_bn_eval(layers[-1], layer)
        else:
            layers.append(layer)
    return torch.nn.Sequential(*layers).eval()


def _reader_for_inference(reader: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A folded, eval-mode copy of the reader on ``device``, its convolutions in bfloat16
    where that is native (the loaded one stays as saved)."""
    import copy

    from recognizer.reader.model import fold_batch_norms

    net = fold_batch_norms(copy.deepcopy(reader).eval()).to(device).to(memory_format=torch.channels_last)
    net.reader.features_dtype = reader_features_dtype(device)
    return net


def reader_features_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where ``device`` runs it natively and ``$DIGITS_READER_PRECISION`` is
    "auto" (:func:`recognizer.settings.reader_precision`), else None (float32)."""
    if settings.reader_precision() == "float32":
        return None
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.bfloat16 if native else None


def load(uri: str | None = None, device: torch.device | str | None = None,
         batch_size: int = settings.PREDICT_BATCH_SIZE) -> Recognizer:
    """Load a checkpoint (local folder or s3:// URI, or a training run's output), with
    its splitter of touching digits if it has one; with no ``uri``, the model bundled
    with the package (:mod:`recognizer.bundled`)."""
    from recognizer.bundled import default_checkpoint

    model, meta = checkpoint.load(default_checkpoint(uri))
    dev = torch.device(device) if isinstance(device, str) else device
    return Recognizer(model, meta, dev, batch_size, load_splitter(meta, dev), load_reader(meta))


def load_reader(meta: dict) -> torch.nn.Module | None:
    """The field reader of the checkpoint ``meta`` describes, eval-mode, or None."""
    raw = checkpoint.read_reader(meta)
    if raw is None:
        return None
    return reader_from_bytes(meta["reader"]["name"], raw, f"{meta['uri']}/{checkpoint.READER_FILE}")


def reader_from_bytes(name: str, raw: bytes, what: str) -> torch.nn.Module:
    """An eval-mode reader of architecture ``name`` from its weights file ``raw``
    (``what`` names the file in errors)."""
    from recognizer.reader.model import build_reader

    net = build_reader(name)
    try:
        net.load_state_dict(checkpoint.state_dict(raw, what))
    except RuntimeError as exc:
        raise CheckpointError(f"{what} does not fit reader {name!r}: {exc}") from exc
    return net.eval().to(memory_format=torch.channels_last)


def load_splitter(meta: dict, device: torch.device | None = None) -> Splitter | None:
    """The splitter of the checkpoint ``meta`` describes (``checkpoint.identify``), or None."""
    raw = checkpoint.read_splitter(meta)
    if raw is None:
        return None
    try:
        return from_state(checkpoint.state_dict(raw, checkpoint.SPLITTER_FILE), device)
    except ValueError as exc:
        raise CheckpointError(f"{meta['uri']}/{checkpoint.SPLITTER_FILE}: {exc}") from exc
