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

from bench.devsets import dev_sets, read_set, score_set
from recognizer import checkpoint, predict, settings
from recognizer.runtime import storage
from recognizer.training.reader_run import read_reader_meta


def with_reader(model: predict.Recognizer, folder: str) -> predict.Recognizer:
    """``model`` with the reader of the reader checkpoint ``folder`` in place of its own."""
    name = read_reader_meta(folder)["name"]
    uri = storage.join(folder, checkpoint.READER_FILE)
    reader = predict.reader_from_bytes(name, storage.read_bytes(uri), uri)
    return predict.Recognizer(model.model, model.meta, model.device, model.batch_size, model.splitter, reader)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("readers", nargs="+", help="reader checkpoint folders (local or s3://), or 'bundled'")
    p.add_argument("--checkpoint", help="the checkpoint the readers read in (default: the bundled model)")
    p.add_argument("--data", help=f"MNIST folder (default ${settings.DATA_ENV})")
    args = p.parse_args(argv)
    base = predict.load(args.checkpoint)
    sets = dev_sets(settings.data_dir(args.data))
    print("| reader | " + " | ".join(sets) + " |")
    print("| --- |" + " ---: |" * len(sets))
    for folder in args.readers:
        model = base if folder == "bundled" else with_reader(base, folder)
        cells = []
        for images, texts, raws in sets.values():
            results, _ = read_set(model, images, "learned")
            s = score_set(results, texts, raws, None)
            cells.append(f"{s['exact']:.1%} ± {s['plus_minus']:.1%} (at 1%: {s['accepted_at_1']:.1%})")
        print(f"| {folder} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
