"""The bundled default model: what a new user gets with no checkpoint at all."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

import recognizer
from recognizer import bundled, checkpoint
from recognizer.errors import CheckpointError
from recognizer.training import bundle


def _meta() -> dict:
    with open(os.path.join(bundled.folder(), checkpoint.META_FILE)) as f:
        return json.load(f)


def test_predict_in_a_fresh_environment_needs_no_checkpoint(mnist_test_raw, tmp_path):
    images, labels = mnist_test_raw
    scan = tmp_path / "scan.png"
    Image.fromarray(255 - images[0]).save(scan)  # dark ink on white paper, as scanned
    # No data, no runs, no settings: a new home and an empty working folder.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "formdigits.cli", "predict", str(scan)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == str(labels[0]), out.stdout
    notice = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(notice) == 1 and "using the bundled model" in notice[0], out.stderr


def test_the_bundled_files_match_their_meta():
    meta = _meta()
    for name, key in ((checkpoint.MODEL_FILE, checkpoint.WEIGHTS_HASH),
                      (checkpoint.SPLITTER_FILE, checkpoint.SPLITTER_HASH),
                      (checkpoint.READER_FILE, checkpoint.READER_HASH)):
        with open(os.path.join(bundled.folder(), name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == meta[key], name
    made = meta[bundled.MADE_BY]
    assert made["command"].startswith("digits train") and made["code_version"]
    # The bundled recipe made it: `digits train`'s defaults, the reader trained longer.
    assert meta["recipe"] == bundle.bundled_recipe()
    assert made["command"].split()[2:6] == bundle.bundle_flags()
    assert "calibration" in meta and meta["reader"]["calibration"]


def test_the_bundled_model_reads_the_test_digits(mnist_test):
    model = recognizer.load()
    assert model.meta["uri"] == bundled.folder() and model.splitter is not None
    assert model.reader is not None
    acc = (model.predict_tensors(mnist_test.images).argmax(1) == mnist_test.labels).mean()
    # The default recipe trades a little MNIST for real forms (99.33% as bundled; issue 17
    # asked for 99.4%): the floor a rebuild must hold, and the meta must say the truth.
    assert acc >= 0.993, f"{acc:.2%}"
    assert acc == pytest.approx(model.meta["accuracy"], abs=1e-4)


def test_only_a_default_run_is_bundled(trained_checkpoint):
    # The session's checkpoint has a small recipe: refused, naming what differs.
    with pytest.raises(CheckpointError, match="not trained with the default recipe.*epochs"):
        bundle.bundle(trained_checkpoint, ["digits", "train"])


def test_a_png_through_the_library_with_no_checkpoint(mnist_test_raw):
    images, labels = mnist_test_raw
    buf = io.BytesIO()
    Image.fromarray(images[1]).save(buf, format="PNG")
    assert recognizer.load().predict([buf.getvalue()]).labels[0] == labels[1]
