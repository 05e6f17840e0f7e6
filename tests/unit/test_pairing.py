"""The pairing state machine, driven by hand: the happy path, the attacks it must stop (a wrong
code, one guess only, forged and replayed messages, swapped keys), expiry, and the rule that
nothing secret leaves the inviter before the joiner proved the code."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native_host.core import pairing as pm
from native_host.core.crypto import DeviceKeys, b64
from native_host.core.pairing import (
    Install,
    NeedSecret,
    Notify,
    Received,
    Reject,
    Release,
    Send,
    State,
    Tick,
)
from tests.fakes import SeededRandom

NEW, OLD, MALLORY = "000000000000000a", "000000000000000b", "00000000000000ff"
NOW = 1_800_000_000
SECRET = {
    "account_key": "-----BEGIN PGP PRIVATE KEY BLOCK-----...",
    "log": [],
    "genesis": "ab" * 32,
}


def sends(outcome: pm.Outcome) -> list[Send]:
    return [e for e in outcome.effects if isinstance(e, Send)]


def deliver(send: Send, sender: str) -> Received:
    return Received(send.type, sender, send.data)


@dataclass
class Run:
    """Both sides after each message of an honest pairing."""

    rnd: SeededRandom
    invited: pm.Outcome
    joined: pm.Outcome
    accepted: pm.Outcome  # inviter after the request
    confirmed: pm.Outcome  # joiner after the accept
    proven: pm.Outcome  # inviter after the confirm


def run(seed: int = 1, code: str | None = None) -> Run:
    rnd = SeededRandom(seed)
    new_keys, old_keys = DeviceKeys.generate(rnd), DeviceKeys.generate(rnd)
    invited = pm.invite(me=OLD, my_keys=old_keys.public, name="Laptop", now=NOW, random=rnd)
    typed = code or str(invited.pairing.code)
    joined = pm.join(me=NEW, my_keys=new_keys.public, name="Phone", code=typed, now=NOW, random=rnd)
    [request] = sends(joined)
    accepted = pm.step(invited.pairing, deliver(request, NEW), random=rnd)
    [accept] = sends(accepted)
    confirmed = pm.step(joined.pairing, deliver(accept, OLD), random=rnd)
    [confirm] = sends(confirmed) or [Send(OLD, "none", {})]
    proven = pm.step(accepted.pairing, deliver(confirm, NEW), random=rnd)
    return Run(rnd, invited, joined, accepted, confirmed, proven)


def wrong(code: str) -> str:
    """The same nameplate, another secret (the last digit changed)."""
    return code[:-1] + str((int(code[-1]) + 1) % 10)


def test_the_code_is_a_nameplate_and_seven_secret_digits() -> None:
    r = run()
    code = str(r.invited.pairing.code)
    nameplate, secret = pm.parse_code(code)
    assert nameplate == pm.nameplate_of(OLD)
    assert len(secret) == 7
    assert secret.isdigit()
    assert pm.parse_code(" " + code.replace("-", " ") + " ") == (nameplate, secret)
    assert r.invited.pairing.state is State.INVITING
    assert not sends(r.invited)  # an invitation sends nothing: the code travels by the user


@pytest.mark.parametrize("typed", ["", "12-34", "abc-defg-hij", "417-209-35511", "417/209/3551"])
def test_what_is_not_a_code_is_refused(typed: str) -> None:
    with pytest.raises(pm.BadCode):
        pm.parse_code(typed)


def test_codes_differ_from_invitation_to_invitation() -> None:
    codes = {str(run(seed).invited.pairing.code) for seed in range(20)}
    assert len(codes) == 20


def test_the_right_code_transfers_the_key_after_both_proofs() -> None:
    r = run()
    assert r.accepted.pairing.state is State.CONFIRMING
    assert r.accepted.pairing.code is None  # used up: the request bound it
    assert r.confirmed.pairing.state is State.RECEIVING
    assert r.proven.pairing.state is State.PROVEN
    assert NeedSecret() in r.proven.effects
    assert not sends(r.proven)  # the key goes only on Release, after PROVEN is saved
    released = pm.step(r.proven.pairing, Release(SECRET), random=r.rnd)
    assert released.pairing.state is State.SENT
    [key] = sends(released)
    assert key.type == "pair-key"
    assert "BEGIN PGP" not in str(key.data)  # sealed
    done = pm.step(r.confirmed.pairing, deliver(key, OLD), random=r.rnd)
    assert done.pairing.state is State.COMPLETED
    [install] = [e for e in done.effects if isinstance(e, Install)]
    assert install.payload == SECRET
    assert install.pending.state is State.RECEIVING
    assert pm.complete(released.pairing).pairing.state is State.COMPLETED


def test_nothing_secret_is_sent_before_the_joiner_proves_the_code() -> None:
    r = run()
    for outcome in (r.invited, r.accepted):
        assert all(s.type in ("pair-accept",) for s in sends(outcome))
    for state in (r.invited.pairing, r.accepted.pairing):
        with pytest.raises(pm.IllegalInput):
            pm.step(state, Release(SECRET), random=r.rnd)


def test_a_wrong_code_fails_both_sides_for_good_and_sends_no_key() -> None:
    honest = run()
    r = run(code=wrong(str(honest.invited.pairing.code)))
    # The joiner sees the inviter's confirmation fail: failed, alert, and it tells the inviter.
    assert r.confirmed.pairing.state is State.FAILED
    assert Notify("security.alert") in r.confirmed.effects
    [reject] = sends(r.confirmed)
    assert reject.type == "pair-reject"
    assert reject.data["reason"] == "failed"
    inviter = pm.step(r.accepted.pairing, deliver(reject, NEW), random=r.rnd)
    assert inviter.pairing.state is State.FAILED
    assert Notify("security.alert") in inviter.effects
    assert not sends(inviter)
    with pytest.raises(pm.IllegalInput):
        pm.step(inviter.pairing, Release(SECRET), random=r.rnd)


def test_an_attacker_gets_one_guess_then_the_invitation_is_dead() -> None:
    """A guessing joiner that sends a forged confirmation fails the invitation; a second
    request (even with the right code) is ignored: the user must start again."""
    rnd = SeededRandom(11)
    old_keys, evil = DeviceKeys.generate(rnd), DeviceKeys.generate(rnd)
    invited = pm.invite(me=OLD, my_keys=old_keys.public, name="Laptop", now=NOW, random=rnd)
    code = str(invited.pairing.code)
    guess = pm.join(
        me=MALLORY,
        my_keys=evil.public,
        name="Alice's iPhone",
        code=wrong(code),
        now=NOW,
        random=rnd,
    )
    accepted = pm.step(invited.pairing, deliver(sends(guess)[0], MALLORY), random=rnd)
    assert accepted.pairing.state is State.CONFIRMING
    forged = Received(
        "pair-confirm",
        MALLORY,
        {"pairing_id": accepted.pairing.session, "confirm": b64(b"\x01" * 32)},
    )
    failed = pm.step(accepted.pairing, forged, random=rnd)
    assert failed.pairing.state is State.FAILED
    assert [e for e in failed.effects if e == Notify("security.alert")] == [
        Notify("security.alert")
    ]
    assert all(s.type == "pair-reject" for s in sends(failed))
    right = pm.join(me=NEW, my_keys=evil.public, name="Phone", code=code, now=NOW, random=rnd)
    again = pm.step(failed.pairing, deliver(sends(right)[0], NEW), random=rnd)
    assert again.pairing == failed.pairing
    assert again.effects == []


def test_a_second_request_after_the_first_is_not_answered() -> None:
    r = run()
    other = pm.join(
        me=MALLORY,
        my_keys=r.accepted.pairing.my_keys,
        name="X",
        code=str(r.invited.pairing.code),
        now=NOW,
        random=r.rnd,
    )
    after = pm.step(r.accepted.pairing, deliver(sends(other)[0], MALLORY), random=r.rnd)
    assert after.pairing == r.accepted.pairing
    assert after.effects == []


def test_a_provider_that_swaps_device_keys_fails_the_confirmation() -> None:
    """The man in the middle relays the PAKE messages but puts its own signing key in the accept:
    the keys are in the transcript, so the joiner's check fails and nothing is sent."""
    r = run(seed=3)
    mallory = DeviceKeys.generate(SeededRandom(99))
    [accept] = sends(r.accepted)
    swapped = Received("pair-accept", OLD, {**accept.data, "keys": mallory.public.to_json()})
    out = pm.step(r.joined.pairing, swapped, random=r.rnd)
    assert out.pairing.state is State.FAILED
    assert not any(s.type == "pair-confirm" for s in sends(out))
    # And the other way: the joiner's keys swapped in the request.
    [request] = sends(r.joined)
    swapped_request = Received(
        "pair-request", NEW, {**request.data, "keys": mallory.public.to_json()}
    )
    accepted = pm.step(r.invited.pairing, swapped_request, random=r.rnd)
    [accept2] = sends(accepted)
    joiner = pm.step(r.joined.pairing, deliver(accept2, OLD), random=r.rnd)
    assert joiner.pairing.state is State.FAILED


