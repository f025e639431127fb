"""The Ray Serve application: one deployment that decodes requests and batches the model.

HTTP (FastAPI, under ``/v1``):

* ``POST /v1/predict``: one image as the raw body -> label, confidence, probabilities.
* ``POST /v1/predict/batch``: JSON ``{"images": [base64...]}`` or multipart files ->
  one result per image, in order; a bad image gets ``{"error": ...}`` in its place.
* ``GET /v1/health``, ``GET /v1/model``.

Python (``DeploymentHandle``): ``predict_batch(images)`` takes a whole batch (uint8
array or encoded images) for Ray jobs; ``stats()`` reports recent batch sizes.

* ``POST /v1/read``: one field image (a row of digits) as the raw body, ``?length=N``
  when known -> the digit string, per-digit confidences and boxes.

Every route's request and answer types are in :mod:`serving.schemas` (the OpenAPI
schema). Concurrent single-image requests meet in ``@serve.batch``, are decoded and
normalised together and run through the model as one tensor; a bad image fails alone,
with its own error. A field is segmented (or fitted for the learned reader) on its own,
and the pieces, or canvases, of concurrent reads are batched the same way. Answers are
built from :mod:`recognizer.results`, as the library and batch jobs build theirs.
``serve deploy`` imports :func:`build_app`.
"""

import asyncio
import collections
import logging
import time
from typing import Annotated, Literal

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from recognizer import settings
from recognizer.errors import ImageError
from recognizer.fields import assemble_fields, prepare_fields, read_fields
from recognizer.fields.calibrate import Calibration
from recognizer.fields.read import reader_calibration
from recognizer.predict import Recognizer, load, select_device
from recognizer.preprocess import as_image_list, preprocess, preprocess_many
from recognizer.reader.read import Outputs
from recognizer.results import Failure, FieldResult, Predictions, digit_entry, field_entry
from serving import health, http_errors, inputs
from serving.config import APP_NAME, ServeConfig
from serving.metrics import MetricsMiddleware, app_metrics
from serving.schemas import (
    BatchResponse,
    Digit,
    FieldBatchResponse,
    FieldReading,
    Health,
    ModelInfo,
    batch_body,
    error_responses,
    image_body,
)

log = logging.getLogger("ray.serve")

#: Bodies up to this size are decoded with their dynamic batch; larger ones alone, in a
#: worker thread, so that a big scan does not hold up the batch.
INLINE_DECODE_BYTES = 64 * 1024

api = FastAPI(title="formdigits", version="1",
              description="Recognise handwritten digits on scanned forms: one digit per image "
                          "(`/v1/predict`, `/v1/predict/batch`) or a whole field of digits "
                          "(`/v1/read`, `/v1/read/batch`). Every error answers `{\"error\": {\"code\", "
                          "\"message\"}}` with the status listed per route.")

#: The field readers /v1/read offers (the typed ``reader`` query parameter).
FieldReaderName = Literal[settings.FIELD_READERS]
#: The query parameters of the field routes (``/v1/read``, ``/v1/read/batch``).
FieldLength = Annotated[int | None, Query(ge=1, le=64, description="Digits each field holds, when known")]
FieldReaderQuery = Annotated[FieldReaderName, Query(description="learned: the model's sequence reader; "
                                                    "segmenting: cut into digits")]


#: Dynamic batching as configured by default (``reconfigure`` applies a deployment's own).
_BATCHING = {"max_batch_size": ServeConfig.max_batch_size,
             "batch_wait_timeout_s": ServeConfig.batch_wait_ms / 1000}


http_errors.install(api)
api.add_middleware(MetricsMiddleware)


