"""The device log: only entries hanging off the pinned genesis, each signed by a member at that
point, count; the chain depends on the set of entries seen, never on their order."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.core import devicelog
from native_host.core.crypto import DeviceKeys, sign_document
from native_host.core.devicelog import (
    DeviceLog,
    Member,
    Problem,
    ProblemKind,
    admit,
    entry_hash,
    genesis,
    remove,
    roll,
)
from tests.fakes import SeededRandom

A, B, C, D, E, F = (f"00000000000000{x}1" for x in "abcdef")
KEYS = {device: DeviceKeys.generate(SeededRandom(n)) for n, device in enumerate((A, B, C, D, E, F))}
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
FPR2 = "FEDCBA9876543210FEDCBA9876543210FEDCBA98"
T = 1_800_000_000


def founded(device: str = A, fpr: str = FPR) -> tuple[DeviceLog, dict[str, Any]]:
    first = genesis(device, KEYS[device], "laptop", fpr, T)
    log = DeviceLog(entry_hash(first))
    assert log.receive(first) == []
    return log, first


def append(log: DeviceLog, entry: dict[str, Any]) -> dict[str, Any]:
    """Feed an entry that must be accepted and become the head."""
    assert log.receive(entry) == []
    assert log.rebuild() == []
    assert log.head_hash == entry_hash(entry)
    return entry


def add(log: DeviceLog, signer: str, device: str, name: str = "phone") -> dict[str, Any]:
    entry = admit(log, signer, KEYS[signer], device, KEYS[device].public, name, T + 1)
    return append(log, entry)


def forged(entry: dict[str, Any], signer: str, **changes: Any) -> dict[str, Any]:
    """`entry` with `changes`, validly signed by `signer`'s keys (whoever `by` names)."""
    return sign_document({**entry, **changes}, KEYS[signer])


def fresh(genesis_hash: str | None, entries: list[dict[str, Any]]) -> DeviceLog:
    log = DeviceLog(genesis_hash)
    for entry in entries:
        log.receive(entry)
    log.rebuild()
    return log


def outcome(log: DeviceLog) -> tuple[object, ...]:
    return (
        log.head_hash,
        log.head_seq,
        log.account_key,
        log.entries(),
        log.members(),
        sorted(log.problems, key=repr),
        log.pending,
    )


# --- Happy path ---------------------------------------------------------------------------


def test_genesis_and_adds_verify() -> None:
    log, first = founded()
    assert log.members() == {A: Member(A, KEYS[A].public, "laptop", A, 0)}
    assert (log.head_seq, log.head_hash, log.account_key) == (0, entry_hash(first), FPR)
    e1 = add(log, A, B, "phone")
    e2 = add(log, B, C, "desktop")  # a device admitted by A may admit others
    assert log.members() == {
        A: Member(A, KEYS[A].public, "laptop", A, 0),
        B: Member(B, KEYS[B].public, "phone", A, 1),
        C: Member(C, KEYS[C].public, "desktop", B, 2),
    }
    assert log.is_member(C)
    assert not log.is_member(D)
    assert log.head_seq == 2
    assert log.entries() == [first, e1, e2]
    assert log.problems == []
    assert log.pending == []


def test_a_new_device_rebuilds_the_same_log_from_a_snapshot() -> None:
    log, first = founded()
    add(log, A, B)
    add(log, A, C)
    copy = DeviceLog(entry_hash(first))
    assert copy.receive_all(reversed(log.entries())) == []
    assert outcome(copy) == outcome(log)


def test_unpinned_log_verifies_nothing_until_pinned() -> None:
    log, first = founded()
    e1 = add(log, A, B)
    unpinned = fresh(None, [first, e1])
    assert (unpinned.head_hash, unpinned.members(), unpinned.problems) == (None, {}, [])
    assert unpinned.pending == sorted([entry_hash(first), entry_hash(e1)])
    unpinned.pin(entry_hash(first))
    assert unpinned.head_hash == entry_hash(e1)
    assert set(unpinned.members()) == {A, B}
    unpinned.pin(entry_hash(first))  # the same pin again is harmless
    with pytest.raises(ValueError, match="another genesis"):
        unpinned.pin(entry_hash(e1))