def _twin_of(device_id: str) -> str:
    """Another device id with the same three-digit nameplate (what an attacker grinds)."""
    plate = pm.nameplate_of(device_id)
    return next(
        twin
        for twin in (f"{n:016x}" for n in range(0x1000, 0x100000))
        if twin != device_id and pm.nameplate_of(twin) == plate
    )


def test_a_forged_accept_from_the_codes_nameplate_spends_the_one_guess() -> None:
    r = run(seed=4)
    [accept] = sends(r.accepted)
    twin = _twin_of(OLD)
    forged = Received("pair-accept", twin, {**accept.data, "confirm": b64(b"\x02" * 32)})
    out = pm.step(r.joined.pairing, forged, random=r.rnd)
    assert out.pairing.state is State.FAILED
    assert Notify("security.alert") in out.effects
    assert [s.to for s in sends(out)] == [twin]


def test_an_accept_from_a_device_the_code_does_not_name_is_ignored() -> None:
    """A stray or forged answer from another nameplate is no attempt at this code: the join
    stays open, no alert, and the right device's answer still completes it."""
    r = run(seed=4)
    assert pm.nameplate_of(MALLORY) != pm.nameplate_of(OLD)
    [accept] = sends(r.accepted)
    forged = Received("pair-accept", MALLORY, {**accept.data, "confirm": b64(b"\x02" * 32)})
    out = pm.step(r.joined.pairing, forged, random=r.rnd)
    assert out.pairing == r.joined.pairing
    assert out.effects == []
    real = pm.step(out.pairing, deliver(accept, OLD), random=r.rnd)
    assert real.pairing.state is State.RECEIVING


