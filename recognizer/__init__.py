"""formdigits recognizer: preprocessing, models, checkpoints and prediction.

>>> import recognizer
>>> model = recognizer.load("s3://bucket/checkpoints/digits")      # doctest: +SKIP
>>> result = model.predict([open("digit.png", "rb").read()])       # doctest: +SKIP
>>> result.labels, result.confidences                              # doctest: +SKIP
"""

from recognizer.errors import CheckpointError, DigitsError, ImageError
from recognizer.predict import Predictions, Recognizer, load
from recognizer.preprocess import preprocess

__all__ = ["CheckpointError", "DigitsError", "ImageError", "Predictions", "Recognizer",
           "load", "preprocess"]
