"""The one preprocessing path: image bytes (or a uint8 array) in, model input out.

Training, serving and batch jobs all call :func:`preprocess`. The output follows the
MNIST convention: light ink on a dark background, cropped to the ink, the longer side
fitted into a 20x20 box keeping the aspect ratio, placed in a 28x28 field so that the
ink's centre of mass sits in the middle, values in [0, 1].
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence

import cv2
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
    UndecodableImage,
    UnsupportedFormat,
)

#: Encodings accepted from users (camera JPEGs that Pillow calls MPO open as JPEG).
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")

#: Ink must differ from the paper by at least this many grey levels (of 255).
MIN_CONTRAST = 40.0
#: After scaling the darkest ink to 1, values below this are paper noise (JPEG ringing,
#: scanner grain) and do not count when the digit is cropped.
INK_THRESHOLD = 0.15

#: preprocess_many normalises same-sized images together, this many pixels at a time
#: (bounded so that a batch of whole pages does not hold gigabytes at once).
STACK_PIXELS = 4_000_000

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


def normalize(grey: np.ndarray) -> np.ndarray:
    """Turn a greyscale page or crop into a 28x28 float32 MNIST-style digit.

    Raises :class:`BlankImage` when there is no ink.
    """
    if grey.dtype != np.uint8:
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    out, errors = normalize_stack(grey[None])
    if errors[0] is not None:
        raise errors[0]
    return out[0]


def normalize_stack(greys: np.ndarray) -> tuple[np.ndarray, list[ImageError | None]]:
    """:func:`normalize` for an (N, H, W) uint8 stack of same-sized images at once.

    Returns (N, 28, 28) float32 (zeros where an image is blank) and per image None or
    its :class:`BlankImage`. The per-image work left is the crop's resize; finding paper,
    ink and the digit's box runs over the whole stack in a few numpy calls.
    """
    n, h, w = greys.shape
    size = settings.IMAGE_SIZE
    out = np.zeros((n, size, size), dtype=np.float32)
    errors: list[ImageError | None] = [None] * n
    if n == 0:
        return out, errors
    # Paper is what most of the border is (its median); ink is whatever differs from it
    # in the opposite direction, so dark-on-light and light-on-dark come out the same.
    border = np.concatenate((greys[:, 0], greys[:, -1], greys[:, 1:-1, 0], greys[:, 1:-1, -1]),
                            axis=1)
    mid = (border.shape[1] + 1) // 2 - 1
    paper = np.partition(border, mid, axis=1)[:, mid][:, None, None]
    ink = _ink(greys, paper)
    peak = ink.reshape(n, -1).max(axis=1).astype(np.int64)
    # Below INK_THRESHOLD of the peak is paper noise (JPEG ringing, scanner grain): it
    # is zeroed and does not count when the digit is cropped.
    first = np.ceil(INK_THRESHOLD * peak)
    mask = ink >= first[:, None, None]
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    top, bottom = rows.argmax(axis=1), h - rows[:, ::-1].argmax(axis=1)
    left, right = cols.argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    # One lookup table per image both zeroes the noise and stretches the ink to 0..255
    # in uint8, where Pillow resizes fastest.
    levels = np.arange(256, dtype=np.float64)
    tables = (levels * (255.0 / np.maximum(peak, 1))[:, None]).astype(np.uint8)
    tables[levels < first[:, None]] = 0

    box = settings.DIGIT_BOX
    small = np.zeros((n, box, box), dtype=np.float64)
    shapes = np.zeros((n, 2), dtype=np.int64)
    for i in range(n):
        if peak[i] < MIN_CONTRAST:
            errors[i] = BlankImage(
                f"no ink found: the darkest stroke differs from the paper by {peak[i]} grey "
                f"levels (at least {MIN_CONTRAST:.0f} needed)")
            continue
        crop = tables[i].take(ink[i, top[i]:bottom[i], left[i]:right[i]])
        fitted = _fit(crop, box)
        shapes[i] = fitted.shape
        small[i, :fitted.shape[0], :fitted.shape[1]] = fitted
    _centre(small, shapes, out, errors)
    return out, errors


def _ink(greys: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """How far each pixel lies from its image's paper towards the ink (uint8): darker than
    light paper, or lighter than dark paper; 0 on the paper's other side."""
    light = paper[:, 0, 0] > 127
    ink = np.empty_like(greys)
    # Each stack is split by paper kind rather than computing both kinds for every pixel
    # and choosing (7x slower); scans of one kind take the slice path, without copies.
    for rows, on_light in ((light, True), (~light, False)):
        if not rows.any():
            continue
        sel = slice(None) if rows.all() else rows
        g, p = greys[sel], paper[sel]
        ink[sel] = p - np.minimum(g, p) if on_light else np.maximum(g, p) - p
    return ink


