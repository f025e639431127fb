"""A model summary: each layer's output shape, parameters and multiply-adds per image.

Counted by running one 28x28 image through the model with forward hooks on its leaf
layers, so output shapes are the real ones. Multiply-adds (MACs) count the
convolutions and the linear layers, one per weight use: a convolution's output
elements times ``in_channels / groups x kernel area``, a linear layer's
``in_features x out_features`` per row. Batch norms are not counted (inference folds
them into the convolution before them, :mod:`recognizer.predict`), nor are
activations, pooling, bias additions or the input standardisation: comparisons and
additions, a small fraction of the total.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from recognizer.settings import IMAGE_SIZE

#: What the MAC count covers, as reports state it.
COUNTED = ("multiply-adds of convolutions and linear layers, per image; batch norms (folded "
           "into the convolutions at inference), activations, pooling and biases not counted")


@dataclass(frozen=True)
class Layer:
    """One leaf layer: its name in the model, type, output shape (no batch axis),
    parameters and multiply-adds per image."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    parameters: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """Every leaf layer, and the model's totals."""

    model: str
    layers: tuple[Layer, ...]
    parameters: int
    macs: int

    def to_json(self) -> dict:
        """For metrics.json: totals, what is counted, and the layers."""
        return {"model": self.model, "parameters": self.parameters, "macs_per_image": self.macs,
                "macs_counted": COUNTED,
                "layers": [{**asdict(layer), "output_shape": list(layer.output_shape)}
                           for layer in self.layers]}

    def text(self) -> str:
        """A table a person reads: one line per layer, then the totals."""
        rows = [("layer", "type", "output", "parameters", "multiply-adds")]
        rows += [(layer.name, layer.kind, "x".join(map(str, layer.output_shape)),
                  f"{layer.parameters:,}", f"{layer.macs:,}") for layer in self.layers]
        rows.append(("total", "", "", f"{self.parameters:,}", f"{self.macs:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [f"model {self.model}: {self.parameters:,} parameters, "
                 f"{self.macs / 1e6:.2f} M multiply-adds per image", ""]
        for i, row in enumerate(rows):
            cells = [row[j].ljust(widths[j]) if j < 3 else row[j].rjust(widths[j]) for j in range(5)]
            lines.append("  ".join(cells).rstrip())
            if i == 0 or i == len(rows) - 2:
                lines.append("  ".join("-" * w for w in widths))
        lines += ["", f"Counted: {COUNTED}."]
        return "\n".join(lines) + "\n"


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        k = "x".join(map(str, module.kernel_size))
        return f"Conv2d {k} {module.in_channels}->{module.out_channels}"
    if isinstance(module, nn.Linear):
        return f"Linear {module.in_features}->{module.out_features}"
    return type(module).__name__


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        return out[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return out[0].numel() * module.in_features
    return 0


def summarize(model: nn.Module, name: str) -> ModelSummary:
    """The summary of ``model`` (registry name ``name``) for one image."""
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    layers: list[Layer] = []

    def hook_for(layer_name: str):
        def hook(module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
            layers.append(Layer(layer_name, _kind(module), tuple(out.shape[1:]),
                                sum(p.numel() for p in module.parameters(recurse=False)),
                                _macs(module, out)))
        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in leaves]
    device = next(model.parameters()).device
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return ModelSummary(name, tuple(layers), sum(p.numel() for p in model.parameters()),
                        sum(layer.macs for layer in layers))
