"""The HTTP API's types: pydantic models of every ``/v1`` request and answer, the one
error shape, and the OpenAPI declarations of the bodies FastAPI does not parse itself.

Only pydantic is imported here, so that clients (:mod:`formdigits.client`) share these
types without Ray or torch. The replica builds its answers as plain dicts from
:mod:`recognizer.results` and sends them without re-validating them (a per-request cost
on the hot path); the schema test drives a real server and checks that every answer
matches these models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Content types accepted for one raw image body (``/v1/predict``, ``/v1/read``).
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/x-ms-bmp", "image/tiff",
               "application/octet-stream")

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class ErrorDetail(BaseModel):
    """What went wrong: a stable machine-readable ``code`` and a message for people."""

    code: str = Field(description="Stable error code, e.g. not_an_image, payload_too_large")
    message: str = Field(description="What went wrong and what to do about it")


class ErrorResponse(BaseModel):
    """Every error answer, and every failed entry of a batch, has this shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"code": "not_an_image", "message": "the bytes are not an image PIL can "
                   "decode (PNG, JPEG, BMP, TIFF)"}}]})

    error: ErrorDetail


class Digit(BaseModel):
    """One image read as one digit."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"label": 7, "confidence": 0.998, "probabilities": [0.0002] * 7 + [0.998] + [0.0002] * 2,
         "model_version": "wide-46a5630d20dd-r54920849"}]})

    label: int = Field(ge=0, le=9, description="The most likely digit")
    confidence: Probability = Field(description="The model's probability for label")
    probabilities: list[Probability] = Field(min_length=10, max_length=10,
                                             description="One probability per digit, 0 to 9")
    model_version: str = Field(description="The checkpoint's version, e.g. wide-46a5630d20dd")


class BatchRequest(BaseModel):
    """A JSON batch: encoded image files as base64 (data URLs are accepted)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"images": ["iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAAA..."]}]})

    images: list[str] = Field(description="Base64 of each image file (PNG, JPEG, BMP, TIFF)")


class BatchResponse(BaseModel):
    """One entry per image, in request order: a digit, or that image's error."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"results": [Digit.model_config["json_schema_extra"]["examples"][0],
                     ErrorResponse.model_config["json_schema_extra"]["examples"][0]],
         "model_version": "wide-46a5630d20dd-r54920849"}]})

    results: list[Digit | ErrorResponse]
    model_version: str


class FieldReading(BaseModel):
    """A whole field (postal code, amount, row number) read as a string."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"text": "18014", "raw": "18.014", "confidences": [0.99, 0.98, 0.99, 0.97, 0.99],
         "confidence": 0.93, "boxes": [[2, 4, 20, 40], [22, 5, 40, 40], [50, 4, 68, 41],
                                       [70, 3, 88, 40], [90, 4, 108, 40]],
         "model_version": "wide-46a5630d20dd-r54920849"}]})

    text: str = Field(pattern=r"^[0-9]+$", description="The digits, left to right")
    raw: str = Field(description="The reading with separators and end marks in place")
    confidences: list[Probability] = Field(description="Probability of each digit of text")
    confidence: Probability = Field(description="Chance that text is right as a whole")
    boxes: list[tuple[int, int, int, int]] = Field(
        description="Each digit's (left, top, right, bottom) in input pixels")
    model_version: str


class FieldBatchResponse(BaseModel):
    """One entry per field image, in request order: its reading, or that image's error."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"results": [FieldReading.model_config["json_schema_extra"]["examples"][0],
                     {"error": {"code": "no_digits", "message": "no digits found: the reader read "
                                "no digit in the field"}}],
         "model_version": "wide-46a5630d20dd-r54920849"}]})

    results: list[FieldReading | ErrorResponse]
    model_version: str


class Health(BaseModel):
    """This replica's model and the deployment's state as Serve's controller sees it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"status": "ok", "model_version": "wide-46a5630d20dd-r54920849", "deployment": "HEALTHY",
         "replicas": {"RUNNING": 1}}]})

    status: Literal["ok", "degraded"]
    model_version: str
    deployment: str = Field(description="HEALTHY, UPDATING, UNHEALTHY ... or UNKNOWN")
    replicas: dict[str, int] = Field(description="Replicas by state (RUNNING, STARTING ...)")


class ModelInfo(BaseModel):
    """The checkpoint being served."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "wide", "version": "wide-46a5630d20dd-r54920849", "accuracy": 0.9938, "epochs": 12,
         "checkpoint": "recognizer/bundled", "code_version": "0.1.0+ge6a4d69"}]})

    name: str | None
    version: str | None
    accuracy: float | None
    epochs: int | None
    checkpoint: str | None
    code_version: str | None


#: What each error status means, for the routes' documentation.
_STATUS_TEXT = {
    400: "The request is malformed (empty body, bad JSON or base64, bad query parameter)",
    413: "The body, or the number of images in it, is over the service's limit",
    415: "The Content-Type is not one this route accepts",
    422: "The image is understood but unusable (not an image, blank, no digits ...)",
    503: "Overloaded or no replica ready: retry after the Retry-After header's seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """FastAPI ``responses=`` entries: each status answered with :class:`ErrorResponse`."""
    out: dict[int | str, dict] = {s: {"model": ErrorResponse, "description": _STATUS_TEXT[s]}
                                  for s in statuses}
    if 503 in out:
        out[503]["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying",
                                               "schema": {"type": "string"}}}
    return out


_BINARY = {"type": "string", "format": "binary"}


def image_body(description: str) -> dict:
    """``openapi_extra`` of a route whose body is one image file's bytes."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {t: {"schema": _BINARY} for t in IMAGE_TYPES}}}


def batch_body(what: str = "images") -> dict:
    """``openapi_extra`` of a batch route: JSON with base64, or multipart files; ``what``
    the images hold, for the description."""
    return {"requestBody": {"required": True, "description": f"The {what}, as JSON base64 or as "
                            "multipart files (each part's name is free; every file part is an image)",
                            "content": {
                                "application/json": {"schema": BatchRequest.model_json_schema()},
                                "multipart/form-data": {"schema": {
                                    "type": "object", "required": ["images"],
                                    "properties": {"images": {"type": "array", "items": _BINARY}}}},
                            }}}
