"""Typed errors. Each message says what was wrong and what to do about it."""


class DigitsError(Exception):
    """Base class for every error formdigits raises on purpose."""


class ImageError(DigitsError, ValueError):
    """An input image cannot be turned into model input. Callers report it per row."""

    code = "bad_image"


class NotAnImage(ImageError):
    code = "not_an_image"


class UnsupportedFormat(ImageError):
    code = "unsupported_format"


class TruncatedImage(ImageError):
    code = "truncated_image"


class UndecodableImage(ImageError):
    """The decoder failed in a way it does not describe (hostile or exotic input)."""

    code = "undecodable_image"


class EmptyImage(ImageError):
    code = "empty_image"


class BlankImage(ImageError):
    code = "blank_image"


class NoDigits(BlankImage):
    """Something stands out from the paper, but no handwriting: only ruling lines, box
    borders, masks, printed background or marks that are not digits."""

    code = "no_digits"


class ImageTooLarge(ImageError):
    code = "image_too_large"


class TooManyComponents(ImageError):
    code = "too_many_components"


class DataError(DigitsError):
    """Training or evaluation data is missing or malformed."""


class CheckpointError(DigitsError):
    """A checkpoint is missing, incomplete, or holds something it must not."""


class StorageError(DigitsError):
    """Local or S3 storage could not be read or written."""


class ConfigError(DigitsError, ValueError):
    """A setting or flag has a value that cannot work."""