def test_genesis_pinned_but_not_received_leaves_everything_pending() -> None:
    log, first = founded()
    e1 = add(log, A, B)
    waiting = fresh(entry_hash(first), [e1])
    assert waiting.head_hash is None
    assert waiting.pending == [entry_hash(e1)]
    assert waiting.receive_all([first]) == []
    assert waiting.head_hash == entry_hash(e1)
    assert waiting.pending == []


# --- Order independence -------------------------------------------------------------------


def scenario() -> tuple[str, list[dict[str, Any]]]:
    """Genesis, adds, a removal, a roll, a three-way fork with a dead branch, forgeries, a
    foreign log and an orphan: everything the order must not matter for."""
    log, first = founded()
    e1 = add(log, A, B)
    fork = [admit(log, A, KEYS[A], device, KEYS[device].public, "x", T + 2) for device in (C, D)]
    fork.append(admit(log, B, KEYS[B], E, KEYS[E].public, "y", T + 2))
    log.receive_all(fork)
    assert log.head_hash in {entry_hash(entry) for entry in fork}
    winner_log = DeviceLog(entry_hash(first))
    winner_log.receive_all([first, e1, *fork])
    e3 = remove(winner_log, A, KEYS[A], B, T + 3, FPR)
    winner_log.receive_all([e3])
    e4 = roll(winner_log, A, KEYS[A], FPR2, T + 4)
    winner_log.receive_all([e4])
    assert winner_log.account_key == FPR2
    winner_hash = entry_hash(winner_log.entries()[2])
    loser = next(entry for entry in fork if entry_hash(entry) != winner_hash)
    dead = forged(
        loser, A, seq=3, prev=entry_hash(loser), device_id=F, keys=KEYS[F].public.to_json()
    )
    bad_sig = forged(e3, B)  # by A, signed by B
    other, _ = founded(D, FPR2)
    foreign = other.entries()[0]
    foreign_child = admit(other, D, KEYS[D], E, KEYS[E].public, "z", T)
    orphan = forged(e1, A, prev="0" * 64, seq=7)
    return entry_hash(first), [
        first,
        e1,
        *fork,
        e3,
        e4,
        dead,
        bad_sig,
        foreign,
        foreign_child,
        orphan,
    ]


PINNED, ENTRIES = scenario()
REFERENCE = fresh(PINNED, ENTRIES)


def test_scenario_reference_outcome() -> None:
    log = REFERENCE
    assert log.head_seq == 4
    assert set(log.members()) == {A, log.entries()[2]["device_id"]}  # B removed
    assert log.account_key == FPR2
    kinds = sorted(problem.kind for problem in log.problems)
    assert kinds == sorted(
        [ProblemKind.FORK, ProblemKind.FORK, ProblemKind.INVALID, ProblemKind.FOREIGN]
    )
    assert log.pending == [entry_hash(ENTRIES[-1])]  # the orphan waits for a prev never sent


@given(st.permutations(ENTRIES))
def test_every_order_gives_the_same_log(order: list[dict[str, Any]]) -> None:
    assert outcome(fresh(PINNED, order)) == outcome(REFERENCE)


@given(st.permutations(ENTRIES))
def test_rebuilding_after_every_entry_ends_the_same(order: list[dict[str, Any]]) -> None:
    log = DeviceLog(PINNED)
    reported: list[Problem] = []
    for entry in order:
        reported += log.receive_all([entry])
    assert outcome(log) == outcome(REFERENCE)
    # Everything still wrong at the end was announced at some point.
    assert set(log.problems) <= set(reported)


# --- Forks --------------------------------------------------------------------------------


def concurrent_adds() -> tuple[DeviceLog, dict[str, Any], list[dict[str, Any]]]:
    log, first = founded()
    add(log, A, B)
    fork = [
        admit(log, A, KEYS[A], C, KEYS[C].public, "c", T + 2),
        admit(log, B, KEYS[B], D, KEYS[D].public, "d", T + 2),
        admit(log, A, KEYS[A], E, KEYS[E].public, "e", T + 2),
    ]
    return log, first, fork


