"""The one exception for bad data on disk or bad data options."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: a missing or empty folder, an unreadable image, a
    malformed label file, a split with no samples.

    The message always names the offending file or folder and says what to do
    (usually: download / unpack the data set as described in ``data/README.md``).
    It subclasses :class:`ValueError` so generic callers can catch either.
    """


README_HINT = "see data/README.md for the expected layout"
