"""Read whole digit fields: a postal code, a cheque amount, an account number.

>>> import recognizer
>>> from recognizer.fields import read_field
>>> model = recognizer.load("/path/to/checkpoint")               # doctest: +SKIP
>>> result = read_field(model, open("postcode.png", "rb").read())  # doctest: +SKIP
>>> result.text, result.confidence                                # doctest: +SKIP
('75013', 0.97)

Each field is decoded with :func:`recognizer.decode.decode`, cut into candidate pieces
by :func:`recognizer.fields.lattice.segment`, each piece normalised by the one
preprocessing path (:func:`recognizer.normalize.normalize_stack`), and every piece of
every field in a call goes through the model in one batch (``model.predict_tensors``);
:mod:`recognizer.fields.score` picks each field's best reading.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from recognizer import settings
from recognizer.clean import CleanConfig
from recognizer.decode import decode
from recognizer.errors import ConfigError, ImageError, NoDigits
from recognizer.fields.calibrate import Calibration
from recognizer.fields.config import SegmentConfig
from recognizer.fields.lattice import Lattice, segment
from recognizer.fields.marks import Piece
from recognizer.fields.peel import SplitFn
from recognizer.fields.score import ScoreConfig, best_path, candidate_score
from recognizer.normalize import normalize_stack
from recognizer.preprocess import as_image_list
from recognizer.reader import read as reader_read
from recognizer.reader.read import CanvasPlan
from recognizer.results import FieldResult

if TYPE_CHECKING:  # the model (and torch) is needed only by read_fields' caller
    from recognizer.predict import Recognizer

#: Zero pixels around a piece so that normalize() sees paper at the border.
PAD = 2
#: The shapes of separators: a dash is FLAT times as wide as tall; a slash at least TALL
#: of a digit's height; a comma reaches TAIL of a digit's height below the base line and
#: is FLAT_COMMA times as tall as wide.
FLAT, TALL, TAIL, FLAT_COMMA = 1.8, 0.45, 0.15, 1.3


def separator(piece: Piece, lattice: Lattice) -> str:
    """The character a mark read as no digit stands for in the raw reading: ``-`` when
    flat, ``/`` when tall, ``,`` when it reaches below the base line, else ``.``."""
    left, top, right, bottom = piece.box
    h, w = bottom - top, right - left
    if w >= FLAT * h:
        return "-"
    if h >= TALL * lattice.ref_height:
        return "/"
    if bottom - lattice.baseline >= TAIL * lattice.ref_height and h >= FLAT_COMMA * w:
        return ","
    return "."


def model_inputs(pieces: list[Piece]) -> np.ndarray:
    """Model inputs for a field's pieces, normalised together as one stack.

    A piece's ink is light on dark; on a canvas of paper (zeros) it is a small greyscale
    image that normalize() treats exactly like any single-digit upload. A shared canvas
    with at least PAD of paper round every piece gives each the same result as its own.
    """
    height = max(p.ink.shape[0] for p in pieces) + 2 * PAD
    width = max(p.ink.shape[1] for p in pieces) + 2 * PAD
    canvas = np.zeros((len(pieces), height, width), dtype=np.uint8)
    for i, p in enumerate(pieces):
        h, w = p.ink.shape
        canvas[i, PAD:PAD + h, PAD:PAD + w] = np.rint(p.ink * 255.0)
    x, errors = normalize_stack(canvas)
    for err in errors:
        if err is not None:
            raise err
    return x


@dataclass
class FieldPlan:
    """Fields ready for the model. Segmented: ``inputs`` (M, 28, 28) holds every
    candidate piece of every field, in order, and ``entries`` per image its lattice of
    candidates or the :class:`ImageError` it raised. For the learned reader
    (``canvases`` set): ``inputs`` holds one fitted canvas per field that decoded."""

    inputs: np.ndarray
    entries: list[Lattice | ImageError]
    length: int | None = None
    canvases: CanvasPlan | None = None

    @property
    def learned(self) -> bool:
        """Whether the plan is for the learned reader (outputs: probabilities, boxes)."""
        return self.canvases is not None


def reader_calibration(meta: dict) -> Calibration | None:
    """The learned reader's calibration from a checkpoint's meta, or None."""
    found = (meta.get("reader") or {}).get("calibration")
    return Calibration(**found) if isinstance(found, dict) else None


def prepare_fields(images: Sequence[bytes | np.ndarray] | np.ndarray,
                   config: SegmentConfig | None = None, length: int | None = None,
                   split: SplitFn | None = None, cleaning: CleanConfig | None = None,
                   learned: bool = False) -> FieldPlan:
    """Decode and segment fields (or, ``learned``, fit them for the checkpoint's learned
    reader); the half of :func:`read_fields` before the model.

    Batch jobs run this in their shard tasks and send ``plan.inputs`` to the model
    actors, the Serve application through its batching queue; :func:`assemble_fields`
    turns the model's outputs back into strings. ``split``: the checkpoint's splitter of
    touching digits (``Recognizer.splitter``), if it has one.
    """
    if learned:
        canvases = reader_read.prepare(as_image_list(images))
        return FieldPlan(canvases.inputs, [], length, canvases)
    config = config or SegmentConfig()
    config.validate()
    entries: list[Lattice | ImageError] = []
    inputs: list[np.ndarray] = []
    for item in as_image_list(images):
        try:
            lattice = segment(decode(item), config, length, split, cleaning)
            found = [p for c in lattice.candidates for p in c.pieces]
            if not found:
                raise NoDigits("no digits found: the field's marks are too small to be digits")
            pieces = model_inputs(found)
        except ImageError as exc:
            entries.append(exc)
            continue
        entries.append(lattice)
        inputs.extend(pieces)
    size = settings.IMAGE_SIZE
    stacked = np.stack(inputs) if inputs else np.zeros((0, size, size), np.float32)
    return FieldPlan(stacked, entries, length)


def _read(lattice: Lattice, probs: np.ndarray, length: int | None, cfg: ScoreConfig,
          calibration: Calibration | None) -> FieldResult | ImageError:
    """The best reading of one field from its pieces' probabilities (in candidate order)."""
    per_candidate, scores = [], []
    at = 0
    for cand in lattice.candidates:
        p = probs[at:at + len(cand.pieces)]
        at += len(cand.pieces)
        per_candidate.append(p)
        scores.append(candidate_score(cand, p, lattice, cfg))
    text, confs, boxes, raw = [], [], [], []
    chain, sure = best_path(lattice, scores, length, cfg)
    for i in chain:
        cand = lattice.candidates[i]
        if cand.mark:
            raw.append(separator(cand.pieces[0], lattice))
            continue
        for piece, p in zip(cand.pieces, per_candidate[i], strict=True):
            text.append(str(int(p[:settings.DIGITS].argmax())))
            raw.append(text[-1])
            confs.append(float(p[:settings.DIGITS].max()))
            boxes.append(piece.box)
    if not text:
        return NoDigits("no digits found: the field holds only marks that are not digits "
                        "(separators, dashes, dots)")
    confidence = math.prod(confs) * sure
    if calibration is not None:
        # Calibrated, and never above the least sure digit's probability.
        confidence = min(calibration(confidence, len(text)), min(confs))
    return FieldResult("".join(text), tuple(confs), confidence, tuple(boxes), "".join(raw))


