"""A fault-injecting HTTP proxy for the tests' S3 server.

Put between a job and the real S3 server (``AWS_ENDPOINT_URL`` pointed at the proxy),
it forwards every request unchanged (the Host header too, so signatures stay valid) and,
as its :class:`Faults` say, answers some itself instead: 503 ``SlowDown``, 500
``InternalError``, a connection reset before the request reaches the server, or a reset
after the server has carried it out (the client never learns that its PUT succeeded);
or it delays the answer. It logs every request, so tests can see what the clients did
(which kinds of request, how many bytes each GET fetched, whether a multipart upload was
begun).
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import socketserver
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlparse

#: Answers the proxy can give instead of the server's.
FAULTS = ("slowdown", "internal", "reset_before", "reset_after")

_ERRORS = {"slowdown": (503, "Service Unavailable", "SlowDown", "Please reduce your request rate."),
           "internal": (500, "Internal Server Error", "InternalError",
                        "We encountered an internal error. Please try again.")}


@dataclass
class Faults:
    """What to break. ``rate``: the share of requests of the ``kinds`` given a fault
    (drawn in turn from ``faults``), never more than ``max_in_a_row`` times running for
    the same request, so that bounded retries always get through; ``always``: a regex
    of ``METHOD /bucket/key`` whose requests fail every time (beyond any retries);
    ``delay_s`` with ``delay_rate``: answers held back that long; ``hold``: a regex whose
    requests wait until :meth:`FaultProxy.release` (to catch a client mid-request)."""

    rate: float = 0.0
    kinds: tuple[str, ...] = ("read", "list", "write")
    faults: tuple[str, ...] = FAULTS
    max_in_a_row: int = 2
    always: str | None = None
    always_fault: str = "slowdown"
    delay_s: float = 0.0
    delay_rate: float = 0.0
    hold: str | None = None
    drop_held: bool = False
    seed: int = 0
    #: Give the first request of each of the ``kinds`` a fault whatever the rate, so
    #: that every kind is certainly hit.
    first_of_each_kind: bool = False


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def kind(self) -> str:
        """read (objects), list (bucket listings), write (PUT, POST, DELETE)."""
        if self.method in ("PUT", "POST", "DELETE"):
            return "write"
        key = self.path.lstrip("/").partition("/")[2]
        return "read" if key else "list"

    @property
    def target(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class LogEntry:
    method: str
    path: str
    query: str
    kind: str
    action: str
    status: int
    response_bytes: int


@dataclass
class _State:
    rng: random.Random
    in_a_row: Counter = field(default_factory=Counter)
    turn: int = 0
    kinds_hit: set = field(default_factory=set)


class FaultProxy:
    """The proxy, on a free loopback port; use as a context manager."""

    def __init__(self, upstream: str, faults: Faults | None = None):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.faults = faults or Faults()
        self.log: list[LogEntry] = []
        self.injected: Counter = Counter()
        self._lock = threading.Lock()
        self._state = _State(random.Random(self.faults.seed))
        self._released = threading.Event()
        self.holding = threading.Event()  # set while a held request waits
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                proxy._serve_connection(self)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def set_faults(self, faults: Faults) -> None:
        """Change what breaks from the next request on."""
        with self._lock:
            self.faults = faults
            self._state = _State(random.Random(faults.seed))

    def release(self) -> None:
        """Let held requests go on."""
        self._released.set()

    def entries(self, kind: str | None = None, path_re: str = "") -> list[LogEntry]:
        """Logged requests, of one kind and matching a path regex if given."""
        with self._lock:
            return [e for e in self.log if (kind is None or e.kind == kind) and re.search(path_re, e.path)]

    # ---- deciding -------------------------------------------------------------------

    def _decide(self, req: Request) -> str:
        f, state = self.faults, self._state
        with self._lock:
            if f.hold and re.search(f.hold, req.target) and not self._released.is_set():
                return "hold"
            if f.always and re.search(f.always, req.target):
                self.injected[f.always_fault] += 1
                return f.always_fault
            key = (req.method, req.path, req.query)
            first = f.first_of_each_kind and req.kind not in state.kinds_hit
            if (req.kind in f.kinds and f.faults and state.in_a_row[key] < f.max_in_a_row
                    and (first or state.rng.random() < f.rate)):
                state.kinds_hit.add(req.kind)
                state.in_a_row[key] += 1
                fault = f.faults[state.turn % len(f.faults)]
                state.turn += 1
                self.injected[fault] += 1
                return fault
            state.in_a_row[key] = 0
            if f.delay_rate and state.rng.random() < f.delay_rate:
                self.injected["delay"] += 1
                return "delay"
            return "forward"

    # ---- serving --------------------------------------------------------------------

    def _serve_connection(self, handler: socketserver.StreamRequestHandler) -> None:
        upstream = None
        try:
            while True:
                req = _read_request(handler.rfile)
                if req is None:
                    return
                action = self._decide(req)
                if action == "hold":
                    self.holding.set()
                    self._released.wait(120)
                    # Dropped: as if the client had died before its request was whole.
                    action = "reset_before" if self.faults.drop_held else "forward"
                if action == "reset_before":
                    self._record(req, action, 0, 0)
                    return _reset(handler.connection)
                if action in _ERRORS:
                    status, reason, code, message = _ERRORS[action]
                    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                            f"<Message>{message}</Message></Error>").encode()
                    handler.wfile.write(_response(status, reason, {"Content-Type": "application/xml"},
                                                  body, req.method))
                    self._record(req, action, status, len(body))
                    continue
                if action == "delay":
                    time.sleep(self.faults.delay_s)
                upstream = upstream or http.client.HTTPConnection(*self.upstream, timeout=60)
                status, reason, headers, body = _forward(upstream, req)
                if action == "reset_after":  # the server did it; the client will not know
                    self._record(req, action, status, 0)
                    return _reset(handler.connection)
                handler.wfile.write(_response(status, reason, headers, body, req.method))
                self._record(req, action, status, len(body))
        except (ConnectionError, OSError, http.client.HTTPException):
            return
        finally:
            if upstream is not None:
                upstream.close()

    def _record(self, req: Request, action: str, status: int, size: int) -> None:
        with self._lock:
            self.log.append(LogEntry(req.method, req.path, req.query, req.kind, action, status, size))


def _read_request(rfile) -> Request | None:
    line = rfile.readline(65537)
    if not line or not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        h = rfile.readline(65537).decode("latin-1")
        if h in ("\r\n", "\n", ""):
            break
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    lower = {k.lower(): v for k, v in headers.items()}
    if lower.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(rfile)
        headers = {k: v for k, v in headers.items() if k.lower() != "transfer-encoding"}
        headers["Content-Length"] = str(len(body))
    else:
        body = rfile.read(int(lower.get("content-length", 0) or 0))
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, body)


def _read_chunked(rfile) -> bytes:
    parts = []
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        parts.append(rfile.read(size))
        rfile.readline()


def _forward(conn: http.client.HTTPConnection, req: Request) -> tuple[int, str, list, bytes]:
    target = req.path + (f"?{req.query}" if req.query else "")
    for attempt in (1, 2):  # a kept-alive upstream connection may have been closed
        try:
            conn.putrequest(req.method, target, skip_host=True, skip_accept_encoding=True)
            for k, v in req.headers.items():
                conn.putheader(k, v)
            conn.endheaders(req.body or None)
            resp = conn.getresponse()
            body = resp.read()
            return resp.status, resp.reason, resp.getheaders(), body
        except (ConnectionError, http.client.HTTPException):
            conn.close()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _response(status: int, reason: str, headers, body: bytes, method: str) -> bytes:
    items = headers.items() if isinstance(headers, dict) else headers
    kept = [(k, v) for k, v in items if k.lower() not in ("transfer-encoding", "content-length",
                                                          "connection")]
    length = dict((k.lower(), v) for k, v in items).get("content-length") if method == "HEAD" else None
    lines = [f"HTTP/1.1 {status} {reason}", *[f"{k}: {v}" for k, v in kept],
             f"Content-Length: {length if length is not None else len(body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (b"" if method == "HEAD" else body)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed or overloaded server does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass
