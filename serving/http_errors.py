"""Every error the application answers, in one JSON shape (``{"error": {"code",
"message"}}``, :class:`serving.schemas.ErrorResponse`) and counted by endpoint and code:
the request's own faults (4xx), unusable images (422), unknown paths and methods, bad
query parameters, and bugs (500, logged with their traceback)."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recognizer.errors import ImageError
from recognizer.results import Failure
from serving.inputs import RequestError
from serving.metrics import app_metrics, endpoint_of

log = logging.getLogger("ray.serve")

#: ImageErrors are the client's data, understood but unusable.
IMAGE_ERROR_STATUS = 422


def error_response(status: int, code: str, message: str, endpoint: str) -> JSONResponse:
    """The JSON error answer, counted in ``digits_errors`` by endpoint and code."""
    app_metrics().errors.inc(tags={"endpoint": endpoint, "code": code})
    return JSONResponse(Failure(code, message).to_json(), status_code=status)


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, endpoint_of(request.url.path))


async def _image_error(request: Request, exc: ImageError) -> JSONResponse:
    return error_response(IMAGE_ERROR_STATUS, exc.code, str(exc), endpoint_of(request.url.path))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {404: f"no such endpoint {request.url.path}; see /docs",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(
                   exc.status_code, str(exc.detail))
    answer = error_response(exc.status_code, code, message, endpoint_of(request.url.path))
    answer.headers.update(exc.headers or {})  # e.g. a 405's Allow
    return answer


async def _invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
    # The typed query parameters: a bad one is the client's mistake (400), named by its code.
    first = exc.errors()[0]
    name = str(first["loc"][-1]) if first.get("loc") else "request"
    message = f"query parameter {name}: {first['msg']} (got {first.get('input')!r})"
    return error_response(400, f"invalid_{name}", message, endpoint_of(request.url.path))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug, not the client's fault: log it with its traceback, answer in the usual shape.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", f"internal error ({type(exc).__name__}); "
                          "see the replica's log", endpoint_of(request.url.path))


def install(api: FastAPI) -> None:
    """Answer every error of ``api`` in the one JSON shape."""
    api.add_exception_handler(RequestError, _request_error)
    api.add_exception_handler(ImageError, _image_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(RequestValidationError, _invalid_parameter)
    api.add_exception_handler(Exception, _unexpected)
