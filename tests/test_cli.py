"""The `digits` command: help, predict, evaluate and clean one-line errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from formdigits.cli import build_parser, main
from recognizer.data import synth
from recognizer.runtime import storage


def test_help_lists_every_subcommand(digits_cli):
    out = digits_cli("--help")
    assert out.returncode == 0
    for command in ("train", "evaluate", "predict"):
        assert command in out.stdout
    sub = build_parser()._subparsers._group_actions[0].choices
    for name, parser in sub.items():
        text = parser.format_help()
        assert text.startswith("usage: digits " + name), name
        assert len(text.splitlines()) > 3, name


def test_predict_prints_labels_and_writes_csv(digits_cli, trained_checkpoint, mnist_test_raw, tmp_path):
    images, labels = mnist_test_raw
    rng = np.random.default_rng(3)
    paths = []
    for i in range(6):
        path = tmp_path / f"scan{i}.png"
        path.write_bytes(synth.variant(images[i], "coloured", rng))
        paths.append(str(path))
    out_csv = tmp_path / "labels.csv"
    out = digits_cli("predict", *paths, "--checkpoint", trained_checkpoint, "--csv", str(out_csv))
    assert out.returncode == 0, out.stderr
    printed = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
    assert [p[0] for p in printed] == paths
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["ImageId"] for r in rows] == [str(i) for i in range(1, 7)]
    assert sum(int(r["Label"]) == labels[i] for i, r in enumerate(rows)) >= 5


def test_predict_reports_bad_image_and_keeps_the_rest(digits_cli, trained_checkpoint, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.pad(np.full((20, 6), 255, np.uint8), 4)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = digits_cli("predict", str(good), str(bad), "--checkpoint", trained_checkpoint)
    assert out.returncode == 1
    assert str(good) in out.stdout
    assert "bad.png\terror:" in out.stderr and "Traceback" not in out.stderr


def test_evaluate_writes_report(trained_checkpoint, mnist_dir, tmp_path, capsys):
    import recognizer

    report = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", trained_checkpoint, "--data", mnist_dir,
                 "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out
    assert "t-SNE of 2,000 test digits from the model's penultimate features (64-d) ..." in out
    for name in ("training_curves.png", "confusion_matrix.png", "misclassified.png", "tsne.png"):
        with Image.open(report / name) as img:
            assert img.size[0] > 300 and img.size[1] > 200
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["images"] == 10_000
    assert sum(map(sum, metrics["confusion_matrix"])) == 10_000
    assert 0.9 < metrics["accuracy"] <= 1.0
    # The summary counts the model's own parameters, in the file, on the console and in
    # metrics.json alike.
    params = sum(p.numel() for p in recognizer.load(trained_checkpoint).model.parameters())
    summary = metrics["model_summary"]
    assert summary["parameters"] == params == sum(layer["parameters"] for layer in summary["layers"])
    text = (report / "model_summary.txt").read_text()
    assert f"{params:,} parameters" in text and f"{summary['macs_per_image']:,}" in text
    assert text.splitlines()[0] in out
    # The model's features keep the digits apart in their map better than the pixels do.
    agreement = metrics["tsne"]["neighbour_agreement_10"]
    assert metrics["tsne"]["digits"] == 2000
    assert agreement["features"] > max(0.9, agreement["pixels"])


@pytest.mark.parametrize("args, message", [
    (["predict", "x.png", "--checkpoint", "/nonexistent/ckpt"], "no checkpoint"),
    (["evaluate", "--checkpoint", "/nonexistent/ckpt"], "no checkpoint"),
    (["train", "--workers", "0"], "workers must be at least 1"),
    (["train", "--field-pieces", "-1"], "field_pieces must not be negative"),
    (["train", "--splitter-epochs", "-1"], "splitter_epochs must not be negative"),
    (["train", "--splitter-examples", "0"], "splitter_examples must be at least 1"),
])
def test_errors_are_one_clear_line(digits_cli, args, message, tmp_path):
    out = digits_cli(*args, cwd=tmp_path, env={"RAY_ADDRESS": ""})
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


#: Runs a `digits` command in a fresh interpreter and reports whether Ray was imported.
_RAY_PROBE = ("import sys; from formdigits.cli import main; rc = main(sys.argv[1:]); "
              "print('ray imported:', 'ray' in sys.modules); sys.exit(rc)")


@pytest.mark.parametrize("command", [
    ["job", "run", "--input", "s3://in/", "--output", "s3://out/"],
    ["serve"],
])
def test_a_bad_checkpoint_fails_before_ray_starts(command, tmp_path):
    out = subprocess.run([sys.executable, "-c", _RAY_PROBE, *command, "--checkpoint",
                          str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 2
    assert out.stderr.startswith(f"digits: error: no checkpoint at {tmp_path / 'nothing'}: ")
    assert len(out.stderr.strip().splitlines()) == 1
    # Never imported, so Ray cannot have started.
    assert "ray imported: False" in out.stdout


def test_job_submit_checks_an_s3_checkpoint_before_sending(s3_server, bucket, trained_checkpoint,
                                                            tmp_path):
    root = f"s3://{bucket}/runs"
    for run in ("a", "b"):
        for name in os.listdir(trained_checkpoint):
            storage.write_bytes(storage.join(root, run, "checkpoint_epoch0001", name),
                                (Path(trained_checkpoint) / name).read_bytes())
    # No cluster answers at that address: the checkpoint's error comes first.
    out = subprocess.run([sys.executable, "-c", _RAY_PROBE, "job", "submit", "--address",
                          "http://127.0.0.1:9", "--input", f"s3://{bucket}/in/", "--output",
                          f"s3://{bucket}/out/", "--checkpoint", root],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert f"{root} holds 2 training runs (a, b)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert "ray imported: False" in out.stdout


def test_predict_takes_the_output_root_of_digits_train(digits_cli, trained_checkpoint, mnist_test_raw,
                                                       tmp_path):
    root = Path(trained_checkpoint).parents[1]  # OUTPUT of `digits train`, one run inside
    png = tmp_path / "digit.png"
    Image.fromarray(mnist_test_raw[0][0]).save(png)
    out = digits_cli("predict", str(png), "--checkpoint", str(root))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\t")[1] == str(mnist_test_raw[1][0])
