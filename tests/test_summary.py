"""The model summary counts what it says: parameters, output shapes, multiply-adds."""

from __future__ import annotations

from recognizer.models import build
from recognizer.training.summary import summarize


def test_seed_cnn_multiply_adds_by_hand():
    summary = summarize(build("seed-cnn"), "seed-cnn")
    by_kind = {layer.kind: layer for layer in summary.layers}
    # conv 3x3 1->32 on 28x28 (26x26 out), conv 3x3 32->64 (24x24 out), dense 9216->256->10.
    assert by_kind["Conv2d 3x3 1->32"].output_shape == (32, 26, 26)
    assert by_kind["Conv2d 3x3 1->32"].macs == 32 * 26 * 26 * 1 * 9
    assert by_kind["Conv2d 3x3 32->64"].macs == 64 * 24 * 24 * 32 * 9
    assert by_kind["Linear 9216->256"].macs == 9216 * 256
    assert summary.macs == 32 * 26 * 26 * 9 + 64 * 24 * 24 * 32 * 9 + 9216 * 256 + 256 * 10
    assert summary.parameters == sum(p.numel() for p in build("seed-cnn").parameters())


def test_summary_leaves_the_model_in_its_mode():
    model = build("best", 11)
    model.train()
    summary = summarize(model, "best")
    assert model.training
    assert summary.layers[-1].output_shape == (11,)
    assert summary.to_json()["macs_per_image"] == summary.macs
