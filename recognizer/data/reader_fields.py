"""The field reader's training data: synthesized form fields, fitted to the reader's input
once, in parallel, and cached.

Each field is a :func:`recognizer.data.forms.make_form_field` of 1 to 10 training digits
(one hand per field for most, touching and overlapping neighbours, separators and end
marks in ``raw``, backgrounds, lines, boxes, masks, a small number in a large cell, blur
and JPEG), put through the reader's own input path (:func:`recognizer.reader.field_input.fit`)
exactly as a user's crop would be. What the reader learns from is kept: the canvas
(uint8), the handwriting's box on it and the raw string.

Training draws a new set every epoch (:class:`FieldDraw`), so that a run keeps no large
set on disk; measured, new fields did not lift the dev sets by themselves (docs/reader.md).
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

from recognizer.data.forms import FormConfig, make_form_field
from recognizer.data.forms.cursive import Cursive
from recognizer.data.forms.shape import DigitShape
from recognizer.errors import BlankImage
from recognizer.reader.field_input import fit
from recognizer.reader.model import CANVAS_H, CANVAS_W

#: How the reader's training fields are drawn: longer fields, more touching digits, one
#: hand per field for most, more small numbers in large cells, paler pens, pens from far
#: thinner to a little thicker than the digits' own strokes, a quarter of fields spaced
#: widely, half cut tight to the handwriting's columns (margins alone add paper beside
#: it), most fields' digits in other writers' shapes and a share written cursively
#: (digits joined, runs led in from the base line), unlike the field tests'. The pen
#: model's digits (``FormConfig.strokes``) are off: docs/reader.md says why.
READER_FORMS = FormConfig(lengths=(1, 10), touching=0.3, same_hand=0.7, p_large_cell=0.4,
                          p_end_mark=0.3, ink_level=(0.3, 1.0), pen_change=(-0.09, 0.03), spaced=0.25,
                          tight_columns=0.5, digit_shape=DigitShape(p=0.8),
                          cursive=Cursive(p=0.3))
#: Share of fields with no handwriting at all (lines, print, background): read as nothing.
BLANK_SHARE = 0.03
#: Fields per task of the parallel generation.
CHUNK = 500


@dataclass
class ReaderFields:
    """Fields ready for the reader: ``canvas`` (N, CANVAS_H, CANVAS_W) uint8 ink, the
    handwriting's ``boxes`` (N, 4) in canvas pixels, and each field's ``raw`` string."""

    canvas: np.ndarray
    boxes: np.ndarray
    raws: list[str]

    def __len__(self) -> int:
        return len(self.raws)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, canvas=self.canvas, boxes=self.boxes, raws=np.array(self.raws, dtype=str))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ReaderFields:
        with np.load(io.BytesIO(data)) as z:
            return cls(z["canvas"], z["boxes"], [str(r) for r in z["raws"]])


def _chunk(job: tuple[np.ndarray, np.ndarray, int, int, FormConfig]) -> ReaderFields:
    digits, labels, count, seed, cfg = job
    rng = np.random.default_rng(seed)
    lo, hi = cfg.lengths
    canvas = np.zeros((count, CANVAS_H, CANVAS_W), np.uint8)
    boxes = np.zeros((count, 4), np.float32)
    raws = []
    for i in range(count):
        while True:
            picks = rng.integers(0, len(digits), int(rng.integers(lo, hi + 1)))
            field = make_form_field([digits[j] for j in picks], [int(labels[j]) for j in picks], rng, cfg,
                                    blank=rng.random() < BLANK_SHARE)
            try:
                x, where = fit(field.image)
                break
            except BlankImage:  # ink too faint to count as ink: users' would be refused too
                continue
        canvas[i] = np.rint(x * 255)
        left, top, right, bottom = field.box
        boxes[i] = (left * where.scale, top * where.scale + where.top, right * where.scale,
                    bottom * where.scale + where.top)
        raws.append(field.raw)
    return ReaderFields(canvas, boxes, raws)


#: Runs a function over jobs, yielding the results in order (a process pool's imap, or
#: Ray tasks on a cluster).
Mapper = Callable[[Callable, list], Iterable]


def synthesize(digits: np.ndarray, labels: np.ndarray, count: int, seed: int,
               cfg: FormConfig = READER_FORMS, mapper: Mapper | None = None,
               progress: bool = False, processes: int | None = None) -> ReaderFields:
    """``count`` reader fields of light-on-dark uint8 training ``digits``, generated in
    chunks by ``mapper`` (default: ``processes`` processes, default one per CPU of this
    machine); the same seed gives the same set however it is generated."""
    jobs = [(digits, labels, min(CHUNK, count - at), seed * 1_000_003 + at // CHUNK, cfg)
            for at in range(0, count, CHUNK)]
    if mapper is not None:
        parts = list(_bar(mapper(_chunk, jobs), progress, len(jobs)))
    elif (processes := processes or os.cpu_count() or 1) == 1 or len(jobs) == 1:
        parts = [_chunk(j) for j in _bar(jobs, progress)]
    else:
        parts = _in_processes(jobs, processes, progress)
    return ReaderFields(np.concatenate([p.canvas for p in parts]), np.concatenate([p.boxes for p in parts]),
                        [r for p in parts for r in p.raws])


def _in_processes(jobs: list, processes: int, progress: bool) -> list[ReaderFields]:
    """:func:`_chunk` of each job in a pool of forked processes (fork: the children need
    no import of the caller's script, no ``__main__`` guard).

    The workers are let finish (close, join) rather than terminated, as the pool's
    context manager would: inside a Ray worker they inherit its SIGTERM handler, and a
    worker terminated while it waits for the next job can outlive the signal, leaving
    the join to wait for ever. Each worker also gets the default SIGTERM back, so that
    terminating the pool on an error works."""
    pool = multiprocessing.get_context("fork").Pool(processes, initializer=_default_sigterm)
    try:
        parts = list(_bar(pool.imap(_chunk, jobs), progress, len(jobs)))
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()
    return parts


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class FieldDraw:
    """A new set of ``count`` training fields for every epoch, written with ``digits``
    and ``labels`` (light-on-dark uint8). Worker ``rank`` of ``size`` draws its own
    ``count // size`` fields, written by ``processes`` processes (the CPUs it trains
    with; 1: this process alone); the seed, epoch, rank and size fix them, so a resumed
    epoch sees the fields it would have seen."""

    digits: np.ndarray
    labels: np.ndarray
    count: int
    seed: int
    processes: int = 1

    def share(self, epoch: int, rank: int = 0, size: int = 1) -> ReaderFields:
        """The fields worker ``rank`` of ``size`` trains on in ``epoch`` (from 0)."""
        seed = int(np.random.SeedSequence([self.seed, epoch, rank, size]).generate_state(1)[0])
        return synthesize(self.digits, self.labels, self.count // size, seed, processes=self.processes)


def _bar(items, progress: bool, total: int | None = None):
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc="synthesizing reader fields", unit="chunk")


def cache_key(source: str, count: int, seed: int, cfg: FormConfig = READER_FORMS) -> str:
    """What a cached set was made from, hashed: the digits' source, count, seed, config."""
    text = json.dumps({"source": source, "count": count, "seed": seed, "forms": asdict(cfg),
                       "canvas": [CANVAS_H, CANVAS_W], "blank": BLANK_SHARE}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
