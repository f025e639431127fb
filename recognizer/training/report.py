"""The evaluation report: PNG plots a person can open, and a metrics JSON."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recognizer.settings import DIGITS  # noqa: E402
from recognizer.training.evaluate import Evaluation  # noqa: E402


def plot_curves(history: list[dict], path: str) -> None:
    """Loss and accuracy per epoch, training vs validation."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["loss"] for h in history], "o-", label="training")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(epochs, [100 * h["accuracy"] for h in history], "o-", label="training")
    ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history], "o-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, path: str) -> None:
    """Heatmap of the confusion matrix with counts in each cell."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    shown = np.log1p(confusion)
    im = ax.imshow(shown, cmap="Blues")
    for t in range(DIGITS):
        for p in range(DIGITS):
            n = confusion[t, p]
            if n:
                ax.text(p, t, str(n), ha="center", va="center", fontsize=7,
                        color="white" if shown[t, p] > shown.max() / 2 else "black")
    ax.set(xticks=range(DIGITS), yticks=range(DIGITS), xlabel="predicted", ylabel="true",
           title="Confusion matrix (colour: log count)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_misclassified(result: Evaluation, path: str, limit: int = 64) -> None:
    """A grid of wrongly recognised digits, with true and predicted labels."""
    wrong = result.misclassified()[:limit]
    cols = 8
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong, strict=False):
        ax.imshow(result.images[i], cmap="gray_r")
        ax.set_title(f"true {result.labels[i]} → {result.predicted[i]}\n"
                     f"{result.confidences[i]:.0%}", fontsize=7)
    fig.suptitle(f"{len(result.misclassified())} misclassified (first {len(wrong)} shown)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: str, result: Evaluation, meta: dict) -> list[str]:
    """Write curves, confusion matrix, misclassified grid and metrics.json; return paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    history = meta.get("history") or []
    if history:
        paths.append(os.path.join(folder, "training_curves.png"))
        plot_curves(history, paths[-1])
    paths.append(os.path.join(folder, "confusion_matrix.png"))
    plot_confusion(result.confusion, paths[-1])
    paths.append(os.path.join(folder, "misclassified.png"))
    plot_misclassified(result, paths[-1])
    per_class = (np.diag(result.confusion) / result.confusion.sum(1).clip(min=1)).tolist()
    metrics = {
        "model": meta.get("model"), "model_version": meta.get("version"),
        "checkpoint": meta.get("uri"), "accuracy": result.accuracy, "loss": result.loss,
        "images": int(len(result.labels)), "misclassified": int(len(result.misclassified())),
        "per_class_accuracy": {str(d): a for d, a in enumerate(per_class)},
        "confusion_matrix": result.confusion.tolist(), "training": history,
    }
    paths.append(os.path.join(folder, "metrics.json"))
    with open(paths[-1], "w") as f:
        json.dump(metrics, f, indent=2)
    return paths
