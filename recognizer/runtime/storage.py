"""Where bytes live: local paths and ``s3://`` URIs through one pyarrow filesystem API.

S3 is configured the standard way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), so MinIO, moto or AWS itself work alike.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

from recognizer.errors import StorageError
from recognizer.runtime import retry

T = TypeVar("T")

#: The standard variables that configure S3 (the ones a driver hands to its workers).
AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")

#: Marks a local file being written (renamed into place when complete); a writer killed
#: mid-write leaves ``.NAME.tmp-RANDOM``, which :func:`remove_incomplete` deletes.
TMP_MARK = ".tmp-"


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names S3 (``s3://bucket/key``)."""
    return uri.startswith("s3://")


def aws_settings() -> dict[str, str]:
    """This process's S3 settings: the set AWS variables (secrets included: never log it)."""
    return {k: os.environ[k] for k in AWS_ENV if os.environ.get(k)}


def use_aws_settings(settings: dict[str, str]) -> None:
    """Use another process's :func:`aws_settings` here (a driver's, in a Ray worker).

    Filesystems are built per call from the environment, so this takes effect at once.
    """
    os.environ.update({k: v for k, v in settings.items() if k in AWS_ENV})


def s3_endpoint() -> str | None:
    """The S3 endpoint from the standard AWS variables (None means AWS itself)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_filesystem() -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem configured from the standard AWS environment variables."""
    kwargs: dict = {}
    endpoint = s3_endpoint()
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return pafs.S3FileSystem(
        region=region,
        # One attempt per call: every retry is ours (with_retries), bounded, jittered
        # and counted, instead of hidden inside the S3 client.
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        # Objects below the multipart part size go up in one PUT (an open stream would
        # begin a multipart upload at once, left unfinished if the writer dies).
        allow_delayed_open=True,
        connect_timeout=10,
        request_timeout=30,
        **kwargs,
    )


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Map a local path, ``file://`` URI or ``s3://bucket/key`` to (filesystem, path)."""
    if is_s3(uri):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri!r} names no bucket; write s3://BUCKET/PREFIX")
        return s3_filesystem(), (parsed.netloc + parsed.path).rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        raise StorageError(f"unsupported URI scheme in {uri!r}; use a local path or s3://")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with forward slashes."""
    if is_s3(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def with_retries(what: str, fn: Callable[[], T], kind: str = "other") -> T:
    """Run fn, retrying transient OSErrors with jittered exponential back-off
    (:mod:`recognizer.runtime.retry`); each retry is counted under ``kind``.

    Missing files are not transient and are raised at once; permanent errors (refused
    credentials, a missing bucket) are not retried.
    """
    return retry.with_retries(what, fn, kind, _transient, describe_os_error)


def _squeezed(text: str) -> str:
    # S3 error codes come as AccessDenied, ACCESS_DENIED or "access denied": one spelling.
    return "".join(ch for ch in text.lower() if ch.isalnum())


#: Errors no retry can mend (refused credentials, a missing bucket or key), squeezed.
_PERMANENT = ("accessdenied", "nosuchbucket", "invalidaccesskeyid", "signaturedoesnotmatch",
              "forbidden", "notfound", "permissiondenied", "invalidtoken", "expiredtoken")


def _transient(exc: OSError) -> bool:
    text = _squeezed(str(exc))
    return not any(word in text for word in _PERMANENT)


#: What S3 error texts mean, for messages a user can act on.
_S3_HINTS = (
    (("no_such_bucket", "nosuchbucket", "bucket does not exist", "specified bucket does not exist"),
     "the bucket does not exist (create it, or check the s3:// URI)"),
    (("invalidaccesskeyid", "signaturedoesnotmatch", "signature_does_not_match", "invalid_access_key",
      "access denied", "access_denied", "accessdenied", "403"),
     "S3 refused the credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"),
    (("couldn't connect", "could not connect", "connection refused", "curlcode: 7",
      "network connection", "timed out", "resolve host"),
     "cannot reach the S3 endpoint"),
    (("slow_down", "slowdown", "http status 503", "service unavailable"),
     "S3 is throttling or unavailable (503)"),
    (("internal_failure", "internalerror", "http status 500"), "S3 failed internally (500)"),
)


def describe_os_error(exc: BaseException) -> str:
    """One line for a storage error, with credentials never included."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    for needles, hint in _S3_HINTS:
        if any(n in lowered for n in needles):
            where = s3_endpoint() or "AWS"
            text = f"{hint} [endpoint {where}]: {text}"
            break
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        secret = os.environ.get(name)
        if secret:
            text = text.replace(secret, "***")
    return text[:400]


