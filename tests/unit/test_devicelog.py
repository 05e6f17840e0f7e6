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
    rename,
    roll,
)
from tests.fakes import SeededRandom

A, B, C, D, E, F = (f"00000000000000{x}1" for x in "abcdef")
KEYS = {device: DeviceKeys.generate(SeededRandom(n)) for n, device in enumerate((A, B, C, D, E, F))}
FPR = "0123456789ABCDEF0123456789ABCDEF01234567"
FPR2 = "FEDCBA9876543210FEDCBA9876543210FEDCBA98"
FPR3 = "A" * 40
T = 1_800_000_000


def founded(
    device: str = A, fpr: str = FPR, me: str | None = None
) -> tuple[DeviceLog, dict[str, Any]]:
    first = genesis(device, KEYS[device], "laptop", fpr, T)
    log = DeviceLog(entry_hash(first), me=me)
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


def fresh(
    genesis_hash: str | None, entries: list[dict[str, Any]], me: str | None = None
) -> DeviceLog:
    log = DeviceLog(genesis_hash, me=me)
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
        log.removed,
        log.roll_owed,
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
    """Genesis, adds, a removal (naming a new key), a roll, a three-way fork (two of its entries
    signed by A: an equivocation) with a dead branch, forgeries, a foreign log and an orphan:
    everything the order must not matter for."""
    log, first = founded()
    e1 = add(log, A, B)
    fork = [admit(log, A, KEYS[A], device, KEYS[device].public, "x", T + 2) for device in (C, D)]
    fork.append(admit(log, B, KEYS[B], E, KEYS[E].public, "y", T + 2))
    log.receive_all(fork)
    assert log.head_hash in {entry_hash(entry) for entry in fork}
    winner_log = DeviceLog(entry_hash(first))
    winner_log.receive_all([first, e1, *fork])
    e3 = remove(winner_log, A, KEYS[A], B, T + 3, FPR3)
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
    """Pins what the order-independence properties compare against, so that they cannot pass
    by every order agreeing on an empty or broken log."""
    log = REFERENCE
    assert log.head_seq == 4
    assert set(log.members()) == {A, log.entries()[2]["device_id"]}  # B removed
    assert log.removed == {B}
    assert log.account_key == FPR2
    assert not log.roll_owed  # the removal named a key, and a roll followed
    kinds = sorted(problem.kind for problem in log.problems)
    assert kinds == sorted(
        [ProblemKind.INVALID, ProblemKind.FOREIGN]
        + [ProblemKind.FORK] * 3  # the two fork losers and the branch below one of them
        + [ProblemKind.EQUIVOCATION] * 2  # A signed two adds at seq 2, and two entries at 3
    )
    assert log.refused_total == 1  # the bad signature; the foreign genesis is a finding
    # The orphan and the foreign genesis's child wait (in the bounded pool) for what never comes.
    assert log.pending == sorted([entry_hash(ENTRIES[-1]), entry_hash(ENTRIES[-2])])


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
    expected = {
        Problem(
            entry_hash(loser), f"entry {entry_hash(loser)} lost a fork (a race)", ProblemKind.FORK
        )
        for loser in losers
    }
    # A signed two of the three at seq 2: the larger of its two hashes is an equivocation.
    by_a = sorted((e for e in fork if e["by"] == A), key=entry_hash)
    expected.add(
        Problem(
            entry_hash(by_a[1]),
            f"{A} signed two different entries at seq 2 ({entry_hash(by_a[0])} and"
            f" {entry_hash(by_a[1])}): a device never does; its key may be in other hands",
            ProblemKind.EQUIVOCATION,
        )
    )
    assert set(log.problems) == expected
    assert set(new) == expected
    assert len(new) == len(expected)  # each once
    assert log.rebuild() == []


