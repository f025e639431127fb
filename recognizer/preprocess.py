"""The one preprocessing path: image bytes (or a uint8 array) in, model input out.

Training, serving and batch jobs all call :func:`preprocess`. The output follows the
MNIST convention: light ink on a dark background, cropped to the ink, the longer side
fitted into a 20x20 box keeping the aspect ratio, placed in a 28x28 field so that the
ink's centre of mass sits in the middle, values in [0, 1].
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from recognizer import settings
from recognizer.errors import (
    BlankImage,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
)

#: Encodings accepted from users (camera JPEGs that Pillow calls MPO open as JPEG).
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")

#: Ink must differ from the paper by at least this many grey levels (of 255).
MIN_CONTRAST = 40.0
#: After scaling the darkest ink to 1, values below this are paper noise (JPEG ringing,
#: scanner grain) and do not count when the digit is cropped.
INK_THRESHOLD = 0.15

Image.MAX_IMAGE_PIXELS = settings.MAX_IMAGE_PIXELS
Image.init()  # register every plugin so the formats list above resolves


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


def _median_u8(values: np.ndarray) -> int:
    """Median of uint8 values by counting (several times faster than np.median here)."""
    counts = np.bincount(values, minlength=256).cumsum()
    return int(np.searchsorted(counts, (len(values) + 1) // 2))


def normalize(grey: np.ndarray) -> np.ndarray:
    """Turn a greyscale page or crop into a 28x28 float32 MNIST-style digit."""
    if grey.dtype != np.uint8:
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    border = np.concatenate((grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]))
    paper = _median_u8(border)
    # Paper is what most of the border is; ink is whatever differs from it in the
    # opposite direction, so dark-on-light and light-on-dark come out the same.
    if paper > 127:
        ink = np.subtract(paper, grey, dtype=np.int16)
    else:
        ink = np.subtract(grey, paper, dtype=np.int16)
    peak = int(ink.max())
    if peak < MIN_CONTRAST:
        raise BlankImage(
            f"no ink found: the darkest stroke differs from the paper by {max(peak, 0)} grey "
            f"levels (at least {MIN_CONTRAST:.0f} needed)"
        )
    # Below the threshold is paper noise (JPEG ringing, scanner grain): it is zeroed and
    # does not count when the digit is cropped.
    ink[ink < INK_THRESHOLD * peak] = 0
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    # Stretch the ink to the full 0..255 range in uint8, where Pillow resizes fastest.
    crop8 = (crop * (255.0 / peak)).astype(np.uint8)
    return _fit_and_centre(crop8)


def _fit_and_centre(crop: np.ndarray) -> np.ndarray:
    size, box = settings.IMAGE_SIZE, settings.DIGIT_BOX
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        small = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.Resampling.BILINEAR),
                           dtype=np.float32)
    else:
        small = crop.astype(np.float32)
    total = float(small.sum())
    if total <= 0:
        raise BlankImage("no ink left after scaling the digit down")
    cy = float(small.sum(axis=1) @ np.arange(nh, dtype=np.float32)) / total
    cx = float(small.sum(axis=0) @ np.arange(nw, dtype=np.float32)) / total
    top = min(max(round(size / 2 - 0.5 - cy), 0), size - nh)
    left = min(max(round(size / 2 - 0.5 - cx), 0), size - nw)
    out = np.zeros((size, size), dtype=np.float32)
    out[top: top + nh, left: left + nw] = small
    out *= 1.0 / float(out.max())
    return out


def preprocess(image: bytes | np.ndarray, max_pixels: int = settings.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Image bytes or a uint8 array -> 28x28 float32 model input in [0, 1].

    Raises :class:`ImageError` (a typed subclass) when the image cannot be used.
    """
    return normalize(decode(image, max_pixels))


def preprocess_many(
    images: Iterable[bytes | np.ndarray], max_pixels: int = settings.MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, list[ImageError | None]]:
    """Preprocess a batch, keeping going past bad images.

    Returns an (N, 28, 28) float32 array (zeros where an image failed) and a list of
    N entries, each None or the :class:`ImageError` for that image.
    """
    items = list(images)
    size = settings.IMAGE_SIZE
    out = np.zeros((len(items), size, size), dtype=np.float32)
    errors: list[ImageError | None] = [None] * len(items)
    for i, item in enumerate(items):
        try:
            out[i] = preprocess(item, max_pixels)
        except ImageError as exc:
            errors[i] = exc
    return out, errors


def as_image_list(images: Sequence[bytes | np.ndarray] | np.ndarray) -> list[bytes | np.ndarray]:
    """Accept a list of encoded images/arrays, an (N,H,W[,C]) uint8 array, or one HxW array."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        return list(images)
    if isinstance(images, bytes | bytearray | memoryview):
        return [bytes(images)]
    return list(images)
