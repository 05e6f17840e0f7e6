"""Strict JSON for untrusted input: UTF-8 only, one object, no duplicate keys, no NaN/Infinity.

Shared by the frame reader (input from the add-on) and the SMA parser (input from the server),
because Python's json module accepts all of those by default.
"""

from __future__ import annotations

import json
import math
from typing import Any


class InvalidJson(Exception):
    """The bytes are not one strict UTF-8 JSON object."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidJson(f"duplicate key {key[:64]!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # Python reads 1e400 as inf: the NaN/Infinity ban would be moot, and canonical JSON
    # (signatures, hashes) would later fail on it with a ValueError.
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson(f"number {text[:32]} is out of range")
    return value


def decode_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing over-long digit strings
        raise InvalidJson(f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise InvalidJson(f"top level is {type(value).__name__}, not an object")
    return value


def encode(message: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; strings that cannot be UTF-8 (echoed lone surrogates) become escapes."""
    try:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii")
