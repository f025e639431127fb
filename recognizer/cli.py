"""``digits predict``: recognise single digits in image files with a checkpoint."""

from __future__ import annotations

import argparse
import csv
import sys

from recognizer.checkpoint import CHECKPOINT_HELP
from recognizer.errors import DigitsError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command to the root ``digits`` parser."""
    p = sub.add_parser(
        "predict", help="recognise digits in image files",
        description="Print the label and confidence for each image (PNG, JPEG, BMP, TIFF: "
                    "a scan or a phone photo of one digit).")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--csv", metavar="FILE", help="also write an ImageId,Label CSV file")
    p.set_defaults(func=_predict)


def _read_files(paths: list[str]) -> list[bytes]:
    blobs: list[bytes] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                blobs.append(f.read())
        except OSError as exc:
            raise DigitsError(f"cannot read {path}: {exc.strerror}") from exc
    return blobs


def _predict(args: argparse.Namespace) -> int:
    from recognizer.predict import load

    model = load(args.checkpoint)
    result = model.predict(_read_files(args.images))
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