def assemble_fields(plan: FieldPlan, outputs: np.ndarray | reader_read.Outputs,
                    scoring: ScoreConfig | None = None, calibration: Calibration | None = None
                    ) -> list[FieldResult | ImageError]:
    """Pick each field's best chain of candidates from the pieces' probabilities and spell
    out the strings: one :class:`FieldResult` or :class:`ImageError` per image. For a
    learned plan, ``outputs`` is ``Recognizer.read_tensors``' ``Outputs`` and
    ``calibration`` the reader's (:func:`reader_calibration`).

    Otherwise ``outputs`` holds the pieces' probabilities: (N, 11) from
    ``predict_tensors(plan.inputs, not_a_digit=True)``, or (N, 10) from a model without
    the not-a-digit class. A digit's confidence is the model's
    probability that its piece is that digit; a field's, with the checkpoint's
    ``calibration`` (:meth:`Calibration.from_meta`), the chance that its text is right.
    """
    if plan.canvases is not None:
        return reader_read.assemble(plan.canvases, outputs, calibration, plan.length)
    scoring = scoring or ScoreConfig()
    results: list[FieldResult | ImageError] = []
    at = 0
    for entry in plan.entries:
        if isinstance(entry, ImageError):
            results.append(entry)
            continue
        count = sum(len(c.pieces) for c in entry.candidates)
        results.append(_read(entry, outputs[at:at + count], plan.length, scoring, calibration))
        at += count
    return results


