"""Every field-reading dev set, side by side, read by both readers of one checkpoint.

The sets:

* **rowid-dev** (``$DIGITS_ROWID``): 2,697 real ledger row numbers (tall ruled cells);
* **cheque-dev** (``$DIGITS_CHEQUE``): 393 real cheque courtesy amounts;
* **forms**: 1,000 synthesized real-form fields of 1-8 MNIST *test* digits
  (:func:`recognizer.data.forms.make_form_fields`, seed 123, as ``bench.forms``);
* **5-digit**: 2,000 5-digit fields of the MNIST test digits, 10% of neighbours touching
  (:func:`recognizer.data.synth_fields.make_fields`, as ``bench.fields``).
* **5-digit, length given**: the same fields read with ``length=5``, as a user who knows
  the form's length (a postal code) reads them.

Readers: the checkpoint's *learned* reader (:mod:`recognizer.reader`) and, for the same
checkpoint, the *segmenting* reader (lattice, splitter, rules) it replaces. Each figure
has its ± (the 95% half-width of a binomial proportion at the set's size) so that a
change can be told from noise. Accepted at 1% / 0.5%: the largest share of the set,
most confident first, whose errors stay within that rate.
"""

from __future__ import annotations

import glob
import os
import time

import numpy as np

import recognizer
from bench.fields import LENGTH
from bench.forms import FORM_FIELDS, ROWID_ENV, load_real
from recognizer import data
from recognizer.data.forms import make_form_fields
from recognizer.data.synth_fields import make_fields
from recognizer.fields import FieldResult, read_fields
from recognizer.training.field_scores import score_fields

#: Environment variable naming the folder of real cheque amounts (development set).
CHEQUE_ENV = "DIGITS_CHEQUE"
#: Fields per read_fields call.
BATCH = 200
FIVE_DIGIT_FIELDS = 2000
#: The sets read with a known length, and that length.
KNOWN_LENGTH = {"5-digit, length given": LENGTH}


def read_set(model: recognizer.Recognizer, images: list, reader: str, length: int | None = None
             ) -> tuple[list, float]:
    """A set read by one reader, in batches as a job would: the results and the seconds."""
    t0 = time.perf_counter()
    results = []
    for i in range(0, len(images), BATCH):
        results.extend(read_fields(model, images[i:i + BATCH], reader=reader, length=length))
    return results, time.perf_counter() - t0


def score_set(results: list, texts: list[str], raws: list[str] | None, seconds: float | None) -> dict:
    """Exact rate, its ±, per-digit accuracy, wrong lengths, accept rates and speed."""
    scores = score_fields(results, texts)
    out = {"fields": scores["fields"], "exact": scores["exact"], "plus_minus": scores["plus_minus"],
           "digit_accuracy": 1 - scores["char_error_rate"], "wrong_length": scores["wrong_length"],
           "errors": sum(scores["errors"].values()),
           "accepted_at_1": scores["accepted_at_1%"], "accepted_at_0.5": scores["accepted_at_0.5%"],
           "fields_per_s": len(texts) / seconds if seconds else None}
    if raws is not None:
        got = [r.raw if isinstance(r, FieldResult) else "" for r in results]
        out["raw_exact"] = float(np.mean([g == w for g, w in zip(got, raws, strict=True)]))
    return out


def _surer(a: list, b: list) -> list:
    """Per field, the reading of the two with the higher (calibrated) confidence."""
    def conf(r) -> float:
        return r.confidence if isinstance(r, FieldResult) else -1.0

    return [x if conf(x) >= conf(y) else y for x, y in zip(a, b, strict=True)]


def _agreement(a: list, b: list, texts: list[str]) -> dict:
    """Accepting only the fields that both readers read alike: the share accepted, and
    the share of those that are wrong (low only where the two readers fail in different
    ways)."""
    agree = np.array([isinstance(x, FieldResult) and isinstance(y, FieldResult) and x.text == y.text
                      for x, y in zip(a, b, strict=True)])
    right = np.array([isinstance(x, FieldResult) and x.text == t for x, t in zip(a, texts, strict=True)])
    return {"accepted": float(agree.mean()),
            "error": float(1 - right[agree].mean()) if agree.any() else None}


