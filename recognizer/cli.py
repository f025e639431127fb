"""The ``digits`` command: one entry point, a subcommand per task.

Each package adds its own subcommands (``serving.cli``, ``jobs.cli``); this module holds
the root parser, the recognizer's own commands (train, evaluate, predict) and the
error handling that turns typed errors into one clear line.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable

from recognizer import settings
from recognizer.errors import DigitsError
from recognizer.models import MODELS

Handler = Callable[[argparse.Namespace], int]


def _add_train(sub: argparse._SubParsersAction) -> None:
    from recognizer.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train a model with Ray Train (data-parallel)",
        description="Train a digit recognizer with Ray Train across N workers. Checkpoints "
                    "go to OUTPUT/NAME every epoch; rerunning the same command resumes "
                    "from the newest one.")
    p.add_argument("--data", help=f"MNIST IDX folder, Parquet shards (local or s3://), or "
                                  f"'download' (default: ${settings.DATA_ENV}, else download)")
    p.add_argument("--model", default=d.model, choices=list(MODELS), help="model to train")
    p.add_argument("--workers", type=int, default=d.workers, help="Ray Train workers")
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
    p.add_argument("--train-limit", type=int, help="use only the first N training images")
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
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from recognizer import ray_session
    from recognizer.train import TrainConfig, run

    cfg = TrainConfig(data=args.data, model=args.model, workers=args.workers,
                      use_gpu=args.gpu, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, output=args.output, name=args.name,
                      augment=not args.no_augment, max_failures=args.max_failures,
                      seed=args.seed, train_limit=args.train_limit,
                      field_pieces=args.field_pieces, splitter_examples=args.splitter_examples,
                      splitter_epochs=args.splitter_epochs)
    cfg.validate()
    ray_session.connect()
    result = run(cfg)
    m = result.metrics
    print(f"accuracy {m.get('val_accuracy', float('nan')):.2%} after {m.get('epoch')} epochs "
          f"({m.get('train_seconds', 0):.1f} s of training)")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a checkpoint on test data and write a report",
        description="Print accuracy and loss on the test split and write a report folder: "
                    "training curves, confusion matrix, misclassified digits, metrics.json.")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or run (local or s3://)")
    p.add_argument("--data", help=f"test data (default: ${settings.DATA_ENV}, else download)")
    p.add_argument("--report", default="report", help="folder for the report files")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from recognizer import data
    from recognizer.evaluate import evaluate
    from recognizer.predict import load
    from recognizer.report import write_report

    model = load(args.checkpoint)
    test = data.load(settings.data_dir(args.data), "test")
    result = evaluate(model, test)
    paths = write_report(args.report, result, model.meta)
    print(f"model {model.version}: accuracy {result.accuracy:.2%}, loss {result.loss:.4f} "
          f"on {len(test):,} test images")
    for p in paths:
        print(f"  {p}")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="recognise digits in image files",
        description="Print the label and confidence for each image (PNG, JPEG, BMP, TIFF: "
                    "a scan or a phone photo of one digit).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or run (local or s3://)")
    p.add_argument("--csv", metavar="FILE", help="also write an ImageId,Label CSV file")
    p.set_defaults(func=_predict)


def _predict(args: argparse.Namespace) -> int:
    from recognizer.predict import load

    model = load(args.checkpoint)
    blobs: list[bytes] = []
    for path in args.images:
        try:
            with open(path, "rb") as f:
                blobs.append(f.read())
        except OSError as exc:
            raise DigitsError(f"cannot read {path}: {exc.strerror}") from exc
    result = model.predict(blobs)
    failed = 0
    for path, label, conf, err in zip(args.images, result.labels, result.confidences,
                                      result.errors, strict=True):
        if err is not None:
            failed += 1
            print(f"{path}\terror: {err}", file=sys.stderr)
        else:
            print(f"{path}\t{label}\t{conf:.3f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageId", "Label"])
            for i, (label, err) in enumerate(zip(result.labels, result.errors, strict=True), 1):
                w.writerow([i, "" if err is not None else int(label)])
        print(f"wrote {args.csv}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every package's subcommands."""
    parser = argparse.ArgumentParser(
        prog="digits",
        description="formdigits: recognise handwritten digits on scanned forms with Ray. "
                    "S3 is configured by AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY and AWS_REGION; the Ray cluster by RAY_ADDRESS.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    for module in ("serving.cli", "jobs.cli"):
        try:
            mod = __import__(module, fromlist=["add_parsers"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``digits`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("digits: interrupted", file=sys.stderr)
        return 130
    except DigitsError as exc:
        if args.debug:
            raise
        print(f"digits: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
