"""The ``digits`` command: one entry point, a subcommand per stage.

Each stage owns its subcommands (``add_parsers``): ``predict`` (:mod:`recognizer.cli`),
``train`` and ``evaluate`` (:mod:`recognizer.training.cli`), ``serve``
(:mod:`serving.cli`), ``job`` and ``shards`` (:mod:`jobs.cli`). This module holds the
root parser and the error handling that turns typed errors into one clear line.
"""

from __future__ import annotations

import argparse
import os
import sys

import jobs.cli
import recognizer.cli
import recognizer.training.cli
import serving.cli
from recognizer.errors import DigitsError

#: The stages' command modules, in the order ``digits --help`` lists them.
STAGES = (recognizer.training.cli, recognizer.cli, serving.cli, jobs.cli)


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every stage's subcommands."""
    parser = argparse.ArgumentParser(
        prog="digits",
        description="formdigits: recognise handwritten digits on scanned forms with Ray. "
                    "S3 is configured by AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY and AWS_REGION; the Ray cluster by RAY_ADDRESS.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for stage in STAGES:
        stage.add_parsers(sub)
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
