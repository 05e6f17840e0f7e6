"""The pairing state machine, driven by hand: the happy path, the attacks it must stop, and the
rule that an input which does not fit leaves the state unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.core import pairing as pm
from native_host.core.crypto import DeviceKeys, b64
from native_host.core.pairing import Approve, Install, Notify, Received, Reject, Send, State, Tick
from tests.fakes import SeededRandom

NEW, OLD = "000000000000000a", "000000000000000b"
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


def run_to_codes(seed: int = 1) -> tuple[pm.Pairing, pm.Pairing]:
    rnd = SeededRandom(seed)
    new_keys, old_keys = DeviceKeys.generate(rnd), DeviceKeys.generate(rnd)
    started = pm.start(me=NEW, my_keys=new_keys.public, name="Phone", peer=OLD, now=NOW, random=rnd)
    [request] = sends(started)
    responder = pm.on_request(
        deliver(request, NEW),
        me=OLD,
        my_keys=old_keys.public,
        my_name="Laptop",
        now=NOW,
        random=rnd,
    )
    [accept] = sends(responder)
    initiator = pm.step(started.pairing, deliver(accept, OLD), random=rnd)
    [reveal] = sends(initiator)
    shown = pm.step(responder.pairing, deliver(reveal, NEW), random=rnd)
    return initiator.pairing, shown.pairing


def test_both_sides_show_the_same_code_of_four_groups() -> None:
    new, old = run_to_codes()
    assert new.state is old.state is State.SHOWING
    assert new.sas == old.sas
    assert new.sas is not None
    groups = new.sas.split(" ")
    assert len(groups) == 4
    assert all(len(g) == 4 and g.isdigit() for g in groups)


def test_approve_then_confirm_installs_the_key() -> None:
    rnd = SeededRandom(9)
    new, old = run_to_codes()
    approved = pm.step(old, Approve(SECRET), random=rnd)
    assert approved.pairing.state is State.APPROVED
    [key] = sends(approved)
    assert key.type == "pair-key"
    assert "BEGIN PGP" not in str(key.data)  # sealed
    held = pm.step(new, deliver(key, OLD), random=rnd)
    assert not any(isinstance(e, Install) for e in held.effects)  # not before the user confirms
    done = pm.step(held.pairing, Approve(), random=rnd)
    assert done.pairing.state is State.COMPLETED
    [install] = [e for e in done.effects if isinstance(e, Install)]
    assert install.payload == SECRET


def test_confirm_before_the_key_arrives_installs_on_arrival() -> None:
    rnd = SeededRandom(9)
    new, old = run_to_codes()
    confirmed = pm.step(new, Approve(), random=rnd).pairing
    [key] = sends(pm.step(old, Approve(SECRET), random=rnd))
    done = pm.step(confirmed, deliver(key, OLD), random=rnd)
    assert done.pairing.state is State.COMPLETED
    assert any(isinstance(e, Install) for e in done.effects)


def test_a_man_in_the_middle_gets_different_codes() -> None:
    """The server swaps the responder's accept for its own: the codes can no longer match."""
    rnd = SeededRandom(3)
    new_keys, old_keys, mallory = (DeviceKeys.generate(rnd) for _ in range(3))
    started = pm.start(me=NEW, my_keys=new_keys.public, name="Phone", peer=OLD, now=NOW, random=rnd)
    [request] = sends(started)
    honest = pm.on_request(
        deliver(request, NEW), me=OLD, my_keys=old_keys.public, my_name="L", now=NOW, random=rnd
    )
    forged = pm.on_request(
        deliver(request, NEW), me=OLD, my_keys=mallory.public, my_name="L", now=NOW, random=rnd
    )
    [forged_accept] = sends(forged)
    initiator = pm.step(started.pairing, deliver(forged_accept, OLD), random=rnd)
    [reveal] = sends(initiator)
    responder = pm.step(honest.pairing, deliver(reveal, NEW), random=rnd)
    assert initiator.pairing.sas != responder.pairing.sas


