"""Real-forms benchmark: the field reader on real scans and on synthesized real forms.

* **Real**: the development set of real handwritten row numbers cut from scanned, ruled
  ledger pages (``$DIGITS_ROWID``, a folder of Parquet shards with ``id``, ``image``
  and ``text``; ``make bench`` points it at ``../shared/data/rowid-dev``). It is never
  copied into the repository; without it the section says so and measures the rest.
  Reported: exact strings (all, and by number of digits), per-digit accuracy, wrong
  lengths, fields/s, and the reject option an operator sets: the share of fields
  accepted, most confident first, while the accepted ones hold at most 1% and 0.5%
  errors, and what a ``--min-confidence`` threshold does (the share accepted and their
  error rate). The set's one-digit fields also go through the single-digit path
  (``model.predict``), as a real single-digit test.
* **Synthesized forms**: 1,000 fields of 1-8 *test* digits written on what real forms
  hold (:mod:`recognizer.data.forms`: lines, boxes, backgrounds, separators, signs,
  underlines, masks), read for their digits (``text``) and their separators (``raw``).
"""

from __future__ import annotations

import glob
import os
import time

import numpy as np
import pyarrow.parquet as pq

import recognizer
from recognizer import data
from recognizer.data.forms import make_form_fields
from recognizer.fields import FieldResult, read_fields
from recognizer.training.field_scores import accepted_share, edit_distance

#: Environment variable naming the folder of real fields (development set).
ROWID_ENV = "DIGITS_ROWID"
FORM_FIELDS = 1000
#: Fields per read_fields call (one model batch each).
BATCH = 200
#: Error rates an operator may hold the accepted fields to.
REJECT_TARGETS = (0.01, 0.005)
#: --min-confidence thresholds reported.
THRESHOLDS = (0.9, 0.95, 0.99)


def load_real(folder: str) -> tuple[list[bytes], list[str]]:
    """The images and true strings of every Parquet shard in ``folder``."""
    images, texts = [], []
    for path in sorted(glob.glob(os.path.join(folder, "*.parquet"))):
        table = pq.read_table(path, columns=["image", "text"])
        images += table.column("image").to_pylist()
        texts += table.column("text").to_pylist()
    return images, texts


def _read(model: recognizer.Recognizer, images: list) -> tuple[list, float]:
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(images), BATCH):
        results.extend(read_fields(model, images[i:i + BATCH]))
    return results, time.perf_counter() - t0


def score(results: list, texts: list[str], seconds: float) -> dict:
    """Accuracy, reject-option and speed figures of a set's readings."""
    read = [r.text if isinstance(r, FieldResult) else "" for r in results]
    right = np.array([r == t for r, t in zip(read, texts, strict=True)])
    confidence = np.array([r.confidence if isinstance(r, FieldResult) else 0.0 for r in results])
    lengths = np.array([len(t) for t in texts])
    errors = sum(edit_distance(r, t) for r, t in zip(read, texts, strict=True))
    thresholds = {}
    for c in THRESHOLDS:
        kept = confidence >= c
        thresholds[str(c)] = {"accepted": float(kept.mean()),
                              "error_rate": float(1 - right[kept].mean()) if kept.any() else None}
    return {
        "fields": len(texts),
        "exact_accuracy": float(right.mean()),
        "by_length": {str(n): {"fields": int((lengths == n).sum()),
                               "exact": float(right[lengths == n].mean())}
                      for n in sorted(set(lengths.tolist()))},
        "digit_accuracy": 1.0 - errors / max(1, int(lengths.sum())),
        "wrong_length": float(np.mean([len(r) != len(t) for r, t in zip(read, texts, strict=True)])),
        "errors": sum(not isinstance(r, FieldResult) for r in results),
        "fields_per_s": len(texts) / seconds,
        "accepted_at": {str(e): accepted_share(right, confidence, e) for e in REJECT_TARGETS},
        "min_confidence": thresholds,
    }


def real_set(model: recognizer.Recognizer, folder: str) -> dict:
    """The real development set, read as fields and (its one-digit fields) as digits."""
    images, texts = load_real(folder)
    results, seconds = _read(model, images)
    out = {"folder": os.path.basename(folder.rstrip("/")), **score(results, texts, seconds)}
    single = [(im, int(t)) for im, t in zip(images, texts, strict=True) if len(t) == 1]
    if single:
        predicted = model.predict([im for im, _ in single])
        out["single_digits"] = {"images": len(single), "accuracy": float(
            np.mean(predicted.labels == np.array([t for _, t in single])))}
    return out