def test_a_smaller_sibling_arriving_late_does_not_beat_a_longer_branch() -> None:
    """Length comes before the hash: an old sibling replayed late cannot cut off what was built
    since (the hash only breaks ties between equally long branches)."""
    log, _first, fork = concurrent_adds()
    big, small = sorted(fork, key=entry_hash)[-1], sorted(fork, key=entry_hash)[0]
    append(log, big)
    on_top = add(log, A, F)
    assert log.head_seq == 3
    found = log.receive_all([small])
    assert log.head_hash == entry_hash(on_top)
    assert log.is_member(big["device_id"])
    assert log.is_member(F)
    assert not log.is_member(small["device_id"])
    assert found == [
        Problem(
            entry_hash(small), f"entry {entry_hash(small)} lost a fork (a race)", ProblemKind.FORK
        )
    ]
    assert log.lost_by(small["by"]) == [small]  # its signer admits that device again


def test_a_removal_beats_a_longer_branch() -> None:
    """Removal wins: a shorter branch holding a removal takes the chain from a longer one
    without, so that nobody can outgrow a removal by piling entries beside it."""
    log, first = founded()
    add(log, A, B)
    add(log, A, C)
    short = fresh(entry_hash(first), log.entries())
    longer = [add(log, A, D), add(log, A, F)]
    longer.append(append(log, rename(log, A, KEYS[A], F, "tablet", T + 3)))
    assert log.head_seq == 5
    removal = remove(short, B, KEYS[B], C, T + 9, FPR2)
    found = log.receive_all([removal])
    assert log.head_hash == entry_hash(removal)
    assert log.head_seq == 3
    assert log.removed == {C}
    assert log.account_key == FPR2
    assert set(log.members()) == {A, B}
    # Nothing B signed is involved: the longer branch merely lost (a race, no alert).
    assert sorted((p.entry_hash, p.kind) for p in found) == sorted(
        (entry_hash(entry), ProblemKind.FORK) for entry in longer
    )
    assert log.lost_by(A) == longer[:2]  # adds A makes again; the rename went with F


# --- Queries ------------------------------------------------------------------------------


def test_documents_restore_the_same_log_after_a_restart() -> None:
    """`documents` is what upstream saves: kept entries (fork losers included, since they
    decide later forks) and the waiting ones; `changes` says when to save again."""
    log, _first, fork = concurrent_adds()
    orphan = forged(next_add(log), A, prev="ab" * 32)
    log.receive_all([*fork, orphan])
    changes = log.changes
    assert log.receive_all([*fork, orphan]) == []  # replays change nothing to save
    assert log.changes == changes
    saved = log.documents()
    assert len(saved) == 2 + 3 + 1
    assert saved[-1] == orphan  # the waiting ones last
    restarted = fresh(log.genesis_hash, saved)
    assert outcome(restarted) == outcome(log)
    assert all(restarted.contains(entry_hash(entry)) for entry in fork)
    assert not restarted.contains(entry_hash(orphan))  # waiting is not kept


def test_admission_of_names_the_entry_on_the_chain() -> None:
    log, first, fork = concurrent_adds()
    log.receive_all(fork)
    winner = min(fork, key=entry_hash)
    assert log.admission_of(A) == first
    assert log.admission_of(winner["device_id"]) == winner
    assert all(
        log.admission_of(loser["device_id"]) is None for loser in fork if loser is not winner
    )


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
        lambda log, e1: forged(remove(log, A, KEYS[A], B, T, FPR2), A, device_id=D),
        f"{D} is not a member",
    ),
    "removal naming the wrong keys": (
        lambda log, e1: forged(
            remove(log, A, KEYS[A], B, T, FPR2), A, keys=KEYS[D].public.to_json()
        ),
        f"keys given for {B} are not its keys",
    ),
    "removal signed by its target": (
        lambda log, e1: forged(remove(log, A, KEYS[A], B, T, FPR2), B),
        f"signature by {A} does not verify",
    ),
}


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_entries_are_refused_on_receipt(name: str) -> None:
    """Only what verifies is kept: an entry whose parent is known is judged at once, refused,
    counted and returned by `receive`, and leaves nothing behind (not even a candidate)."""
    make, reason = FORGERIES[name]
    log, _first, e1 = two_member_log()
    before = outcome(log)
    documents, changes = log.documents(), log.changes
    bad = make(log, e1)
    found = log.receive(bad)
    assert len(found) == 1
    assert found[0].entry_hash == entry_hash(bad)
    assert found[0].kind is ProblemKind.INVALID
    assert reason in found[0].reason
    assert log.refused_total == 1
    assert log.rebuild() == []  # a refusal is not a finding
    assert outcome(log)[:7] == before[:7]  # chain, members, key, removed, roll_owed untouched
    assert (log.documents(), log.changes) == (documents, changes)  # nothing to save
    assert not log.contains(entry_hash(bad))
    assert log.problems == found
    # The legitimate next entry is still accepted.
    add(log, A, C)


