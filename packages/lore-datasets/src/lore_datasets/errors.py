"""Errors for bad input data.

Every loader and split raises ``DataError`` for data it cannot use, with a
message naming the file, the line or field, and the user at fault, so a user
can fix the input without reading our code. It subclasses ``ValueError`` so
generic callers that already catch bad values keep working.
"""


class DataError(ValueError):
    """The input data is missing, malformed or inconsistent."""


class DatasetUnavailable(DataError):
    """A known dataset name whose loader is not available (yet)."""
