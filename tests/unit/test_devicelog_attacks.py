"""The attacks the device log's format 2 exists to stop (each one won against format 1, where the
smallest hash decided every fork): a removed device signing its way back in beside its removal,
a provider hiding a removal behind an ordinary race, a signer equivocating, concurrent removals.

Removal wins, in every order of arrival; what only an attacker produces is reported as an attack
(removed_acted, conflict, equivocation) and an ordinary race only as a fork. The flood of junk
(memory stays bounded) is in tests/fuzz/test_fuzz_devicelog.py, which the stress run scales up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.core.crypto import sign_document
from native_host.core.devicelog import (
    ATTACKS,
    REFUSED,
    DeviceLog,
    ProblemKind,
    admit,
    entry_hash,
    remove,
    rename,
    roll,
)
from tests.unit.test_devicelog import (
    FPR,
    FPR2,
    FPR3,
    KEYS,
    A,
    B,
    C,
    D,
    E,
    F,
    T,
    add,
    forged,
    founded,
    fresh,
    outcome,
)

FPR4 = "B" * 40


def grind(make: Callable[[int], dict[str, Any]], than: dict[str, Any]) -> dict[str, Any]:
    """Vary `at` (free for the signer) until the entry's hash is below `than`'s: under the old
    rule (smallest hash wins the fork) that alone made the entry win."""
    for at in range(T, T + 10_000):
        entry = make(at)
        if entry_hash(entry) < entry_hash(than):
            return entry
    raise AssertionError("no smaller hash found")  # pragma: no cover (1 in 2 per try)


def kinds(problems: list[Any]) -> list[ProblemKind]:
    return sorted(problem.kind for problem in problems)


def settled(log: DeviceLog) -> tuple[object, ...]:
    """`outcome` without the refusals, which are counted per receipt (a replayed refusal is
    refused again), so that deliveries with replays compare equal to the set delivered once."""
    findings = sorted((p for p in log.problems if p.kind not in REFUSED), key=repr)
    return (*outcome(log)[:7], findings, log.pending)


def feed_one_by_one(
    genesis_hash: str, order: list[dict[str, Any]], me: str | None, strict: bool = True
) -> DeviceLog:
    """Rebuild after every entry, as a device syncing in many small steps does. `strict`: every
    finding ever returned is one the final log holds (no transient false alarm)."""
    log = DeviceLog(genesis_hash, me=me)
    returned = []
    for entry in order:
        returned += log.receive_all([entry])
        assert not log.removed & log.members().keys()
    if strict:
        assert set(returned) == set(log.problems)
    return log


# --- 1. A removed device signs a sibling of its own removal -----------------------------------
#
# Members A, B, C, D at seq 3; A removes C at seq 4 (naming FPR2); A then admits E below that
# removal. C, holding its device key, signs at seq 4 too, grinding `at` for a smaller hash.


def _removal_setup() -> tuple[str, list[dict[str, Any]], DeviceLog, dict[str, Any], dict[str, Any]]:
    log, first = founded()
    for device in (B, C, D):
        add(log, A, device)
    base = log.entries()
    removal = remove(log, A, KEYS[A], C, T + 5, FPR2)
    below = fresh(entry_hash(first), [*base, removal])
    admitted = admit(below, A, KEYS[A], E, KEYS[E].public, "new phone", T + 6)
    return entry_hash(first), base, log, removal, admitted


GENESIS, BASE, AT_3, REMOVAL, ADMITTED_BELOW = _removal_setup()


def _remove_others() -> list[dict[str, Any]]:
    """C removes B beside its own removal, then D below that: every device but its remover."""
    first = grind(lambda at: remove(AT_3, C, KEYS[C], B, at, FPR3), REMOVAL)
    second = remove(fresh(GENESIS, [*BASE, first]), C, KEYS[C], D, T + 9, FPR4)
    return [first, second]


SIBLINGS: dict[str, list[dict[str, Any]]] = {
    "roll to its own key": [grind(lambda at: roll(AT_3, C, KEYS[C], FPR3, at), REMOVAL)],
    "harmless rename": [grind(lambda at: rename(AT_3, C, KEYS[C], C, "still here", at), REMOVAL)],
    "remove every other device": _remove_others(),
}
MUTUAL = [grind(lambda at: remove(AT_3, C, KEYS[C], A, at, FPR3), REMOVAL)]


def test_the_siblings_are_ground_below_the_removal() -> None:
    """The precondition that made every one of these win under format 1."""
    for sibling in [*(entries[0] for entries in SIBLINGS.values()), *MUTUAL]:
        assert entry_hash(sibling) < entry_hash(REMOVAL)
        assert sibling["seq"] == REMOVAL["seq"]
        assert sibling["prev"] == REMOVAL["prev"]


@pytest.mark.parametrize("variant", SIBLINGS)
@given(data=st.data(), me=st.sampled_from([None, A, B, D, E]))
def test_a_removed_device_stays_out_whatever_it_signs_beside_its_removal(
    variant: str, data: st.DataObject, me: str | None
) -> None:
    """In every order: C stays out, the key is the remover's, nobody else is removed, and what
    C signed is reported as an attack (removed_acted), never as a fork."""
    entries = [*BASE, REMOVAL, ADMITTED_BELOW, *SIBLINGS[variant]]
    log = feed_one_by_one(GENESIS, data.draw(st.permutations(entries)), me)
    assert set(log.members()) == {A, B, D, E}
    assert log.removed == {C}
    assert log.removal_of(C) == REMOVAL
    assert log.account_key == FPR2
    assert log.head_hash == entry_hash(ADMITTED_BELOW)
    assert not log.roll_owed  # the removal named the new key
    found = kinds(log.problems)
    assert found == [ProblemKind.REMOVED_ACTED]  # the first of C's entries; below it is void
    assert log.lost_by(C) == []
    assert outcome(log) == outcome(fresh(GENESIS, entries, me))


@given(data=st.data(), me=st.sampled_from([None, B, D]))
def test_mutual_removal_puts_both_out_for_third_parties(
    data: st.DataObject, me: str | None
) -> None:
    """C answers its removal by removing A at the same position: the log cannot tell which one
    is the user's, so for everyone else both are out, both removals are conflicts (never a
    fork), nothing hanging below either counts (E's admission), and a roll is owed, since the
    key left standing is the one both of them know; never C's."""
    entries = [*BASE, REMOVAL, ADMITTED_BELOW, *MUTUAL]
    log = feed_one_by_one(GENESIS, data.draw(st.permutations(entries)), me)
    assert log.removed == {A, C}
    assert set(log.members()) == {B, D}
    assert log.account_key == FPR  # neither removal's key: both are void
    assert log.roll_owed
    assert kinds(log.problems) == [ProblemKind.CONFLICT, ProblemKind.CONFLICT]
    assert outcome(log) == outcome(fresh(GENESIS, entries, me))


@given(data=st.data(), me=st.sampled_from([A, E]))
def test_mutual_removal_the_remover_and_devices_it_admitted_below_keep_the_remover(
    data: st.DataObject, me: str
) -> None:
    """A trusts its own removal, and E trusts the removal its admission hangs below (its user
    paired it with A after the removal): for them A stays, C is out with A's key, and both are
    told of the conflict (others may count A out) and of C's act. (E is a third party until
    its own admission arrives, hence not strict: in practice it comes with the pairing.)"""
    entries = [*BASE, REMOVAL, ADMITTED_BELOW, *MUTUAL]
    log = feed_one_by_one(GENESIS, data.draw(st.permutations(entries)), me, strict=me == A)
    assert set(log.members()) == {A, B, D, E}
    assert log.removed == {C}
    assert log.account_key == FPR2
    assert log.head_hash == entry_hash(ADMITTED_BELOW)
    assert kinds(log.problems) == sorted([ProblemKind.REMOVED_ACTED, ProblemKind.CONFLICT])


# --- 2. The provider hides a removal; a member signs beside it unknowingly ------------------


def _hidden_removal() -> dict[str, Any]:
    """D, not shown A's removal of C, renames itself at the same position (a smaller hash)."""
    return grind(lambda at: rename(AT_3, D, KEYS[D], D, "desk", at), REMOVAL)


HIDDEN_RENAME = _hidden_removal()


@given(data=st.data(), me=st.sampled_from([None, A, D]))
def test_a_hidden_removal_wins_over_a_concurrent_rename_which_is_signed_again(
    data: st.DataObject, me: str | None
) -> None:
    """The removal wins in any order; D's rename lost an ordinary race (a fork, no alert) and
    `lost_by(D)` hands it back, so D signs it again on the head, where it takes effect."""
    entries = [*BASE, REMOVAL, HIDDEN_RENAME]
    log = feed_one_by_one(GENESIS, data.draw(st.permutations(entries)), me)
    assert log.removed == {C}
    assert set(log.members()) == {A, B, D}
    assert log.account_key == FPR2
    assert log.head_hash == entry_hash(REMOVAL)
    assert [(p.entry_hash, p.kind) for p in log.problems] == [
        (entry_hash(HIDDEN_RENAME), ProblemKind.FORK)
    ]
    assert log.lost_by(D) == [HIDDEN_RENAME]
    assert log.lost_by(A) == []
    again = rename(log, D, KEYS[D], D, "desk", T + 20)
    assert log.receive_all([again]) == []  # not an equivocation: another seq
    assert log.members()[D].name == "desk"
    assert log.lost_by(D) == []


# --- 4. Equivocation ------------------------------------------------------------------------


@given(st.permutations([*BASE, *(rename(AT_3, B, KEYS[B], B, name, T + 5) for name in "xy")]))
def test_two_entries_by_one_member_at_one_seq_are_an_equivocation(
    order: list[dict[str, Any]],
) -> None:
    """An honest device signs one entry per position (it extends its head); two at one seq mean
    its key is used elsewhere. Reported as an attack, in any order, besides the fork."""
    log = fresh(GENESIS, order)
    assert kinds(log.problems) == sorted([ProblemKind.FORK, ProblemKind.EQUIVOCATION])
    assert ProblemKind.EQUIVOCATION in ATTACKS
    equivocation = next(p for p in log.problems if p.kind is ProblemKind.EQUIVOCATION)
    fork = next(p for p in log.problems if p.kind is ProblemKind.FORK)
    assert equivocation.entry_hash == fork.entry_hash  # the entry that lost
    assert B in equivocation.reason
    assert set(log.members()) == {A, B, C, D}


def test_equivocation_across_branches_is_found_too() -> None:
    """The same signer at one seq on two different parents (A's and D's branches)."""
    on_a = add(fresh(GENESIS, BASE), A, E)
    on_d = admit(AT_3, D, KEYS[D], F, KEYS[F].public, "f", T + 5)
    branch_a = fresh(GENESIS, [*BASE, on_a])
    branch_d = fresh(GENESIS, [*BASE, on_d])
    twice = [rename(log, B, KEYS[B], B, "twice", T + 6) for log in (branch_a, branch_d)]
    log = fresh(GENESIS, [*BASE, on_a, on_d, *twice])
    assert ProblemKind.EQUIVOCATION in kinds(log.problems)


# --- 5. Two honest devices remove two devices at the same time ------------------------------


def _concurrent_removals() -> list[dict[str, Any]]:
    return [
        remove(AT_3, A, KEYS[A], C, T + 5, FPR2),
        remove(AT_3, B, KEYS[B], D, T + 5, FPR3),
    ]


CONCURRENT = _concurrent_removals()


@given(data=st.data(), me=st.sampled_from([None, A, B]))
def test_concurrent_removals_of_two_devices_both_count(data: st.DataObject, me: str | None) -> None:
    """Both removals count wherever they sit (the losing one is an ordinary fork, not an
    attack): both devices are out, the same on every device and in every order, and a roll is
    owed (the removed device on the other branch knows the chain's new key)."""
    entries = [*BASE, *CONCURRENT]
    log = feed_one_by_one(GENESIS, data.draw(st.permutations(entries)), me)
    assert log.removed == {C, D}
    assert set(log.members()) == {A, B}
    assert log.roll_owed
    assert not set(kinds(log.problems)) & ATTACKS
    assert kinds(log.problems) == [ProblemKind.FORK]
    assert log.lost_by(A) == log.lost_by(B) == []  # a removal that lost still counts
    assert log.account_key in {FPR2, FPR3}
    reference = fresh(GENESIS, entries)
    assert outcome(log)[:7] == outcome(reference)[:7]


def test_rolling_on_the_head_settles_the_roll_owed_by_concurrent_removals() -> None:
    """After both removals, the head's state still lists the device whose removal lost the fork
    (it is out all the same). The roll on the head names it in `out` (the roller left it out of
    the key): then no removed device can know the key, and no roll is owed any more. A roll that
    does not say so (an entry made by hand without `out`) settles nothing."""
    log = fresh(GENESIS, [*BASE, *CONCURRENT])
    assert log.roll_owed
    stale = log.out_on_head()
    assert len(stale) == 1
    assert set(stale) < {C, D}
    rolled = roll(log, A, KEYS[A], FPR4, T + 9)
    assert rolled["out"] == stale
    silent = fresh(GENESIS, [*BASE, *CONCURRENT])
    bare = {k: v for k, v in rolled.items() if k not in ("out", "sig")}
    silent.receive_all([sign_document(bare, KEYS[A])])
    assert silent.roll_owed  # it does not say the stale member was left out
    assert log.receive_all([rolled]) == []
    assert log.head_hash == entry_hash(rolled)
    assert log.account_key == FPR4
    assert log.removed == {C, D}
    assert not log.roll_owed


def test_a_counter_removal_by_a_removed_device_is_no_conflict_for_anyone() -> None:
    """A removes C; B removes D at the same time; C (out) removes B beside its own removal.
    C's act is void for everyone, so B's removal of D is disputed by nobody: B, like any other
    device, is told of C's act and of the fork, not of a conflict with D (which did nothing)."""
    c_removes_b = remove(AT_3, C, KEYS[C], B, T + 5, FPR4)
    entries = [*BASE, *CONCURRENT, c_removes_b]
    third_party = fresh(GENESIS, entries)
    assert third_party.removed == {C, D}
    assert not third_party.is_member(C)
    for me in (None, A, B):
        log = fresh(GENESIS, entries, me)
        assert (log.members(), log.removed) == (third_party.members(), third_party.removed)
        assert kinds(log.problems) == sorted([ProblemKind.FORK, ProblemKind.REMOVED_ACTED]), me


# --- 6. Any delivery of honest entries and a removed device's entries -----------------------
#
# Members A, B, C, D at seq 3; A removes D (the removed device, M) at seq 4. Honest extras: A
# rolls below the removal, B admits E beside it, C renames itself below it. M signs what it
# likes wherever it still was a member (beside its removal, on B's branch), or where it was not.


def _property_pool() -> tuple[dict[str, Any], list[dict[str, Any]], list[list[dict[str, Any]]]]:
    removal = remove(AT_3, A, KEYS[A], D, T + 5, FPR2)
    after = fresh(GENESIS, [*BASE, removal])
    honest_add = admit(AT_3, B, KEYS[B], E, KEYS[E].public, "e", T + 5)
    beside = fresh(GENESIS, [*BASE, honest_add])
    honest = [
        roll(after, A, KEYS[A], FPR3, T + 6),
        rename(after, C, KEYS[C], C, "c again", T + 6),
        honest_add,
    ]
    beside_removal, beside_add = [], []
    for at in (T + 5, T + 7):  # two spellings each: their hashes fall on either side
        beside_removal += [
            roll(AT_3, D, KEYS[D], FPR4, at),
            rename(AT_3, D, KEYS[D], D, "back", at),
            remove(AT_3, D, KEYS[D], A, at, FPR4),
            remove(AT_3, D, KEYS[D], B, at, FPR4),
            admit(AT_3, D, KEYS[D], F, KEYS[F].public, "f", at),
        ]
        beside_add += [
            remove(beside, D, KEYS[D], B, at + 1, FPR4),
            roll(beside, D, KEYS[D], FPR4, at + 1),
        ]
    # Where M is no member any more: refused on arrival, whatever the order.
    below = {**rename(AT_3, D, KEYS[D], D, "x", T), "seq": 5, "prev": entry_hash(removal)}
    return removal, honest, [beside_removal, beside_add, [forged(below, D)]]


M_REMOVAL, HONEST, MALICIOUS = _property_pool()


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the set of entries, the order a device gets them in: shuffled, with duplicates, and a
    withheld part delivered last)."""
    chosen = [*BASE, M_REMOVAL]
    chosen += draw(st.lists(st.sampled_from(HONEST), unique_by=entry_hash, max_size=3))
    # At most two per position: a signer's third entry at one seq is refused (MAX_PER_SIGNER_SEQ),
    # and which two are kept would then depend on the order.
    for pool in MALICIOUS:
        chosen += draw(st.lists(st.sampled_from(pool), unique_by=entry_hash, max_size=2))
    order = draw(st.permutations(chosen))
    withheld = draw(st.lists(st.sampled_from(order), max_size=4))
    replays = draw(st.lists(st.sampled_from(order), max_size=4))
    first = [entry for entry in order if entry not in withheld]
    return chosen, first + replays + withheld + replays


@given(deliveries(), deliveries())
def test_any_delivery_gives_every_device_the_same_members_and_keeps_the_removed_out(
    one: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    other: tuple[list[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    """Once everything is delivered, the outcome is that of the set alone; every device that
    is no party to a mutual removal sees the same members, removed set and key; and from the
    moment its removal is kept, the removed device is never a member again."""
    entries, order = one
    log = DeviceLog(GENESIS)
    for entry in order:
        log.receive_all([entry])
        assert not log.removed & log.members().keys()
        if log.contains(entry_hash(M_REMOVAL)):
            assert D in log.removed
            assert not log.is_member(D)
    reference = fresh(GENESIS, entries)
    assert settled(log) == settled(reference)
    # The same set in another device's order (the other delivery's shuffle of it).
    _, other_order = other
    ranks = {entry_hash(entry): n for n, entry in enumerate(other_order)}
    shuffled = sorted(entries, key=lambda entry: ranks.get(entry_hash(entry), -1))
    assert outcome(fresh(GENESIS, shuffled)) == outcome(reference)
    # Every device that is no party to a conflict agrees with a third party.
    view = (reference.members(), reference.removed, reference.account_key)
    for me in (B, C, E):
        device = fresh(GENESIS, entries, me)
        assert (device.members(), device.removed, device.account_key) == view
    remover = fresh(GENESIS, entries, A)
    if A in reference.removed:  # M answered by removing A: A keeps itself, M stays out
        assert remover.is_member(A)
        assert remover.removed == reference.removed - {A}
    else:
        assert (remover.members(), remover.removed, remover.account_key) == view
    assert D in remover.removed
    assert not set(kinds(reference.problems)) & {ProblemKind.EQUIVOCATION}  # nobody equivocated


def test_a_removal_this_device_acted_on_is_not_undone_by_a_counter_removal() -> None:
    """A device that installed the key of A's removal of C (it applied it) then receives C's
    counter-removal of A at the same position: for it A's removal stands (nothing a device acted
    on is undone silently) and the counter-removal is a conflict it reports; a device that saw
    both at once, having applied neither, counts both out."""
    removal = remove(AT_3, A, KEYS[A], C, T + 5, FPR2)
    counter = remove(AT_3, C, KEYS[C], A, T + 5, FPR4)
    acted = fresh(GENESIS, [*BASE, removal], B)
    acted.apply(acted.counting_removals())
    assert acted.applied == {entry_hash(removal)}
    acted.receive_all([counter])
    assert acted.removed == {C}
    assert acted.is_member(A)
    assert acted.account_key == FPR2
    assert ProblemKind.CONFLICT in kinds(acted.problems)
    neutral = fresh(GENESIS, [*BASE, removal, counter], B)
    assert neutral.removed == {A, C}
