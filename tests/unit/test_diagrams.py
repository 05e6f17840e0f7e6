"""The state diagrams in docs/ are generated from the code (native_host/tools/diagrams.py): this
fails when the committed ones differ from what the code gives now, so they cannot go stale.
Regenerate with `python -m native_host.tools.diagrams`."""

from __future__ import annotations

from pathlib import Path

import pytest

from native_host.core import pairing as pm
from native_host.tools import diagrams


def test_the_committed_diagrams_are_what_the_code_gives_now() -> None:
    stale = diagrams.stale()
    assert stale == [], (
        f"{', '.join(map(str, stale))} differ from the code: run python -m native_host.tools.diagrams"
    )


def test_the_pairing_diagram_has_the_protocol_s_essential_transitions() -> None:
    """The exploration really drives the machine (a broken one would draw next to nothing)."""
    edges = {(role, a, b) for role, a, _, b in diagrams.pairing_transitions()}
    inviter, joiner, s = pm.Role.INVITER, pm.Role.JOINER, pm.State
    happy = {
        (inviter, s.INVITING, s.CONFIRMING),
        (inviter, s.CONFIRMING, s.PROVEN),
        (inviter, s.PROVEN, s.SENT),
        (inviter, s.SENT, s.COMPLETED),
        (joiner, s.JOINING, s.RECEIVING),
        (joiner, s.RECEIVING, s.COMPLETED),
    }
    assert happy <= edges
    assert (inviter, s.CONFIRMING, s.FAILED) in edges  # a wrong code
    assert (joiner, s.JOINING, s.FAILED) in edges
    assert not any(a in pm.TERMINAL for _, a, _ in edges)  # final is final
    assert (inviter, s.INVITING, s.PROVEN) not in edges  # no secret without the proof


def test_embedding_needs_its_markers_and_replaces_only_between_them() -> None:
    text = "a\n<!-- diagram:x -->\nold\n<!-- /diagram:x -->\nb\n"
    assert diagrams.embed(text, "x", "new\n") == (
        "a\n<!-- diagram:x -->\n```mermaid\nnew\n```\n<!-- /diagram:x -->\nb\n"
    )
    with pytest.raises(ValueError, match="needs exactly one"):
        diagrams.embed("no markers", "x", "new\n")


def test_check_and_write_on_a_copy(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    protocol = (diagrams.ROOT / diagrams.PROTOCOL).read_text(encoding="utf-8")
    (tmp_path / diagrams.PROTOCOL).write_text(protocol, encoding="utf-8")
    assert diagrams.main(["--root", str(tmp_path), "--check"]) == 1  # no diagrams yet
    assert diagrams.main(["--root", str(tmp_path)]) == 0
    assert diagrams.stale(tmp_path) == []
    assert (tmp_path / "docs/diagrams/pairing.dot").read_text(encoding="utf-8").startswith("//")
