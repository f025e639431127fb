"""Reader checkpoints on every dev set, side by side: which epoch of a run reads best.

``python -m bench.reader_epochs RUN/reader/checkpoint_epoch0006 RUN/reader/checkpoint_epoch0007``

Each folder is a reader checkpoint that ``digits train`` writes every reader epoch
(``reader.pt`` and its ``meta.json``); ``bundled`` stands for the reader of
``--checkpoint`` itself. Each reader is put into one checkpoint (``--checkpoint``,
default the bundled model: its digit model and reader calibration) and reads the dev sets
of :mod:`bench.devsets` as ``read_fields(..., reader="learned")`` does, so that a run's
epochs can be told apart before one of them is bundled (the calibration is the
checkpoint's, so the accept rates are approximate for the other readers).
"""

from __future__ import annotations

import argparse
import json

from bench.devsets import dev_sets, read_set, score_set
from recognizer import checkpoint, predict, settings
from recognizer.runtime import storage


def use_reader(model: predict.Recognizer, folder: str) -> None:
    """Put the reader of the reader checkpoint ``folder`` into ``model``."""
    meta = json.loads(storage.read_bytes(storage.join(folder, "meta.json")))
    raw = storage.read_bytes(storage.join(folder, checkpoint.READER_FILE))
    reader = predict.reader_from_bytes(meta["name"], raw, folder)
    model.reader = predict._reader_for_inference(reader, model.device)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("readers", nargs="+", help="reader checkpoint folders (local or s3://), or 'bundled'")
    p.add_argument("--checkpoint", help="the checkpoint the readers read in (default: the bundled model)")
    p.add_argument("--data", help=f"MNIST folder (default ${settings.DATA_ENV})")
    args = p.parse_args(argv)
    model = predict.load(args.checkpoint)
    sets = dev_sets(settings.data_dir(args.data))
    print("| reader | " + " | ".join(sets) + " |")
    print("| --- |" + " ---: |" * len(sets))
    for folder in args.readers:
        if folder != "bundled":
            use_reader(model, folder)
        cells = []
        for images, texts, raws in sets.values():
            results, _ = read_set(model, images, "learned")
            s = score_set(results, texts, raws, None)
            cells.append(f"{s['exact']:.1%} ± {s['plus_minus']:.1%} (at 1%: {s['accepted_at_1']:.1%})")
        print(f"| {folder} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