@serve.deployment
@serve.ingress(api)
class DigitRecognizer:
    """A replica: the loaded model, the batching queue and the HTTP routes."""

    def __init__(self, max_body_bytes: int, max_batch_images: int, torch_threads: int = 1,
                 use_gpu: bool = False):
        if torch_threads:
            # A replica shares the machine with the proxy and other replicas: one or two
            # intra-op threads per replica beat torch's default of one per core.
            torch.set_num_threads(torch_threads)
        self.device = select_device(use_gpu or None)
        self.max_body_bytes = max_body_bytes
        self.max_batch_images = max_batch_images
        self.recognizer: Recognizer | None = None
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)
        self.batches = 0  # dynamic batches run, and the requests in them, since start
        self.batched_requests = 0
        self.read_batches = 0  # batches of field reads' pieces, and the reads in them
        self.batched_reads = 0
        self.metrics = app_metrics()

    async def reconfigure(self, user_config: dict) -> None:
        """Load the checkpoint named in user_config (also on redeploys) and tune batching.

        The new model is loaded beside the old one, which keeps serving; the swap is one
        assignment, so in-flight batches finish on the model they started with.
        """
        new = await asyncio.to_thread(load, user_config["checkpoint"], self.device)
        size = settings.IMAGE_SIZE
        await asyncio.to_thread(new.predict_tensors, np.zeros((1, size, size), np.float32))  # warm
        old, self.recognizer = self.recognizer, new
        batch = int(user_config.get("max_batch_size", ServeConfig.max_batch_size))
        wait_s = float(user_config.get("batch_wait_ms", ServeConfig.batch_wait_ms)) / 1000
        for batched in (self._infer, self._infer_pieces, self._read_canvases):
            batched.set_max_batch_size(batch)
            batched.set_batch_wait_timeout_s(wait_s)
        log.info("serving model %s from %s (was %s)", new.version, new.meta.get("uri"),
                 old.version if old else None)

    def check_health(self) -> None:
        if self.recognizer is None:
            raise RuntimeError("no model loaded")

    def _forward(self, x: np.ndarray, path: str, not_a_digit: bool = False) -> tuple[np.ndarray, str]:
        """The model on a batch, timed and counted in the inference metrics."""
        rec = self.recognizer  # one model for the whole batch, even across a reload
        start = time.perf_counter()
        probs = rec.predict_tensors(x, not_a_digit)
        self.metrics.inference_latency_ms.observe((time.perf_counter() - start) * 1000,
                                                  tags={"path": path})
        self.metrics.batch_size.observe(len(x), tags={"path": path})
        return probs, rec.version

    @serve.batch(**_BATCHING)
    async def _infer(self, items: list[bytes | np.ndarray]) -> list[tuple[np.ndarray | ImageError, str]]:
        """Concurrent single-image requests as one batch: the encoded ones decoded and
        normalised together (several times cheaper per image than one by one), then one
        tensor through the model. Each gets its probabilities, or its own ImageError."""
        self.batch_sizes.append(len(items))
        self.batches += 1
        self.batched_requests += len(items)
        return await asyncio.to_thread(self._decode_and_forward, items)

    def _decode_and_forward(self, items: list[bytes | np.ndarray]) -> list[tuple]:
        encoded = [i for i, item in enumerate(items) if isinstance(item, bytes)]
        x = np.zeros((len(items), settings.IMAGE_SIZE, settings.IMAGE_SIZE), np.float32)
        errors: list[ImageError | None] = [None] * len(items)
        if encoded:
            x[encoded], decoded_errors = preprocess_many([items[i] for i in encoded])
            for i, error in zip(encoded, decoded_errors, strict=True):
                errors[i] = error
        for i, item in enumerate(items):
            if not isinstance(item, bytes):
                x[i] = item
        probs, version = self._forward_usable(x, errors, "dynamic")
        self._count_images(sum(e is None for e in errors), "predict")  # once a batch
        return [(probs[i] if errors[i] is None else errors[i], version) for i in range(len(items))]

    def _forward_usable(self, x: np.ndarray, errors: list[ImageError | None], path: str
                        ) -> tuple[np.ndarray, str]:
        """Digit probabilities of the inputs without an error (zeros for the others)."""
        ok = [i for i, error in enumerate(errors) if error is None]
        probs, version = np.zeros((len(x), settings.DIGITS), np.float32), self.recognizer.version
        if ok:
            probs[ok], version = self._forward(x[ok], path)
        return probs, version

    @serve.batch(**_BATCHING)
    async def _infer_pieces(self, stacks: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
        """The pieces of concurrent field reads, as one tensor through the model (with
        the not-a-digit column field reading weighs)."""
        self.read_batches += 1
        self.batched_reads += len(stacks)
        probs, version = await asyncio.to_thread(self._forward, np.concatenate(stacks), "read", True)
        out, at = [], 0
        for stack in stacks:
            out.append((probs[at:at + len(stack)], version))
            at += len(stack)
        return out

    def _read_forward(self, canvas: np.ndarray) -> tuple[Outputs, str]:
        """The learned reader on a batch of canvases, timed and counted."""
        rec = self.recognizer
        start = time.perf_counter()
        outputs = rec.read_tensors(canvas)
        self.metrics.inference_latency_ms.observe((time.perf_counter() - start) * 1000,
                                                  tags={"path": "read"})
        self.metrics.batch_size.observe(len(canvas), tags={"path": "read"})
        return outputs, rec.version

    @serve.batch(**_BATCHING)
    async def _read_canvases(self, canvases: list[np.ndarray]) -> list[tuple[Outputs, str]]:
        """Concurrent field reads of the learned reader, one canvas each, as one batch."""
        self.read_batches += 1
        self.batched_reads += len(canvases)
        outputs, version = await asyncio.to_thread(self._read_forward, np.stack(canvases))
        return [(outputs.rows(i, i + 1), version) for i in range(len(canvases))]

    async def _run_many(self, images: list[bytes | np.ndarray], path: str) -> tuple[Predictions, str]:
        def run() -> tuple[Predictions, str]:
            x, errors = preprocess_many(images)
            probs, version = self._forward_usable(x, errors, path)
            return Predictions.from_probabilities(probs, errors), version

        return await asyncio.to_thread(run)

    def _count_images(self, count: int, endpoint: str) -> None:
        # Ray's counters refuse an increment of 0 (a batch of bad images only).
        if count:
            self.metrics.images.inc(int(count), tags={"endpoint": endpoint})

    # ---- HTTP (no `from __future__ import annotations` in this module: Serve's ingress
    # rebuilds these signatures and FastAPI must see real Request classes) ----

    @api.post("/v1/predict", response_model=Digit, responses=error_responses(400, 413, 415, 422, 503),
              openapi_extra=image_body("One image file's bytes (one digit)"))
    async def predict(self, request: Request) -> JSONResponse:
        """One image as the raw body: its digit, confidence and probabilities."""
        body = await inputs.read_body(request, self.max_body_bytes)
        image = inputs.single_image(inputs.media_type(request), body)
        # Small bodies are decoded with the rest of their batch; a large scan on its own,
        # so that it does not hold up the batch it would join. An ImageError is a 422.
        item = image if len(image) <= INLINE_DECODE_BYTES else await asyncio.to_thread(preprocess, image)
        probs, version = await self._infer(item)
        if isinstance(probs, ImageError):
            raise probs
        return JSONResponse(digit_entry(probs, version))

    @api.post("/v1/predict/batch", response_model=BatchResponse,
              responses=error_responses(400, 413, 415, 503), openapi_extra=batch_body())
    async def predict_batch_http(self, request: Request) -> JSONResponse:
        """Many images (JSON base64 or multipart files); one result or error per image, in
        order: an image that cannot be read gets its error in its place."""
        body = await inputs.read_body(request, self.max_body_bytes)
        images = await inputs.batch_images(request, inputs.media_type(request), body,
                                           self.max_batch_images)
        preds, version = await self._run_many(images, "batch_request")
        for err in preds.errors:
            if err is not None:
                self.metrics.errors.inc(tags={"endpoint": "predict_batch", "code": err.code})
        self._count_images(preds.ok.sum(), "predict_batch")
        return JSONResponse({"results": [preds.entry(i, version) for i in range(len(preds))],
                             "model_version": version})

    @api.post("/v1/read", response_model=FieldReading, responses=error_responses(400, 413, 415, 422, 503),
              openapi_extra=image_body("One field image's bytes: a row of digits, e.g. a postal "
                                       "code, an amount or a ledger row number"))
    async def read(
        self, request: Request,
        length: FieldLength = None,
        reader: FieldReaderQuery = settings.DEFAULT_FIELD_READER,
    ) -> JSONResponse:
        """One field image (several digits in a row) as the raw body: its digit string,
        per-digit confidences and boxes."""
        body = await inputs.read_body(request, self.max_body_bytes)
        image = inputs.single_image(inputs.media_type(request), body)
        rec = self.recognizer
        if inputs.learned_reader(rec, reader):
            result, version = await self._read_learned(image, length, rec)
            self.metrics.images.inc(tags={"endpoint": "read"})
            return JSONResponse(field_entry(result, version))
        # Segmentation runs off the event loop; an ImageError (blank field, too many
        # components, bad bytes) becomes a 422. The pieces join the batching queue.
        plan = await asyncio.to_thread(prepare_fields, [image], None, length, rec.splitter)
        if isinstance(plan.entries[0], ImageError):
            raise plan.entries[0]
        if len(plan.inputs):
            probs, version = await self._infer_pieces(plan.inputs)
        else:  # only marks too small to be digits: nothing for the model
            probs, version = np.zeros((0, settings.DIGITS + 1), np.float32), rec.version
        [result] = await asyncio.to_thread(assemble_fields, plan, probs, None,
                                           Calibration.from_meta(rec.meta))
        if isinstance(result, ImageError):  # marks only, no digit among them
            raise result
        self.metrics.images.inc(tags={"endpoint": "read"})
        return JSONResponse(field_entry(result, version))

    @api.post("/v1/read/batch", response_model=FieldBatchResponse,
              responses=error_responses(400, 413, 415, 503), openapi_extra=batch_body("field images"))
    async def read_batch_http(
        self, request: Request,
        length: FieldLength = None,
        reader: FieldReaderQuery = settings.DEFAULT_FIELD_READER,
    ) -> JSONResponse:
        """Many field images (JSON base64 or multipart files), read together as the
        library reads them: one reading or error per field, in order, a field that cannot
        be read getting its error in its place."""
        body = await inputs.read_body(request, self.max_body_bytes)
        images = await inputs.batch_images(request, inputs.media_type(request), body,
                                           self.max_batch_images)
        rec = self.recognizer  # one model for the whole request, even across a reload
        inputs.learned_reader(rec, reader)
        results = await asyncio.to_thread(self._read_many, rec, images, length, reader)
        entries = []
        for result in results:
            if isinstance(result, FieldResult):
                entries.append(field_entry(result, rec.version))
            else:
                self.metrics.errors.inc(tags={"endpoint": "read_batch", "code": result.code})
                entries.append(Failure.of(result).to_json())
        self._count_images(sum(isinstance(r, FieldResult) for r in results), "read_batch")
        return JSONResponse({"results": entries, "model_version": rec.version})

    def _read_many(self, rec: Recognizer, images: list[bytes], length: int | None, reader: str) -> list:
        """A batch request's fields through ``read_fields`` (decoding included), timed and
        counted as one batch."""
        start = time.perf_counter()
        results = read_fields(rec, images, length=length, reader=reader)
        self.metrics.inference_latency_ms.observe((time.perf_counter() - start) * 1000,
                                                  tags={"path": "read_batch"})
        self.metrics.batch_size.observe(len(images), tags={"path": "read_batch"})
        return results

    async def _read_learned(self, image, length: int | None, rec: Recognizer):
        """One field through the learned reader: fitted off the event loop (an
        ImageError becomes a 422), its canvas joining the reader's batching queue."""
        plan = await asyncio.to_thread(prepare_fields, [image], None, length, None, None, True)
        if isinstance(plan.canvases.entries[0], ImageError):
            raise plan.canvases.entries[0]
        outputs, version = await self._read_canvases(plan.inputs[0])
        [result] = assemble_fields(plan, outputs, None, reader_calibration(rec.meta))
        if isinstance(result, ImageError):  # no digit read: lines, background, marks alone
            raise result
        return result, version

    @api.get("/v1/health", response_model=Health, responses=error_responses(503))
    async def health(self) -> JSONResponse:
        """This replica's model and the deployment's state (``status``: ``ok`` or
        ``degraded``), from Serve's controller: see :mod:`serving.health`."""
        state = await health.current_state()
        return JSONResponse(health.summary(self.recognizer.version, state))

    @api.get("/v1/model", response_model=ModelInfo, responses=error_responses(503))
    async def model(self) -> JSONResponse:
        """The checkpoint being served: its name, version, accuracy and origin."""
        meta = self.recognizer.meta
        return JSONResponse({
            "name": meta.get("model"), "version": meta.get("version"),
            "accuracy": meta.get("accuracy"), "epochs": meta.get("epochs"),
            "checkpoint": meta.get("uri"), "code_version": meta.get("code_version"),
        })

    # ---- Python (DeploymentHandle) ---------------------------------------------------

    async def predict_batch(self, images: np.ndarray | list) -> dict:
        """A whole batch from other Ray code: uint8 (N, H, W) array or encoded images.

        Returns ``{"labels": int64 array (-1 where an image failed), "confidences":
        float32 array, "errors": [None | {"code", "message"}], "model_version": str}``.
        """
        preds, version = await self._run_many(as_image_list(images), "handle")
        self._count_images(preds.ok.sum(), "handle")
        return {"labels": preds.labels, "confidences": preds.confidences.astype(np.float32),
                "errors": [None if e is None else Failure.of(e).to_dict() for e in preds.errors],
                "model_version": version}

    def stats(self) -> dict:
        """Recent dynamic batch sizes and the model being served (for tests and operators)."""
        return {"batch_sizes": list(self.batch_sizes), "batches": self.batches,
                "batched_requests": self.batched_requests, "read_batches": self.read_batches,
                "batched_reads": self.batched_reads, "model_version": self.recognizer.version,
                "max_batch_size": self._infer._get_max_batch_size(),
                "batch_wait_timeout_s": self._infer._get_batch_wait_timeout_s()}


def build(cfg: ServeConfig) -> serve.Application:
    """The bound application for a validated config."""
    cfg.validate()
    return DigitRecognizer.options(**cfg.deployment_options()).bind(**cfg.replica_settings())


def build_app(args: dict) -> serve.Application:
    """Application builder for ``serve deploy`` / ``serve run serving.app:build_app``.

    ``args`` holds :class:`~serving.config.ServeConfig` fields, e.g.
    ``{"checkpoint": "s3://models/digits", "max_batch_size": 32}``.
    """
    return build(ServeConfig.from_args(args))


def handle(app_name: str | None = None) -> DeploymentHandle:
    """A handle on the running recognizer, for batch jobs and other Ray code."""
    return serve.get_app_handle(app_name or APP_NAME)