def _fit(crop: np.ndarray, box: int) -> np.ndarray:
    """The crop with its longer side scaled to box pixels, aspect ratio kept (uint8)."""
    h, w = crop.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return crop
    # frombuffer/tobytes rather than fromarray/asarray: the same pixels, at less than half
    # the cost per crop, which is most of this function's time for small crops.
    img = Image.frombuffer("L", (w, h), np.ascontiguousarray(crop), "raw", "L", 0, 1)
    small = img.resize((nw, nh), Image.Resampling.BILINEAR)
    return np.frombuffer(small.tobytes(), np.uint8).reshape(nh, nw)


def _centre(small: np.ndarray, shapes: np.ndarray, out: np.ndarray,
            errors: list[ImageError | None]) -> None:
    """Place each fitted digit in the 28x28 field with its centre of mass in the middle,
    scaled so its brightest pixel is 1. Sums of integer grey levels are exact in
    float64, so the placement does not depend on how many images are in the stack."""
    size = out.shape[1]
    steps = np.arange(small.shape[1], dtype=np.float64)
    total = small.sum(axis=(1, 2))
    weight = np.where(total > 0, total, 1.0)
    cy = (small.sum(axis=2) @ steps) / weight
    cx = (small.sum(axis=1) @ steps) / weight
    top = np.clip(np.rint(size / 2 - 0.5 - cy), 0, size - shapes[:, 0]).astype(np.int64)
    left = np.clip(np.rint(size / 2 - 0.5 - cx), 0, size - shapes[:, 1]).astype(np.int64)
    brightest = small.max(axis=(1, 2))
    for i, (nh, nw) in enumerate(shapes):
        if errors[i] is not None:
            continue
        if total[i] <= 0:
            errors[i] = BlankImage("no ink left after scaling the digit down")
            continue
        out[i, top[i]:top[i] + nh, left[i]:left[i] + nw] = small[i, :nh, :nw]
        out[i] *= np.float32(1.0 / brightest[i])


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
    N entries, each None or the :class:`ImageError` for that image. The result is the
    same as :func:`preprocess` image by image; same-sized images are normalised together,
    which is several times faster for the uniform crops of a scanning pipeline.
    """
    items = list(images)
    size = settings.IMAGE_SIZE
    out = np.zeros((len(items), size, size), dtype=np.float32)
    errors: list[ImageError | None] = [None] * len(items)
    for indices, greys in _decoded_stacks(items, max_pixels, errors):
        x, errs = normalize_stack(greys)
        out[indices] = x
        for i, err in zip(indices, errs, strict=True):
            errors[i] = err
    return out, errors


def _decoded_stacks(items: list, max_pixels: int, errors: list[ImageError | None]
                    ) -> Iterator[tuple[list[int], np.ndarray]]:
    """Decode items (recording failures in errors) and yield (indices, (N, H, W) stack)
    per image size, at most about STACK_PIXELS decoded pixels held at a time."""
    groups: dict[tuple[int, int], list[int]] = {}
    greys: dict[int, np.ndarray] = {}
    held = 0
    for i, item in enumerate(items):
        try:
            grey = decode(item, max_pixels)
        except ImageError as exc:
            errors[i] = exc
            continue
        except Exception as exc:  # noqa: BLE001 - one image's decoder bug must not sink the batch
            errors[i] = UndecodableImage(f"the image could not be decoded "
                                         f"({type(exc).__name__}: {exc})")
            continue
        groups.setdefault(grey.shape, []).append(i)
        greys[i] = grey
        held += grey.size
        if held >= STACK_PIXELS:
            yield from _flush(groups, greys)
            held = 0
    yield from _flush(groups, greys)


def _flush(groups: dict[tuple[int, int], list[int]], greys: dict[int, np.ndarray]
           ) -> Iterator[tuple[list[int], np.ndarray]]:
    for indices in groups.values():
        yield indices, np.stack([greys.pop(i) for i in indices])
    groups.clear()


def as_image_list(images: Sequence[bytes | np.ndarray] | np.ndarray) -> list[bytes | np.ndarray]:
    """Accept a list of encoded images/arrays, an (N,H,W[,C]) uint8 array, or one HxW array."""
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        return list(images)
    if isinstance(images, bytes | bytearray | memoryview):
        return [bytes(images)]
    return list(images)
