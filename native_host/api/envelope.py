"""Request envelope checks, by hand so the first `ping` does not wait for jsonschema to import.

The envelope schema in schemas/envelope.json stays the source of truth: a property test checks
that `parse_request` accepts exactly what that schema accepts.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from native_host.errors import ErrorCode, HostError

RequestId = str | int

MAX_ID_LENGTH = 256
MAX_SAFE_INTEGER = 2**53 - 1  # what JavaScript can echo back unchanged
METHOD_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
MAX_METHOD_LENGTH = 64
_ALLOWED_KEYS = frozenset({"id", "method", "params"})


class Request(NamedTuple):  # not a dataclass: see Method in dispatch.py
    id: RequestId
    method: str
    params: dict[str, Any]


def valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_LENGTH
    if isinstance(value, int):
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    # JSON Schema counts 3.0 as an integer; JavaScript cannot tell 3.0 from 3 either.
    if isinstance(value, float):
        return value.is_integer() and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    return False


def request_id_of(message: dict[str, Any]) -> RequestId | None:
    """The id to echo in an error about `message`: its own if well-formed, else null."""
    value = message.get("id")
    if not valid_id(value):
        return None
    return int(value) if isinstance(value, float) else value


def parse_request(message: dict[str, Any]) -> Request:
    """Accept exactly the envelope schema's `request`, or raise invalid_request."""

    def fail(text: str) -> HostError:
        return HostError(ErrorCode.INVALID_REQUEST, text)

    extra = sorted(set(message) - _ALLOWED_KEYS)
    if extra:
        raise fail(f"unexpected member {extra[0][:64]!r}; a request has id, method and params")
    if "id" not in message:
        raise fail("missing id")
    request_id = request_id_of(message)
    if request_id is None:
        raise fail(f"id must be a string of at most {MAX_ID_LENGTH} characters or a safe integer")
    method = message.get("method")
    if not isinstance(method, str):
        raise fail("method must be a string")
    if len(method) > MAX_METHOD_LENGTH or not METHOD_PATTERN.fullmatch(method):
        raise fail("method must look like 'group.name' in lower case")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise fail("params must be an object")
    return Request(request_id, method, params)