def check_reader(model: Recognizer, reader: str) -> bool:
    """Whether ``reader`` (one of ``settings.FIELD_READERS``) is the learned reader, which
    ``model`` must then have; a :class:`ConfigError` saying what to do otherwise."""
    if reader not in settings.FIELD_READERS:
        raise ConfigError(f"unknown field reader {reader!r}; choose one of: "
                          f"{', '.join(settings.FIELD_READERS)}")
    if reader == "learned" and model.reader is None:
        raise ConfigError(f"checkpoint {model.meta.get('uri')} has no learned field reader: train one "
                          "with `digits train` (--reader-epochs), or read by segmenting")
    return reader == "learned"


def read_fields(model: Recognizer, images: Sequence[bytes | np.ndarray] | np.ndarray,
                config: SegmentConfig | None = None, length: int | None = None,
                scoring: ScoreConfig | None = None, cleaning: CleanConfig | None = None,
                reader: str = settings.DEFAULT_FIELD_READER) -> list[FieldResult | ImageError]:
    """Read a batch of field images (encoded bytes or uint8 arrays, any size).

    Returns one entry per image, in order: a :class:`FieldResult`, or the typed
    :class:`ImageError` that image raised (``BlankImage`` for no ink, ``NoDigits`` for
    ink that holds no digit - lines, background, separators alone -,
    ``TooManyComponents`` for more marks than ``config.max_components``, and the
    decoding errors of :func:`recognizer.decode.decode`). Never raises for a bad image.
    With ``reader="learned"`` (the checkpoint must have one), each whole field goes
    through the learned reader (:mod:`recognizer.reader`) and ``config``, ``scoring``
    and ``cleaning`` do not apply; by default fields are segmented and
    every piece of every field goes through the model in one batch. ``length``, when
    the number of digits is known (postal codes, account numbers), steers segmentation
    and the choice of cuttings towards readings of that length; ``scoring`` tunes how
    readings are weighed.
    """
    if check_reader(model, reader):
        plan = prepare_fields(images, length=length, learned=True)
        return assemble_fields(plan, model.read_tensors(plan.inputs), None, reader_calibration(model.meta))
    plan = prepare_fields(images, config, length, model.splitter, cleaning)
    probs = model.predict_tensors(plan.inputs, not_a_digit=True)
    return assemble_fields(plan, probs, scoring, Calibration.from_meta(model.meta))


def read_field(model: Recognizer, image: bytes | np.ndarray, config: SegmentConfig | None = None,
               length: int | None = None, scoring: ScoreConfig | None = None,
               reader: str = settings.DEFAULT_FIELD_READER) -> FieldResult:
    """Read one field image; raises its typed :class:`ImageError` if it cannot be read."""
    result = read_fields(model, [image], config, length, scoring, reader=reader)[0]
    if isinstance(result, ImageError):
        raise result
    return result
