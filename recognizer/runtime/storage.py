"""Where bytes live: local paths and ``s3://`` URIs through one pyarrow filesystem API.

S3 is configured the standard way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``), so MinIO, moto or AWS itself work alike.
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

from recognizer.errors import StorageError

T = TypeVar("T")

#: The standard variables that configure S3 (the ones a driver hands to its workers).
AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION")

#: Attempts and first back-off delay for transient storage errors.
RETRIES = 5
BACKOFF_S = 0.2


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
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=RETRIES),
        connect_timeout=10,
        request_timeout=60,
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


def with_retries(what: str, fn: Callable[[], T], retries: int = RETRIES) -> T:
    """Run fn, retrying transient OSErrors with exponential back-off.

    Missing files are not transient and are raised at once.
    """
    delay = BACKOFF_S
    for attempt in range(1, retries + 1):
        try:
            return fn()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if attempt == retries or not _transient(exc):
                raise StorageError(f"{what} failed: {describe_os_error(exc)}") from exc
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def _transient(exc: OSError) -> bool:
    text = str(exc).lower()
    permanent = ("access denied", "accessdenied", "nosuchbucket", "invalidaccesskeyid",
                 "signaturedoesnotmatch", "forbidden", "not found", "permission denied")
    return not any(word in text for word in permanent)


#: What S3 error texts mean, for messages a user can act on.
_S3_HINTS = (
    (("no_such_bucket", "nosuchbucket", "bucket does not exist", "specified bucket does not exist"),
     "the bucket does not exist (create it, or check the s3:// URI)"),
    (("invalidaccesskeyid", "signaturedoesnotmatch", "invalid_access_key", "access denied",
      "accessdenied", "403"),
     "S3 refused the credentials (check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"),
    (("couldn't connect", "could not connect", "connection refused", "curlcode: 7",
      "network connection", "timed out", "resolve host"),
     "cannot reach the S3 endpoint"),
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
        return with_retries(f"reading {uri}", read)
    except FileNotFoundError as exc:
        raise StorageError(f"{uri} does not exist") from exc


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object or file so that readers never see it half-written.

    S3 objects appear only when the upload completes; local files are written under a
    temporary name and renamed into place.
    """
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return

    def write() -> None:
        with fs.open_output_stream(path) as f:
            f.write(data)

    with_retries(f"writing {uri}", write)


def exists(uri: str) -> bool:
    """Whether a file or folder exists at a local path or s3:// URI."""
    fs, path = resolve(uri)
    info = with_retries(f"checking {uri}", lambda: fs.get_file_info(path))
    return info.type != pafs.FileType.NotFound


def list_files(uri: str, suffix: str = "") -> list[str]:
    """URIs of the files directly under a folder or prefix, sorted, ending in suffix."""
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    infos = with_retries(f"listing {uri}", lambda: fs.get_file_info(selector))
    base = uri.rstrip("/")
    names = sorted(posixpath.basename(i.path) for i in infos
                   if i.type == pafs.FileType.File and i.path.endswith(suffix))
    return [join(base, n) for n in names]


def list_dirs(uri: str) -> list[str]:
    """URIs of the sub-folders directly under a folder or prefix, sorted."""
    fs, path = resolve(uri)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    infos = with_retries(f"listing {uri}", lambda: fs.get_file_info(selector))
    base = uri.rstrip("/")
    names = sorted(posixpath.basename(i.path) for i in infos
                   if i.type == pafs.FileType.Directory)
    return [join(base, n) for n in names]


def delete_dir(uri: str) -> None:
    """Delete a folder or prefix and everything below it (nothing when it is absent)."""
    fs, path = resolve(uri)
    if exists(uri):
        with_retries(f"deleting {uri}", lambda: fs.delete_dir(path))
