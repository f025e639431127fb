"""formdigits recognizer: the core (image bytes -> model input -> labels), with field
reading (:mod:`recognizer.fields`), training (:mod:`recognizer.training`), data
(:mod:`recognizer.data`) and storage and the Ray session (:mod:`recognizer.runtime`)
in subpackages. See docs/architecture.md.

>>> import recognizer
>>> model = recognizer.load("s3://bucket/checkpoints/digits")      # doctest: +SKIP
>>> result = model.predict([open("digit.png", "rb").read()])       # doctest: +SKIP
>>> result.labels, result.confidences                              # doctest: +SKIP
"""

from importlib import import_module

from recognizer.errors import CheckpointError, DigitsError, ImageError

# torch is imported only when the model is needed: batch-job decoding tasks use
# preprocessing alone, and importing torch costs each of them seconds and memory.
_LAZY = {"Predictions": "recognizer.results", "Recognizer": "recognizer.predict",
         "load": "recognizer.predict", "preprocess": "recognizer.preprocess"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recognizer' has no attribute {name!r}")


__all__ = ["CheckpointError", "DigitsError", "ImageError", "Predictions", "Recognizer",
           "load", "preprocess"]
