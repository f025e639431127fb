"""The Serve application over real HTTP, on the session's Ray, with a trained checkpoint."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import threading
import time

import aiohttp
import numpy as np
import pytest
import requests
import yaml
from PIL import Image

import recognizer
from recognizer import checkpoint
from recognizer.results import FieldResult
from serving.config import ServeConfig
from serving.deploy import deploy

APP = "digits-test"
CONFIG_FILE = os.path.join(os.path.dirname(__file__), "..", "cluster", "serve_config.yaml")
PNG = {"Content-Type": "image/png"}

# Small limits so that batching, backpressure and the body limit are cheap to reach.
TEST_CFG = dict(max_batch_size=16, batch_wait_ms=20, max_ongoing_requests=16,
                max_queued_requests=24, max_body_bytes=256 * 1024, max_batch_images=64,
                num_cpus=0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def served(ray_cluster, trained_checkpoint):
    """The application on a free port; deleted (and Serve shut down) after this module."""
    from ray import serve

    url = deploy(ServeConfig(checkpoint=trained_checkpoint, **TEST_CFG), port=free_port(),
                 app_name=APP)
    yield {"url": url, "handle": serve.get_app_handle(APP), "checkpoint": trained_checkpoint}
    serve.delete(APP)
    serve.shutdown()


@pytest.fixture(scope="module")
def samples(mnist_test_raw) -> tuple[np.ndarray, list[bytes]]:
    images, _ = mnist_test_raw
    arrays = images[:24]
    return arrays, [png(a) for a in arrays]


@pytest.fixture(scope="module")
def reference(trained_checkpoint, samples):
    return recognizer.load(trained_checkpoint).predict(samples[1])


async def _post_many(url: str, bodies: list[bytes], headers: dict) -> list[tuple[int, dict | str]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(body: bytes) -> tuple[int, dict | str]:
            async with session.post(url, data=body, headers=headers) as r:
                if r.status == 503:  # Serve's own answer; keep what tells clients to back off
                    return r.status, {"retry_after": r.headers.get("Retry-After")}
                if r.content_type == "application/json":
                    return r.status, await r.json()
                return r.status, await r.text()
        return await asyncio.gather(*(one(b) for b in bodies))


def post_concurrently(url: str, bodies: list[bytes], headers: dict = PNG):
    return asyncio.run(_post_many(url, bodies, headers))


def test_single_predictions_match_the_library(served, samples, reference):
    for i, body in enumerate(samples[1][:8]):
        r = requests.post(f"{served['url']}/predict", data=body, headers=PNG, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["label"] == reference.labels[i]
        assert doc["confidence"] == pytest.approx(float(reference.confidences[i]), abs=1e-5)
        assert np.allclose(doc["probabilities"], reference.probabilities[i], atol=1e-5)
        assert doc["model_version"] == recognizer.load(served["checkpoint"]).version


def test_json_batch_matches_and_keeps_bad_images_in_place(served, samples, reference):
    encoded = [base64.b64encode(b).decode() for b in samples[1]]
    encoded.insert(3, base64.b64encode(b"not an image at all").decode())
    r = requests.post(f"{served['url']}/predict/batch", json={"images": encoded}, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(samples[1]) + 1
    assert results[3] == {"error": {"code": "not_an_image", "message": results[3]["error"]["message"]}}
    assert "PNG" in results[3]["error"]["message"]
    good = results[:3] + results[4:]
    assert [g["label"] for g in good] == reference.labels.tolist()
    assert np.allclose([g["confidence"] for g in good], reference.confidences, atol=1e-5)


def test_multipart_batch_matches(served, samples, reference):
    files = [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(samples[1][:6])]
    r = requests.post(f"{served['url']}/predict/batch", files=files, timeout=60)
    assert r.status_code == 200, r.text
    assert [x["label"] for x in r.json()["results"]] == reference.labels[:6].tolist()


def test_handle_takes_a_whole_uint8_batch(served, samples, reference):
    arrays = samples[0]
    out = served["handle"].predict_batch.remote(arrays).result(timeout_s=60)
    direct = recognizer.load(served["checkpoint"]).predict(arrays)
    assert out["labels"].tolist() == direct.labels.tolist()
    assert np.allclose(out["confidences"], direct.confidences, atol=1e-5)
    # Encoded images work too, and a bad one is reported in its place.
    out = served["handle"].predict_batch.remote([samples[1][0], b"junk"]).result(timeout_s=60)
    assert out["labels"].tolist() == [reference.labels[0], -1]
    assert out["errors"][0] is None and out["errors"][1]["code"] == "not_an_image"


def test_concurrent_requests_are_batched(served, samples, reference):
    before = len(served["handle"].stats.remote().result(timeout_s=30)["batch_sizes"])
    # As many at once as one replica takes (max_ongoing_requests): a burst waits in the
    # proxy's queue (max_queued_requests) until assigned, so it must fit there too.
    bodies = samples[1][:TEST_CFG["max_ongoing_requests"]]
    answers = post_concurrently(f"{served['url']}/predict", bodies)
    assert [s for s, _ in answers] == [200] * len(bodies)
    assert [d["label"] for _, d in answers] == reference.labels[:len(bodies)].tolist()
    stats = served["handle"].stats.remote().result(timeout_s=30)
    sizes = stats["batch_sizes"][before:]
    assert sum(sizes) == len(bodies)
    assert max(sizes) > 1, f"no request was batched with another: {sizes}"
    assert max(sizes) <= TEST_CFG["max_batch_size"]


@pytest.mark.parametrize("path, kwargs, status, code", [
    ("predict", dict(data=b"definitely not an image", headers=PNG), 422, "not_an_image"),
    ("predict", dict(data=png(np.full((28, 28), 255, np.uint8)), headers=PNG), 422, "blank_image"),
    ("predict", dict(data=b"", headers=PNG), 400, "empty_body"),
    ("predict", dict(data=b"hello", headers={"Content-Type": "text/plain"}), 415,
     "unsupported_media_type"),
    ("predict", dict(data=b"\x89PNG" + b"0" * 300_000, headers=PNG), 413, "payload_too_large"),
    ("predict/batch", dict(data=b"{not json", headers={"Content-Type": "application/json"}), 400,
     "invalid_json"),
    ("predict/batch", dict(json={"images": ["%%% not base64 %%%"]}), 400, "invalid_base64"),
    ("predict/batch", dict(json={"pictures": []}), 400, "invalid_request"),
    ("predict/batch", dict(json={"images": []}), 400, "no_images"),
    ("predict/batch", dict(json={"images": ["AAAA"] * 65}), 413, "too_many_images"),
    ("predict/batch", dict(data=b"x", headers={"Content-Type": "image/png"}), 415,
     "unsupported_media_type"),
    ("predict/batch", dict(data=b"--x\r\nbroken", headers={
        "Content-Type": "multipart/form-data"}), 400, "invalid_form"),
    ("predict/batch", dict(data={"field": "no files"}, files=[]), 415, "unsupported_media_type"),
    ("predict/batch", dict(files=[("note", (None, "text only"))]), 400, "no_images"),
])
def test_bad_requests_get_a_4xx_with_a_reason(served, path, kwargs, status, code):
    r = requests.post(f"{served['url']}/{path}", timeout=30, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert len(err["message"]) > 10


def test_chunked_body_over_the_limit_is_refused(served):
    def chunks():
        for _ in range(40):
            yield b"\0" * 10_000  # 400 kB without a Content-Length

    r = requests.post(f"{served['url']}/predict", data=chunks(), headers=PNG, timeout=30)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


def test_unknown_path_and_method(served):
    r = requests.get(f"{served['url']}/nothing", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = requests.get(f"{served['url']}/predict", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_health_and_model(served):
    health = requests.get(f"{served['url']}/health", timeout=10).json()
    meta = recognizer.load(served["checkpoint"]).meta
    assert health == {"status": "ok", "model_version": meta["version"], "deployment": "HEALTHY",
                      "replicas": {"RUNNING": 1}}
    model = requests.get(f"{served['url']}/model", timeout=10).json()
    assert model["name"] == meta["model"] and model["version"] == meta["version"]
    assert model["accuracy"] == pytest.approx(meta["accuracy"])


def _scrape_until(port: int, wanted: list[str], timeout_s: float = 60.0) -> str:
    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except requests.RequestException:
            text = ""
        if all(w in text for w in wanted):
            return text
        time.sleep(1)
    missing = [w for w in wanted if w not in text]
    raise AssertionError(f"metrics never showed {missing} within {timeout_s}s")


def test_application_metrics_reach_ray_metrics_export(served, ray_cluster):
    # Requests and an error this module has certainly made by now (and one more of each).
    requests.post(f"{served['url']}/predict", data=b"junk", headers=PNG, timeout=30)
    port = ray_cluster.nodes()[0]["MetricsExportPort"]
    text = _scrape_until(port, ["ray_digits_requests_total{", "ray_digits_errors_total{",
                                "ray_digits_batch_size_bucket{", "ray_digits_request_latency_ms_bucket{",
                                "ray_serve_deployment_request_counter_total{"])
    series = [line for line in text.splitlines() if line.startswith("ray_digits_")]
    assert any('endpoint="predict"' in s and 'status="200"' in s and f'application="{APP}"' in s
               for s in series if s.startswith("ray_digits_requests_total"))
    assert any('code="not_an_image"' in s for s in series if s.startswith("ray_digits_errors_total"))


def test_overload_is_answered_503_then_service_recovers(served, samples):
    # Far more concurrent requests than max_ongoing_requests + max_queued_requests (40).
    bodies = [samples[1][i % len(samples[1])] for i in range(300)]
    answers = post_concurrently(f"{served['url']}/predict", bodies)
    statuses = [s for s, _ in answers]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) > 0, "no request was rejected"
    assert all(body["retry_after"] == "1" for status, body in answers if status == 503)
    assert statuses.count(200) >= TEST_CFG["max_ongoing_requests"]
    # The replica stayed healthy and answers normally again.
    assert requests.get(f"{served['url']}/health", timeout=10).status_code == 200
    r = requests.post(f"{served['url']}/predict", data=samples[1][0], headers=PNG, timeout=30)
    assert r.status_code == 200


def _perturbed_copy(src: str, dst: str) -> str:
    """Same architecture, slightly different weights: a new model version."""
    model, meta = checkpoint.load(src)
    with __import__("torch").no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    meta = {k: v for k, v in meta.items() if k not in ("uri", "version")}
    checkpoint.save(dst, model, meta)
    return recognizer.load(dst).version


def test_rolling_out_a_new_checkpoint_drops_no_requests(served, samples, tmp_path):
    old = recognizer.load(served["checkpoint"]).version
    new = _perturbed_copy(served["checkpoint"], str(tmp_path / "v2"))
    assert new != old
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def traffic():
        with requests.Session() as s:
            while not stop.is_set() and len(seen) < 5000:
                r = s.post(f"{served['url']}/predict", data=samples[1][1], headers=PNG, timeout=30)
                seen.append((r.status_code, r.json().get("model_version")))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        deploy(ServeConfig(checkpoint=str(tmp_path / "v2"), **TEST_CFG), app_name=APP)
        # Keep sending until the new model answers a few times.
        for _ in range(600):
            if sum(v == new for _, v in seen) >= 5:
                break
            stop.wait(0.05)
    finally:
        stop.set()
        worker.join(60)
    assert {s for s, _ in seen} == {200}
    versions = [v for _, v in seen]
    assert versions[0] == old and versions[-1] == new
    # One switch: once the new model answered, the old one never did again.
    assert versions[versions.index(new):] == [new] * (len(versions) - versions.index(new))
    health = requests.get(f"{served['url']}/health", timeout=10).json()
    assert health["model_version"] == new


def test_cli_flags_become_a_validated_config():
    from formdigits.cli import build_parser
    from recognizer.errors import ConfigError
    from serving.cli import config_from_args

    args = build_parser().parse_args(["serve", "--checkpoint", "ckpt", "--autoscale", "1:3",
                                      "--max-batch-size", "64", "--batch-wait-ms", "3", "--gpu"])
    cfg = config_from_args(args)
    opts = cfg.deployment_options()
    assert opts["autoscaling_config"]["min_replicas"] == 1
    assert opts["autoscaling_config"]["max_replicas"] == 3
    assert opts["max_ongoing_requests"] >= 64  # room for a full batch
    assert opts["ray_actor_options"]["num_gpus"] == 1
    assert opts["user_config"] == {"checkpoint": "ckpt", "max_batch_size": 64, "batch_wait_ms": 3.0}
    with pytest.raises(ConfigError, match="MIN:MAX"):
        config_from_args(build_parser().parse_args(["serve", "--checkpoint", "c", "--autoscale", "4"]))
    with pytest.raises(ConfigError, match="unknown serving setting"):
        ServeConfig.from_args({"checkpoint": "c", "max_batch": 3})
    assert ServeConfig.from_args({"checkpoint": "c", "max_batch_size": "8"}).max_batch_size == 8


def test_config_file_deploys_the_same_application(served, samples, trained_checkpoint):
    """cluster/serve_config.yaml as `serve deploy` applies it (through the controller)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    with open(CONFIG_FILE) as f:
        doc = yaml.safe_load(f)
    app = doc["applications"][0]
    assert app["import_path"] == "serving.app:build_app"
    ServeConfig.from_args(app["args"])  # every key is a known setting
    # Same app, renamed and moved beside the test app, with a local checkpoint.
    app.update(name="digits-config", route_prefix="/config")
    app["args"].update(checkpoint=trained_checkpoint, num_cpus=0.5)
    config = ServeDeploySchema.model_validate({"applications": [app]})
    client = _get_global_client()
    try:
        client.deploy_apps(config, _blocking=True)
        base = served["url"].removesuffix("/v1")
        r = requests.post(f"{base}/config/v1/predict", data=samples[1][0], headers=PNG, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["label"] == recognizer.load(trained_checkpoint).predict(samples[1][:1]).labels[0]
    finally:
        client.delete_apps(["digits-config"], blocking=True)


def test_read_returns_the_field_string(served, mnist_test_raw):
    from recognizer.data.synth_fields import make_fields
    from recognizer.fields import read_field

    images, labels = mnist_test_raw
    fields, texts = make_fields(images, labels, 5, 3, np.random.default_rng(11), touching_prob=0.0)
    # Whichever checkpoint is served now (an earlier test may have rolled out another).
    current = requests.get(f"{served['url']}/model", timeout=10).json()["checkpoint"]
    before = served["handle"].stats.remote().result(timeout_s=30)
    model = recognizer.load(current)
    for field in fields:
        # Free length: whatever the reader makes of it, served and in-process agree.
        r = requests.post(f"{served['url']}/read", data=png(field), headers=PNG, timeout=30)
        assert r.status_code == 200, r.text
        doc = r.json()
        expected = read_field(model, png(field))
        assert doc["text"] == expected.text and doc["raw"] == expected.raw
        assert doc["confidences"] == pytest.approx(list(expected.confidences), abs=1e-5)
        assert doc["model_version"] == model.version
        # Known length (?length=5): exactly five digits, as in-process.
        r = requests.post(f"{served['url']}/read?length=5", data=png(field), headers=PNG, timeout=30)
        assert r.status_code == 200, r.text
        expected = read_field(model, png(field), None, 5)
        assert r.json()["text"] == expected.text and len(expected.text) == 5
    assert sum(requests.post(f"{served['url']}/read", data=png(f), headers=PNG, timeout=30).json()["text"]
               == t for f, t in zip(fields, texts, strict=True)) >= 2
    # The pieces went through the batching queue (and its inference metrics), one batch
    # per read at least when reads come one at a time.
    after = served["handle"].stats.remote().result(timeout_s=30)
    reads = after["batched_reads"] - before["batched_reads"]
    assert reads == 3 * len(fields)
    assert 0 < after["read_batches"] - before["read_batches"] <= reads
    blank = requests.post(f"{served['url']}/read", data=png(np.full((40, 200), 250, np.uint8)),
                          headers=PNG, timeout=30)
    assert blank.status_code == 422 and blank.json()["error"]["code"] == "blank_image"
    lines_only = np.full((60, 220), 235, np.uint8)
    lines_only[[15, 45], :] = 40  # ruling lines with nothing written on them
    nothing = requests.post(f"{served['url']}/read", data=png(lines_only), headers=PNG, timeout=30)
    assert nothing.status_code == 422 and nothing.json()["error"]["code"] == "no_digits"
    known = requests.post(f"{served['url']}/read?length=5", data=png(fields[0]), headers=PNG, timeout=30)
    assert known.status_code == 200 and len(known.json()["text"]) == 5
    bad = requests.post(f"{served['url']}/read?length=five", data=png(fields[0]), headers=PNG, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_length"


def test_the_learned_reader_answers_read_as_in_process(served, mnist_test_raw):
    from recognizer import bundled
    from recognizer.data.forms import make_form_fields
    from recognizer.fields import read_fields

    images, labels = mnist_test_raw
    forms = make_form_fields(images, labels, 8, np.random.default_rng(21))
    deploy(ServeConfig(checkpoint=bundled.folder(), **TEST_CFG), app_name=APP)
    model = recognizer.load(bundled.folder())
    assert model.reader is not None
    before = served["handle"].stats.remote().result(timeout_s=30)
    bodies = [png(f.image) for f in forms]
    answers = post_concurrently(f"{served['url']}/read?reader=learned", bodies)
    expected = read_fields(model, bodies, reader="learned")
    for (status, doc), want in zip(answers, expected, strict=True):
        if isinstance(want, FieldResult):
            assert status == 200 and doc["text"] == want.text and doc["raw"] == want.raw
            # Batches of other sizes round differently in the convolutions; the sequence
            # probability multiplies 48 columns of them.
            assert doc["confidence"] == pytest.approx(want.confidence, abs=1e-3)
            assert doc["model_version"] == model.version
        else:
            assert status == 422 and doc["error"]["code"] == want.code
    after = served["handle"].stats.remote().result(timeout_s=30)
    assert after["batched_reads"] - before["batched_reads"] == len(forms)  # one canvas per read
    assert after["read_batches"] - before["read_batches"] < len(forms)  # concurrent reads shared batches
    garbage = requests.post(f"{served['url']}/read?reader=learned", data=b"not an image", headers=PNG,
                            timeout=30)
    assert garbage.status_code == 422 and garbage.json()["error"]["code"] == "not_an_image"
    unknown = requests.post(f"{served['url']}/read?reader=oracle", data=bodies[0], headers=PNG, timeout=30)
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "invalid_reader"
