"""The one preprocessing path: image bytes (or a uint8 array) in, model input out.

Training, serving and batch jobs all call :func:`preprocess` (or :func:`preprocess_many`
for a batch): :func:`recognizer.decode.decode` to greyscale; form cleaning
(:func:`recognizer.clean.clean_digit`) when the image needs it (lines, masks or a printed
background reach its edge); then :func:`recognizer.normalize.normalize` to a 28x28
MNIST-style digit in [0, 1]. Field reading cleans every field the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from recognizer import settings
from recognizer.clean import CleanConfig, clean_digit, needs_cleaning
from recognizer.decode import decode
from recognizer.errors import ImageError, UndecodableImage
from recognizer.normalize import normalize, normalize_stack

#: preprocess_many normalises same-sized images together, this many pixels at a time
#: (bounded so that a batch of whole pages does not hold gigabytes at once).
STACK_PIXELS = 4_000_000

__all__ = ["as_image_list", "decode", "decoded_stacks", "normalize", "preprocess", "preprocess_many"]


def preprocess(image: bytes | np.ndarray, max_pixels: int = settings.MAX_IMAGE_PIXELS) -> np.ndarray:
    """Image bytes or a uint8 array -> 28x28 float32 model input in [0, 1].

    Raises :class:`ImageError` (a typed subclass) when the image cannot be used.
    """
    grey = decode(image, max_pixels)
    if needs_cleaning(grey[None])[0]:
        try:
            return normalize(clean_digit(grey))
        except ImageError:
            pass  # cleaning found no handwriting apart: the digit as it is decides
    return normalize(grey)


def _normalize_cleaned(greys: np.ndarray, cleaning: CleanConfig | None
                       ) -> tuple[np.ndarray, list[ImageError | None]]:
    """:func:`normalize_stack`, each image that needs it cleaned first. When cleaning
    finds no handwriting apart from the rest (a thick digit filling its crop passes for
    a mask), the image is read as it is, as :func:`preprocess` does."""
    out, errors = normalize_stack(greys)
    for i in np.flatnonzero(needs_cleaning(greys, cleaning)):
        try:
            out[i] = normalize(clean_digit(greys[i], cleaning))
            errors[i] = None
        except ImageError:
            continue
    return out, errors


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
    for indices, greys in decoded_stacks(items, max_pixels, errors):
        x, errs = _normalize_cleaned(greys, None)
        out[indices] = x
        for i, err in zip(indices, errs, strict=True):
            errors[i] = err
    return out, errors


def decoded_stacks(items: list, max_pixels: int, errors: list[ImageError | None]
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
