"""The evaluation report: PNG plots a person can open, and a metrics JSON."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from recognizer.settings import DIGITS  # noqa: E402
from recognizer.training.embedding import TsneMaps  # noqa: E402
from recognizer.training.evaluate import Evaluation  # noqa: E402
from recognizer.training.summary import ModelSummary  # noqa: E402


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
        # Epochs are whole numbers; training accuracy is on augmented digits and field
        # pieces (the not-a-digit class), so it sits below validation's.
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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


def plot_tsne(maps: TsneMaps, path: str) -> None:
    """The two t-SNE maps side by side, each digit a dot coloured by its true label,
    with the label written at the middle of its digits."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2))
    colours = plt.get_cmap("tab10")
    panels = ((maps.features, f"model's penultimate features ({maps.feature_dims}-d)"),
              (maps.pixels, "raw pixels (784-d)"))
    for ax, (xy, title) in zip(axes, panels, strict=True):
        for d in range(DIGITS):
            mine = xy[maps.labels == d]
            ax.scatter(mine[:, 0], mine[:, 1], s=4, color=colours(d), label=str(d), alpha=0.7)
            if len(mine):
                cx, cy = np.median(mine, axis=0)
                ax.text(cx, cy, str(d), fontsize=13, weight="bold", ha="center", va="center",
                        bbox={"boxstyle": "circle,pad=0.2", "fc": "white", "ec": colours(d), "alpha": 0.8})
        ax.set(title=f"t-SNE of {len(maps.labels):,} test digits: {title}", xticks=[], yticks=[])
    axes[1].legend(title="true label", markerscale=3, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(folder: str, result: Evaluation, meta: dict, summary: ModelSummary | None = None,
                 maps: TsneMaps | None = None) -> list[str]:
    """Write curves, confusion matrix, misclassified grid, the t-SNE maps and the model
    summary (when given) and metrics.json; return the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    if maps is not None:
        paths.append(os.path.join(folder, "tsne.png"))
        plot_tsne(maps, paths[-1])
    if summary is not None:
        paths.append(os.path.join(folder, "model_summary.txt"))
        with open(paths[-1], "w") as f:
            f.write(summary.text())
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
        **({"model_summary": summary.to_json()} if summary is not None else {}),
        **({"tsne": maps.to_json()} if maps is not None else {}),
    }
    paths.append(os.path.join(folder, "metrics.json"))
    with open(paths[-1], "w") as f:
        json.dump(metrics, f, indent=2)
    return paths