@pytest.mark.parametrize("name", FORGERIES)
def test_forged_entries_waiting_for_their_parent_are_refused_when_it_comes(name: str) -> None:
    """An entry that arrives before its parent waits unjudged; it is refused (not kept) when
    the parent comes, with the same reason."""
    make, reason = FORGERIES[name]
    log, first, e1 = two_member_log()
    bad = make(log, e1)
    if bad["prev"] != entry_hash(e1):  # hangs elsewhere (the genesis): nothing to withhold
        return
    late = DeviceLog(entry_hash(first))
    assert late.receive_all([first, bad]) == []
    assert late.pending == [entry_hash(bad)]
    found = late.receive(e1)
    assert [(p.entry_hash, p.kind) for p in found] == [(entry_hash(bad), ProblemKind.INVALID)]
    assert reason in found[0].reason
    assert late.pending == []
    assert late.head_hash == entry_hash(e1)


def test_a_prev_that_never_arrives_leaves_the_entry_pending() -> None:
    log, _first, _e1 = two_member_log()
    orphan = forged(next_add(log), A, prev="ab" * 32)
    assert log.receive_all([orphan]) == []
    assert log.pending == [entry_hash(orphan)]
    assert not log.is_member(C)


def test_an_entry_whose_parent_never_comes_is_reported_after_a_while() -> None:
    """Waiting is not judging: an entry that is never judged would never be reported. It is
    reported once, as refused, and keeps waiting: a withheld parent may still come."""
    log, _first, e1 = two_member_log()
    child = next_add(log)
    grandchild = admit(log, A, KEYS[A], D, KEYS[D].public, "tv", T + 2)
    grandchild = forged(grandchild, A, seq=child["seq"] + 1, prev=entry_hash(child))
    log.receive_all([grandchild])
    refused_before = log.refused_total
    assert log.report_overdue(100.0, 300.0) == []  # the clock starts now
    assert log.report_overdue(399.0, 300.0) == []
    [problem] = log.report_overdue(400.0, 300.0)
    assert (problem.entry_hash, problem.kind) == (entry_hash(grandchild), ProblemKind.OVERDUE)
    assert "did not arrive in 5 minutes" in problem.reason
    assert log.report_overdue(10_000.0, 300.0) == []  # once
    assert log.refused_total == refused_before + 1
    assert log.pending == [entry_hash(grandchild)]
    # The withheld parent comes after all: both are kept.
    assert log.receive_all([child]) == []
    assert log.pending == []
    assert {C, D} <= set(log.members())
    assert e1 in log.entries()


def test_before_the_pin_nothing_waiting_is_overdue() -> None:
    log, first = founded()
    e1 = add(log, A, B)
    unpinned = fresh(None, [first, e1])
    assert unpinned.report_overdue(0.0, 300.0) == []
    assert unpinned.report_overdue(10_000.0, 300.0) == []
    unpinned.pin(entry_hash(first))
    assert unpinned.head_hash == entry_hash(e1)