def test_a_reveal_that_breaks_the_commitment_fails_for_good() -> None:
    rnd = SeededRandom(4)
    new_keys, old_keys = DeviceKeys.generate(rnd), DeviceKeys.generate(rnd)
    started = pm.start(me=NEW, my_keys=new_keys.public, name="P", peer=OLD, now=NOW, random=rnd)
    [request] = sends(started)
    responder = pm.on_request(
        deliver(request, NEW), me=OLD, my_keys=old_keys.public, my_name="L", now=NOW, random=rnd
    )
    bad = Received(
        "pair-reveal", NEW, {"pairing_id": responder.pairing.pairing_id, "eph": b64(b"\x09" * 32)}
    )
    failed = pm.step(responder.pairing, bad, random=rnd)
    assert failed.pairing.state is State.FAILED
    assert Notify("security.alert") in failed.effects
    # Terminal: the honest reveal afterwards changes nothing.
    [accept] = sends(responder)
    [reveal] = sends(pm.step(started.pairing, deliver(accept, OLD), random=rnd))
    assert pm.step(failed.pairing, deliver(reveal, NEW), random=rnd).pairing == failed.pairing


def test_tampered_key_transfer_fails_and_installs_nothing() -> None:
    rnd = SeededRandom(5)
    new, old = run_to_codes()
    [key] = sends(pm.step(old, Approve(SECRET), random=rnd))
    box = key.data["box"]
    tampered = Received(
        "pair-key", OLD, {**key.data, "box": box[:-4] + ("AAAA" if box[-4:] != "AAAA" else "BBBB")}
    )
    held = pm.step(new, tampered, random=rnd).pairing
    done = pm.step(held, Approve(), random=rnd)
    assert done.pairing.state is State.FAILED
    assert not any(isinstance(e, Install) for e in done.effects)


def test_a_message_from_another_device_fails_the_pairing() -> None:
    rnd = SeededRandom(6)
    new, _old = run_to_codes()
    intruder = Received("pair-key", "00000000000000ff", {"pairing_id": new.pairing_id, "box": "x"})
    assert pm.step(new, intruder, random=rnd).pairing.state is State.FAILED


def test_reject_and_expiry_are_terminal() -> None:
    rnd = SeededRandom(7)
    new, old = run_to_codes()
    rejected = pm.step(old, Reject(), random=rnd)
    assert rejected.pairing.state is State.REJECTED
    [notice] = sends(rejected)
    assert pm.step(new, deliver(notice, OLD), random=rnd).pairing.state is State.REJECTED
    expired = pm.step(new, Tick(new.expires_at), random=rnd).pairing
    assert expired.state is State.EXPIRED
    with pytest.raises(pm.IllegalInput):
        pm.step(expired, Approve(), random=rnd)


def test_pairings_survive_serialisation() -> None:
    new, old = run_to_codes()
    for p in (new, old):
        assert pm.Pairing.from_json(p.to_json()) == p


messages = st.builds(
    Received,
    st.sampled_from(["pair-accept", "pair-reveal", "pair-key", "pair-request", "junk"]),
    st.sampled_from([NEW, OLD, "00000000000000ff"]),
    st.fixed_dictionaries(
        {"pairing_id": st.just("other-pairing")},
        optional={"eph": st.text(max_size=50), "keys": st.none(), "box": st.text(max_size=20)},
    ),
)


@given(messages, st.sampled_from(["new", "old"]))
def test_inputs_for_another_pairing_leave_the_state_unchanged(message: Received, side: str) -> None:
    new, old = run_to_codes()
    p = new if side == "new" else old
    assert pm.step(p, message, random=SeededRandom(1)).pairing == p


@given(
    st.sampled_from(["pair-accept", "pair-reveal", "pair-request"]), st.sampled_from(["new", "old"])
)
def test_messages_that_do_not_fit_the_state_leave_it_unchanged(kind: str, side: str) -> None:
    new, old = run_to_codes()
    p = new if side == "new" else old
    sender = OLD if side == "new" else NEW
    data: dict[str, Any] = {
        "pairing_id": p.pairing_id,
        "eph": b64(b"\x05" * 32),
        "keys": p.my_keys.to_json(),
    }
    assert pm.step(p, Received(kind, sender, data), random=SeededRandom(1)).pairing == p
