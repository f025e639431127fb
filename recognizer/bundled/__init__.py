"""The default model, shipped in the package: the final checkpoint that ``digits train``
makes with its default settings (weights, splitter of touching digits, meta with the
command and code version that made it). Every command and :func:`recognizer.load` use
it when no checkpoint is given, and say so in one line on stderr.

Rebuilt with ``make bundled-model`` (:mod:`recognizer.training.bundle`) whenever
training changes.
"""

from __future__ import annotations

import json
import os
import sys

from recognizer.errors import CheckpointError

FOLDER = os.path.dirname(os.path.abspath(__file__))
#: meta.json key recording how the bundled model was made.
MADE_BY = "bundled"
_announced = False


def folder() -> str:
    """The bundled checkpoint's folder; a :class:`CheckpointError` when this
    installation lacks it."""
    if not os.path.exists(os.path.join(FOLDER, "meta.json")):
        raise CheckpointError(f"this installation has no bundled model (no meta.json in {FOLDER}): "
                              "pass --checkpoint, or rebuild it with `make bundled-model`")
    return FOLDER


def describe() -> str:
    """One line on the bundled model: its accuracy and what made it."""
    with open(os.path.join(folder(), "meta.json")) as f:
        meta = json.load(f)
    made = meta.get(MADE_BY, {})
    return (f"the bundled model ({meta['model']}, {meta['accuracy']:.2%} on the MNIST test digits, "
            f"made by `{made.get('command', 'digits train')}` at formdigits "
            f"{made.get('code_version', meta.get('code_version', '?'))})")


def default_checkpoint(uri: str | None) -> str:
    """``uri`` when one is given, else the bundled model's folder, announced once per
    process on stderr."""
    global _announced
    if uri:
        return uri
    found = folder()
    if not _announced:
        print(f"digits: no --checkpoint given: using {describe()}", file=sys.stderr)
        _announced = True
    return found
