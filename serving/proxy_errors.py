"""JSON errors from Serve's HTTP proxy itself, in the shape the application answers with.

The application's own errors are JSON (``{"error": {"code", "message"}}``), but some
answers never reach it: a replica that dies with requests in flight (Serve's proxy says
``500 Internal Server Error`` in plain text), overload (``503``), a request that outlives
``request_timeout_s`` (``408``, though the server was too slow, not the client). This ASGI
middleware, installed in the proxy through Serve's ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
hook (:data:`PROXY_ENV`), rewrites those into JSON with the same status (a proxy timeout
becomes ``504``) and headers (``Retry-After`` kept), so that clients parse one shape.
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("ray.serve")

#: What Serve's proxy process must have in its environment (set on every node before Ray
#: starts: ``digits serve`` does it for a Ray it starts; clusters set it in their pods).
PROXY_ENV = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serving.proxy_errors:middlewares"}

#: Codes and messages for the proxy's own error answers, by status.
_CODES = {
    500: ("replica_failed", "the replica handling this request failed (it is being replaced); "
                            "retry the request"),
    503: ("unavailable", "the service is overloaded or has no replica ready; retry after the "
                         "Retry-After delay"),
    504: ("timeout", "no answer within the proxy's request timeout; retry the request"),
}


class JSONProxyErrors:
    """Pure ASGI middleware: proxy-made 408 and 5xx answers that are not JSON become JSON."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict | None = None  # a start message being rewritten, until its body is seen
        started = False

        async def rewrite(message: dict) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                started = True
                headers = dict(message.get("headers") or [])
                kind = headers.get(b"content-type", b"").split(b";")[0].strip()
                status = message["status"]
                if (status >= 500 or status == 408) and kind != b"application/json":
                    held = {**message, "status": 504 if status == 408 else status}
                    return
            elif held is not None and message["type"] == "http.response.body":
                if message.get("more_body"):
                    return  # the proxy's text is dropped: one JSON body replaces it
                await _send_json(send, held)
                held = None
                return
            await send(message)

        try:
            await self.app(scope, receive, rewrite)
        except Exception:  # noqa: BLE001 - the proxy gave up on the request without answering
            if started:
                raise
            log.warning("request %s failed in the proxy; answered 500", scope.get("path"), exc_info=True)
        if not started:
            # Serve's proxy returns without any answer when the replica died mid-request
            # (the server would then send a plain-text 500 of its own).
            await _send_json(send, {"status": 500, "headers": []})


async def _send_json(send: Any, start: dict) -> None:
    status = start["status"]
    code, message = _CODES.get(status, ("proxy_error", "the service failed to answer; retry"))
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(k, v) for k, v in start.get("headers") or []
               if k.lower() not in (b"content-type", b"content-length")]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def middlewares() -> list:
    """The callback Serve's proxy calls (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(JSONProxyErrors)]
