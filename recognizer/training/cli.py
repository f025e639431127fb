"""``digits train`` and ``digits evaluate``; every flag's default is :class:`TrainConfig`'s."""

from __future__ import annotations

import argparse

from recognizer import settings
from recognizer.checkpoint import CHECKPOINT_HELP
from recognizer.errors import DataError
from recognizer.models import MODELS
from recognizer.reader.model import READERS
from recognizer.training.config import TrainConfig
from recognizer.training.embedding import SAMPLE


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``evaluate`` commands to the root ``digits`` parser."""
    _add_train(sub)
    _add_evaluate(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train a model with Ray Train (data-parallel)",
        description="Train a digit recognizer with Ray Train across N workers (or, with "
                    "--local, in this process). Checkpoints go to OUTPUT/NAME every epoch; "
                    "rerunning the same command resumes from the newest one.")
    p.add_argument("--data", help=f"MNIST IDX folder, Parquet shards (local or s3://), or "
                                  f"'download' (default: ${settings.DATA_ENV}, else download)")
    p.add_argument("--model", default=d.model, choices=list(MODELS), help="model to train")
    p.add_argument("--workers", type=int, default=d.workers, help="Ray Train workers")
    p.add_argument("--local", action="store_true",
                   help="train in this process without Ray: the same loop, one worker")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (nccl)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--output", default=d.output, help="local folder or s3:// prefix for runs")
    p.add_argument("--name", default=d.name, help="run name (same name resumes)")
    p.add_argument("--no-augment", action="store_true", help="train on clean digits only")
    p.add_argument("--max-failures", type=int, default=d.max_failures,
                   help="worker failures to recover from")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--train-limit", type=int, default=d.train_limit,
                   help="use only the first N training images")
    p.add_argument("--field-pieces", type=int, default=d.field_pieces, metavar="FIELDS",
                   help="also learn the pieces the segmenter cuts from this many fields "
                        "synthesized from the training digits, with a not-a-digit class "
                        "for field reading (0: digits only; default %(default)s)")
    p.add_argument("--splitter-examples", type=int, default=d.splitter_examples, metavar="MARKS",
                   help="marks of touching digits synthesized from the training digits to "
                        "train the splitter that field reading cuts them with "
                        "(default %(default)s)")
    p.add_argument("--splitter-epochs", type=int, default=d.splitter_epochs, metavar="N",
                   help="epochs of splitter training (0: no splitter, fields are cut by "
                        "geometry alone; default %(default)s)")
    p.add_argument("--reader", default=d.reader, choices=list(READERS),
                   help="the learned field reader's architecture (default %(default)s)")
    p.add_argument("--reader-epochs", type=int, default=d.reader_epochs, metavar="N",
                   help="epochs of the learned field reader, trained after the digit model "
                        "(0: none, fields are read by segmentation; default %(default)s)")
    p.add_argument("--reader-fields", type=int, default=d.reader_fields, metavar="FIELDS",
                   help="form fields synthesized from the training digits for each of the "
                        "reader's epochs, new ones every epoch (default %(default)s)")
    p.add_argument("--reader-batch-size", type=int, default=d.reader_batch_size,
                   help="the reader's global batch size (default %(default)s)")
    p.add_argument("--reader-lr", type=float, default=d.reader_lr,
                   help="the reader's peak learning rate (default %(default)s)")
    _add_fine_tune_flags(p, d)
    p.set_defaults(func=_train)


def _add_fine_tune_flags(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    g = p.add_argument_group(
        "fine-tuning on your own fields",
        "With --fields, the run fine-tunes the learned field reader of a checkpoint on labelled fields "
        "instead of training from digits; its final checkpoint is OUTPUT/NAME/checkpoint_fine_tuned.")
    g.add_argument("--fields", metavar="PREFIX",
                   help="folder or s3:// prefix of Parquet shards with 'image' (encoded bytes) and 'text' "
                        "(the field as written, e.g. 18.014); an 'id' column names rows in the report")
    g.add_argument("--checkpoint", dest="start", metavar="URI",
                   help="the checkpoint whose reader is fine-tuned (default: the bundled model)")
    g.add_argument("--val", dest="val_fields", metavar="PREFIX",
                   help="labelled validation fields (default: --val-fraction of --fields)")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of the rows held out for validation, by a hash of each id "
                        "(default %(default)s)")
    g.add_argument("--fields-limit", type=int, default=d.fields_limit, metavar="N",
                   help="use only the first N rows of --fields")
    g.add_argument("--fine-tune-epochs", type=int, default=d.fine_tune_epochs, metavar="N",
                   help="epochs of fine-tuning; the best by validation exact rate is kept "
                        "(default %(default)s)")
    g.add_argument("--fine-tune-lr", type=float, default=d.fine_tune_lr,
                   help="peak learning rate of fine-tuning (default %(default)s)")
    g.add_argument("--synth-mix", type=float, default=d.synth_mix, metavar="SHARE",
                   help="synthesized fields mixed in per labelled field, so that other forms are "
                        "not forgotten (default %(default)s)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated :class:`TrainConfig` the ``train`` flags describe."""
    cfg = TrainConfig(data=args.data, model=args.model, workers=1 if args.local else args.workers,
                      use_gpu=args.gpu, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, output=args.output, name=args.name,
                      augment=not args.no_augment, max_failures=args.max_failures,
                      seed=args.seed, train_limit=args.train_limit,
                      field_pieces=args.field_pieces, splitter_examples=args.splitter_examples,
                      splitter_epochs=args.splitter_epochs, reader=args.reader,
                      reader_epochs=args.reader_epochs, reader_fields=args.reader_fields,
                      reader_batch_size=args.reader_batch_size, reader_lr=args.reader_lr,
                      fields=args.fields, start=args.start, val_fields=args.val_fields,
                      val_fraction=args.val_fraction, fields_limit=args.fields_limit,
                      fine_tune_epochs=args.fine_tune_epochs, fine_tune_lr=args.fine_tune_lr,
                      synth_mix=args.synth_mix)
    cfg.validate()
    return cfg


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.local:
        from recognizer.training import local

        result = local.run(cfg)
    else:
        from recognizer.runtime import ray_session
        from recognizer.training import ray_train

        ray_session.connect()
        result = ray_train.run(cfg)
    m = result.metrics
    what = "validation exact" if cfg.fields is not None else "accuracy"
    print(f"{what} {m.get('val_accuracy', float('nan')):.2%} after {m.get('epoch')} epochs "
          f"({m.get('train_seconds', 0):.1f} s of training)")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a checkpoint on test data and write a report",
        description="Print accuracy and loss on the test split and the model's summary, and "
                    "write a report folder: training curves, confusion matrix, misclassified "
                    "digits, t-SNE maps, model summary, metrics.json.")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--data", help=f"test data (default: ${settings.DATA_ENV}, else download)")
    p.add_argument("--report", default="report", help="folder for the report files")
    p.add_argument("--tsne-sample", type=int, default=SAMPLE, metavar="N",
                   help="test digits in the t-SNE maps (0: no maps; default %(default)s)")
    p.add_argument("--fields", metavar="PREFIX",
                   help="instead: read labelled fields (Parquet 'image', 'text', optional 'id' under a "
                        "folder or s3:// prefix) and report exact rate, character error rate and the "
                        "shares accepted at 1%% and 0.5%% error")
    p.add_argument("--field-reader", default="learned", choices=list(settings.FIELD_READERS),
                   help="with --fields: the reader to score (default %(default)s)")
    p.add_argument("--fields-limit", type=int, metavar="N", help="with --fields: the first N rows only")
    p.set_defaults(func=_evaluate)


