"""Scoring a model on labelled digits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from recognizer.data import Digits
from recognizer.predict import Recognizer
from recognizer.settings import DIGITS


@dataclass
class Evaluation:
    """A checkpoint scored on labelled digits: accuracy, mean loss, every prediction."""

    accuracy: float
    loss: float
    labels: np.ndarray
    predicted: np.ndarray
    confidences: np.ndarray
    confusion: np.ndarray
    images: np.ndarray

    def misclassified(self) -> np.ndarray:
        """Indices of the digits read wrong."""
        return np.flatnonzero(self.labels != self.predicted)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = DIGITS) -> np.ndarray:
    """Counts of (true, predicted) pairs; rows are true labels."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(
        classes, classes)


def evaluate(model: Recognizer, digits: Digits, batch: int = 1000, progress: bool = True) -> Evaluation:
    """Accuracy, mean cross-entropy and the confusion matrix of model on digits."""
    probs = np.empty((len(digits), DIGITS), dtype=np.float32)
    for i in tqdm(range(0, len(digits), batch), desc="evaluating", unit="batch",
                  disable=not progress):
        probs[i:i + batch] = model.predict_tensors(digits.images[i:i + batch])
    predicted = probs.argmax(1)
    picked = probs[np.arange(len(digits)), digits.labels]
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    return Evaluation(
        accuracy=float((predicted == digits.labels).mean()), loss=loss,
        labels=digits.labels, predicted=predicted, confidences=probs.max(1),
        confusion=confusion_matrix(digits.labels, predicted), images=digits.images)