@given(st.permutations(range(3)))
def test_fork_resolves_to_the_smallest_hash_in_any_order(order: list[int]) -> None:
    log, _first, fork = concurrent_adds()
    by_hash = sorted(fork, key=entry_hash)
    winner, losers = by_hash[0], by_hash[1:]
    new = log.receive_all([fork[i] for i in order])
    assert log.head_hash == entry_hash(winner)
    assert log.is_member(winner["device_id"])
    assert not any(log.is_member(loser["device_id"]) for loser in losers)
    expected = [
        Problem(
            entry_hash(loser),
            f"fork: entry {entry_hash(loser)} lost to {entry_hash(winner)}",
            ProblemKind.FORK,
        )
        for loser in losers
    ]
    assert log.problems == expected
    assert new == expected


def test_a_smaller_sibling_arriving_late_switches_the_chain() -> None:
    log, _first, fork = concurrent_adds()
    big, small = sorted(fork, key=entry_hash)[-1], sorted(fork, key=entry_hash)[0]
    append(log, big)
    on_top = add(log, A, F)
    assert log.head_seq == 3
    found = log.receive_all([small])
    assert log.head_hash == entry_hash(small)
    assert log.head_seq == 2
    assert not log.is_member(big["device_id"])
    assert not log.is_member(F)
    assert [problem.entry_hash for problem in found] == [entry_hash(big)]
    assert entry_hash(on_top) not in log.pending  # below the loser: dropped silently


# --- Forgeries ----------------------------------------------------------------------------


def two_member_log() -> tuple[DeviceLog, dict[str, Any], dict[str, Any]]:
    log, first = founded()
    e1 = add(log, A, B)
    return log, first, e1


def next_add(log: DeviceLog) -> dict[str, Any]:
    return admit(log, A, KEYS[A], C, KEYS[C].public, "desktop", T + 5)


FORGERIES: dict[str, tuple[Any, str]] = {
    "non-member signer": (
        lambda log, e1: forged(next_add(log), C, by=C),
        f"signed by {C}, which is not a member",
    ),
    "bad signature": (lambda log, e1: forged(next_add(log), C), f"signature by {A} does not"),
    "tampered after signing": (
        lambda log, e1: {**next_add(log), "name": "evil"},
        f"signature by {A} does not verify",
    ),
    "tampered keys": (
        lambda log, e1: {**next_add(log), "keys": KEYS[D].public.to_json()},
        f"signature by {A} does not verify",
    ),
    "wrong prev (skips a position)": (
        lambda log, e1: forged(next_add(log), A, prev=log.genesis_hash),
        "seq 2 does not follow 0",
    ),
    "wrong seq": (lambda log, e1: forged(next_add(log), A, seq=5), "seq 5 does not follow 1"),
    "re-adding a member": (
        lambda log, e1: forged(next_add(log), A, device_id=B, keys=KEYS[B].public.to_json()),
        f"{B} is already a member",
    ),
    "removing a non-member": (
        lambda log, e1: forged(remove(log, A, KEYS[A], B, T), A, device_id=D),
        f"{D} is not a member",
    ),
    "removal naming the wrong keys": (
        lambda log, e1: forged(remove(log, A, KEYS[A], B, T), A, keys=KEYS[D].public.to_json()),
        f"keys given for {B} are not its keys",
    ),
}


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_entries_are_ignored_and_reported(name: str) -> None:
    make, reason = FORGERIES[name]
    log, _first, e1 = two_member_log()
    before = outcome(log)
    bad = make(log, e1)
    assert log.receive(bad) == []  # well-formed: judged at rebuild, where it claims to sit
    found = log.rebuild()
    assert len(found) == 1
    assert found[0].entry_hash == entry_hash(bad)
    assert found[0].kind is ProblemKind.INVALID
    assert reason in found[0].reason
    assert outcome(log)[:5] == before[:5]  # chain, members, account key untouched
    assert log.rebuild() == []  # reported once
    assert log.problems == found
    # The legitimate next entry is still accepted.
    add(log, A, C)


def test_a_prev_that_never_arrives_leaves_the_entry_pending() -> None:
    log, _first, _e1 = two_member_log()
    orphan = forged(next_add(log), A, prev="ab" * 32)
    assert log.receive_all([orphan]) == []
    assert log.pending == [entry_hash(orphan)]
    assert not log.is_member(C)


