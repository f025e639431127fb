"""A client of the ``digits serve`` HTTP API, typed by the API's own models.

>>> from formdigits.client import Client
>>> with Client("http://127.0.0.1:8000") as api:                       # doctest: +SKIP
...     api.predict("digit.png").label
...     [r.label if isinstance(r, Digit) else r.error.code
...      for r in api.predict_batch(["a.png", b"...", array]).results]
...     api.read("postcode.png", length=5).text

Images are paths, encoded bytes (PNG, JPEG, BMP, TIFF) or uint8 arrays (encoded as PNG
here). Answers are validated into :mod:`serving.schemas` models; an error answer raises
:class:`ServiceError` with the service's code and message. 503 answers (overload, no
replica ready) and refused connections are retried with exponential back-off, honouring
``Retry-After``, by urllib3's ``Retry``.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import requests
from pydantic import BaseModel, ValidationError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from recognizer.errors import DigitsError
from serving.schemas import (
    BatchResponse,
    Digit,
    ErrorResponse,
    FieldBatchResponse,
    FieldReading,
    Health,
    ModelInfo,
)

#: Where ``digits serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8000"

Image = str | os.PathLike | bytes | np.ndarray


class ServiceError(DigitsError):
    """The service answered with an error: its HTTP ``status``, ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def encode(image: Image) -> bytes:
    """An image's file bytes: a path read, bytes as they are, a uint8 array as PNG."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, np.ndarray):
        from PIL import Image as PILImage

        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"an image array must be uint8 HxW or HxWxC, got {image.dtype} "
                             f"with shape {image.shape}")
        buf = io.BytesIO()
        PILImage.fromarray(image).save(buf, "PNG")
        return buf.getvalue()
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as f:
            return f.read()
    raise TypeError(f"an image is a path, bytes or a uint8 array, not {type(image).__name__}")


class Client:
    """One connection pool to the service at ``url`` (its root, or its ``/v1``).

    ``retries``: how many times a 503 or a refused connection is retried, waiting
    ``backoff`` x 2^n seconds (or the answer's ``Retry-After``) in between; ``batch_size``:
    images per ``/v1/predict/batch`` or ``/v1/read/batch`` request (larger batches are
    split and joined).
    """

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 60.0, retries: int = 5,
                 backoff: float = 0.25, batch_size: int = 256):
        self.base = url.rstrip("/").removesuffix("/v1") + "/v1"
        self.timeout = timeout
        self.batch_size = batch_size
        retry = Retry(total=retries, connect=retries, read=0, status=retries, backoff_factor=backoff,
                      status_forcelist=(503,), allowed_methods=None, respect_retry_after_header=True,
                      raise_on_status=False)
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def predict(self, image: Image) -> Digit:
        """One image's digit (``POST /v1/predict``)."""
        return self._call(Digit, "POST", "/predict", data=encode(image),
                          headers={"Content-Type": "application/octet-stream"})

    def predict_batch(self, images: Sequence[Image] | np.ndarray) -> BatchResponse:
        """Many images' digits, in order; an image the service cannot read gets its
        :class:`~serving.schemas.ErrorResponse` in its place (``POST /v1/predict/batch``)."""
        return self._batches(BatchResponse, "/predict/batch", images, {})

    def read_batch(self, images: Sequence[Image] | np.ndarray, length: int | None = None,
                   reader: str | None = None) -> FieldBatchResponse:
        """Many fields' digits, in order, read together (``POST /v1/read/batch``): the
        fastest way to read fields over HTTP; a field the service cannot read gets its
        :class:`~serving.schemas.ErrorResponse` in its place. ``length`` and ``reader``
        as in :meth:`read`."""
        return self._batches(FieldBatchResponse, "/read/batch", images, _params(length, reader))

    def _batches(self, kind: type[BatchResponse] | type[FieldBatchResponse], path: str,
                 images: Sequence[Image] | np.ndarray, params: dict):
        encoded = [base64.b64encode(encode(image)).decode() for image in images]
        if not encoded:
            raise ValueError(f"{path.strip('/').replace('/', '_')} needs at least one image")
        parts = [self._call(kind, "POST", path, json={"images": encoded[at:at + self.batch_size]},
                            params=params)
                 for at in range(0, len(encoded), self.batch_size)]
        return kind(results=[r for p in parts for r in p.results], model_version=parts[-1].model_version)

    def read(self, image: Image, length: int | None = None, reader: str | None = None) -> FieldReading:
        """A whole field's digits (``POST /v1/read``); ``length`` when known, ``reader``
        ``learned`` or ``segmenting`` (the service's default when None)."""
        return self._call(FieldReading, "POST", "/read", data=encode(image), params=_params(length, reader),
                          headers={"Content-Type": "application/octet-stream"})

    def health(self) -> Health:
        """The deployment's state (``GET /v1/health``)."""
        return self._call(Health, "GET", "/health")

    def model(self) -> ModelInfo:
        """The checkpoint being served (``GET /v1/model``)."""
        return self._call(ModelInfo, "GET", "/model")

    def _call(self, kind: type[BaseModel], method: str, path: str, **kwargs: Any):
        r = self.session.request(method, self.base + path, timeout=self.timeout, **kwargs)
        if r.status_code != 200:
            raise _error(r)
        try:
            return kind.model_validate_json(r.content)
        except ValidationError as exc:
            raise ServiceError(r.status_code, "unexpected_answer",
                               f"{method} {path} answered outside its schema: {exc}") from None

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _params(length: int | None, reader: str | None) -> dict:
    """The field routes' query: the arguments given."""
    return {k: v for k, v in (("length", length), ("reader", reader)) if v is not None}


def _error(r: requests.Response) -> ServiceError:
    try:
        detail = ErrorResponse.model_validate_json(r.content).error
        return ServiceError(r.status_code, detail.code, detail.message)
    except ValidationError:
        return ServiceError(r.status_code, "http_error", r.text[:200] or r.reason)