def read_bytes(uri: str) -> bytes:
    """Read a whole object or file."""
    fs, path = resolve(uri)

    def read() -> bytes:
        # A random-access file knows its size and fetches it in one ranged GET; a stream
        # reads S3 in small pieces, several times slower for shard-sized objects.
        with fs.open_input_file(path) as f:
            return f.read()

    try:
        return with_retries(f"reading {uri}", read, "read")
    except FileNotFoundError as exc:
        raise StorageError(f"{uri} does not exist") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object or file so that readers never see it half-written.

    S3 objects appear only when their upload completes (objects this size go up in one
    PUT); local files are written under a hidden temporary name and renamed into place.
    """
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        folder, name = os.path.split(path)
        os.makedirs(folder or ".", exist_ok=True)
        tmp = os.path.join(folder, f".{name}{TMP_MARK}{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return

    def write() -> None:
        with fs.open_output_stream(path) as f:
            f.write(data)

    with_retries(f"writing {uri}", write, "write")


def exists(uri: str) -> bool:
    """Whether a file or folder exists at a local path or s3:// URI."""
    fs, path = resolve(uri)
    info = with_retries(f"checking {uri}", lambda: fs.get_file_info(path), "read")
    return info.type != pafs.FileType.NotFound


def _list(uri: str, recursive: bool) -> tuple[str, list[pafs.FileInfo]]:
    """(the prefix's path, what lies under it); S3 listings are paginated by pyarrow,
    1,000 keys a page, and a page that fails is retried with the whole listing."""
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path, recursive=recursive, allow_not_found=True)
    return path, with_retries(f"listing {uri}", lambda: fs.get_file_info(selector), "list")


def _hidden(relative: str) -> bool:
    # Names starting with "." or "_" are not data: temporary files, _job.json,
    # _SUCCESS markers, _temporary/ folders of other writers.
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def list_files(uri: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """URIs of the files under a folder or prefix (directly under it unless recursive),
    sorted, ending in suffix; with recursive, names starting with "." or "_" (at any
    level) are left out."""
    path, infos = _list(uri, recursive)
    base = uri.rstrip("/")
    names = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.path.endswith(suffix):
            continue
        relative = posixpath.relpath(info.path.replace(os.sep, "/"), path.replace(os.sep, "/"))
        if not (recursive and _hidden(relative)):
            names.append(relative)
    return [join(base, *n.split("/")) for n in sorted(names)]


def list_dirs(uri: str) -> list[str]:
    """URIs of the sub-folders directly under a folder or prefix, sorted."""
    _, infos = _list(uri, recursive=False)
    base = uri.rstrip("/")
    names = sorted(posixpath.basename(i.path) for i in infos
                   if i.type == pafs.FileType.Directory)
    return [join(base, n) for n in names]


def relative(prefix: str, uri: str) -> str:
    """The part of ``uri`` below ``prefix``, with forward slashes (``2024/05/a.parquet``)."""
    base = prefix.rstrip("/").replace(os.sep, "/")
    return uri.replace(os.sep, "/")[len(base):].lstrip("/")


def delete_dir(uri: str) -> None:
    """Delete a folder or prefix and everything below it (nothing when it is absent)."""
    fs, path = resolve(uri)
    if exists(uri):
        with_retries(f"deleting {uri}", lambda: fs.delete_dir(path))


def remove_incomplete(uri: str, started_before: datetime) -> int:
    """Delete what writers killed mid-write left under a folder or prefix: local
    temporary files, and S3 multipart uploads never completed (invisible as objects,
    but stored and billed) begun before ``started_before`` (timezone-aware). Returns how
    many were removed. Only safe while no other writer uses the prefix."""
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        removed = 0
        for info in _list(uri, recursive=True)[1]:
            name = posixpath.basename(info.path)
            if info.type == pafs.FileType.File and name.startswith(".") and TMP_MARK in name:
                os.remove(info.path)
                removed += 1
        return removed
    from recognizer.runtime import s3_uploads  # boto3: S3 only

    bucket, _, key = path.partition("/")
    return s3_uploads.abort_stale(bucket, key.rstrip("/") + "/", started_before, describe_os_error)
