"""Fine-tuning the learned reader on a user's own labelled fields: how many it needs.

* **rowid**: ``digits train --fields`` on the first 100, 1,000 and 10,000 rows of
  ``$DIGITS_ROWID_TRAIN`` (real ledger row numbers, the training split of the archive
  ``rowid-dev`` comes from; 10% of each held out for validation by a hash of the id),
  each fine-tuned checkpoint then read over all of ``rowid-dev`` (``$DIGITS_ROWID``);
* **cheque few-shot**: fine-tuned on the half of ``cheque-dev`` (``$DIGITS_CHEQUE``)
  whose ids sort first, read over the other half;
* each fine-tuned checkpoint also reads the synthesized real forms (``bench.forms``'s
  1,000 fields of MNIST test digits), to show what it keeps of other forms.

The starting checkpoint is the one benchmarked (the bundled model by default); the
learning curve (exact rate against labelled fields used) is also drawn as
``bench/results/fine_tune_curve.png``. These real sets train only here: the bundled
model never sees them.
"""

from __future__ import annotations

import glob
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import recognizer
from bench.forms import FORM_FIELDS, ROWID_ENV, load_real
from recognizer import data
from recognizer.data.forms import make_form_fields
from recognizer.fields import read_fields
from recognizer.training import local
from recognizer.training.config import TrainConfig
from recognizer.training.field_scores import score_fields

#: Environment variables naming the real sets (never in the repository).
ROWID_TRAIN_ENV, CHEQUE_ENV = "DIGITS_ROWID_TRAIN", "DIGITS_CHEQUE"
#: Labelled rowid-train fields per fine-tuning run of the curve.
SIZES = (100, 1_000, 10_000)
HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work", "fine-tune")
CURVE_PNG = os.path.join(HERE, "results", "fine_tune_curve.png")


def _read(model: recognizer.Recognizer, images: list) -> list:
    out = []
    for at in range(0, len(images), 256):
        out += read_fields(model, images[at:at + 256], reader="learned")
    return out


def _scores(model: recognizer.Recognizer, images: list, texts: list[str]) -> dict:
    s = score_fields(_read(model, images), texts)
    return {k: s[k] for k in ("fields", "exact", "plus_minus", "char_error_rate", "accepted_at_1%",
                              "accepted_at_0.5%")}


def _fine_tune(start: str, prefix: str, name: str, limit: int | None = None
               ) -> tuple[recognizer.Recognizer, float, dict]:
    cfg = TrainConfig(fields=prefix, start=start, fields_limit=limit, output=WORK, name=name)
    cfg.validate()
    # A fresh run each time: the wall time is the measure, and the start may have changed.
    shutil.rmtree(os.path.join(WORK, name), ignore_errors=True)
    t0 = time.perf_counter()
    result = local.run(cfg)
    seconds = time.perf_counter() - t0
    model = recognizer.load(result.checkpoint)
    return model, seconds, model.meta["reader"]["fine_tuned"]


def _cheque_halves(folder: str) -> tuple[str, list, list[str]]:
    """The first half of the cheques by id written as a prefix to fine-tune on; the other
    half's images and texts."""
    table = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(folder, "*.parquet")))])
    table = table.sort_by("id")
    half = table.num_rows // 2
    prefix = os.path.join(WORK, "cheque-first-half")
    os.makedirs(prefix, exist_ok=True)
    pq.write_table(table.slice(0, half), os.path.join(prefix, "part-00000.parquet"))
    rest = table.slice(half)
    return prefix, rest.column("image").to_pylist(), rest.column("text").to_pylist()


def _draw(curve: list[dict], zero: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [c["fields"] for c in curve]
    y = [100 * c["rowid_dev"]["exact"] for c in curve]
    err = [100 * c["rowid_dev"]["plus_minus"] for c in curve]
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label="fine-tuned")
    ax.axhline(100 * zero, color="grey", linestyle="--", label="bundled model (no fine-tuning)")
    ax.set_xscale("log")
    ax.set_xlabel("labelled rowid-train fields used")
    ax.set_ylabel("rowid-dev exact (%)")
    ax.set_title("Fine-tuning the learned reader on your own fields")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(checkpoint: str, data_dir: str) -> dict:
    """Fine-tune the checkpoint's reader on growing shares of rowid-train and on half the
    cheques; read the dev sets with each."""
    start = recognizer.load(checkpoint)
    rowid_images, rowid_texts = load_real(os.environ[ROWID_ENV])
    test_images, test_labels, _ = data.load_idx_raw(data_dir, "test")
    forms = make_form_fields(test_images, test_labels, FORM_FIELDS, np.random.default_rng(123))
    form_images, form_texts = [f.image for f in forms], [f.text for f in forms]
    out = {"checkpoint": checkpoint, "model_version": start.version,
           "zero_shot": {"rowid_dev": _scores(start, rowid_images, rowid_texts),
                         "forms": _scores(start, form_images, form_texts)},
           "curve": []}
    for size in SIZES:
        print(f"   rowid-train: {size:,} fields", flush=True)
        model, seconds, record = _fine_tune(checkpoint, os.environ[ROWID_TRAIN_ENV], f"rowid-{size}", size)
        out["curve"].append({"fields": size, "train_rows": record["train_rows"], "seconds": seconds,
                             "val_exact": record["val_exact"], "best_epoch": record["best_epoch"],
                             "rowid_dev": _scores(model, rowid_images, rowid_texts),
                             "forms": _scores(model, form_images, form_texts)})
    print("   cheque-dev: first half by id", flush=True)
    prefix, cheque_images, cheque_texts = _cheque_halves(os.environ[CHEQUE_ENV])
    model, seconds, record = _fine_tune(checkpoint, prefix, "cheque-half")
    out["cheque"] = {"train_rows": record["train_rows"], "val_rows": record["val_rows"], "seconds": seconds,
                     "zero_shot": _scores(start, cheque_images, cheque_texts),
                     "fine_tuned": _scores(model, cheque_images, cheque_texts),
                     "forms": _scores(model, form_images, form_texts)}
    _draw(out["curve"], out["zero_shot"]["rowid_dev"]["exact"], CURVE_PNG)
    out["curve_png"] = os.path.relpath(CURVE_PNG, HERE)
    return out


def _row(name: str, s: dict) -> str:
    return (f"| {name} | {s['fields']:,} | **{s['exact']:.1%}** | {s['plus_minus']:.1%} | "
            f"{s['char_error_rate']:.1%} | {s['accepted_at_1%']:.1%} | {s['accepted_at_0.5%']:.1%} |")


def to_markdown(results: dict) -> str:
    """A section for bench/RESULTS.md."""
    head = ["| read | fields | exact | ± | char error rate | accepted at 1% | at 0.5% |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines = ["## Fine-tuning the learned reader on your own fields", "",
             f"From `{results['model_version']}` (`{results['checkpoint']}`); `digits train --fields PREFIX "
             "--fields-limit N` with its defaults, in process. `python -m bench.run --only fine_tune "
             "--checkpoint CKPT`.", "",
             "| labelled fields | trained on | min | rowid-dev exact | ± | accepted at 1% | forms exact |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
             f"| 0 (bundled) | — | — | {results['zero_shot']['rowid_dev']['exact']:.1%} | "
             f"{results['zero_shot']['rowid_dev']['plus_minus']:.1%} | "
             f"{results['zero_shot']['rowid_dev']['accepted_at_1%']:.1%} | "
             f"{results['zero_shot']['forms']['exact']:.1%} |"]
    for c in results["curve"]:
        lines.append(f"| {c['fields']:,} | {c['train_rows']:,} | {c['seconds'] / 60:.1f} | "
                     f"**{c['rowid_dev']['exact']:.1%}** | {c['rowid_dev']['plus_minus']:.1%} | "
                     f"{c['rowid_dev']['accepted_at_1%']:.1%} | {c['forms']['exact']:.1%} |")
    ch = results["cheque"]
    lines += ["", f"![learning curve]({results['curve_png']})", "",
              f"Cheques, few-shot: fine-tuned on {ch['train_rows'] + ch['val_rows']} (the half of cheque-dev "
              f"whose ids sort first; {ch['val_rows']} of them for validation) in {ch['seconds'] / 60:.1f} "
              f"min, read over the other half:", "", *head,
              _row("bundled (zero-shot)", ch["zero_shot"]), _row("fine-tuned", ch["fine_tuned"]),
              _row("fine-tuned, synthesized forms", ch["forms"]), ""]
    return "\n".join(lines)