def test_foreign_genesis_is_ignored_and_reported_once() -> None:
    log, _first, _e1 = two_member_log()
    before = outcome(log)
    other, foreign = founded(D, FPR2)
    children = [add(other, D, E), add(other, E, C)]
    found = log.receive_all([foreign, *children])
    assert found == [
        Problem(
            entry_hash(foreign),
            "genesis is not the pinned one; its log is ignored",
            ProblemKind.FOREIGN,
        )
    ]
    assert outcome(log)[:5] == before[:5]
    assert log.pending == []  # its descendants are not news
    assert not log.is_member(D)


def test_replaying_an_old_entry_changes_nothing() -> None:
    log, first, e1 = two_member_log()
    e2 = add(log, A, C)
    before = outcome(log)
    for old in (first, e1, e2, dict(reversed(e1.items()))):  # key order does not matter
        assert log.receive(old) == []
    assert log.rebuild() == []
    assert outcome(log) == before


def test_removed_device_cannot_add() -> None:
    log, _first, _e1 = two_member_log()
    append(log, remove(log, A, KEYS[A], B, T + 2))
    assert not log.is_member(B)
    with pytest.raises(ValueError, match="not a member"):
        admit(log, B, KEYS[B], C, KEYS[C].public, "c", T + 3)
    by_removed = forged(next_add(log), B, by=B)
    found = log.receive_all([by_removed])
    assert [(p.entry_hash, p.reason) for p in found] == [
        (entry_hash(by_removed), f"signed by {B}, which is not a member")
    ]
    assert not log.is_member(C)


def test_a_device_may_remove_itself_but_not_the_last_member() -> None:
    log, _first, _e1 = two_member_log()
    append(log, remove(log, B, KEYS[B], B, T + 2))
    assert set(log.members()) == {A}
    with pytest.raises(ValueError, match="last member"):
        remove(log, A, KEYS[A], A, T + 3)
    last = forged(log.entries()[-1], A, seq=3, prev=log.head_hash, by=A, device_id=A, name="laptop")
    found = log.receive_all([last])
    assert [p.reason for p in found] == ["removing the last member would leave nobody to sign"]
    assert log.is_member(A)


def test_a_removed_device_can_be_admitted_again() -> None:
    log, _first, _e1 = two_member_log()
    append(log, remove(log, A, KEYS[A], B, T + 2))
    add(log, A, B, "phone again")
    assert log.members()[B].seq == 3
    assert log.members()[B].name == "phone again"


def test_roll_changes_the_account_key() -> None:
    log, _first, _e1 = two_member_log()
    append(log, roll(log, B, KEYS[B], "fedc ba98 7654 3210 fedc  ba98 7654 3210 fedc ba98", T))
    assert log.account_key == FPR2
    assert set(log.members()) == {A, B}
    forged_roll = forged(roll(log, A, KEYS[A], FPR, T), C, by=C, device_id=C)
    assert [p.kind for p in log.receive_all([forged_roll])] == [ProblemKind.INVALID]
    assert log.account_key == FPR2


def test_pinned_genesis_with_a_bad_signature_yields_no_chain() -> None:
    first = forged(genesis(A, KEYS[A], "laptop", FPR, T), B)
    log = DeviceLog(entry_hash(first))
    found = log.receive_all([first])
    assert [p.reason for p in found] == ["the pinned genesis's signature does not verify"]
    assert (log.head_hash, log.members()) == (None, {})


def test_pinning_a_non_genesis_entry_yields_no_chain() -> None:
    _log, first, e1 = two_member_log()
    log = DeviceLog(entry_hash(e1))
    found = log.receive_all([first, e1])
    assert [(p.entry_hash, p.kind) for p in found] == [
        (entry_hash(first), ProblemKind.FOREIGN),
        (entry_hash(e1), ProblemKind.INVALID),
    ]
    assert found[1].reason == "the pinned entry is not a genesis but an add"
    assert log.head_hash is None


# --- Structure ----------------------------------------------------------------------------


def _valid_add() -> dict[str, Any]:
    log, _first, _e1 = two_member_log()
    return next_add(log)


VALID_ADD = _valid_add()