def test_foreign_genesis_is_ignored_and_reported_once() -> None:
    log, _first, _e1 = two_member_log()
    before = outcome(log)
    other, foreign = founded(D, FPR2)
    children = [add(other, D, E), add(other, E, C)]
    found = log.receive_all([foreign, *children])
    assert [(p.entry_hash, p.kind) for p in found] == [(entry_hash(foreign), ProblemKind.FOREIGN)]
    assert "founded another identity" in found[0].reason
    assert log.receive_all([foreign, *children]) == []  # once
    assert outcome(log)[:7] == before[:7]
    # Its descendants wait in the bounded pool for a parent that is never kept.
    assert log.pending == sorted(entry_hash(child) for child in children)
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
    append(log, remove(log, A, KEYS[A], B, T + 2, FPR2))
    assert not log.is_member(B)
    with pytest.raises(ValueError, match="not a member"):
        admit(log, B, KEYS[B], C, KEYS[C].public, "c", T + 3)
    by_removed = forged(next_add(log), B, by=B)
    found = log.receive_all([by_removed])
    assert [(p.entry_hash, p.kind, p.reason) for p in found] == [
        (entry_hash(by_removed), ProblemKind.INVALID, f"signed by {B}, which is not a member there")
    ]
    assert not log.is_member(C)


def test_a_device_may_remove_itself_but_not_the_last_member() -> None:
    log, _first, _e1 = two_member_log()
    leaving = append(log, remove(log, B, KEYS[B], B, T + 2))
    assert leaving["account_key"] is None  # a device that leaves names no key
    assert set(log.members()) == {A}
    assert log.removed == {B}
    assert log.roll_owed  # B knows the current key
    append(log, roll(log, A, KEYS[A], FPR2, T + 3))
    assert not log.roll_owed
    assert log.account_key == FPR2
    with pytest.raises(ValueError, match="last member"):
        remove(log, A, KEYS[A], A, T + 3)
    last = forged(leaving, A, seq=4, prev=log.head_hash, by=A, device_id=A, name="laptop")
    found = log.receive_all([last])
    assert [p.reason for p in found] == ["removing the last member would leave nobody to sign"]
    assert log.is_member(A)


