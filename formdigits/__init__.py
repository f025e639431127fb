"""formdigits: the ``digits`` command (:mod:`formdigits.cli`), the root of the product's
packages: ``recognizer`` (the core, field reading, training), ``serving`` and ``jobs``."""