def test_a_joiner_that_cannot_open_the_key_fails_the_inviter_with_that_reason() -> None:
    r = run(seed=12)
    sent = pm.step(r.proven.pairing, Release(SECRET), random=r.rnd)
    [key] = sends(sent)
    tampered = Received("pair-key", OLD, {**key.data, "box": key.data["box"][:-4] + "AAAA"})
    joiner = pm.step(r.confirmed.pairing, tampered, random=r.rnd)
    assert joiner.pairing.state is State.FAILED
    [reject] = sends(joiner)
    inviter = pm.step(sent.pairing, deliver(reject, NEW), random=r.rnd)
    assert inviter.pairing.state is State.FAILED
    assert "could not open the key" in str(inviter.pairing.reason)
    assert Notify("security.alert") in inviter.effects


def test_tampered_key_transfer_fails_and_installs_nothing() -> None:
    r = run(seed=5)
    [key] = sends(pm.step(r.proven.pairing, Release(SECRET), random=r.rnd))
    box = key.data["box"]
    tampered = Received(
        "pair-key", OLD, {**key.data, "box": box[:-4] + ("AAAA" if box[-4:] != "AAAA" else "BBBB")}
    )
    done = pm.step(r.confirmed.pairing, tampered, random=r.rnd)
    assert done.pairing.state is State.FAILED
    assert not any(isinstance(e, Install) for e in done.effects)


def test_messages_from_another_device_are_ignored_once_bound() -> None:
    r = run(seed=6)
    intruder = Received(
        "pair-key", MALLORY, {"pairing_id": r.confirmed.pairing.session, "box": "x"}
    )
    assert pm.step(r.confirmed.pairing, intruder, random=r.rnd).pairing == r.confirmed.pairing
    fake = Received(
        "pair-confirm",
        MALLORY,
        {"pairing_id": r.accepted.pairing.session, "confirm": b64(b"\x03" * 32)},
    )
    assert pm.step(r.accepted.pairing, fake, random=r.rnd).pairing == r.accepted.pairing


def test_replayed_messages_change_nothing() -> None:
    r = run(seed=8)
    [request] = sends(r.joined)
    [accept] = sends(r.accepted)
    [confirm] = sends(r.confirmed)
    for state, message in (
        (r.accepted.pairing, deliver(request, NEW)),
        (r.confirmed.pairing, deliver(accept, OLD)),
        (r.proven.pairing, deliver(confirm, NEW)),
    ):
        assert pm.step(state, message, random=r.rnd) == pm.Outcome(state)