def dev_sets(data_dir: str) -> dict[str, tuple[list, list[str], list[str] | None]]:
    """Each dev set that is present: (images, texts, raws or None)."""
    sets = {}
    for name, env in (("rowid-dev", ROWID_ENV), ("cheque-dev", CHEQUE_ENV)):
        folder = os.environ.get(env)
        if folder and glob.glob(os.path.join(folder, "*.parquet")):
            images, texts = load_real(folder)
            sets[name] = (images, texts, None)
    images, labels, _ = data.load_idx_raw(data_dir, "test")
    forms = make_form_fields(images, labels, FORM_FIELDS, np.random.default_rng(123))
    sets["forms"] = ([f.image for f in forms], [f.text for f in forms], [f.raw for f in forms])
    fields, texts = make_fields(images, labels, LENGTH, FIVE_DIGIT_FIELDS, np.random.default_rng(0),
                                touching_prob=0.1)
    sets["5-digit"] = (list(fields), list(texts), None)
    sets["5-digit, length given"] = sets["5-digit"]
    return sets


def run(checkpoint: str, data_dir: str) -> dict:
    """Read every dev set with the checkpoint's learned and segmenting readers."""
    model = recognizer.load(checkpoint)
    sets = dev_sets(data_dir)
    out = {"checkpoint": checkpoint, "model_version": model.version,
           "reader": (model.meta.get("reader") or {}).get("name"), "readers": {}}
    read: dict[str, dict[str, list]] = {}
    for reader in ("learned", "segmenting"):
        if reader == "learned" and model.reader is None:
            continue
        out["readers"][reader], read[reader] = {}, {}
        for name, (images, texts, raws) in sets.items():
            print(f"   {reader}: {name}", flush=True)
            read[reader][name], seconds = read_set(model, images, reader, KNOWN_LENGTH.get(name))
            out["readers"][reader][name] = score_set(read[reader][name], texts, raws, seconds)
    if len(read) == 2:
        # Not a product path: what choosing the surer of the two readings would give.
        out["readers"]["surer of both (offline)"] = {
            name: score_set(_surer(read["learned"][name], read["segmenting"][name]), texts, raws, None)
            for name, (_, texts, raws) in sets.items()}
        out["both_agree"] = {name: _agreement(read["learned"][name], read["segmenting"][name], texts)
                             for name, (_, texts, _) in sets.items()}
    return out


def to_markdown(results: dict) -> str:
    """A section for bench/RESULTS.md."""
    lines = ["## Dev sets, side by side: the learned reader and the segmenting reader", "",
             f"Checkpoint `{results['model_version']}` (`{results['checkpoint']}`), learned reader "
             f"`{results.get('reader')}`. `python -m bench.run --only devsets --checkpoint CKPT`.", "",
             "| reader | set | fields | exact | ± | per digit | wrong length | accepted at 1% | at 0.5% "
             "| raw exact | fields/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for reader, sets in results["readers"].items():
        for name, s in sets.items():
            raw = f"{s['raw_exact']:.1%}" if "raw_exact" in s else ""
            speed = f"{s['fields_per_s']:.0f}" if s["fields_per_s"] else "—"
            lines.append(f"| {reader} | {name} | {s['fields']:,} | **{s['exact']:.1%}** | "
                         f"{s['plus_minus']:.1%} | {s['digit_accuracy']:.1%} | {s['wrong_length']:.1%} | "
                         f"{s['accepted_at_1']:.1%} | {s['accepted_at_0.5']:.1%} | {raw} | {speed} |")
    if results.get("both_agree"):
        lines += ["", "Accepting only the fields that both readers read alike (offline):", "",
                  "| set | accepted | errors among them |", "| --- | ---: | ---: |"]
        for name, a in results["both_agree"].items():
            err = f"{a['error']:.1%}" if a["error"] is not None else "—"
            lines.append(f"| {name} | {a['accepted']:.1%} | {err} |")
    lines.append("")
    return "\n".join(lines)
