"""t-SNE maps of the test digits: what the model sees, beside what the pixels alone show.

A sample of the test digits is embedded in two dimensions by scikit-learn's ``TSNE``
twice: from the model's penultimate features (the input of its last linear layer)
and from the raw pixels, each first reduced to 50 dimensions by PCA when wider (as is
usual before t-SNE on images: it keeps the neighbour search fast). Digits that form
clean, separate islands in the first map and overlap in the second are what the model
learned beyond the pixels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from recognizer.data import Digits
from recognizer.errors import ConfigError

#: Digits in the maps, and t-SNE's iterations (250 of them early exaggeration): about
#: three seconds a map on one core of this 2-core machine.
SAMPLE, ITERATIONS = 2000, 500
#: Dimensions wider inputs are reduced to before t-SNE.
PIXEL_COMPONENTS = 50
#: Neighbours in a map whose labels say how well it keeps the digits apart.
NEIGHBOURS = 10


@dataclass(frozen=True)
class TsneMaps:
    """Two 2-D maps of the same sampled digits, and their true labels."""

    labels: np.ndarray
    features: np.ndarray
    pixels: np.ndarray
    feature_dims: int
    seconds: float

    def neighbour_agreement(self, k: int = NEIGHBOURS) -> dict[str, float]:
        """Per map, the share of each digit's ``k`` nearest neighbours in the map that
        carry its label: how cleanly the map keeps the digits apart (1 is perfectly)."""
        from sklearn.neighbors import NearestNeighbors

        out = {}
        for name, xy in (("features", self.features), ("pixels", self.pixels)):
            _, idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
            out[name] = round(float((self.labels[idx[:, 1:]] == self.labels[:, None]).mean()), 4)
        return out

    def to_json(self) -> dict:
        """For metrics.json: the sample, the time taken and how separated each map is."""
        return {"digits": int(len(self.labels)), "iterations": ITERATIONS,
                "seconds": round(self.seconds, 1),
                f"neighbour_agreement_{NEIGHBOURS}": self.neighbour_agreement()}


def penultimate_features(model: nn.Module, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The input of ``model``'s last linear layer for (N, 28, 28) preprocessed images."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("the model has no linear layer to take penultimate features from")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = torch.from_numpy(np.asarray(images[i:i + batch], dtype=np.float32))
                model(x.unsqueeze(1).to(device))
    finally:
        handle.remove()
    return torch.cat(captured).flatten(1).float().cpu().numpy()


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    # One thread: OpenMP's threads spin-wait for each other, and on a shared 2-core
    # machine that made t-SNE four times slower than one thread (measured).
    with threadpool_limits(1):
        return TSNE(2, init="pca", learning_rate="auto", max_iter=ITERATIONS, random_state=seed,
                    n_jobs=1).fit_transform(x).astype(np.float32)


def tsne_maps(model: nn.Module, digits: Digits, sample: int = SAMPLE, seed: int = 0,
              progress: bool = True) -> TsneMaps:
    """Both maps of ``sample`` digits drawn at random from ``digits``; a progress line
    per map."""
    from sklearn.decomposition import PCA

    start = time.perf_counter()
    n = min(sample, len(digits))
    pick = np.sort(np.random.default_rng(seed).choice(len(digits), n, replace=False))
    images = digits.images[pick]
    features = penultimate_features(model, images)
    maps = []
    for what, x in (("the model's penultimate features", features),
                    ("the raw pixels", images.reshape(n, -1))):
        t0 = time.perf_counter()
        if progress:
            print(f"t-SNE of {n:,} test digits from {what} ({x.shape[1]}-d) ...", end=" ", flush=True)
        if x.shape[1] > PIXEL_COMPONENTS:
            x = PCA(PIXEL_COMPONENTS, random_state=seed).fit_transform(x)
        maps.append(_tsne(x, seed))
        if progress:
            print(f"{time.perf_counter() - t0:.1f} s", flush=True)
    return TsneMaps(digits.labels[pick], maps[0], maps[1], features.shape[1],
                    time.perf_counter() - start)