def test_a_removed_device_is_out_for_good() -> None:
    """A device that a counting removal names is never a member again, even if a member signs
    an add for it afterwards (it must pair again under a new device id)."""
    log, _first, e1 = two_member_log()
    removal = append(log, remove(log, A, KEYS[A], B, T + 2, FPR2))
    readd = add(log, A, B, "phone again")  # kept (it verifies), and it is the head...
    assert not log.is_member(B)  # ...but it does not bring B back
    assert log.removed == {B}
    assert log.removal_of(B) == removal
    assert log.admission_of(B) == e1  # the first admission on the chain
    assert log.contains(entry_hash(readd))


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
    assert [(p.entry_hash, p.kind) for p in found] == [(entry_hash(first), ProblemKind.FOREIGN)]
    assert log.pending == [entry_hash(e1)]  # an add waits for its parent, never a root
    assert (log.head_hash, log.members()) == (None, {})


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
    "format 1 (no v)": (
        {k: v for k, v in VALID_ADD.items() if k != "v"},
        "autocrypt-sma 0.1.0 wrote format 1",
    ),
    "a future format": ({**VALID_ADD, "v": 3}, "another format"),
    "removal of another naming no key": (
        {**VALID_ADD, "op": "remove"},
        "names the new account key",
    ),
    "leaving naming a key": (
        {**VALID_ADD, "op": "remove", "device_id": A, "account_key": FPR},
        "a device that leaves names none",
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
    assert outcome(log)[:7] == before[:7]


def test_shape_errors_carry_the_entry_hash_and_every_receipt_is_counted() -> None:
    """Nothing refused is remembered (that would be memory an attacker fills): a replayed
    refusal is refused, returned and counted again; only the latest few are kept to show."""
    log, _first, _e1 = two_member_log()
    bad = {**VALID_ADD, "seq": 0}
    found = log.receive(bad)
    assert found[0].entry_hash == entry_hash(bad)
    assert log.receive(bad) == found
    assert len(log.receive([1])) == len(log.receive([1])) == 1  # unhashable garbage: every time
    assert log.receive([1])[0].entry_hash is None
    # A member that fails its own check (a flipped byte in a device id) is named by its hash
    # too: tests/adversary saw a corrupted forged entry reported as "refused None".
    damaged = {**VALID_ADD, "device_id": "zz" + VALID_ADD["device_id"][2:]}
    [problem] = log.receive(damaged)
    assert problem.reason == "device_id must be a device id"
    assert problem.entry_hash == entry_hash(damaged)
    assert log.refused_total == 6
    assert log.documents() == log.entries()  # nothing of it is saved


def test_kept_entries_are_bounded_but_a_removal_is_always_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full log refuses new entries, except removals: otherwise filling it would make a
    device impossible to remove."""
    monkeypatch.setattr(devicelog, "MAX_ENTRIES", 2)
    log, _first, _e1 = two_member_log()  # genesis + one add: full
    found = log.receive(next_add(log))
    assert [p.kind for p in found] == [ProblemKind.FULL]
    assert log.refused_total == 1
    assert log.head_seq == 1
    append(log, remove(log, A, KEYS[A], B, T + 5, FPR2))
    assert log.removed == {B}


def test_entries_per_signer_are_bounded_but_a_removal_is_always_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(devicelog, "MAX_PER_SIGNER", 1)
    log, _first, _e1 = two_member_log()  # A signed one add (the pinned genesis is not counted)
    found = log.receive(next_add(log))
    assert [p.kind for p in found] == [ProblemKind.FULL]
    assert "only removals are kept" in found[0].reason
    add(log, B, C)  # another signer is not affected
    append(log, remove(log, A, KEYS[A], B, T + 5, FPR2))
    assert log.removed == {B}


def test_entries_per_signer_and_seq_are_bounded() -> None:
    """A signer's second entry at one seq is kept (as evidence of equivocation); a third is
    refused, so that a device with a stolen key cannot fill the log at one position."""
    log, _first, _e1 = two_member_log()
    names = [rename(log, B, KEYS[B], B, f"name {n}", T + 5) for n in range(3)]
    assert log.receive(names[0]) == log.receive(names[1]) == []
    found = log.receive(names[2])
    assert [p.kind for p in found] == [ProblemKind.FULL]
    assert [p.kind for p in log.rebuild()] == [ProblemKind.EQUIVOCATION, ProblemKind.FORK]
    assert not log.contains(entry_hash(names[2]))


def test_waiting_entries_are_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devicelog, "MAX_WAITING", 2)
    log, _first, _e1 = two_member_log()
    orphans = [forged(next_add(log), A, prev=f"{n:064x}") for n in range(3)]
    assert log.receive(orphans[0]) == log.receive(orphans[1]) == []
    found = log.receive(orphans[2])
    assert [(p.entry_hash, p.kind) for p in found] == [
        (entry_hash(orphans[0]), ProblemKind.WAITING_DROPPED)
    ]
    assert log.pending == sorted(entry_hash(orphan) for orphan in orphans[1:])
    assert log.refused_total == 1
    assert len(log.documents()) == 2 + 2


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
    assert log.refused_total == 5  # upstream reports the difference


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
    assert outcome(log)[:7] == before[:7]


@given(st.sampled_from(sorted(VALID_ADD)), JSON)
def test_any_field_replaced_by_garbage_is_reported_or_pending(field: str, junk: Any) -> None:
    mutated = {**VALID_ADD, field: junk}
    log, _first, _e1 = two_member_log()
    before = outcome(log)
    found = log.receive(mutated) + log.rebuild()
    if mutated == VALID_ADD:
        return
    assert outcome(log)[:7] == before[:7]
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
        remove(log, A, KEYS[A], D, T, FPR2)
    with pytest.raises(ValueError, match="removing another device names the new account key"):
        remove(log, A, KEYS[A], B, T)
    with pytest.raises(ValueError, match="leaving does not"):
        remove(log, B, KEYS[B], B, T, FPR2)
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
    gone = remove(log, A, KEYS[A], B, T, "0123 4567 89ab cdef 0123 4567 89ab cdef 0123 4567")
    assert "keys" not in gone
    assert (gone["seq"], gone["prev"], gone["name"]) == (2, log.head_hash, "phone")
    assert gone["account_key"] == FPR  # normalised
    assert gone["v"] == first["v"] == e1["v"] == devicelog.FORMAT