def _respelled_sig(entry: dict[str, Any]) -> dict[str, Any]:
    """The same 64 signature bytes, spelt with a non-zero padding bit."""
    sig = entry["sig"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = sig[-3]
    respelled = sig[:-3] + alphabet[alphabet.index(last) ^ 1] + "=="
    assert base64.b64decode(respelled) == base64.b64decode(sig)
    return {**entry, "sig": respelled}


MALFORMED: dict[str, tuple[Any, str]] = {
    "not an object": ([1, 2], "must be an object"),
    "missing member": (
        {k: v for k, v in VALID_ADD.items() if k != "by"},
        "missing by",
    ),
    "unknown member": ({**VALID_ADD, "admin": True}, "1 unknown members"),
    "boolean seq": ({**VALID_ADD, "seq": True}, "seq must be an integer"),
    "float at": ({**VALID_ADD, "at": 1.5}, "at must be an integer"),
    "huge seq": ({**VALID_ADD, "seq": 2**64}, "seq must be an integer"),
    "negative at": ({**VALID_ADD, "at": -1}, "at must be an integer"),
    "unknown op": ({**VALID_ADD, "op": "promote"}, "unknown op"),
    "op not a string": ({**VALID_ADD, "op": ["add"]}, "unknown op"),
    "upper-case device id": ({**VALID_ADD, "device_id": C.upper()}, "device_id must be"),
    "bad by": ({**VALID_ADD, "by": "a" * 17}, "by must be a device id"),
    "bad prev": ({**VALID_ADD, "prev": "A" * 64}, "prev must be"),
    "long name": ({**VALID_ADD, "name": "x" * 65}, "name must be 1 to 64"),
    "empty name": ({**VALID_ADD, "name": ""}, "name must be 1 to 64"),
    "control in name": ({**VALID_ADD, "name": "a\nb"}, "control characters"),
    "lone surrogate in name": ({**VALID_ADD, "name": "a\ud800"}, "not valid Unicode"),
    "keys with extra member": (
        {**VALID_ADD, "keys": {**VALID_ADD["keys"], "x": "y"}},
        "keys must be an object",
    ),
    "short key": ({**VALID_ADD, "keys": {**VALID_ADD["keys"], "sign": "AAAA"}}, "keys.sign"),
    "sig not base64": ({**VALID_ADD, "sig": "!" * 88}, "sig: invalid base64"),
    "sig respelt": (_respelled_sig(VALID_ADD), "sig: not canonical base64"),
    "lower-case fingerprint": (
        {**genesis(A, KEYS[A], "x", FPR, T), "account_key": FPR.lower()},
        "upper-case hex fingerprint",
    ),
    "add without keys": (
        {k: v for k, v in VALID_ADD.items() if k != "keys"},
        "add must carry the device's keys",
    ),
    "add with an account key": ({**VALID_ADD, "account_key": FPR}, "add takes no account_key"),
    "roll without account key": ({**VALID_ADD, "op": "roll"}, "roll needs account_key"),
    "roll for another device": (
        {**VALID_ADD, "op": "roll", "account_key": FPR},
        "roll must name its signer",
    ),
    "add at seq 0": ({**VALID_ADD, "seq": 0}, "add needs seq >= 1"),
    "genesis not self-signed": (
        {**genesis(A, KEYS[A], "x", FPR, T), "by": B},
        "genesis must be signed by the device it introduces",
    ),
    "genesis with a prev": (
        {**genesis(A, KEYS[A], "x", FPR, T), "prev": "a" * 64},
        "genesis must have seq 0",
    ),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_entries_are_reported_on_receipt(name: str) -> None:
    value, reason = MALFORMED[name]
    log, _first, _e1 = two_member_log()
    before = outcome(log)
    found = log.receive(value)
    assert len(found) == 1
    assert found[0].kind is ProblemKind.MALFORMED
    assert reason in found[0].reason
    assert log.problems == found
    assert log.rebuild() == []
    assert outcome(log)[:5] == before[:5]


def test_shape_errors_carry_the_entry_hash_and_are_reported_once() -> None:
    log, _first, _e1 = two_member_log()
    bad = {**VALID_ADD, "seq": 0}
    found = log.receive(bad)
    assert found[0].entry_hash == entry_hash(bad)
    assert log.receive(bad) == []
    assert len(log.receive([1])) == len(log.receive([1])) == 1  # unhashable garbage: every time


def test_candidates_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devicelog, "MAX_CANDIDATES", 2)
    log, _first, _e1 = two_member_log()  # genesis + one add: full
    found = log.receive(next_add(log))
    assert [p.kind for p in found] == [ProblemKind.FULL]
    assert log.head_seq == 1


def test_entry_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devicelog, "MAX_ENTRY_BYTES", 200)
    found = DeviceLog(None).receive(VALID_ADD)
    assert "over 200" in found[0].reason


