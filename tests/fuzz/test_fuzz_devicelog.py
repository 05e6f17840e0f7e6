"""Device-log verification, fed what the server can do with the entries it holds: reorder,
replay, withhold, truncate, damage, and add entries forged with keys that are not members'. The
log never raises on input; only entries signed by members ever reach the verified chain; and the
result depends on the set of entries seen, never on their order, within bounded time and memory.

A quick slice runs in the normal suite; HYPOTHESIS_PROFILE=fuzz runs 100,000 inputs each.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from native_host.core.crypto import DeviceKeys, sign_document
from native_host.core.devicelog import (
    DeviceLog,
    ProblemKind,
    admit,
    entry_hash,
    genesis,
    remove,
    rename,
    roll,
)
from tests.fakes import SeededRandom
from tests.fuzz.contract import MIB, bounded
from tests.unit.test_devicelog import outcome

A, B, C, X = "000000000000000a", "000000000000000b", "000000000000000c", "00000000000000ff"
KEYS = {d: DeviceKeys.generate(SeededRandom(n)) for n, d in enumerate((A, B, C, X))}
MEMBERS = (A, B, C)  # X never becomes one: whatever it signs is a forgery
FPR, FPR2 = "0123456789ABCDEF0123456789ABCDEF01234567", "F" * 64
T = 1_800_000_000


def _history() -> list[dict[str, Any]]:
    """A valid log that uses every op: genesis, two adds, a rename, a roll, a removal."""
    first = genesis(A, KEYS[A], "laptop", FPR, T)
    log = DeviceLog(entry_hash(first))
    log.receive(first)
    entries = [first]

    def step(entry: dict[str, Any]) -> None:
        log.receive(entry)
        log.rebuild()
        assert log.head_hash == entry_hash(entry)
        entries.append(entry)

    step(admit(log, A, KEYS[A], B, KEYS[B].public, "phone", T + 1))
    step(admit(log, B, KEYS[B], C, KEYS[C].public, "tablet", T + 2))
    step(rename(log, A, KEYS[A], C, "old tablet", T + 3))
    step(roll(log, B, KEYS[B], FPR2, T + 4))
    step(remove(log, C, KEYS[C], A, T + 5))
    return entries


HISTORY = _history()
GENESIS = entry_hash(HISTORY[0])
ODD: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, 0, -1, 2**40, 2**40 + 1, 2**64, 1.0, "", "x" * 2000, [], {}, A, X, GENESIS,
     FPR.lower(), "genesis", "add", {"sign": "", "enc": ""}]
)  # fmt: skip


FIELD_VALUES = ODD | st.text(max_size=10)
HOW = st.sampled_from(["field", "drop", "extra", "sig", "respell", "shape"])
INDEX = st.integers(0, len(HISTORY) - 1)


@st.composite
def damaged(draw: st.DrawFn) -> Any:
    """A true entry changed without a signature over the change (or not an entry at all)."""
    doc: dict[str, Any] = json.loads(json.dumps(HISTORY[draw(INDEX)]))
    how = draw(HOW)
    if how == "field":
        doc[draw(st.sampled_from(sorted(doc)))] = draw(FIELD_VALUES)
    elif how == "drop":
        doc.pop(draw(st.sampled_from(sorted(doc))))
    elif how == "extra":
        doc[draw(st.text(max_size=8))] = draw(ODD)
    elif how == "sig":
        at = draw(st.integers(0, len(doc["sig"]) - 1))
        doc["sig"] = doc["sig"][:at] + draw(st.sampled_from("AB/+=")) + doc["sig"][at + 1 :]
    elif how == "respell":  # the same signature bytes in another base64 spelling
        doc["sig"] = doc["sig"].rstrip("=") + draw(st.sampled_from(["", "=", "=\n", " "]))
    elif how == "shape":
        return draw(ODD | st.lists(ODD, max_size=3))
    return doc


@st.composite
def forged(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed entry signed by the outsider X, claiming any position and any signer."""
    base: dict[str, Any] = json.loads(json.dumps(HISTORY[draw(INDEX)]))
    base.pop("sig")
    base["by"] = draw(st.sampled_from([X, *MEMBERS]))
    if draw(st.booleans()):
        base.update(op="add", device_id=X, keys=KEYS[X].public.to_json(), account_key=None)
        base["seq"] = draw(st.integers(1, len(HISTORY)))
        base["prev"] = entry_hash(HISTORY[base["seq"] - 1])
    return sign_document(base, KEYS[X])


@st.composite
def member_forks(draw: st.DrawFn) -> dict[str, Any]:
    """A sibling of a true entry, validly signed by a device that is (or was) a member: a fork
    that a member really could make. Whether it wins is for the hash rule alone to say."""
    seq = draw(st.integers(1, len(HISTORY) - 1))
    body = {k: v for k, v in HISTORY[seq].items() if k != "sig"}
    body["by"] = draw(st.sampled_from(MEMBERS))
    body["name"] = draw(st.sampled_from(["a", "b", "fork"]))
    return sign_document(body, KEYS[body["by"]])


@st.composite
def feeds(draw: st.DrawFn) -> tuple[list[Any], list[dict[str, Any]]]:
    """What a sync hands the log: some of the history, in any order, with replays and junk;
    and the member-signed forks among them."""
    kept = [HISTORY[i] for i in draw(st.lists(INDEX, max_size=len(HISTORY) + 3))]
    junk = draw(st.lists(damaged() | forged(), max_size=4))
    forks = draw(st.lists(member_forks(), max_size=2))
    return draw(st.permutations(kept + junk + forks)), forks


def feed(entries: list[Any], pinned: str | None, batch: bool) -> DeviceLog:
    log = DeviceLog(pinned)
    if batch:
        problems = log.receive_all(entries)
    else:
        problems = [p for e in entries for p in log.receive(e)] + log.rebuild()
    assert all(isinstance(p.kind, ProblemKind) and p.reason for p in problems)
    return log


@given(feeds(), st.sampled_from([GENESIS, GENESIS, GENESIS, None, "0" * 64]), st.booleans())
def test_any_feed_verifies_to_a_chain_of_member_signed_entries(
    case: tuple[list[Any], list[dict[str, Any]]], pinned: str | None, batch: bool
) -> None:
    entries, forks = case
    with bounded(4 * MIB):
        log = feed(entries, pinned, batch)
        chain = log.entries()
        first = outcome(log)
        second = outcome(feed(entries[::-1], pinned, not batch))
    assert first == second, "the verified log depends on the order entries came in"
    if pinned != GENESIS:
        assert chain == []
    if forks:  # only true entries and member-signed forks, in seq order from the genesis
        assert all(entry in HISTORY or entry in forks for entry in chain)
        assert [entry["seq"] for entry in chain] == list(range(len(chain)))
    else:  # without forks, the chain is a prefix of the one true history
        assert chain == HISTORY[: len(chain)]
    assert X not in log.members()
    assert set(log.pending) <= {entry_hash(e) for e in entries if isinstance(e, dict)}


def test_the_slice_is_not_vacuous() -> None:
    log = feed(list(reversed(HISTORY)), GENESIS, False)
    assert log.entries() == HISTORY
    assert sorted(log.members()) == [B, C]
    assert log.account_key == FPR2
