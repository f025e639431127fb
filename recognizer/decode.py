"""Decoding: encoded image bytes (or a uint8 array) in, a 2-D greyscale uint8 array out.

Every way an input can fail to be an image raises a typed :class:`ImageError` subclass
(not an image, unsupported format, truncated, empty, too large), so that callers can
report it per image and keep going.
"""

from __future__ import annotations

import io
import struct
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from recognizer import settings
from recognizer.errors import (
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
)

#: Encodings accepted from users (camera JPEGs that Pillow calls MPO open as JPEG).
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")

Image.MAX_IMAGE_PIXELS = settings.MAX_IMAGE_PIXELS
Image.init()  # register every plugin so the formats list above resolves
# Undecodable input is reported by our typed errors, not by OpenCV's console warnings.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(data: bytes | bytearray | memoryview | np.ndarray,
           max_pixels: int = settings.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an encoded image (or take a uint8 array) into a 2-D greyscale uint8 array.

    Raises a subclass of :class:`ImageError` for anything that is not a usable image.
    """
    if isinstance(data, np.ndarray):
        return _array_to_grey(data, max_pixels)
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise NotAnImage(
            f"expected encoded image bytes or a uint8 array, got {type(data).__name__}"
        )
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > settings.MAX_IMAGE_BYTES:
        raise ImageTooLarge(
            f"the encoded image is {len(data):,} bytes; the limit is "
            f"{settings.MAX_IMAGE_BYTES:,}"
        )
    fast = _decode_png_fast(data, max_pixels)
    if fast is not None:
        return fast
    img = _open(data)
    width, height = img.size
    if width == 0 or height == 0:
        raise EmptyImage(f"the image has zero size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{max_pixels:,} (decompression-bomb guard)"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise TruncatedImage(f"the {img.format} image is truncated or corrupt: {exc}") from exc
    return _pil_to_grey(img)


def _decode_png_fast(data: bytes, max_pixels: int) -> np.ndarray | None:
    """8-bit grey or RGB PNG (what scanners write) through OpenCV, which spends far less
    Python per image than Pillow. Pixels are identical; anything else, or anything odd,
    returns None and takes the Pillow path with its typed errors."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if depth != 8 or colour not in (0, 2) or not 0 < width * height <= max_pixels:
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.shape[:2] != (height, width):
        return None
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 3:
        # OpenCV gives BGR; Pillow's RGB -> L keeps the grey levels identical to its path.
        return np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., ::-1]), "RGB").convert("L"))
    return None


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image declares too many pixels: {exc}") from exc
    except UnidentifiedImageError:
        pass
    except (OSError, SyntaxError, ValueError) as exc:
        raise TruncatedImage(f"the image header is corrupt: {exc}") from exc
    # Not one of ours: say which format it is when Pillow knows it.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = Image.open(io.BytesIO(data)).format
    except Exception:  # noqa: BLE001 - any failure here means "not an image"
        other = None
    if other:
        raise UnsupportedFormat(
            f"{other} images are not accepted; send PNG, JPEG, BMP or TIFF"
        )
    raise NotAnImage(
        f"the data ({len(data):,} bytes) is not a PNG, JPEG, BMP or TIFF image"
    )


def _pil_to_grey(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max())
        return (arr * (255.0 / top) if top > 0 else arr).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent regions are paper: flatten onto white before dropping colour.
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8)


def _array_to_grey(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise NotAnImage(f"image arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        if arr.shape[2] == 4:
            alpha = arr[..., 3:4].astype(np.float32) / 255.0
            arr = (arr[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        arr = np.asarray(Image.fromarray(np.ascontiguousarray(arr), "RGB").convert("L"))
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise NotAnImage(f"an image array must be HxW or HxWx3/4, got shape {arr.shape}")
    if arr.size == 0:
        raise EmptyImage(f"the image has zero size ({arr.shape[1]}x{arr.shape[0]})")
    if arr.size > max_pixels:
        raise ImageTooLarge(f"the image has {arr.size:,} pixels; the limit is {max_pixels:,}")
    return arr
