"""Autocrypt Level 1 peer state: header parsing, the update rules, the recommendation, and the
merge between devices (a join-semilattice, checked with hypothesis)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.core.autocrypt import (
    DISCOURAGE_AFTER,
    InvalidHeader,
    InvalidMessage,
    MessageInfo,
    PeerState,
    effective_date,
    gossip_candidates,
    merge,
    message_headers,
    outgoing_header,
    parse_header,
    recommend,
    recommend_many,
    update_from_gossip,
    update_from_message,
)

KEY1 = bytes(range(1, 60))
KEY2 = bytes(range(100, 180))
B64_1 = base64.b64encode(KEY1).decode()
B64_2 = base64.b64encode(KEY2).decode()
DAY = 86400
T0 = 1_500_000_000
NOW = T0 + 100 * DAY


def any_key(_keydata: bytes) -> bool:
    return True


def fmt_date(ts: int) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def raw_message(
    *,
    from_: str = "Alice <Alice@Autocrypt.example>",
    date: int | None = T0,
    autocrypt: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [f"From: {from_}", "To: Bob <bob@autocrypt.example>", "Subject: hi"]
    if date is not None:
        lines.append(f"Date: {fmt_date(date)}")
    lines += [f"Autocrypt: {value}" for value in autocrypt]
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def header(addr: str = "alice@autocrypt.example", b64: str = B64_1, mutual: bool = True) -> str:
    return outgoing_header(addr, base64.b64decode(b64), mutual)


# --- parse_header -----------------------------------------------------------------------------


def test_parse_spec_shaped_header_with_folded_keydata() -> None:
    folded = "\r\n ".join(B64_1[i : i + 20] for i in range(0, len(B64_1), 20))
    parsed = parse_header(
        f"addr=Alice@Autocrypt.example; prefer-encrypt=mutual; keydata=\r\n {folded}"
    )
    assert parsed.addr == "alice@autocrypt.example"
    assert parsed.prefer_encrypt == "mutual"
    assert parsed.keydata == KEY1


def test_parse_without_prefer_encrypt_is_nopreference() -> None:
    assert parse_header(f"addr=a@b.example; keydata={B64_1}").prefer_encrypt == "nopreference"


def test_unknown_prefer_encrypt_value_reads_as_nopreference() -> None:
    parsed = parse_header(f"addr=a@b.example; prefer-encrypt=always; keydata={B64_1}")
    assert parsed.prefer_encrypt == "nopreference"


def test_non_critical_attribute_ignored() -> None:
    parsed = parse_header(f"addr=a@b.example; _version=2; keydata={B64_1}")
    assert parsed.keydata == KEY1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"addr=a@b.example; version=2; keydata={B64_1}", "critical"),
        (f"keydata={B64_1}", "missing addr"),
        ("addr=a@b.example", "missing keydata"),
        ("addr=a@b.example; keydata=!!notbase64!!", "base64"),
        ("addr=a@b.example; keydata=", "empty keydata"),
        (f"addr=a@b.example; addr=c@d.example; keydata={B64_1}", "duplicate"),
        (f"addr=a@b.example; garbage; keydata={B64_1}", "malformed"),
        (f"addr=not-an-address; keydata={B64_1}", "bad addr"),
    ],
)
def test_invalid_headers(value: str, reason: str) -> None:
    with pytest.raises(InvalidHeader, match=reason):
        parse_header(value)


def test_ten_kib_limit_counts_the_prefix() -> None:
    base = "addr=a@b.example; keydata="
    room = 10 * 1024 - len("Autocrypt: ") - len(base)
    fits = base + "A" * (room // 4 * 4)
    assert len("Autocrypt: ") + len(fits) <= 10 * 1024
    parse_header(fits)
    with pytest.raises(InvalidHeader, match="10 KiB"):
        parse_header(fits + " " * (10 * 1024 - len("Autocrypt: ") - len(fits) + 1))


def test_outgoing_header_round_trips_and_keydata_is_last() -> None:
    value = outgoing_header("alice@autocrypt.example", KEY1, prefer_mutual=True)
    assert value == f"addr=alice@autocrypt.example; prefer-encrypt=mutual; keydata={B64_1}"
    assert parse_header(value) == parse_header(value.replace("; prefer", ";prefer"))
    assert "prefer-encrypt" not in outgoing_header("a@b.example", KEY1, prefer_mutual=False)


def test_outgoing_header_refuses_injection_and_oversize() -> None:
    with pytest.raises(ValueError, match="addr"):
        outgoing_header("a@b.example; keydata=AAAA", KEY1, prefer_mutual=False)
    with pytest.raises(ValueError, match="addr"):
        outgoing_header("a@b.example\r\nBcc: x@y.example", KEY1, prefer_mutual=False)
    with pytest.raises(ValueError, match="10 KiB"):
        outgoing_header("a@b.example", b"\x00" * 8000, prefer_mutual=False)


# --- message_headers --------------------------------------------------------------------------


def test_message_headers_extracts_fields() -> None:
    info = message_headers(
        raw_message(autocrypt=(header(),), extra=("Cc: carol@autocrypt.example",))
    )
    assert info.from_addr == "alice@autocrypt.example"
    assert info.date == T0
    assert info.content_type == "text/plain"
    assert info.autocrypt == (header(),)
    assert info.to_cc == ("bob@autocrypt.example", "carol@autocrypt.example")


def test_message_headers_bad_or_missing_date_is_none() -> None:
    assert message_headers(raw_message(date=None)).date is None
    assert message_headers(raw_message(date=None, extra=("Date: yesterday",))).date is None


def test_message_headers_two_from_addresses() -> None:
    info = message_headers(raw_message(from_="a@x.example, b@x.example"))
    assert info.from_addrs == ("a@x.example", "b@x.example")
    assert info.from_addr is None


def test_message_headers_folded_autocrypt_header_parses() -> None:
    folded = "addr=alice@autocrypt.example; keydata=\r\n " + "\r\n ".join(
        B64_1[i : i + 30] for i in range(0, len(B64_1), 30)
    )
    info = message_headers(raw_message(autocrypt=(folded,)))
    assert parse_header(info.autocrypt[0]).keydata == KEY1


def test_message_headers_bounds() -> None:
    too_many = tuple(f"X-H{i}: v" for i in range(200))
    with pytest.raises(InvalidMessage, match="header fields"):
        message_headers(raw_message(extra=too_many))
    with pytest.raises(InvalidMessage, match="64 KiB"):
        message_headers(raw_message(extra=("X-Big: " + "a" * 70_000,)))
    # A large body does not count: only the header block is bounded.
    assert message_headers(raw_message() + b"x" * 100_000).date == T0


# --- update_from_message ----------------------------------------------------------------------


def receive(state: PeerState | None, raw: bytes, now: int = NOW) -> PeerState | None:
    return update_from_message(state, message_headers(raw), now, key_ok=any_key)


def test_first_message_with_header_sets_everything() -> None:
    state = receive(None, raw_message(autocrypt=(header(),)))
    assert state == PeerState(
        addr="alice@autocrypt.example",
        last_seen=T0,
        autocrypt_timestamp=T0,
        public_key=KEY1,
        prefer_encrypt="mutual",
    )


def test_message_without_header_sets_last_seen_only() -> None:
    state = receive(None, raw_message(autocrypt=(header(),)))
    later = receive(state, raw_message(date=T0 + DAY))
    assert state is not None
    assert later == PeerState(
        addr=state.addr,
        last_seen=T0 + DAY,
        autocrypt_timestamp=T0,
        public_key=KEY1,
        prefer_encrypt="mutual",
    )
    assert receive(None, raw_message()) == PeerState(addr="alice@autocrypt.example", last_seen=T0)


def test_newer_header_replaces_key_and_preference() -> None:
    state = receive(None, raw_message(autocrypt=(header(),)))
    newer = receive(state, raw_message(date=T0 + 5, autocrypt=(header(b64=B64_2, mutual=False),)))
    assert newer is not None
    assert (newer.public_key, newer.prefer_encrypt, newer.autocrypt_timestamp) == (
        KEY2,
        "nopreference",
        T0 + 5,
    )


def test_older_message_changes_nothing() -> None:
    state = receive(None, raw_message(date=T0 + DAY, autocrypt=(header(),)))
    assert receive(state, raw_message(date=T0, autocrypt=(header(b64=B64_2),))) == state
    assert receive(state, raw_message(date=T0)) == state


def test_older_than_last_seen_but_newer_than_autocrypt_keeps_last_seen() -> None:
    state = PeerState(
        addr="alice@autocrypt.example", last_seen=T0 + 10, autocrypt_timestamp=T0, public_key=KEY1
    )
    new = receive(state, raw_message(date=T0 + 5, autocrypt=(header(b64=B64_2),)))
    assert new is not None
    assert (new.last_seen, new.autocrypt_timestamp, new.public_key) == (T0 + 10, T0 + 5, KEY2)


def test_future_or_missing_date_uses_now() -> None:
    future = receive(None, raw_message(date=NOW + 10 * DAY, autocrypt=(header(),)))
    assert future is not None
    assert (future.last_seen, future.autocrypt_timestamp) == (NOW, NOW)
    missing = receive(None, raw_message(date=None))
    assert missing is not None
    assert missing.last_seen == NOW
    info = MessageInfo(("a@b.example",), NOW + 1, "text/plain", None, (), ())
    assert effective_date(info, NOW) == NOW


def test_two_valid_headers_are_both_ignored() -> None:
    raw = raw_message(autocrypt=(header(), header(b64=B64_2)))
    assert receive(None, raw) == PeerState(addr="alice@autocrypt.example", last_seen=T0)


def test_one_valid_among_invalid_headers_is_used() -> None:
    raw = raw_message(autocrypt=(header(), f"addr=alice@autocrypt.example; v=2; keydata={B64_2}"))
    state = receive(None, raw)
    assert state is not None
    assert state.public_key == KEY1


def test_header_for_a_different_addr_is_ignored() -> None:
    raw = raw_message(autocrypt=(header(addr="mallory@autocrypt.example"),))
    assert receive(None, raw) == PeerState(addr="alice@autocrypt.example", last_seen=T0)


def test_key_rejected_by_caller_makes_header_invalid() -> None:
    info = message_headers(raw_message(autocrypt=(header(),)))
    state = update_from_message(None, info, NOW, key_ok=lambda _k: False)
    assert state == PeerState(addr="alice@autocrypt.example", last_seen=T0)


def test_ignored_messages() -> None:
    state = PeerState(addr="alice@autocrypt.example", last_seen=T0 - DAY)
    report = raw_message(
        autocrypt=(header(),), extra=('Content-Type: multipart/report; boundary="x"',)
    )
    assert receive(state, report) is state
    assert receive(None, report) is None
    auto = raw_message(autocrypt=(header(),), extra=("Auto-Submitted: auto-replied",))
    assert receive(state, auto) is state
    two_from = raw_message(from_="alice@autocrypt.example, eve@x.example", autocrypt=(header(),))
    assert receive(state, two_from) is state


def test_state_for_another_address_is_refused() -> None:
    with pytest.raises(ValueError, match="another address"):
        receive(PeerState(addr="bob@autocrypt.example"), raw_message())


# --- gossip -----------------------------------------------------------------------------------


def test_gossip_newer_wins_older_ignored() -> None:
    state = update_from_gossip(None, "Bob@Autocrypt.example", KEY1, T0)
    assert state == PeerState(addr="bob@autocrypt.example", gossip_timestamp=T0, gossip_key=KEY1)
    assert update_from_gossip(state, "bob@autocrypt.example", KEY2, T0 - 1) == state
    newer = update_from_gossip(state, "bob@autocrypt.example", KEY2, T0 + 1)
    assert (newer.gossip_key, newer.gossip_timestamp) == (KEY2, T0 + 1)


def test_gossip_only_for_recipients() -> None:
    info = message_headers(raw_message(extra=("Cc: carol@autocrypt.example",)))
    gossip = [
        header(addr="bob@autocrypt.example", mutual=False),
        header(addr="carol@autocrypt.example", b64=B64_2, mutual=False),
        header(addr="dave@autocrypt.example", mutual=False),
    ]
    assert gossip_candidates(info, gossip, key_ok=any_key) == {
        "bob@autocrypt.example": KEY1,
        "carol@autocrypt.example": KEY2,
    }
    twice = [header(addr="bob@autocrypt.example"), header(addr="bob@autocrypt.example", b64=B64_2)]
    assert gossip_candidates(info, twice, key_ok=any_key) == {}


# --- recommendation ---------------------------------------------------------------------------


def peer(**fields: object) -> PeerState:
    base: dict[str, object] = {
        "addr": "bob@autocrypt.example",
        "last_seen": T0,
        "autocrypt_timestamp": T0,
        "public_key": KEY1,
    }
    base.update(fields)
    return PeerState(**base)  # type: ignore[arg-type]


def test_recommend_single() -> None:
    assert recommend(None, NOW, False, False) == "disable"
    assert recommend(None, NOW, True, True) == "disable"
    no_key = peer(autocrypt_timestamp=None, public_key=None)
    assert recommend(no_key, NOW, True, True) == "disable"
    assert recommend(peer(), NOW, False, False) == "available"
    assert recommend(peer(prefer_encrypt="mutual"), NOW, False, False) == "available"
    assert recommend(peer(prefer_encrypt="mutual"), NOW, False, True) == "encrypt"
    assert recommend(peer(), NOW, True, False) == "encrypt"


def test_recommend_gossip_only_discourages_but_reply_encrypts() -> None:
    gossip = peer(autocrypt_timestamp=None, public_key=None, gossip_timestamp=T0, gossip_key=KEY2)
    assert recommend(gossip, NOW, False, True) == "discourage"
    assert recommend(replace_mutual(gossip), NOW, False, True) == "discourage"
    assert recommend(gossip, NOW, True, False) == "encrypt"


def replace_mutual(state: PeerState) -> PeerState:
    return PeerState(**{**state.__dict__, "prefer_encrypt": "mutual"})


def test_recommend_35_day_rule() -> None:
    edge = peer(last_seen=T0 + DISCOURAGE_AFTER, prefer_encrypt="mutual")
    assert recommend(edge, NOW, False, True) == "encrypt"
    stale = peer(last_seen=T0 + DISCOURAGE_AFTER + 1, prefer_encrypt="mutual")
    assert recommend(stale, NOW, False, False) == "discourage"
    assert recommend(stale, NOW, False, True) == "discourage"  # mutual does not lift discourage
    assert recommend(stale, NOW, True, False) == "encrypt"  # a reply to encrypted does


def test_recommend_unusable_key_counts_as_absent() -> None:
    both = peer(gossip_timestamp=T0, gossip_key=KEY2)
    assert recommend(both, NOW, False, False, key_usable=lambda k: k != KEY1) == "discourage"
    assert recommend(both, NOW, True, False, key_usable=lambda _k: False) == "disable"


def test_recommend_many() -> None:
    assert recommend_many(["encrypt", "encrypt"]) == "encrypt"
    assert recommend_many(["encrypt", "disable"]) == "disable"
    assert recommend_many(["encrypt", "discourage", "available"]) == "discourage"
    assert recommend_many(["encrypt", "available"]) == "available"
    assert recommend_many(["available"]) == "available"
    assert recommend_many([]) == "disable"


# --- JSON and merge ---------------------------------------------------------------------------


def test_json_round_trip_and_strictness() -> None:
    state = peer(prefer_encrypt="mutual", gossip_timestamp=T0 - 1, gossip_key=KEY2)
    doc = state.to_json()
    assert doc["public_key"] == B64_1
    assert PeerState.from_json(doc) == state
    assert PeerState.from_json(PeerState(addr="x@y.example").to_json()) == PeerState(
        addr="x@y.example"
    )
    for bad in (
        {**doc, "extra": 1},
        {**doc, "last_seen": True},
        {**doc, "last_seen": -1},
        {**doc, "prefer_encrypt": "yes"},
        {**doc, "addr": "Bob@autocrypt.example"},
        {**doc, "public_key": "!!"},
        {**doc, "public_key": None},
    ):
        with pytest.raises(ValueError, match="peer state"):
            PeerState.from_json(bad)


ADDR = "peer@autocrypt.example"
times = st.one_of(st.none(), st.integers(min_value=0, max_value=20))
keys = st.sampled_from([KEY1, KEY2, b"\x01"])


@st.composite
def states(draw: st.DrawFn) -> PeerState:
    ac = draw(times)
    gossip = draw(times)
    return PeerState(
        addr=ADDR,
        last_seen=draw(times),
        autocrypt_timestamp=ac,
        public_key=None if ac is None else draw(keys),
        prefer_encrypt=draw(st.sampled_from(["mutual", "nopreference"])),
        gossip_timestamp=gossip,
        gossip_key=None if gossip is None else draw(keys),
    )


@given(states(), states())
def test_merge_commutative(a: PeerState, b: PeerState) -> None:
    assert merge(a, b) == merge(b, a)


@given(states(), states(), states())
def test_merge_associative(a: PeerState, b: PeerState, c: PeerState) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@given(states())
def test_merge_idempotent(a: PeerState) -> None:
    assert merge(a, a) == a


@given(states(), states())
def test_merge_is_an_upper_bound(a: PeerState, b: PeerState) -> None:
    joined = merge(a, b)
    assert merge(joined, a) == joined
    assert merge(joined, b) == joined


def test_merge_takes_newest_autocrypt_and_gossip_parts_independently() -> None:
    a = peer(last_seen=T0 + 50, gossip_timestamp=T0 + 9, gossip_key=KEY1)
    b = peer(
        last_seen=T0 + 20,
        autocrypt_timestamp=T0 + 20,
        public_key=KEY2,
        prefer_encrypt="mutual",
        gossip_timestamp=T0 + 1,
        gossip_key=KEY2,
    )
    joined = merge(a, b)
    assert joined == PeerState(
        addr="bob@autocrypt.example",
        last_seen=T0 + 50,
        autocrypt_timestamp=T0 + 20,
        public_key=KEY2,
        prefer_encrypt="mutual",
        gossip_timestamp=T0 + 9,
        gossip_key=KEY1,
    )
    with pytest.raises(ValueError, match="different addresses"):
        merge(a, PeerState(addr="other@autocrypt.example"))


def test_devices_seeing_messages_in_any_order_converge_after_merge() -> None:
    m1 = raw_message(date=T0, autocrypt=(header(),))
    m2 = raw_message(date=T0 + DAY)
    m3 = raw_message(date=T0 + 2 * DAY, autocrypt=(header(b64=B64_2, mutual=False),))
    one = receive(receive(None, m1), m2)
    two = receive(receive(None, m3), m1)  # m1 is older than m3's header: ignored
    assert one is not None
    assert two is not None
    sequential = receive(receive(receive(None, m1), m2), m3)
    assert merge(one, two) == sequential
