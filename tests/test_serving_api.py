"""The typed HTTP API over real HTTP on Serve, serving the bundled model (which has a
learned reader, so every route answers): its OpenAPI schema, generated input driven
from that schema (Schemathesis), and the Python client."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import hypothesis
import numpy as np
import pytest
import requests
import schemathesis
from openapi_spec_validator import validate
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import recognizer
from formdigits.client import Client, ServiceError
from recognizer import bundled
from recognizer.data.forms import make_form_fields
from recognizer.fields import read_fields
from recognizer.results import FieldResult
from serving.config import ServeConfig
from serving.deploy import deploy
from serving.schemas import Digit, ErrorResponse, FieldBatchResponse, FieldReading

APP = "digits-api-test"
ROUTES = {("/v1/predict", "post"), ("/v1/predict/batch", "post"), ("/v1/read", "post"),
          ("/v1/read/batch", "post"), ("/v1/health", "get"), ("/v1/model", "get")}
#: Generated requests per route and phase: enough to reach every status, sized for CI.
EXAMPLES = 25


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def api_url(ray_cluster):
    """The application serving the bundled model on a free port; deleted after this module."""
    from ray import serve

    from devstack.services import free_port

    url = deploy(ServeConfig(checkpoint=bundled.folder(), max_body_bytes=256 * 1024, max_batch_images=64,
                             num_cpus=0.5), port=free_port(), app_name=APP)
    yield url
    serve.delete(APP)
    serve.shutdown()


@pytest.fixture(scope="module")
def openapi(api_url) -> dict:
    r = requests.get(api_url.removesuffix("/v1") + "/openapi.json", timeout=30)
    assert r.status_code == 200
    return r.json()


def test_the_schema_validates_and_types_every_route(openapi, api_url):
    validate(openapi)  # raises on an invalid OpenAPI 3 document
    docs = requests.get(api_url.removesuffix("/v1") + "/docs", timeout=30)
    assert docs.status_code == 200 and "openapi.json" in docs.text
    ops = {(path, method): op for path, item in openapi["paths"].items() for method, op in item.items()}
    assert set(ops) == ROUTES
    for (path, method), op in ops.items():
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"].startswith("#/components/schemas/"), (path, ok)
        assert op["responses"]["503"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"}
        if method == "post":
            assert {"400", "413", "415"} <= set(op["responses"]), path
            body = op["requestBody"]["content"]
            assert body and all("schema" in media for media in body.values()), path
    assert "image/png" in ops[("/v1/predict", "post")]["requestBody"]["content"]
    for batch_route in ("/v1/predict/batch", "/v1/read/batch"):
        batch = ops[(batch_route, "post")]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(batch)
    for read_route in ("/v1/read", "/v1/read/batch"):
        read_params = {p["name"]: p for p in ops[(read_route, "post")]["parameters"]}
        assert read_params["reader"]["schema"]["enum"] == ["segmenting", "learned"]
        assert read_params["length"]["schema"]["anyOf"][0] == {"type": "integer", "maximum": 64, "minimum": 1}
    for name in ("Digit", "BatchResponse", "FieldReading", "FieldBatchResponse", "Health", "ModelInfo"):
        assert openapi["components"]["schemas"][name]["examples"], name


@pytest.fixture(scope="module")
def api_schema(api_url):
    return schemathesis.openapi.from_url(api_url.removesuffix("/v1") + "/openapi.json")


def no_server_error_but_overload(ctx, response, case) -> None:
    """No 5xx but the documented 503 of overload, which must say when to retry."""
    if response.status_code == 503:
        assert "Retry-After" in response.headers, "a 503 without Retry-After"
        return
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"


# Requests that fit the schema, and, where the schema constrains the input (JSON bodies,
# query parameters), requests that break it; any bytes fit /v1/predict's binary body.
GENERATED = [(path, method, GenerationMode.POSITIVE) for path, method in sorted(ROUTES)] + [
    (path, "post", GenerationMode.NEGATIVE) for path in ("/v1/predict/batch", "/v1/read", "/v1/read/batch")]


@pytest.mark.parametrize("path, method, mode", GENERATED)
def test_generated_requests_get_documented_answers(api_schema, path, method, mode):
    operation = api_schema[path][method.upper()]

    @hypothesis.given(case=operation.as_strategy(mode))
    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck))
    def drive(case) -> None:
        case.call_and_validate(checks=[no_server_error_but_overload, status_code_conformance,
                                       content_type_conformance, response_schema_conformance])

    drive()


def test_client_reads_a_digit_a_batch_with_a_bad_image_and_a_field(api_url, mnist_test_raw, tmp_path):
    images, labels = mnist_test_raw
    model = recognizer.load(bundled.folder())
    path = tmp_path / "digit.png"
    path.write_bytes(_png(images[0]))
    with Client(api_url) as client:
        one = client.predict(path)
        assert isinstance(one, Digit) and one.label == model.predict([_png(images[0])]).labels[0]
        assert one.model_version == model.version

        batch = client.predict_batch([_png(images[1]), b"not an image", images[2]])
        first, bad, third = batch.results
        want = model.predict([_png(images[1]), _png(images[2])]).labels
        assert isinstance(first, Digit) and first.label == want[0]
        assert isinstance(bad, ErrorResponse) and bad.error.code == "not_an_image"
        assert isinstance(third, Digit) and third.label == want[1]

        fields = [f.image for f in make_form_fields(images, labels, 6, np.random.default_rng(3))]
        local = read_fields(model, [_png(f) for f in fields], reader="learned")
        at = next(i for i, r in enumerate(local) if isinstance(r, FieldResult))
        got = client.read(fields[at], reader="learned")
        assert isinstance(got, FieldReading)
        assert got.text == local[at].text and got.raw == local[at].raw
        assert got.confidence == pytest.approx(local[at].confidence, abs=1e-3)

        with pytest.raises(ServiceError) as err:
            client.read(np.zeros((40, 120), np.uint8))
        assert err.value.status == 422 and err.value.code in ("blank_image", "no_digits")

        # Many fields in one request read as the library reads them, a bad one in its place,
        # split into requests of the client's batch size and joined in order.
        client.batch_size = 4
        many = client.read_batch([*fields, b"not an image"], reader="learned")
        assert isinstance(many, FieldBatchResponse) and len(many.results) == len(fields) + 1
        for got, want in zip(many.results[:-1], local, strict=True):
            if isinstance(want, FieldResult):
                assert isinstance(got, FieldReading) and (got.text, got.raw) == (want.text, want.raw)
            else:
                assert isinstance(got, ErrorResponse) and got.error.code == want.code
        assert isinstance(many.results[-1], ErrorResponse) and many.results[-1].error.code == "not_an_image"
        assert client.health().status == "ok" and client.model().version == model.version


class _BusyThenServing(BaseHTTPRequestHandler):
    """Answers 503 with Retry-After (as Serve's proxy does when overloaded) to the first
    ``busy`` requests, then a digit."""

    busy = 2
    seen: list[float] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's handler name
        import time

        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append(time.monotonic())
        if len(self.seen) <= self.busy:
            self._answer(503, b'{"error": {"code": "unavailable", "message": "overloaded"}}',
                         {"Retry-After": "1"})  # whole seconds, as Serve rounds it
        else:
            self._answer(200, Digit(label=3, confidence=0.9, probabilities=[0.01] * 3 + [0.9] + [0.01] * 6,
                                    model_version="m").model_dump_json().encode())

    def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("retries, succeeds", [(3, True), (1, False)])
def test_client_retries_503_after_the_delay_asked(retries, succeeds):
    _BusyThenServing.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BusyThenServing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(f"http://127.0.0.1:{server.server_port}", retries=retries, backoff=0.01)
        if succeeds:
            assert client.predict(b"png bytes").label == 3
            assert len(_BusyThenServing.seen) == 3
            gaps = np.diff(_BusyThenServing.seen)
            assert (gaps >= 0.9).all(), gaps  # Retry-After honoured, not the shorter back-off
        else:
            with pytest.raises(ServiceError) as err:
                client.predict(b"png bytes")
            assert err.value.status == 503 and err.value.code == "unavailable"
    finally:
        server.shutdown()
