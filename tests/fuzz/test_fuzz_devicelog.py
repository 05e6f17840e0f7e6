"""Device-log verification, fed what the server can do with the entries it holds: reorder,
replay, withhold, truncate, damage, and add entries forged with keys that are not members'. The
log never raises on input; only entries signed by members ever reach the verified chain; and the
result depends on the set of entries seen, never on their order, within bounded time and memory.

A quick slice runs in the normal suite; HYPOTHESIS_PROFILE=fuzz runs 100,000 inputs each, and
floods the log with 100,000 junk entries (10,000 in the quick slice).
"""

from __future__ import annotations

import json
import os
import random
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from native_host.core.crypto import DeviceKeys, sign_document
from native_host.core.devicelog import (
    MAX_WAITING,
    REFUSED,
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
FPR, FPR2, FPR3 = "0123456789ABCDEF0123456789ABCDEF01234567", "F" * 64, "E" * 40
T = 1_800_000_000


def _history() -> list[dict[str, Any]]:
    """A valid log that uses every op: genesis, two adds, a rename, a roll, a removal (which
    names the next account key)."""
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
    step(remove(log, C, KEYS[C], A, T + 5, FPR3))
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
    that a member really could make. Whether it counts and wins is for the rules alone to say
    (removal wins; then the longer branch; then the smaller hash)."""
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
    # One fork per signer and position: with the true entry, that is the two a signer may have
    # kept at one seq (MAX_PER_SIGNER_SEQ); a third is refused, and which one depends on order.
    forks = draw(st.lists(member_forks(), max_size=2, unique_by=lambda e: (e["by"], e["seq"])))
    return draw(st.permutations(kept + junk + forks)), forks


def verified(log: DeviceLog) -> tuple[object, ...]:
    """`outcome`, with the refusals as a set: each receipt of a refused entry is counted, but a
    replay of an entry still waiting for its parent is not (it is held), so how many times
    one is refused depends on the order; what is refused, and why, does not."""
    findings = sorted((p for p in log.problems if p.kind not in REFUSED), key=repr)
    refused = {(p.entry_hash, p.kind, p.reason) for p in log.problems if p.kind in REFUSED}
    return (*outcome(log)[:7], findings, refused, log.pending)


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
        first = verified(log)
        second = verified(feed(entries[::-1], pinned, not batch))
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
    assert log.removed == {A}
    assert log.account_key == FPR3


# --- A flood of junk -------------------------------------------------------------------------

JUNK_COUNT = 100_000 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 10_000
JUNK_PEAK = 2 * MIB  # measured about 0.35 MiB; the pool of MAX_WAITING entries is under 1 MiB
JUNK_SECONDS_PER_ENTRY = 0.001  # measured about 0.1 ms (under tracemalloc)


def junk(count: int, seed: int) -> Iterator[Any]:
    """What a hostile server can write for free, made one at a time (the test holds none of
    it): garbage, entries claiming a parent nobody has (random prev), entries signed by the
    outsider X, and entries claiming a member signer with a signature that does not verify.
    `at` is beyond the history's, so that none of them is a true entry by chance."""
    rng = random.Random(seed)
    template = {k: v for k, v in HISTORY[1].items()}  # A admits B
    by_x = sign_document({**template, "by": X, "device_id": C}, KEYS[X])
    for n in range(count):
        kind = n % 5
        at = T + 1_000 + n
        if kind == 0:
            yield {"v": 2, "seq": n, "junk": "x" * rng.randrange(200)}
        elif kind == 1:
            yield {**template, "prev": f"{rng.getrandbits(256):064x}", "at": at}
        elif kind == 2:
            yield {**by_x, "at": at}
        elif kind == 3:
            yield {**template, "at": at}  # by A, the signature is over another `at`
        else:
            yield {**template, "seq": rng.randrange(2, 2**40), "at": at}  # random position


def flood(log: DeviceLog) -> float:
    """Feed the junk under tracemalloc; the peak beyond what the log held before."""
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for value in junk(JUNK_COUNT, seed=1):
            log.receive(value)
        log.rebuild()
        return tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()


def test_a_flood_of_junk_leaves_a_pinned_log_bounded_and_working() -> None:
    """Only what verifies is kept: whatever the server floods the log with, memory stays
    bounded, what is saved is at most the waiting pool beyond the real entries, and a genuine
    entry arriving afterwards is kept and takes effect."""
    log = DeviceLog(GENESIS)
    log.receive_all(HISTORY[:2])  # A and B
    start = time.process_time()
    peak = flood(log)
    elapsed = time.process_time() - start
    assert peak < JUNK_PEAK, f"peaked {peak} bytes above the baseline"
    assert elapsed < JUNK_COUNT * JUNK_SECONDS_PER_ENTRY
    assert len(log.documents()) <= MAX_WAITING + 2
    assert len(log.pending) == MAX_WAITING
    assert log.refused_total >= JUNK_COUNT * 3 // 5 - MAX_WAITING
    assert log.entries() == HISTORY[:2]
    assert log.receive_all(HISTORY[2:]) == []
    assert log.entries() == HISTORY
    assert log.account_key == FPR3
    assert sorted(log.members()) == [B, C]


def test_a_flood_of_junk_leaves_an_unpinned_log_bounded_and_pinnable() -> None:
    """Before the pin nothing can be checked, so everything but garbage waits, in a bounded
    pool; pinning afterwards still verifies the real genesis and the real entries."""
    log = DeviceLog(None)
    peak = flood(log)
    assert peak < JUNK_PEAK, f"peaked {peak} bytes above the baseline"
    assert len(log.documents()) <= MAX_WAITING
    log.receive_all(HISTORY)
    log.pin(GENESIS)
    assert log.rebuild() == []  # the junk that waited is refused on `receive`, not found
    assert log.entries() == HISTORY
    assert sorted(log.members()) == [B, C]
    assert len(log.documents()) <= MAX_WAITING + len(HISTORY)
