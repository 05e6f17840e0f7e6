"""The API's JSON Schemas, loaded and compiled once: the single source of truth for every message.

Importing jsonschema costs ~100 ms, several times a bare interpreter's start, so nothing here is
imported until the first request that needs it (or the host's background warm-up).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from native_host.errors import ErrorCode, HostError

if TYPE_CHECKING:
    from jsonschema import ValidationError
    from jsonschema.protocols import Validator

SCHEMA_DIR = Path(__file__).parent / "schemas"
BASE_URI = "https://autocrypt-sma.invalid/schemas/api/"
ENVELOPE_URI = BASE_URI + "envelope.json"

_MAX_MESSAGE = 300  # an error message names the path and the rule, never the offending value


def _schema_files() -> Iterator[tuple[str, Path]]:
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        yield path.relative_to(SCHEMA_DIR).as_posix(), path


def method_names() -> list[str]:
    """Every method the schemas define, without compiling anything."""
    return [
        rel[len("methods/") : -len(".json")]
        for rel, _ in _schema_files()
        if rel.startswith("methods/")
    ]


def event_names() -> list[str]:
    return [
        rel[len("events/") : -len(".json")]
        for rel, _ in _schema_files()
        if rel.startswith("events/")
    ]


def _json_path(error: ValidationError, root: str) -> str:
    path = root
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def describe(error: ValidationError, root: str) -> str:
    """A precise message naming the failing path and rule; it never echoes the value (secrets)."""
    rule = error.validator
    expected = error.validator_value
    path = _json_path(error, root)
    if rule in ("required", "additionalProperties", "unevaluatedProperties", "propertyNames"):
        text = f"{path}: {error.message}"  # these name keys only, never values
    elif rule == "type":
        text = f"{path}: must be of type {json.dumps(expected)}"
    elif rule == "enum":
        text = f"{path}: must be one of {json.dumps(expected)}"
    elif rule == "const":
        text = f"{path}: must be {json.dumps(expected)}"
    elif rule in ("pattern", "format"):
        text = f"{path}: does not match {rule} {json.dumps(expected)}"
    elif rule in ("oneOf", "anyOf"):
        text = f"{path}: matches none of the allowed forms"
    else:
        text = f"{path}: violates {rule} {json.dumps(expected)}"
    return text[:_MAX_MESSAGE]


class Schemas:
    """All API schemas, with one compiled validator per message kind, built at construction."""

    def __init__(self) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource

        documents: dict[str, dict[str, Any]] = {}
        for rel, path in _schema_files():
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("$id") != BASE_URI + rel:
                raise ValueError(f"schema {rel} must have $id {BASE_URI + rel}")
            Draft202012Validator.check_schema(doc)
            documents[rel] = doc
        # An explicit registry with no retrieve function: a $ref can never reach the network.
        registry: Registry[Any] = Registry().with_resources(
            (BASE_URI + rel, Resource.from_contents(doc)) for rel, doc in documents.items()
        )
        checker = Draft202012Validator.FORMAT_CHECKER

        def compile_ref(uri: str) -> Validator:
            return Draft202012Validator({"$ref": uri}, registry=registry, format_checker=checker)

        self.documents = documents
        self.request = compile_ref(ENVELOPE_URI + "#/$defs/request")
        self.response = compile_ref(ENVELOPE_URI + "#/$defs/response")
        self.event = compile_ref(ENVELOPE_URI + "#/$defs/event")
        self.params: dict[str, Validator] = {}
        self.results: dict[str, Validator] = {}
        self.event_data: dict[str, Validator] = {}
        for rel in documents:
            uri = BASE_URI + rel
            if rel.startswith("methods/"):
                name = rel[len("methods/") : -len(".json")]
                self.params[name] = compile_ref(uri + "#/$defs/params")
                self.results[name] = compile_ref(uri + "#/$defs/result")
            elif rel.startswith("events/"):
                name = rel[len("events/") : -len(".json")]
                self.event_data[name] = compile_ref(uri + "#/$defs/data")

    def check_params(self, method: str, params: dict[str, Any]) -> None:
        """Raise invalid_params naming the failing path; the best match is the most specific error."""
        from jsonschema.exceptions import best_match

        error = best_match(self.params[method].iter_errors(params))
        if error is not None:
            raise HostError(ErrorCode.INVALID_PARAMS, describe(error, "params"))

    def response_problems(self, method: str | None, message: dict[str, Any]) -> list[str]:
        """Everything wrong with an outbound response (for tests and debug runs)."""
        problems = [describe(e, "response") for e in self.response.iter_errors(message)]
        if not problems and method in self.results and "result" in message:
            problems = [
                describe(e, "result") for e in self.results[method].iter_errors(message["result"])
            ]
        return problems

    def event_problems(self, message: dict[str, Any]) -> list[str]:
        problems = [describe(e, "event") for e in self.event.iter_errors(message)]
        if not problems:
            validator = self.event_data.get(message["event"])
            if validator is None:
                problems = [f"event {message['event']!r} has no schema"]
            else:
                problems = [describe(e, "data") for e in validator.iter_errors(message["data"])]
        return problems


_lock = threading.Lock()


@cache
def _build() -> Schemas:
    return Schemas()


def schemas() -> Schemas:
    """The process-wide compiled schemas; the first caller pays the build, others wait for it."""
    with _lock:
        return _build()