def form_set(model: recognizer.Recognizer, data_dir: str) -> dict:
    """1,000 synthesized real-form fields of test digits: text and raw readings."""
    images, labels, _ = data.load_idx_raw(data_dir, "test")
    forms = make_form_fields(images, labels, FORM_FIELDS, np.random.default_rng(123))
    results, seconds = _read(model, [f.image for f in forms])
    out = score(results, [f.text for f in forms], seconds)
    raw = [r.raw if isinstance(r, FieldResult) else "" for r in results]
    out["raw_exact"] = float(np.mean([r == f.raw for r, f in zip(raw, forms, strict=True)]))
    with_marks = [i for i, f in enumerate(forms) if f.raw != f.text]
    out["with_separators"] = {"fields": len(with_marks), "exact_text": float(np.mean(
        [results[i].text == forms[i].text if isinstance(results[i], FieldResult) else False
         for i in with_marks])) if with_marks else None}
    return out


def run(checkpoint: str, data_dir: str) -> dict:
    """Read the real development set (when ``$DIGITS_ROWID`` names it) and the
    synthesized forms; returns a JSON-able dict."""
    model = recognizer.load(checkpoint)
    out = {"checkpoint": checkpoint, "model_version": model.version,
           "calibrated": "calibration" in model.meta}
    folder = os.environ.get(ROWID_ENV)
    if folder and glob.glob(os.path.join(folder, "*.parquet")):
        out["real"] = real_set(model, folder)
    else:
        out["real"] = None
    out["forms"] = form_set(model, data_dir)
    return out


def _set_lines(name: str, s: dict) -> list[str]:
    by_length = ", ".join(f"{n} digits: {v['exact']:.2%} ({v['fields']})" for n, v in s["by_length"].items())
    accept = ", ".join(f"{s['accepted_at'][str(e)]:.1%} at {e:.1%} errors" for e in REJECT_TARGETS)
    return [f"| {name} | {s['fields']:,} | **{s['exact_accuracy']:.2%}** | {s['digit_accuracy']:.2%} | "
            f"{s['wrong_length']:.2%} | {s['errors']} | {s['fields_per_s']:.0f} |",
            "", f"- {name}, by length: {by_length}.", f"- {name}, fields accepted: {accept}.",
            f"- {name}, `--min-confidence`: " + "; ".join(
                f"{c}: {v['accepted']:.1%} accepted" + (f", {v['error_rate']:.2%} of them wrong"
                                                        if v["error_rate"] is not None else "")
                for c, v in s["min_confidence"].items()) + ".", ""]


def to_markdown(results: dict) -> str:
    """A section for bench/RESULTS.md."""
    head = ["| set | fields | exact string | per digit | wrong length | errors | fields/s |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    lines = ["## Real forms: real ledger scans and synthesized real forms", "",
             f"Model `{results['model_version']}`; confidences "
             + ("calibrated at training (fields of the validation digits)."
                if results.get("calibrated") else "raw (the checkpoint has no calibration)."), ""]
    real = results.get("real")
    if real:
        lines += [f"Real: `{real['folder']}` (`${ROWID_ENV}`), real handwritten row numbers cut from "
                  "scanned ruled ledgers: ruling lines, masks, printed headings, stains, small "
                  "digits in large cells, trailing dots.", "", *head, *_set_lines("real", real)]
        single = real.get("single_digits")
        if single:
            lines += [f"- Its {single['images']:,} one-digit fields through the single-digit path "
                      f"(`model.predict`): **{single['accuracy']:.2%}**.", ""]
    else:
        lines += [f"Real set not measured: set `${ROWID_ENV}` to its folder.", ""]
    forms = results["forms"]
    lines += [f"Synthesized: {forms['fields']:,} fields of 1-8 test digits on synthesized real forms "
              "(lines, boxes, backgrounds, separators, signs, underlines, masks).", "", *head,
              *_set_lines("forms", forms),
              f"- forms, raw reading (separators in place) exact: {forms['raw_exact']:.2%}; fields "
              f"with separators ({forms['with_separators']['fields']}): digits exact "
              f"{forms['with_separators']['exact_text']:.2%}.", ""]
    return "\n".join(lines)