def _evaluate_fields(args: argparse.Namespace) -> int:
    import json
    import os

    from recognizer.data.labelled_fields import labelled_rows
    from recognizer.fields import read_fields
    from recognizer.predict import load
    from recognizer.reader.codec import digits_of
    from recognizer.training.field_scores import score_fields

    model = load(args.checkpoint)
    rows = labelled_rows(args.fields, args.fields_limit)
    print(rows.report.summary())
    if not rows.ids:
        raise DataError(f"no usable labelled fields under {args.fields}")
    results = []
    for at in range(0, len(rows.images), 256):
        results += read_fields(model, rows.images[at:at + 256], reader=args.field_reader)
    scores = score_fields(results, [digits_of(t) for t in rows.labels])
    scores.update(checkpoint=model.meta.get("uri"), version=model.version, reader=args.field_reader,
                  data=rows.report.to_meta())
    os.makedirs(args.report, exist_ok=True)
    path = os.path.join(args.report, "fields.json")
    with open(path, "w") as f:
        json.dump(scores, f, indent=2)
    print(f"model {model.version}, {args.field_reader} reader: {scores['exact']:.2%} ± "
          f"{scores['plus_minus']:.1%} exact of {scores['fields']:,} fields, character error rate "
          f"{scores['char_error_rate']:.2%}; accepted at 1% error {scores['accepted_at_1%']:.1%}, "
          f"at 0.5% {scores['accepted_at_0.5%']:.1%}")
    print(f"  {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.fields:
        return _evaluate_fields(args)
    from recognizer import data
    from recognizer.predict import load
    from recognizer.training.embedding import tsne_maps
    from recognizer.training.evaluate import evaluate
    from recognizer.training.report import write_report
    from recognizer.training.summary import summarize

    model = load(args.checkpoint)
    test = data.load(settings.data_dir(args.data), "test")
    result = evaluate(model, test)
    summary = summarize(model.model, model.meta["model"])
    maps = tsne_maps(model.model, test, sample=args.tsne_sample) if args.tsne_sample else None
    paths = write_report(args.report, result, model.meta, summary, maps)
    print(summary.text())
    print(f"model {model.version}: accuracy {result.accuracy:.2%}, loss {result.loss:.4f} "
          f"on {len(test):,} test images")
    for p in paths:
        print(f"  {p}")
    return 0
