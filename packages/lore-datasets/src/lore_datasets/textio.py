"""Reading users' text files: UTF-8 with or without BOM, LF or CRLF, plain or gzip.

Spreadsheets save "CSV UTF-8" with a byte-order mark and Windows line ends;
other tools write Latin-1 or truncate a ``.gz``. Every loader reads text
through here so each of those is either accepted or one ``DataError`` line
naming the file (and the line, where there is one), never a traceback.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataError

BOM = "\ufeff"


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line_no, line)`` of a UTF-8 text file (``.gz`` is decompressed), line ends kept.

    Decoding is per line, so a non-UTF-8 byte (or a NUL, the mark of UTF-16)
    is reported with its line; a leading BOM is dropped.
    """
    try:
        # closed by the ``with`` below; opened here so OSError becomes DataError
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")  # noqa: SIM115
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    with raw:
        line_no = 0
        try:
            for line_no, data in enumerate(raw, start=1):
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(
                        f"{path}, line {line_no}: not UTF-8 (byte 0x{data[err.start]:02x} at "
                        f"column {err.start + 1}); save the file as UTF-8"
                    ) from None
                if "\0" in text:
                    raise DataError(f"{path}, line {line_no}: contains a NUL byte (UTF-16 or "
                                    "binary data?); save the file as UTF-8 text")
                if line_no == 1 and text.startswith(BOM):
                    text = text[1:]
                yield line_no, text
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            where = f" after line {line_no}" if line_no else ""
            raise DataError(f"{path}: not a complete gzip file{where} ({err})") from None
        except OSError as err:
            raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def csv_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header of a CSV file and an iterator of ``(line_no, record)`` after it.

    Blank lines are skipped; ``line_no`` is the record's first line. An
    empty file, a header naming a column twice, and malformed CSV (a stray
    quote, a NUL byte) are errors.
    """
    csv.field_size_limit(1 << 30)  # tables may carry long prompt/response texts
    lines = text_lines(path)
    reader = csv.reader((text for _, text in lines), strict=True)

    def records() -> Iterator[tuple[int, list[str]]]:
        while True:
            start = reader.line_num + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({err})") from None
            if record:
                yield start, record

    first = next(records(), None)
    if first is None:
        raise DataError(f"{path}: empty file (expected a header line)")
    header = first[1]
    twice = [name for name, n in Counter(header).items() if n > 1]
    if twice:
        raise DataError(f"{path}, line {first[0]}: column {twice[0]!r} appears more than once "
                        "in the header")
    return header, records()


def json_lines(path: Path, *, skip_blank: bool = False) -> Iterator[tuple[int, Any]]:
    """``(line_no, object)`` of a JSON-lines file; a blank line is an error unless skipped."""
    for line_no, text in text_lines(path):
        if not text.strip():
            if skip_blank:
                continue
            raise DataError(f"{path}, line {line_no}: empty line (every line is one JSON object)")
        try:
            yield line_no, json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {line_no}: invalid JSON ({err.msg})") from None


def read_json(path: Path, what: str) -> Any:
    """A whole JSON document (UTF-8, BOM allowed), or one line saying why not."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected {what})")
    text = "".join(line for _, line in text_lines(path))
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}, line {err.lineno}: invalid JSON ({err.msg}); expected {what}") from None
