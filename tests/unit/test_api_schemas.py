"""The schemas are the single source of truth: the code, the docs and the hand-written checks agree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.api import all_methods
from native_host.api.envelope import parse_request
from native_host.api.schemas import SCHEMA_DIR, event_names, method_names, schemas
from native_host.errors import ErrorCode, HostError

ROOT = Path(__file__).resolve().parents[2]


def all_patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for value in node.values() for p in all_patterns(value)]
    if isinstance(node, list):
        return [p for value in node for p in all_patterns(value)]
    return []


def test_every_method_has_a_schema_and_every_schema_a_method() -> None:
    assert sorted(all_methods()) == sorted(method_names())


def test_error_codes_match_the_envelope_schema() -> None:
    envelope = schemas().documents["envelope.json"]
    assert sorted(envelope["$defs"]["error_code"]["enum"]) == sorted(c.value for c in ErrorCode)


def test_parameterless_methods_have_the_empty_object_schema() -> None:
    for method in all_methods().values():
        if method.parameterless:
            params = schemas().documents[f"methods/{method.name}.json"]["$defs"]["params"]
            assert params == {"type": "object", "additionalProperties": False}, method.name


def test_patterns_reject_a_trailing_newline() -> None:
    # Python's `$` matches before a final newline; JSON Schema's (ECMA) does not.
    for path in SCHEMA_DIR.rglob("*.json"):
        for pattern in all_patterns(json.loads(path.read_text())):
            if pattern.endswith("$"):
                assert pattern.endswith("(?!\\n)$"), (path.name, pattern)


def test_docs_cover_every_method_event_and_error_code() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for name in [*method_names(), *event_names(), *(c.value for c in ErrorCode)]:
        assert re.search(rf"`{re.escape(name)}`", text), name


ids = st.one_of(
    st.integers(min_value=-(2**60), max_value=2**60),
    st.text(max_size=300),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)
methods = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,5}(\.[a-z]{1,4})?\n?", fullmatch=True),
    st.text(max_size=8),
    st.integers(),
)
members = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "method": methods,
        "params": st.one_of(
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            st.lists(st.integers(), max_size=2),
        ),
        "extra": st.integers(),
    },
)


@given(members)
def test_hand_written_envelope_check_agrees_with_the_schema(message: dict[str, Any]) -> None:
    schema_ok = schemas().request.is_valid(message)
    try:
        parse_request(message)
        hand_ok = True
    except HostError:
        hand_ok = False
    assert hand_ok == schema_ok


@pytest.mark.parametrize("name", method_names())
def test_method_schemas_are_documented(name: str) -> None:
    document = schemas().documents[f"methods/{name}.json"]
    assert document.get("description")