def test_kept_rejections_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devicelog, "MAX_REJECTIONS_KEPT", 3)
    log = DeviceLog(None)
    for n in range(5):
        assert len(log.receive(n)) == 1
    assert len(log.problems) == 3


# --- Garbage ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=20,
)


@given(JSON)
def test_arbitrary_json_is_reported_never_raised(value: Any) -> None:
    log, _first, _e1 = two_member_log()
    before = outcome(log)
    found = log.receive(value)
    assert [p.kind for p in found] == [ProblemKind.MALFORMED]
    assert log.rebuild() == []
    assert outcome(log)[:5] == before[:5]


@given(st.sampled_from(sorted(VALID_ADD)), JSON)
def test_any_field_replaced_by_garbage_is_reported_or_pending(field: str, junk: Any) -> None:
    mutated = {**VALID_ADD, field: junk}
    log, _first, _e1 = two_member_log()
    before = outcome(log)
    found = log.receive(mutated) + log.rebuild()
    if mutated == VALID_ADD:
        return
    assert outcome(log)[:5] == before[:5]
    assert found or entry_hash(mutated) in log.pending


@given(
    st.sampled_from(sorted(VALID_ADD)),
    st.sampled_from(
        [None, 0, 1, 2, "", "x", "add", "remove", "roll", "genesis", A, B, C, "a" * 64, FPR]
    ),
)
def test_plausible_field_values_never_forge_an_add(field: str, value: Any) -> None:
    mutated = {**VALID_ADD, field: value}
    if mutated == VALID_ADD:
        return
    log, _first, _e1 = two_member_log()
    found = log.receive(mutated) + log.rebuild()
    assert not log.is_member(C)
    assert found or entry_hash(mutated) in log.pending


# --- Builders -----------------------------------------------------------------------------


def test_builders_refuse_local_misuse() -> None:
    log, _first, _e1 = two_member_log()
    with pytest.raises(ValueError, match="not a member with these keys"):
        admit(log, C, KEYS[C], D, KEYS[D].public, "d", T)
    with pytest.raises(ValueError, match="not a member with these keys"):
        admit(log, A, KEYS[B], D, KEYS[D].public, "d", T)
    with pytest.raises(ValueError, match="already a member"):
        admit(log, A, KEYS[A], B, KEYS[B].public, "b", T)
    with pytest.raises(ValueError, match="not a valid log entry: name"):
        admit(log, A, KEYS[A], D, KEYS[D].public, "", T)
    with pytest.raises(ValueError, match="is not a member"):
        remove(log, A, KEYS[A], D, T)
    with pytest.raises(ValueError, match="not a member with these keys"):
        roll(log, C, KEYS[C], FPR2, T)
    with pytest.raises(ValueError, match="not an OpenPGP fingerprint"):
        roll(log, A, KEYS[A], "not hex", T)
    with pytest.raises(ValueError, match="no verified chain"):
        admit(DeviceLog(None), A, KEYS[A], D, KEYS[D].public, "d", T)
    with pytest.raises(ValueError, match="not an entry hash"):
        DeviceLog("nope")


def test_built_entries_extend_the_head() -> None:
    log, first, e1 = two_member_log()
    assert (e1["seq"], e1["prev"], e1["by"], e1["op"]) == (1, entry_hash(first), A, "add")
    assert e1["keys"] == KEYS[B].public.to_json()
    assert first["by"] == first["device_id"] == A
    assert first["account_key"] == FPR
    gone = remove(log, A, KEYS[A], B, T)
    assert "keys" not in gone
    assert (gone["seq"], gone["prev"], gone["name"]) == (2, log.head_hash, "phone")
