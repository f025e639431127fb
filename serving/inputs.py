"""Turning HTTP requests into encoded images, with a typed 4xx error for every bad request.

Nothing here decodes pixels: that is :func:`recognizer.preprocess`. This module only
checks sizes, content types and envelopes (raw body, JSON with base64, multipart form);
the bodies are read here rather than by FastAPI so that an oversized one is refused while
it streams in, before it is held in memory. Their types are declared in
:mod:`serving.schemas`.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from recognizer.errors import DigitsError
from serving.schemas import IMAGE_TYPES, BatchRequest

if TYPE_CHECKING:
    from recognizer.predict import Recognizer


class RequestError(DigitsError):
    """A request the service cannot use; becomes ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower-cased ('' when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "bad_content_length",
                               f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise _too_large(size, limit)
    chunks: list[bytes] = []
    total = 0
    # Count while reading so a body without (or with a lying) Content-Length is cut off too.
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(total, limit, at_least=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> RequestError:
    return RequestError(413, "payload_too_large",
                        f"the request body is {'over ' if at_least else ''}{size:,} bytes; "
                        f"the limit is {limit:,} (send fewer images per request)")


def learned_reader(model: Recognizer, reader: str) -> bool:
    """Whether the ``reader`` asked for is the learned one, refusing (400) a ``model``
    that has none."""
    if reader != "learned":
        return False
    if model.reader is None:
        raise RequestError(400, "no_learned_reader", f"model {model.version} has no learned field "
                           "reader: read without ?reader=learned")
    return True


def single_image(content_type: str, body: bytes) -> bytes:
    """Check a raw single-image body and its content type."""
    if content_type and content_type not in IMAGE_TYPES:
        raise RequestError(
            415, "unsupported_media_type",
            f"Content-Type {content_type!r} is not accepted here; send the image bytes as the "
            "body with Content-Type image/png, image/jpeg, image/bmp, image/tiff or "
            "application/octet-stream (use /v1/predict/batch for JSON or forms)")
    if not body:
        raise RequestError(400, "empty_body", "the request body is empty; send one image's bytes")
    return body


async def batch_images(request: Request, content_type: str, body: bytes,
                       max_images: int) -> list[bytes]:
    """The encoded images of a batch request, in order (JSON base64 or multipart files)."""
    if content_type == "application/json":
        images = _from_json(body)
    elif content_type == "multipart/form-data":
        images = await _from_form(request, body, max_images)
    else:
        raise RequestError(
            415, "unsupported_media_type",
            f"Content-Type {content_type or '(none)'!r} is not accepted for batches; send "
            'application/json {"images": [base64, ...]} or multipart/form-data files')
    if not images:
        raise RequestError(400, "no_images", "the batch holds no images")
    if len(images) > max_images:
        raise RequestError(413, "too_many_images",
                           f"the batch holds {len(images):,} images; the limit is {max_images:,} "
                           "per request (split it)")
    return images


def _from_json(body: bytes) -> list[bytes]:
    try:
        doc = BatchRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise RequestError(400, "invalid_json", f"the body is not valid JSON: {first['msg']}") from None
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        raise RequestError(400, "invalid_request", 'expected a JSON object {"images": [base64 string, '
                           f"...]}}; {where}: {first['msg']}") from None
    return [_b64(text, i) for i, text in enumerate(doc.images)]


def _b64(text: str, index: int) -> bytes:
    # Accept data URLs ("data:image/png;base64,....") as browsers produce them.
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, "invalid_base64",
                           f"images[{index}] is not valid base64: {exc}") from None


async def _from_form(request: Request, body: bytes, max_images: int) -> list[bytes]:
    # The body was already read (and size-checked); replay it to Starlette's form parser.
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    try:
        form = await replay.form(max_files=max_images + 1, max_fields=max_images + 1)
    except Exception as exc:  # noqa: BLE001 - the parser raises several types for bad forms
        raise RequestError(400, "invalid_form",
                           f"the multipart form cannot be parsed: {exc}") from None
    try:
        return [await v.read() for _, v in form.multi_items() if isinstance(v, UploadFile)]
    finally:
        await form.close()