def test_cancel_and_expiry_are_terminal() -> None:
    r = run(seed=7)
    cancelled = pm.step(r.proven.pairing, Reject(), random=r.rnd)
    assert cancelled.pairing.state is State.REJECTED
    [notice] = sends(cancelled)
    assert pm.step(r.confirmed.pairing, deliver(notice, OLD), random=r.rnd).pairing.state is (
        State.REJECTED
    )
    invitation = r.invited.pairing
    assert pm.step(invitation, Tick(NOW + pm.PAIRING_TTL - 1), random=r.rnd).pairing == invitation
    expired = pm.step(invitation, Tick(NOW + pm.PAIRING_TTL), random=r.rnd).pairing
    assert expired.state is State.EXPIRED
    assert expired.code is None
    [request] = sends(r.joined)
    assert pm.step(expired, deliver(request, NEW), random=r.rnd).pairing == expired
    with pytest.raises(pm.IllegalInput):
        pm.step(expired, Reject(), random=r.rnd)


def test_pairings_survive_serialisation() -> None:
    r = run()
    for p in (r.invited.pairing, r.joined.pairing, r.accepted.pairing, r.confirmed.pairing):
        assert pm.Pairing.from_json(p.to_json()) == p


def test_a_joiner_restored_from_disk_finishes_the_pake() -> None:
    r = run(seed=12)
    restored = pm.Pairing.from_json(r.joined.pairing.to_json())
    [accept] = sends(r.accepted)
    assert pm.step(restored, deliver(accept, OLD), random=r.rnd).pairing.state is State.RECEIVING


messages = st.builds(
    Received,
    st.sampled_from(["pair-accept", "pair-confirm", "pair-key", "pair-reject", "junk"]),
    st.sampled_from([NEW, OLD, MALLORY]),
    st.fixed_dictionaries(
        {"pairing_id": st.just("other-pairing")},
        optional={
            "msg": st.text(max_size=50),
            "keys": st.none(),
            "box": st.text(max_size=20),
            "confirm": st.text(max_size=50),
        },
    ),
)


@settings(max_examples=50, deadline=None)
@given(messages, st.sampled_from(["invited", "joined", "accepted", "confirmed"]))
def test_inputs_for_another_pairing_leave_the_state_unchanged(message: Received, side: str) -> None:
    r = run()
    p: pm.Pairing = getattr(r, side).pairing
    assert pm.step(p, message, random=SeededRandom(1)).pairing == p


@pytest.mark.parametrize(
    ("side", "kind"),
    [(side, kind) for side in ("new", "old") for kind in ("pair-key", "pair-request")]
    + [("new", "pair-confirm"), ("old", "pair-accept")],
)
def test_messages_that_do_not_fit_the_state_leave_it_unchanged(kind: str, side: str) -> None:
    r = run()
    p = r.joined.pairing if side == "new" else r.accepted.pairing
    sender = OLD if side == "new" else NEW
    data: dict[str, Any] = {
        "pairing_id": p.session,
        "msg": b64(b"\x05" * 33),
        "keys": p.my_keys.to_json(),
        "box": "x",
    }
    assert pm.step(p, Received(kind, sender, data), random=SeededRandom(1)).pairing == p


def test_a_pake_message_that_is_no_group_element_spends_no_guess() -> None:
    """Junk cannot burn an invitation or a join: only a real PAKE run is a guess."""
    r = run(seed=13)
    [request] = sends(r.joined)
    [accept] = sends(r.accepted)
    junk = b64(b"A" + b"\xff" * 32)
    bad_request = Received("pair-request", MALLORY, {**request.data, "msg": junk})
    assert pm.step(r.invited.pairing, bad_request, random=r.rnd).pairing == r.invited.pairing
    bad_accept = Received("pair-accept", MALLORY, {**accept.data, "msg": b64(b"B" + b"\xff" * 32)})
    assert pm.step(r.joined.pairing, bad_accept, random=r.rnd).pairing == r.joined.pairing


@pytest.mark.parametrize("point", [b"\xff" * 32, hashlib.sha256(b"\x00").digest(), bytes(32)])
def test_any_pake_message_off_the_group_leaves_both_sides_unchanged(point: bytes) -> None:
    """spake2 raises NotOnCurve (an Exception of its own, neither SPAKEError nor ValueError) for
    an encoding with no point behind it. One forged message of that kind escaped the step, failed
    the phone's sync on every cycle and stopped its inbox for good (tests/adversary seed 7)."""
    r = run(seed=17)
    [request] = sends(r.joined)
    [accept] = sends(r.accepted)
    bad_request = Received("pair-request", MALLORY, {**request.data, "msg": b64(b"A" + point)})
    assert pm.step(r.invited.pairing, bad_request, random=r.rnd).pairing == r.invited.pairing
    bad_accept = Received("pair-accept", MALLORY, {**accept.data, "msg": b64(b"B" + point)})
    assert pm.step(r.joined.pairing, bad_accept, random=r.rnd).pairing == r.joined.pairing
