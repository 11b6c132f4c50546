"""Reading what users hand in: text files as UTF-8, and the one loader of versioned JSON records.

Every file planner reads (plan.json, run.json, split.json, weights.json, a models file, a sample
submission) goes through :func:`read_text`, and every versioned JSON record through
:func:`load_record`: read the bytes, decode UTF-8 (a byte-order mark is harmless and skipped), parse,
check that the top level is an object of the version this planner reads, then validate its fields.
Whatever is wrong becomes one ``UserError`` line naming the file, the problem and the fix: a folder
where a file belongs, an empty file, another encoding (Latin-1, UTF-16), another format under the
right name (an image, an archive, CSV), a list instead of an object, another version, a bad field.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from planner.base.errors import UserError

UTF8_BOM = codecs.BOM_UTF8
UTF16 = "UTF-16 text"  # text, in another encoding than the UTF-8 every reader takes
# What a file starts with when it is not text: shown so that a misnamed file is recognised.
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF file (WebP image?)"),
    (b"PK\x03\x04", "a zip archive (an .npz?)"),
    (b"\x93NUMPY", "a numpy .npy array"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (codecs.BOM_UTF16_LE, UTF16),
    (codecs.BOM_UTF16_BE, UTF16),
)
RecordT = TypeVar("RecordT", bound=BaseModel)


def read_bytes(path: Path, what: str, fix: str) -> bytes:
    """The bytes of a file the user named.

    Args:
        path: the file.
        what: what it is, for the message ("plan file", "sample submission").
        fix: what to do about a problem, appended to every message.

    Raises:
        UserError: the path is missing, is a folder, cannot be read, or is empty.
    """
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file: {fix}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found: {fix}") from None
    except OSError as error:
        raise UserError(f"{what} {path} cannot be read ({error.strerror or error}): {fix}") from None
    if not data.strip():
        raise UserError(f"{what} {path} is empty: {fix}")
    return data


def describe_bytes(data: bytes) -> str | None:
    """What a file's first bytes say it is (a PNG image, a zip archive, ...), or None."""
    return next((kind for magic, kind in MAGIC if data.startswith(magic)), None)


def read_text(path: Path, what: str, fix: str) -> str:
    """A text file decoded as UTF-8; a leading byte-order mark is dropped.

    Raises:
        UserError: as :func:`read_bytes`, or the file is binary or in another encoding (the message
            names the first byte that is not UTF-8 and says to save the file as UTF-8).
    """
    data = read_bytes(path, what, fix)
    kind = describe_bytes(data)
    if kind == UTF16:
        raise UserError(f"{what} {path} is {kind}, not UTF-8: save it as UTF-8, or {fix}")
    if kind is not None:
        raise UserError(f"{what} {path} is {kind}, not text: {fix}")
    try:
        return data.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as error:
        byte = data[error.start + len(UTF8_BOM) * data.startswith(UTF8_BOM)]
        raise UserError(
            f"{what} {path} is not UTF-8 (byte 0x{byte:02x} at position {error.start}, e.g. Latin-1 or "
            f"Windows-1252): save it as UTF-8, or {fix}"
        ) from None


def read_json_object(path: Path, what: str, fix: str) -> dict:
    """A JSON file whose top level is an object.

    Raises:
        UserError: as :func:`read_text`, the text is not JSON (line and column named), or the top
            level is not an object.
    """
    text = read_text(path, what, fix)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        first = text.lstrip().splitlines()[0] if text.strip() else ""
        looks = " (it looks like CSV)" if "," in first and not first.startswith(("{", "[")) else ""
        raise UserError(
            f"{what} {path} is not JSON{looks}: {error.msg} at line {error.lineno} column {error.colno}; {fix}"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} holds a JSON {type(data).__name__}, not an object: {fix}")
    return data


def load_record(path: Path, record: type[RecordT], *, what: str, version: int, fix: str) -> RecordT:
    """Read, check and validate a versioned JSON record file.

    Args:
        path: the file.
        record: the pydantic model of its top level (it refuses unknown fields and bad values).
        what: what the file is, for the messages.
        version: the ``version`` this planner reads.
        fix: what to do about a problem (e.g. "make it again with planner probe").

    Returns:
        The validated record.

    Raises:
        UserError: any problem of :func:`read_json_object`, another version, or a bad field (its
            path in the file named, e.g. ``entries.2.accum``).
    """
    data = read_json_object(path, what, fix)
    if data.get("version") != version:
        raise UserError(f"{what} {path} has version {data.get('version')!r}, this planner reads version "
                        f"{version}: {fix}")
    try:
        return record.model_validate(data)
    except ValidationError as error:
        raise UserError(f"{what} {path} is invalid: {describe_validation_error(error)}; {fix}") from None


def describe_validation_error(error: ValidationError) -> str:
    """The first problem of a pydantic error as ``field.path: message``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{where}: {first['msg']}"
