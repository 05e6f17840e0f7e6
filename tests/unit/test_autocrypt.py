"""Autocrypt Level 1 (https://autocrypt.org/level1.html, version 1.1), rule by rule.

Each test is named for the rule it checks, and its first comment quotes or paraphrases the
sentence of the spec it is about ("spec:"), or says that it checks a choice of this
implementation where the spec is silent ("impl:"). Sections follow the spec: the Autocrypt
header (attributes, 10 KiB limit), reading a message, which header counts, ignored messages, the
update algorithm, key gossip, order-independent updates (`contributions` + `merge`, with a
hypothesis property against the literal algorithm), the recommendation (one recipient, several),
the outgoing header, then the JSON form and the merge between devices (a join-semilattice).
"""

from __future__ import annotations

import base64
import random
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from native_host.core.autocrypt import (
    DISCOURAGE_AFTER,
    MAX_HEADER_BYTES,
    InvalidHeader,
    InvalidMessage,
    MessageInfo,
    PeerState,
    contributions,
    effective_date,
    gossip_candidates,
    merge,
    message_headers,
    outgoing_header,
    own_preference,
    own_setting,
    parse_header,
    protected_view,
    recommend,
    recommend_many,
    update_from_gossip,
    update_from_message,
)

KEY1 = bytes(range(1, 60))
KEY2 = bytes(range(100, 180))
KEY3 = bytes(range(30, 90))
B64_1 = base64.b64encode(KEY1).decode()
B64_2 = base64.b64encode(KEY2).decode()
DAY = 86400
T0 = 1_500_000_000
NOW = T0 + 100 * DAY
ALICE = "alice@autocrypt.example"
BOB = "bob@autocrypt.example"
CAROL = "carol@autocrypt.example"
PREFIX = "Autocrypt: "


def any_key(keydata: bytes, _addr: str) -> bytes | None:
    return keydata


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


def header(addr: str = ALICE, b64: str = B64_1, mutual: bool = True) -> str:
    return outgoing_header(addr, base64.b64decode(b64), mutual)


def fold(b64: str, width: int = 76) -> str:
    """Keydata folded the way the spec's examples show it: CRLF and a space every line."""
    return "\r\n ".join(b64[i : i + width] for i in range(0, len(b64), width))


def receive(state: PeerState | None, raw: bytes, now: int = NOW) -> PeerState | None:
    return update_from_message(state, message_headers(raw), now, key_ok=any_key)


def seen_only(last_seen: int = T0, addr: str = ALICE) -> PeerState:
    return PeerState(addr=addr, last_seen=last_seen)


# --- the Autocrypt header: attributes -----------------------------------------------------------


def test_header_spec_example_with_folded_keydata_parses() -> None:
    # spec: "Autocrypt: addr=a@b.example.org; [prefer-encrypt=mutual;] keydata=BASE64"
    parsed = parse_header(
        f"addr=Alice@Autocrypt.example; prefer-encrypt=mutual; keydata=\r\n {fold(B64_1, 20)}"
    )
    assert parsed.addr == ALICE
    assert parsed.prefer_encrypt == "mutual"
    assert parsed.keydata == KEY1


def test_header_keydata_base64_ignores_folding_whitespace() -> None:
    # spec: keydata is Base64 of the key; the header may be folded (CRLF + WSP) anywhere in it.
    for folded in (fold(B64_1, 10), fold(B64_1, 4).replace("\r\n ", "\r\n\t"), f" {B64_1} "):
        assert parse_header(f"addr={ALICE}; keydata={folded}").keydata == KEY1


def test_header_non_critical_attribute_is_ignored() -> None:
    # spec: a name starting with "_" is non-critical; SHOULD ignore it and continue parsing.
    for value in (
        f"addr={ALICE}; _version=2; keydata={B64_1}",
        f"_x=anything at all; addr={ALICE}; _y=; keydata={B64_1}",
        f"addr={ALICE}; _v=1; _v=2; prefer-encrypt=mutual; keydata={B64_1}",
    ):
        assert parse_header(value).keydata == KEY1


def test_header_unknown_critical_attribute_makes_it_invalid() -> None:
    # spec: MUST treat the entire header as invalid on an unsupported "critical" attribute.
    for name in ("version", "type", "Addr", "prefer_encrypt"):
        with pytest.raises(InvalidHeader, match="critical"):
            parse_header(f"addr={ALICE}; {name}=1; keydata={B64_1}")


def test_header_addr_is_required() -> None:
    # spec: "The addr attribute is mandatory".
    with pytest.raises(InvalidHeader, match="missing addr"):
        parse_header(f"prefer-encrypt=mutual; keydata={B64_1}")


def test_header_keydata_is_required() -> None:
    # spec: "The keydata attribute is mandatory".
    with pytest.raises(InvalidHeader, match="missing keydata"):
        parse_header(f"addr={ALICE}; prefer-encrypt=mutual")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"addr={ALICE}; keydata=!!notbase64!!", "base64"),
        (f"addr={ALICE}; keydata=AAA", "base64"),  # bad padding
        (f"addr={ALICE}; keydata=", "empty keydata"),
        (f"addr={ALICE}; addr=c@d.example; keydata={B64_1}", "duplicate"),
        (f"addr={ALICE}; garbage; keydata={B64_1}", "malformed"),
        (f"addr={ALICE}; b@d=1; keydata={B64_1}", "malformed"),
        (f"addr=not-an-address; keydata={B64_1}", "bad addr"),
        (f"addr=; keydata={B64_1}", "bad addr"),
        (f"addr=a b@c.example; keydata={B64_1}", "bad addr"),
    ],
)
def test_header_malformed_values_are_invalid(value: str, reason: str) -> None:
    # impl: what the spec's format does not allow (bad Base64, repeated or nameless attributes).
    with pytest.raises(InvalidHeader, match=reason):
        parse_header(value)


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [
        ("prefer-encrypt=mutual; ", "mutual"),
        ("", "nopreference"),
        ("prefer-encrypt=nopreference; ", "nopreference"),
        ("prefer-encrypt=always; ", "nopreference"),
        ("prefer-encrypt=MUTUAL; ", "nopreference"),
        ("prefer-encrypt=; ", "nopreference"),
    ],
)
def test_header_prefer_encrypt_other_than_mutual_reads_as_nopreference(
    attribute: str, expected: str
) -> None:
    # spec: any value other than "mutual" (or no attribute) should be read as "nopreference".
    assert parse_header(f"addr={ALICE}; {attribute}keydata={B64_1}").prefer_encrypt == expected


def test_header_addr_is_canonicalized_lower_case() -> None:
    # spec (address canonicalization): addresses are compared lower-cased.
    assert parse_header(f"addr= ALICE@Autocrypt.EXAMPLE ; keydata={B64_1}").addr == ALICE


# --- the Autocrypt header: the 10 KiB limit -----------------------------------------------------


def exactly_10_kib_value(addr: str = "a@b.example") -> str:
    """A folded header value whose field, "Autocrypt: " included, is exactly 10 KiB."""
    base = f"addr={addr}; _pad="
    tail = "; keydata=\r\n " + fold(B64_1)
    pad = MAX_HEADER_BYTES - len(PREFIX) - len(base) - len(tail)
    value = base + "x" * pad + tail
    assert len((PREFIX + value).encode()) == MAX_HEADER_BYTES
    return value


def test_header_of_exactly_10_kib_is_valid() -> None:
    # spec: headers *above* 10 KiB (prefix and folding whitespace included) SHOULD be invalid.
    assert parse_header(exactly_10_kib_value()).keydata == KEY1


def test_header_one_byte_over_10_kib_is_invalid() -> None:
    # spec: "MUAs SHOULD treat such headers as invalid" (the limit counts folding whitespace).
    value = exactly_10_kib_value()
    with pytest.raises(InvalidHeader, match="10 KiB"):
        parse_header(value.replace("keydata=\r\n ", "keydata=\r\n  "))
    with pytest.raises(InvalidHeader, match="10 KiB"):
        parse_header(value.replace("_pad=", "_pad=x"))


def test_header_10_kib_limit_applies_to_the_field_as_received() -> None:
    # spec: the size includes "the Autocrypt: prefix and folding whitespace" of the real field.
    value = exactly_10_kib_value(ALICE)
    state = receive(None, raw_message(autocrypt=(value,)))
    assert state is not None
    assert state.public_key == KEY1
    over = value.replace("_pad=", "_pad=x")
    assert receive(None, raw_message(autocrypt=(over,))) == seen_only()


def test_ten_kib_limit_counts_the_prefix() -> None:
    # spec: the limit includes the "Autocrypt: " prefix.
    base = "addr=a@b.example; keydata="
    room = MAX_HEADER_BYTES - len(PREFIX) - len(base)
    fits = base + "A" * (room // 4 * 4)
    parse_header(fits)
    with pytest.raises(InvalidHeader, match="10 KiB"):
        parse_header(fits + " " * (MAX_HEADER_BYTES - len(PREFIX) - len(fits) + 1))


# --- message_headers ----------------------------------------------------------------------------


def test_message_headers_extracts_fields() -> None:
    # impl: what the update rules need, canonicalized.
    info = message_headers(
        raw_message(
            autocrypt=(header(),),
            extra=("Cc: carol@autocrypt.example", "Reply-To: Dave <Dave@Autocrypt.example>"),
        )
    )
    assert info.from_addr == ALICE
    assert info.date == T0
    assert info.content_type == "text/plain"
    assert info.auto_submitted is None
    assert info.autocrypt == (header(),)
    assert info.to_cc == (BOB, CAROL)
    assert info.reply_to == ("dave@autocrypt.example",)


def test_message_headers_bad_missing_or_repeated_date_is_none() -> None:
    # impl: no single parsable Date header means the date is "unavailable".
    assert message_headers(raw_message(date=None)).date is None
    assert message_headers(raw_message(date=None, extra=("Date: yesterday",))).date is None
    assert message_headers(raw_message(extra=(f"Date: {fmt_date(T0 + 1)}",))).date is None


def test_message_headers_two_from_addresses() -> None:
    # impl: every From address is kept, so that "more than one address" can be seen.
    info = message_headers(raw_message(from_="a@x.example, b@x.example"))
    assert info.from_addrs == ("a@x.example", "b@x.example")
    assert info.from_addr is None
    two_fields = raw_message(extra=("From: eve@x.example",))
    assert message_headers(two_fields).from_addr is None


def test_message_headers_folded_autocrypt_header_parses() -> None:
    # spec: a received header may be folded; folding whitespace inside keydata is dropped.
    folded = f"addr={ALICE}; keydata=\r\n {fold(B64_1, 30)}"
    info = message_headers(raw_message(autocrypt=(folded,)))
    assert parse_header(info.autocrypt[0]).keydata == KEY1


def test_message_headers_bounds() -> None:
    # impl: the header block is bounded (fields and bytes); the body is not read.
    too_many = tuple(f"X-H{i}: v" for i in range(200))
    with pytest.raises(InvalidMessage, match="header fields"):
        message_headers(raw_message(extra=too_many))
    with pytest.raises(InvalidMessage, match="64 KiB"):
        message_headers(raw_message(extra=("X-Big: " + "a" * 70_000,)))
    assert message_headers(raw_message() + b"x" * 100_000).date == T0


# --- which Autocrypt header counts --------------------------------------------------------------


def test_header_addr_compared_case_insensitively_with_from() -> None:
    # spec: addr must be the From address; both are canonicalized (lower-cased) first.
    raw = raw_message(
        from_="ALICE@AUTOCRYPT.EXAMPLE", autocrypt=(header(addr="aLiCe@autocrypt.example"),)
    )
    state = receive(None, raw)
    assert state is not None
    assert (state.addr, state.public_key) == (ALICE, KEY1)


def test_header_whose_addr_differs_from_from_is_invalid() -> None:
    # spec: if addr "differs from the one in the From header", the header MUST be invalid.
    raw = raw_message(autocrypt=(header(addr="mallory@autocrypt.example"),))
    assert receive(None, raw) == seen_only()


def test_header_addr_is_checked_against_from_not_sender_or_reply_to() -> None:
    # spec: "Autocrypt is concerned only with the From field" (not Sender, not Reply-To).
    raw = raw_message(
        autocrypt=(header(addr=BOB),),
        extra=(f"Sender: {BOB}", f"Reply-To: {BOB}"),
    )
    assert receive(None, raw) == seen_only()


def test_header_whose_key_fails_key_ok_is_invalid() -> None:
    # spec: keydata must be a usable OpenPGP key; here the caller's key_ok decides.
    info = message_headers(raw_message(autocrypt=(header(),)))
    assert update_from_message(None, info, NOW, key_ok=lambda _k, _a: None) == seen_only()


def test_the_key_kept_is_the_one_key_ok_cut_for_the_headers_address() -> None:
    """The adapter cuts a key to the header's address (other user ids never stored)."""
    asked: list[str] = []

    def cut(keydata: bytes, addr: str) -> bytes | None:
        asked.append(addr)
        return b"minimal:" + keydata[:4]

    info = message_headers(raw_message(autocrypt=(header(),)))
    state = update_from_message(None, info, NOW, key_ok=cut)
    assert state is not None
    assert state.public_key == b"minimal:" + KEY1[:4]
    assert asked == [ALICE]
    gossip = gossip_candidates(info, [header(addr=BOB)], key_ok=cut)
    assert gossip == {BOB: b"minimal:" + KEY1[:4]}
    assert asked == [ALICE, BOB]


def test_more_than_one_valid_header_counts_as_none_but_last_seen_updates() -> None:
    # spec: "more than one valid header" is an error: "all Autocrypt headers discarded".
    prior = receive(None, raw_message(date=T0 - DAY, autocrypt=(header(b64=B64_2),)))
    assert prior is not None
    for pair in ((header(), header(b64=B64_2)), (header(), header())):
        raw = raw_message(autocrypt=pair)
        assert receive(None, raw) == seen_only()
        assert receive(prior, raw) == replace(prior, last_seen=T0)  # key from T0 - DAY kept


def test_one_valid_header_among_invalid_ones_is_used() -> None:
    # spec: examine all Autocrypt headers; only *valid* ones count towards "more than one".
    raw = raw_message(
        autocrypt=(
            f"addr={ALICE}; version=2; keydata={B64_2}",  # critical attribute: invalid
            header(addr=BOB, b64=B64_2),  # another addr: invalid
            header(),
            "garbage",
        )
    )
    state = receive(None, raw)
    assert state is not None
    assert state.public_key == KEY1


def test_header_failing_key_ok_does_not_count_towards_more_than_one() -> None:
    # spec: a header with an unusable key is not valid, so the other is "the single valid" one.
    info = message_headers(raw_message(autocrypt=(header(), header(b64=B64_2))))
    state = update_from_message(None, info, NOW, key_ok=lambda k, _a: k if k == KEY2 else None)
    assert state is not None
    assert state.public_key == KEY2


# --- messages that are ignored ------------------------------------------------------------------


KNOWN = PeerState(addr=ALICE, last_seen=T0 - DAY)


def test_ignored_when_from_has_more_than_one_address() -> None:
    # spec: ignore the message if "There is more than one address in the From header."
    two_from = raw_message(from_=f"{ALICE}, eve@x.example", autocrypt=(header(),))
    assert receive(KNOWN, two_from) is KNOWN
    assert contributions(message_headers(two_from), NOW, key_ok=any_key) == []


def test_ignored_when_content_type_is_multipart_report() -> None:
    # spec: ignore if "The content-type is multipart/report" (e.g. MDNs without Auto-Submitted).
    for ctype in (
        'multipart/report; boundary="x"',
        'Multipart/Report; report-type=disposition-notification; boundary="x"',
    ):
        report = raw_message(autocrypt=(header(),), extra=(f"Content-Type: {ctype}",))
        assert receive(KNOWN, report) is KNOWN
        assert receive(None, report) is None
        assert contributions(message_headers(report), NOW, key_ok=any_key) == []


@pytest.mark.parametrize(
    "value",
    [
        "auto-replied",
        "Auto-Replied",
        "auto-replied (vacation)",  # what Sieve and Cyrus vacation responders send
        'auto-replied; owner-email="alice@autocrypt.example"',
        "(out of office) auto-replied",
    ],
)
def test_ignored_when_auto_submitted_auto_replied(value: str) -> None:
    # spec: ignore if "explicitly marked as auto-replied with an Auto-Submitted: auto-replied
    # header (RFC 3834)"; RFC 3834 allows comments and parameters after the keyword.
    auto = raw_message(autocrypt=(header(),), extra=(f"Auto-Submitted: {value}",))
    assert receive(KNOWN, auto) is KNOWN
    assert contributions(message_headers(auto), NOW, key_ok=any_key) == []


@pytest.mark.parametrize("value", ["no", "auto-generated", "auto-repliedx", "auto-notified"])
def test_not_ignored_for_other_auto_submitted_values(value: str) -> None:
    # spec: only "auto-replied" is named; other Auto-Submitted keywords are processed normally.
    state = receive(KNOWN, raw_message(autocrypt=(header(),), extra=(f"Auto-Submitted: {value}",)))
    assert state is not None
    assert state.public_key == KEY1


def test_ignored_message_contributes_no_gossip_either() -> None:
    # impl: an ignored message is dropped whole, gossip included (the spec names only peers[from]).
    info = message_headers(raw_message(extra=("Auto-Submitted: auto-replied",)))
    assert contributions(info, NOW, key_ok=any_key, gossip_values=[header(addr=BOB)]) == []


def test_state_for_another_address_is_refused() -> None:
    # impl: update_from_message updates peers[from-addr] only.
    with pytest.raises(ValueError, match="another address"):
        receive(PeerState(addr=BOB), raw_message())


# --- the update algorithm -----------------------------------------------------------------------


def test_effective_date_is_the_date_header() -> None:
    # spec: the effective date is "the sending time of the message as indicated by its Date header".
    info = message_headers(raw_message(date=T0))
    assert effective_date(info, NOW) == T0
    assert effective_date(replace(info, date=NOW), NOW) == NOW  # "now" is not the future


@pytest.mark.parametrize(
    "extra", [(), ("Date: yesterday",), (f"Date: {fmt_date(T0)}", f"Date: {fmt_date(T0 + 1)}")]
)
def test_effective_date_is_receipt_time_when_date_unavailable(extra: tuple[str, ...]) -> None:
    # spec: "or the time of receipt if that date is [...] unavailable" (missing, bad, repeated).
    info = message_headers(raw_message(date=None, extra=extra))
    assert effective_date(info, NOW) == NOW
    state = receive(None, raw_message(date=None, extra=extra, autocrypt=(header(),)))
    assert state is not None
    assert (state.last_seen, state.autocrypt_timestamp) == (NOW, NOW)


def test_effective_date_is_receipt_time_when_date_in_future() -> None:
    # spec: "or the time of receipt if that date is in the future".
    info = message_headers(raw_message(date=NOW + 1))
    assert effective_date(info, NOW) == NOW
    future = receive(None, raw_message(date=NOW + 10 * DAY, autocrypt=(header(),)))
    assert future is not None
    assert (future.last_seen, future.autocrypt_timestamp) == (NOW, NOW)


def test_first_message_with_header_sets_everything() -> None:
    # spec: steps 2, 4, 5, 6 on an empty peers[from-addr].
    state = receive(None, raw_message(autocrypt=(header(),)))
    assert state == PeerState(
        addr=ALICE,
        last_seen=T0,
        autocrypt_timestamp=T0,
        public_key=KEY1,
        prefer_encrypt="mutual",
    )


def test_step1_message_older_than_autocrypt_timestamp_changes_nothing() -> None:
    # spec step 1: effective date older than autocrypt_timestamp: "no changes are required".
    state = receive(None, raw_message(date=T0 + DAY, autocrypt=(header(),)))
    assert receive(state, raw_message(date=T0, autocrypt=(header(b64=B64_2),))) is state
    assert receive(state, raw_message(date=T0)) is state


def test_step1_terminates_before_step2_so_last_seen_is_untouched() -> None:
    # spec step 1: "the update process terminates": step 2 is not reached (shown on a hand-made
    # state with last_seen < autocrypt_timestamp, which processing messages cannot produce).
    odd = PeerState(addr=ALICE, last_seen=T0, autocrypt_timestamp=T0 + 10, public_key=KEY1)
    assert receive(odd, raw_message(date=T0 + 5, autocrypt=(header(b64=B64_2),))) is odd


def test_step1_equal_to_autocrypt_timestamp_is_not_older() -> None:
    # spec step 1 says "older": an equal date goes on, and the message processed last wins.
    state = receive(None, raw_message(autocrypt=(header(),)))
    again = receive(state, raw_message(autocrypt=(header(b64=B64_2, mutual=False),)))
    assert again is not None
    assert (again.public_key, again.prefer_encrypt, again.autocrypt_timestamp) == (
        KEY2,
        "nopreference",
        T0,
    )


def test_step2_last_seen_only_moves_forward() -> None:
    # spec step 2: set last_seen "If the message's effective date is more recent than last_seen".
    state = PeerState(addr=ALICE, last_seen=T0 + 10, autocrypt_timestamp=T0, public_key=KEY1)
    assert receive(state, raw_message(date=T0 + 5)) == state
    assert receive(state, raw_message(date=T0 + 10)) == state
    assert receive(state, raw_message(date=T0 + 11)) == replace(state, last_seen=T0 + 11)


def test_step2_older_than_last_seen_but_newer_header_still_replaces_key() -> None:
    # spec steps 2, 4-6: last_seen stays, yet the header (not older than autocrypt_timestamp) wins.
    state = PeerState(addr=ALICE, last_seen=T0 + 10, autocrypt_timestamp=T0, public_key=KEY1)
    new = receive(state, raw_message(date=T0 + 5, autocrypt=(header(b64=B64_2),)))
    assert new is not None
    assert (new.last_seen, new.autocrypt_timestamp, new.public_key) == (T0 + 10, T0 + 5, KEY2)


def test_step3_message_without_header_updates_last_seen_only() -> None:
    # spec step 3: "If the Autocrypt header is unavailable, no further changes are required".
    state = receive(None, raw_message(autocrypt=(header(),)))
    assert state is not None
    assert receive(state, raw_message(date=T0 + DAY)) == replace(state, last_seen=T0 + DAY)
    assert receive(None, raw_message()) == seen_only()


def test_steps4_to_6_newer_header_replaces_timestamp_key_and_preference() -> None:
    # spec steps 4-6: set autocrypt_timestamp, public_key and prefer_encrypt from the header.
    state = receive(None, raw_message(autocrypt=(header(),)))
    newer = receive(state, raw_message(date=T0 + 5, autocrypt=(header(b64=B64_2, mutual=False),)))
    assert newer == PeerState(
        addr=ALICE,
        last_seen=T0 + 5,
        autocrypt_timestamp=T0 + 5,
        public_key=KEY2,
        prefer_encrypt="nopreference",
    )
    back = receive(newer, raw_message(date=T0 + 6, autocrypt=(header(b64=B64_2, mutual=True),)))
    assert back is not None
    assert back.prefer_encrypt == "mutual"


def test_no_reset_state_message_without_header_keeps_the_key() -> None:
    # spec (1.1): steps 1-6 have no "reset"; a later header-less message only moves last_seen,
    # and the staleness shows up in the recommendation (35 days) instead.
    state = receive(None, raw_message(autocrypt=(header(),)))
    later = receive(state, raw_message(date=T0 + 40 * DAY))
    assert later is not None
    assert (later.public_key, later.prefer_encrypt, later.autocrypt_timestamp) == (
        KEY1,
        "mutual",
        T0,
    )
    assert recommend(later, NOW, False, True) == "discourage"


def test_devices_seeing_messages_in_any_order_converge_after_merge() -> None:
    # spec: the state is a function of the messages (for distinct dates), whatever their order.
    m1 = raw_message(date=T0, autocrypt=(header(),))
    m2 = raw_message(date=T0 + DAY)
    m3 = raw_message(date=T0 + 2 * DAY, autocrypt=(header(b64=B64_2, mutual=False),))
    one = receive(receive(None, m1), m2)
    two = receive(receive(None, m3), m1)  # m1 is older than m3's header: ignored
    assert one is not None
    assert two is not None
    sequential = receive(receive(receive(None, m1), m2), m3)
    assert merge(one, two) == sequential


# --- key gossip ---------------------------------------------------------------------------------


def gossip_info(*extra: str) -> MessageInfo:
    return message_headers(raw_message(extra=extra))


def test_gossip_taken_only_for_to_and_cc_recipients() -> None:
    # spec gossip step 1: if gossip-addr "does not match any address in the mail's To, Cc, or
    # Reply-To header, the update process terminates".
    info = gossip_info(f"Cc: {CAROL}")
    gossip = [
        header(addr=BOB, mutual=False),
        header(addr=CAROL, b64=B64_2, mutual=False),
        header(addr="dave@autocrypt.example", mutual=False),
    ]
    assert gossip_candidates(info, gossip, key_ok=any_key) == {BOB: KEY1, CAROL: KEY2}


def test_gossip_taken_for_reply_to_address() -> None:
    # spec: Autocrypt-Gossip "MAY also be used to include keys for the address specified in the
    # Reply-To header".
    info = gossip_info("Reply-To: Dave <Dave@Autocrypt.example>")
    gossip = [header(addr="dave@autocrypt.example")]
    assert gossip_candidates(info, gossip, key_ok=any_key) == {"dave@autocrypt.example": KEY1}


def test_gossip_addr_matched_case_insensitively() -> None:
    # spec (address canonicalization): gossip-addr and To/Cc are compared lower-cased.
    info = gossip_info()
    assert gossip_candidates(info, [header(addr="BoB@AutoCrypt.Example")], key_ok=any_key) == {
        BOB: KEY1
    }


def test_gossip_address_gossiped_twice_in_one_message_is_dropped() -> None:
    # impl: like "more than one valid header", two valid gossip headers for one address cancel
    # (the spec says a payload "contains one Autocrypt-Gossip header for each address").
    info = gossip_info(f"Cc: {CAROL}")
    twice = [header(addr=BOB), header(addr=BOB, b64=B64_2), header(addr=CAROL)]
    assert gossip_candidates(info, twice, key_ok=any_key) == {CAROL: KEY1}
    assert gossip_candidates(info, [header(addr=BOB)] * 2, key_ok=any_key) == {}


def test_gossip_invalid_headers_are_skipped() -> None:
    # spec: Autocrypt-Gossip "has the same format as the Autocrypt header", so the same validity.
    info = gossip_info()
    bad = [f"addr={BOB}; version=2; keydata={B64_1}", "garbage", f"addr={BOB}; keydata=!!"]
    assert gossip_candidates(info, bad, key_ok=any_key) == {}
    assert gossip_candidates(info, [header(addr=BOB)], key_ok=lambda _k, _a: None) == {}
    mixed = [*bad, header(addr=BOB, b64=B64_2)]
    assert gossip_candidates(info, mixed, key_ok=any_key) == {BOB: KEY2}


def test_gossip_first_update_sets_timestamp_and_key() -> None:
    # spec gossip steps 3-4: set gossip_timestamp to the effective date and gossip_key to keydata.
    state = update_from_gossip(None, "Bob@Autocrypt.example", KEY1, T0)
    assert state == PeerState(addr=BOB, gossip_timestamp=T0, gossip_key=KEY1)


def test_gossip_timestamp_only_moves_forward() -> None:
    # spec gossip step 2: stop if gossip_timestamp "is more recent than the message's effective
    # date"; an equal date is not more recent, so the message processed last wins.
    state = update_from_gossip(None, BOB, KEY1, T0)
    assert update_from_gossip(state, BOB, KEY2, T0 - 1) == state
    newer = update_from_gossip(state, BOB, KEY2, T0 + 1)
    assert (newer.gossip_key, newer.gossip_timestamp) == (KEY2, T0 + 1)
    same = update_from_gossip(
        state, BOB, KEY2, T0
    )  # not "more recent": the last one processed wins
    assert (same.gossip_key, same.gossip_timestamp) == (KEY2, T0)


def test_gossip_leaves_the_autocrypt_part_and_last_seen_alone() -> None:
    # spec: gossip updates gossip_timestamp and gossip_key only.
    state = PeerState(
        addr=BOB, last_seen=T0, autocrypt_timestamp=T0, public_key=KEY1, prefer_encrypt="mutual"
    )
    assert update_from_gossip(state, BOB, KEY2, T0 + DAY) == replace(
        state, gossip_timestamp=T0 + DAY, gossip_key=KEY2
    )
    with pytest.raises(ValueError, match="another address"):
        update_from_gossip(state, CAROL, KEY2, T0)


def test_gossip_for_the_sender_is_not_taken_by_contributions() -> None:
    # impl: the sender's own Autocrypt header speaks for it; gossip about the From addr is dropped.
    info = message_headers(raw_message(autocrypt=(header(),), extra=(f"Cc: {ALICE}",)))
    gossip = [
        header(addr=ALICE, b64=B64_2, mutual=False),
        header(addr=BOB, b64=B64_2, mutual=False),
    ]
    assert ALICE in gossip_candidates(info, gossip, key_ok=any_key)
    assert [s.addr for s in contributions(info, NOW, key_ok=any_key, gossip_values=gossip)] == [
        ALICE,
        BOB,
    ]
    sender = contributions(info, NOW, key_ok=any_key, gossip_values=gossip)[0]
    assert (sender.gossip_key, sender.gossip_timestamp) == (None, None)


# --- contributions: the update rules as something to merge --------------------------------------


def test_contributions_state_what_one_message_says() -> None:
    # spec: the sender's last_seen (+ header), and gossip at the message's effective date.
    info = message_headers(raw_message(autocrypt=(header(),), extra=(f"Cc: {CAROL}",)))
    gossip = [header(addr=CAROL, b64=B64_2, mutual=False), header(addr=BOB, mutual=False)]
    assert contributions(info, NOW, key_ok=any_key, gossip_values=gossip) == [
        PeerState(
            addr=ALICE,
            last_seen=T0,
            autocrypt_timestamp=T0,
            public_key=KEY1,
            prefer_encrypt="mutual",
        ),
        PeerState(addr=BOB, gossip_timestamp=T0, gossip_key=KEY1),
        PeerState(addr=CAROL, gossip_timestamp=T0, gossip_key=KEY2),
    ]
    bare = message_headers(raw_message(date=None))
    assert contributions(bare, NOW, key_ok=any_key) == [seen_only(NOW)]


def test_tie_breaker_same_date_different_keys_converges_in_either_order() -> None:
    # spec: at equal dates step 1 lets "the last message processed" win, so sequential processing
    # depends on arrival order; contributions + merge break the tie by a hash instead.
    a = message_headers(raw_message(autocrypt=(header(b64=B64_1, mutual=True),)))
    b = message_headers(raw_message(autocrypt=(header(b64=B64_2, mutual=False),)))

    def spec(first: MessageInfo, second: MessageInfo) -> PeerState | None:
        return update_from_message(
            update_from_message(None, first, NOW, key_ok=any_key), second, NOW, key_ok=any_key
        )

    ab, ba = spec(a, b), spec(b, a)
    assert ab is not None
    assert ba is not None
    assert (ab.public_key, ba.public_key) == (KEY2, KEY1)  # the literal spec is order-dependent

    [ca] = contributions(a, NOW, key_ok=any_key)
    [cb] = contributions(b, NOW, key_ok=any_key)
    assert merge(ca, cb) == merge(cb, ca)
    assert merge(ca, cb) in (ab, ba)  # one of the spec's outcomes, chosen independently of order


def test_tie_breaker_same_date_gossip_converges_in_either_order() -> None:
    # spec gossip step 2 (same as above): equal dates, last one wins; merge picks by hash.
    info = gossip_info()
    [_, g1] = contributions(info, NOW, key_ok=any_key, gossip_values=[header(addr=BOB)])
    [_, g2] = contributions(info, NOW, key_ok=any_key, gossip_values=[header(addr=BOB, b64=B64_2)])
    assert merge(g1, g2) == merge(g2, g1)
    assert merge(g1, g2).gossip_key in (KEY1, KEY2)


# The property: for messages with distinct effective dates, folding `merge` over `contributions`
# (in any order) gives the same peers table as the spec's sequential algorithm.

PEOPLE = (ALICE, BOB, CAROL)
REJECTED = b"\xffnot-a-key"
POOL = (KEY1, KEY2, KEY3, REJECTED)


def pool_key_ok(keydata: bytes, _addr: str) -> bytes | None:
    return keydata if keydata != REJECTED else None


def _autocrypt_choices(sender: str) -> st.SearchStrategy[str]:
    """Autocrypt header values in a message from `sender`: valid ones (any key of the pool, any
    preference, the addr in any case) and invalid ones (other addr, critical attribute, junk)."""
    valid = [
        outgoing_header(addr, key, mutual)
        for addr in (sender, sender.upper())
        for key in POOL
        for mutual in (True, False)
    ]
    invalid = [outgoing_header(p, KEY1, True) for p in PEOPLE if p != sender]
    invalid += [f"addr={sender}; version=2; keydata={B64_2}", "junk"]
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), st.sampled_from(invalid))


AUTOCRYPT_CHOICES = {sender: _autocrypt_choices(sender) for sender in PEOPLE}
GOSSIP_CHOICES = st.sampled_from([outgoing_header(p, key, False) for p in PEOPLE for key in POOL])
KINDS = st.sampled_from(["plain"] * 6 + ["report", "auto-replied", "two-from"])
UNDATED = st.sampled_from([None, NOW + 1, NOW + DAY])  # effective date: now

Message = tuple[MessageInfo, tuple[str, ...], bool]  # info, gossip values, ignored


@st.composite
def message(draw: st.DrawFn, offset: int | None) -> Message:
    """A message from one of PEOPLE to the others; `offset` None means "effective date now"."""
    sender = draw(st.sampled_from(PEOPLE))
    kind = draw(KINDS)
    info = MessageInfo(
        from_addrs=(sender, "eve@x.example") if kind == "two-from" else (sender,),
        date=T0 + offset if offset is not None else draw(UNDATED),
        content_type="multipart/report" if kind == "report" else "text/plain",
        auto_submitted="auto-replied" if kind == "auto-replied" else None,
        autocrypt=tuple(draw(st.lists(AUTOCRYPT_CHOICES[sender], max_size=2))),
        to_cc=tuple(p for p in PEOPLE if p != sender),
    )
    return info, tuple(draw(st.lists(GOSSIP_CHOICES, max_size=3))), kind != "plain"


@st.composite
def message_sequences(draw: st.DrawFn) -> list[Message]:
    # Distinct effective dates: distinct offsets before NOW, and at most one message dated "now".
    offsets: list[int | None] = list(
        draw(st.lists(st.integers(0, 60 * DAY), unique=True, max_size=6))
    )
    if draw(st.booleans()):
        offsets.insert(draw(st.integers(0, len(offsets))), None)
    return [draw(message(offset)) for offset in offsets]


def spec_table(messages: list[Message]) -> dict[str, PeerState]:
    """The spec, literally: the update algorithm for From, then gossip steps 1-4, in order."""
    peers: dict[str, PeerState] = {}
    for info, gossip, ignored in messages:
        sender = info.from_addrs[0]
        state = update_from_message(peers.get(sender), info, NOW, key_ok=pool_key_ok)
        if state is not None:
            peers[sender] = state
        if ignored:
            continue
        for addr, keydata in gossip_candidates(info, gossip, key_ok=pool_key_ok).items():
            if addr != sender:
                date = effective_date(info, NOW)
                peers[addr] = update_from_gossip(peers.get(addr), addr, keydata, date)
    return peers


def merged_table(states: list[PeerState]) -> dict[str, PeerState]:
    table: dict[str, PeerState] = {}
    for state in states:
        table[state.addr] = merge(table[state.addr], state) if state.addr in table else state
    return table


@given(message_sequences(), st.randoms(use_true_random=False))
def test_contributions_and_merge_equal_the_spec_for_distinct_dates(
    messages: list[Message], rnd: random.Random
) -> None:
    # spec: "Updating Autocrypt Peer State" and "... from Key Gossip"; order does not matter
    # because no two messages share an effective date.
    expected = spec_table(messages)
    said = [
        state
        for info, gossip, _ in messages
        for state in contributions(info, NOW, key_ok=pool_key_ok, gossip_values=gossip)
    ]
    assert merged_table(said) == expected
    rnd.shuffle(said)
    assert merged_table(said) == expected


# --- recommendation: single recipient -----------------------------------------------------------


def peer(**fields: object) -> PeerState:
    base: dict[str, object] = {
        "addr": BOB,
        "last_seen": T0,
        "autocrypt_timestamp": T0,
        "public_key": KEY1,
    }
    base.update(fields)
    return PeerState(**base)  # type: ignore[arg-type]


NO_KEY = peer(autocrypt_timestamp=None, public_key=None)
GOSSIP_ONLY = peer(autocrypt_timestamp=None, public_key=None, gossip_timestamp=T0, gossip_key=KEY2)
FRESH = peer()
STALE = peer(last_seen=T0 + DISCOURAGE_AFTER + 1)
EDGE = peer(last_seen=T0 + DISCOURAGE_AFTER)


def mutual(state: PeerState) -> PeerState:
    return replace(state, prefer_encrypt="mutual")


# Columns: peers[to-addr], reply to an encrypted message, accounts[from-addr] is mutual.
RECOMMENDATION_TABLE = [
    # spec: "If there is no peers[to-addr], then set ui-recommendation to disable".
    (None, False, False, "disable"),
    (None, True, True, "disable"),
    # spec: "If both public_key and gossip_key are null, [...] disable" (even replying).
    (NO_KEY, False, False, "disable"),
    (mutual(NO_KEY), True, True, "disable"),
    # spec: "If public_key is null, [...] target gossip_key, preliminary discourage".
    (GOSSIP_ONLY, False, False, "discourage"),
    (mutual(GOSSIP_ONLY), False, True, "discourage"),  # mutual needs "available"
    (GOSSIP_ONLY, True, False, "encrypt"),  # a reply to encrypted lifts discourage
    # spec: otherwise "available"...
    (FRESH, False, False, "available"),
    (mutual(FRESH), False, False, "available"),  # only the peer is mutual
    (FRESH, False, True, "available"),  # only we are mutual
    # spec: ...and encrypt when replying to encrypted, or when both prefer_encrypt are mutual.
    (FRESH, True, False, "encrypt"),
    (mutual(FRESH), False, True, "encrypt"),
    (mutual(FRESH), True, True, "encrypt"),
    # spec: "If autocrypt_timestamp is more than 35 days older than last_seen, [...] discourage".
    (STALE, False, False, "discourage"),
    (mutual(STALE), False, True, "discourage"),  # mutual does not lift discourage
    (STALE, True, False, "encrypt"),  # a reply to encrypted does
    # spec: exactly 35 days is not "more than 35 days".
    (EDGE, False, False, "available"),
    (mutual(EDGE), False, True, "encrypt"),
    # spec: public_key, when present, is the target; a gossip key beside it changes nothing.
    (peer(gossip_timestamp=T0 + DAY, gossip_key=KEY2), False, False, "available"),
    (mutual(peer(gossip_timestamp=T0, gossip_key=KEY2)), False, True, "encrypt"),
]


@pytest.mark.parametrize(("state", "reply", "own_mutual", "expected"), RECOMMENDATION_TABLE)
def test_recommend_single_recipient_table(
    state: PeerState | None, reply: bool, own_mutual: bool, expected: str
) -> None:
    # spec: "Recommendations for single-recipient messages", every branch.
    assert recommend(state, NOW, reply, own_mutual) == expected


def test_recommend_35_day_boundary_counts_seconds() -> None:
    # spec: "more than 35 days older than last_seen" is strict, to the second.
    assert DISCOURAGE_AFTER == 35 * DAY
    assert recommend(peer(last_seen=T0 + 35 * DAY), NOW, False, False) == "available"
    assert recommend(peer(last_seen=T0 + 35 * DAY + 1), NOW, False, False) == "discourage"


def test_recommend_staleness_from_messages_without_header() -> None:
    # spec: last_seen moves with header-less mail, so silently leaving Autocrypt discourages.
    state = receive(None, raw_message(autocrypt=(header(),)))
    edge = receive(state, raw_message(date=T0 + 35 * DAY))
    stale = receive(state, raw_message(date=T0 + 35 * DAY + 1))
    assert recommend(edge, NOW, False, True) == "encrypt"
    assert recommend(stale, NOW, False, True) == "discourage"


def test_recommend_unusable_key_counts_as_absent() -> None:
    # spec: a public_key or gossip_key "revoked, expired, or otherwise known to be unusable"
    # is treated as null.
    both = mutual(peer(gossip_timestamp=T0, gossip_key=KEY2))

    def not_key1(keydata: bytes) -> bool:
        return keydata != KEY1

    def not_key2(keydata: bytes) -> bool:
        return keydata != KEY2

    assert recommend(both, NOW, False, True, key_usable=not_key1) == "discourage"  # gossip only
    assert recommend(both, NOW, False, True, key_usable=not_key2) == "encrypt"  # public only
    assert recommend(both, NOW, True, True, key_usable=lambda _k: False) == "disable"
    assert recommend(mutual(FRESH), NOW, False, True, key_usable=not_key1) == "disable"
    assert recommend(GOSSIP_ONLY, NOW, True, False, key_usable=not_key2) == "disable"


# --- recommendation: several recipients ---------------------------------------------------------


@pytest.mark.parametrize(
    ("recommendations", "expected"),
    [
        # spec rule 1: "If any recipient has a ui-recommendation of disable, then [...] disable."
        (["encrypt", "disable"], "disable"),
        (["disable", "discourage", "available"], "disable"),
        (["disable"], "disable"),
        # spec rule 2: "If every recipient has a ui-recommendation of encrypt, then [...] encrypt."
        (["encrypt"], "encrypt"),
        (["encrypt", "encrypt", "encrypt"], "encrypt"),
        # spec rule 3: "If any recipient has a ui-recommendation of discourage", discourage.
        (["encrypt", "discourage"], "discourage"),
        (["encrypt", "discourage", "available"], "discourage"),
        (["discourage"], "discourage"),
        # spec: "Otherwise, the message ui-recommendation is available."
        (["encrypt", "available"], "available"),
        (["available", "available"], "available"),
        # impl: no recipient at all: nothing to encrypt to.
        ([], "disable"),
    ],
)
def test_recommend_many_rules_in_order(recommendations: list[str], expected: str) -> None:
    # spec: "the earliest matching rule encountered below takes precedence over later rules".
    assert recommend_many(recommendations) == expected  # type: ignore[arg-type]


# --- the outgoing header ------------------------------------------------------------------------


def test_outgoing_header_keydata_is_last() -> None:
    # spec: "the keydata attribute MUST be the last attribute in this header".
    value = outgoing_header(ALICE, KEY1, prefer_mutual=True)
    assert value == f"addr={ALICE}; prefer-encrypt=mutual; keydata={B64_1}"
    assert (
        outgoing_header(ALICE, KEY1, prefer_mutual=False).rsplit("; ", 1)[1].startswith("keydata=")
    )


def test_outgoing_header_prefer_encrypt_only_when_mutual() -> None:
    # spec: if accounts[from-addr].prefer_encrypt is mutual, the header MUST have
    # prefer-encrypt=mutual; the minimal header has only addr and keydata.
    assert outgoing_header(ALICE, KEY1, prefer_mutual=False) == f"addr={ALICE}; keydata={B64_1}"
    assert "prefer-encrypt=mutual" in outgoing_header(ALICE, KEY1, prefer_mutual=True)


@pytest.mark.parametrize("prefer_mutual", [True, False])
def test_outgoing_header_round_trips_through_parse_header(prefer_mutual: bool) -> None:
    # spec: what we send must be a valid header for our From address.
    value = outgoing_header(ALICE, KEY1, prefer_mutual=prefer_mutual)
    parsed = parse_header(value)
    assert (parsed.addr, parsed.keydata) == (ALICE, KEY1)
    assert parsed.prefer_encrypt == ("mutual" if prefer_mutual else "nopreference")
    assert parse_header(value.replace("; ", ";")) == parsed
    state = receive(None, raw_message(from_=ALICE, autocrypt=(value,)))
    assert state is not None
    assert (state.public_key, state.prefer_encrypt) == (KEY1, parsed.prefer_encrypt)


def test_outgoing_header_refuses_over_10_kib() -> None:
    # spec: "A MUA MUST NOT send an Autocrypt header above 10 KiB in size".
    with pytest.raises(ValueError, match="10 KiB"):
        outgoing_header(ALICE, b"\x00" * 8000, prefer_mutual=False)
    base = len(PREFIX) + len(f"addr={ALICE}; keydata=")
    largest = (MAX_HEADER_BYTES - base) // 4 * 3  # Base64 grows by 4/3
    assert len(PREFIX) + len(outgoing_header(ALICE, b"\x00" * largest, False)) <= MAX_HEADER_BYTES
    with pytest.raises(ValueError, match="10 KiB"):
        outgoing_header(ALICE, b"\x00" * (largest + 1), prefer_mutual=False)


@pytest.mark.parametrize(
    "addr",
    [
        "",
        "no-at-sign",
        "a@b.example; keydata=AAAA",
        "a@b.example\r\nBcc: x@y.example",
        "a b@c.example",
        "a=b@c.example",
        "a@b.example\x00",
    ],
)
def test_outgoing_header_refuses_bad_addresses(addr: str) -> None:
    # impl: the addr must be one address, and must not inject attributes or header lines.
    with pytest.raises(ValueError, match="addr"):
        outgoing_header(addr, KEY1, prefer_mutual=False)


def test_outgoing_header_refuses_empty_keydata() -> None:
    # spec: "This header MUST contain the corresponding public key material".
    with pytest.raises(ValueError, match="keydata"):
        outgoing_header(ALICE, b"", prefer_mutual=True)


# --- JSON form ----------------------------------------------------------------------------------


def test_json_round_trip_and_strictness() -> None:
    # impl: peer states travel between devices as JSON; reading them is strict.
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


# --- merge between devices: a join-semilattice --------------------------------------------------

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
    # spec: public_key and prefer_encrypt come from the youngest header, together; gossip_key
    # from the most recent gossip; last_seen is the most recent effective date.
    a = peer(last_seen=T0 + 50, gossip_timestamp=T0 + 9, gossip_key=KEY1)
    b = peer(
        last_seen=T0 + 20,
        autocrypt_timestamp=T0 + 20,
        public_key=KEY2,
        prefer_encrypt="mutual",
        gossip_timestamp=T0 + 1,
        gossip_key=KEY2,
    )
    assert merge(a, b) == PeerState(
        addr=BOB,
        last_seen=T0 + 50,
        autocrypt_timestamp=T0 + 20,
        public_key=KEY2,
        prefer_encrypt="mutual",
        gossip_timestamp=T0 + 9,
        gossip_key=KEY1,
    )
    with pytest.raises(ValueError, match="different addresses"):
        merge(a, PeerState(addr="other@autocrypt.example"))


# --- addresses in UTF-8 (RFC 6532) --------------------------------------------------------------


def test_utf8_from_address_in_raw_8bit_is_kept_as_written() -> None:
    # impl: RFC 6532 lets an address carry raw UTF-8; a peer test suite sends `x <x@könig.net>`.
    # The bytes parser of `email` would turn each non-ASCII byte into U+FFFD.
    info = message_headers(raw_message(from_="x <x@könig.net>", extra=("Cc: Y <Y@Könïg.net>",)))
    assert info.from_addr == "x@könig.net"
    assert "y@könïg.net" in info.to_cc


def test_utf8_from_with_rfc2047_display_name_gives_the_same_address() -> None:
    # impl: an encoded-word display name does not change the address it names.
    info = message_headers(raw_message(from_="=?utf-8?q?K=C3=B6nig?= <x@könig.net>"))
    assert info.from_addr == "x@könig.net"


def test_utf8_sender_with_matching_autocrypt_header_is_stored_under_its_address() -> None:
    # spec: the header's addr must match the From address; both are UTF-8 here.
    addr = "x@könig.net"
    raw = raw_message(from_=f"x <{addr}>", autocrypt=(f"addr={addr}; keydata={B64_1}",))
    state = update_from_message(None, message_headers(raw), NOW, key_ok=any_key)
    assert state is not None
    assert state.addr == addr
    assert state.public_key == KEY1


def test_header_block_that_is_not_utf8_never_yields_an_address_with_raw_bytes() -> None:
    # impl: a Latin-1 byte becomes U+FFFD, which no key's user id or header addr matches.
    info = message_headers(b"From: x <x@k\xf6nig.net>\r\n\r\n")
    assert info.from_addr == "x@k\ufffdnig.net"


# --- headers inside the encrypted part (protected headers, Delta Chat) ------------------------

HIDDEN_OUTER = (
    b"From: Alice <alice@autocrypt.example>\r\n"
    b'To: "hidden-recipients": ;\r\n'
    b"Date: " + fmt_date(T0 - 50 * 3600).encode() + b"\r\n"
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n'
    b"\r\n"
)


def header_line(addr: str, b64: str, mutual: bool = False) -> str:
    return PREFIX + header(addr, b64, mutual)


def inner_block(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\nhello\r\n").encode()


def test_inner_autocrypt_header_and_date_take_precedence() -> None:
    # impl: protected headers win; Delta Chat's outer Date is shifted back 35 to 107 hours, so the
    # inner Date is the one that says when the key was current.
    outer = message_headers(HIDDEN_OUTER)
    inner = message_headers(
        inner_block(
            "From: Alice <alice@autocrypt.example>",
            f"Date: {fmt_date(T0)}",
            f"To: {BOB}",
            header_line(ALICE, B64_2, mutual=True),
        )
    )
    view = protected_view(outer, inner)
    assert view is not None
    assert view.date == T0
    assert view.to_cc == (BOB,)
    states = contributions(view, NOW, key_ok=any_key)
    assert states[0] == PeerState(
        addr=ALICE, last_seen=T0, autocrypt_timestamp=T0, public_key=KEY2, prefer_encrypt="mutual"
    )


def test_outer_autocrypt_header_counts_when_the_inner_part_has_none() -> None:
    # impl: Thunderbird puts its Autocrypt header outside only; the inner part then adds nothing.
    outer = message_headers(
        HIDDEN_OUTER.replace(
            b"\r\n\r\n", b"\r\n" + header_line(ALICE, B64_1).encode() + b"\r\n\r\n"
        )
    )
    view = protected_view(outer, message_headers(inner_block(f"To: {BOB}")))
    assert view is not None
    assert view.autocrypt == outer.autocrypt
    assert view.date == T0 - 50 * 3600  # no inner Date: the outer one, even if shifted


def test_inner_from_naming_someone_else_disables_the_inner_part() -> None:
    # impl: an inner part that speaks for another sender is not this sender's protected header.
    outer = message_headers(HIDDEN_OUTER)
    inner = message_headers(inner_block(f"From: {BOB}", header_line(BOB, B64_2)))
    assert protected_view(outer, inner) is None


def test_gossip_counts_for_inner_recipients_only_and_never_from_the_outer_part() -> None:
    # spec: gossip only from the encrypted part, only for To/Cc addresses; Delta Chat's outer To
    # names nobody, so the inner To/Cc decide.
    outer_lines = HIDDEN_OUTER.replace(
        b"\r\n\r\n",
        b"\r\nAutocrypt-Gossip: " + f"addr={CAROL}; keydata={B64_1}".encode() + b"\r\n\r\n",
    )
    outer = message_headers(outer_lines)
    inner = message_headers(
        inner_block(
            f"To: {BOB}",
            f"Cc: {CAROL}",
            f"Date: {fmt_date(T0)}",
            f"Autocrypt-Gossip: addr={BOB}; keydata={B64_1}",
            f"Autocrypt-Gossip: addr={CAROL}; keydata={B64_2}",
            f"Autocrypt-Gossip: addr=mallory@autocrypt.example; keydata={B64_2}",
        )
    )
    assert outer.gossip  # parsed, but protected_view drops it
    view = protected_view(outer, inner)
    assert view is not None
    assert view.gossip == inner.gossip
    states = contributions(view, NOW, key_ok=any_key, gossip_values=view.gossip)
    gossip = {s.addr: (s.gossip_key, s.gossip_timestamp) for s in states[1:]}
    assert gossip == {BOB: (KEY1, T0), CAROL: (KEY2, T0)}


def test_gossip_only_key_is_discouraged() -> None:
    # spec: "discourage" if only a gossip key is known.
    state = PeerState(addr=BOB, gossip_timestamp=T0, gossip_key=KEY1)
    assert recommend(state, NOW, reply_to_encrypted=False, own_prefer_mutual=True) == "discourage"


def test_inner_date_in_the_future_is_capped_at_the_time_of_receipt() -> None:
    # spec: effective date is the receive time if the Date is in the future (inner or not).
    outer = message_headers(HIDDEN_OUTER)
    inner = message_headers(
        inner_block(f"Date: {fmt_date(NOW + 10 * DAY)}", header_line(ALICE, B64_1))
    )
    view = protected_view(outer, inner)
    assert view is not None
    assert contributions(view, NOW, key_ok=any_key)[0].autocrypt_timestamp == NOW


def test_date_less_message_dated_at_its_receipt_does_not_beat_a_newer_key() -> None:
    # spec: effective date = receive time when Date is missing; the caller passes the time the
    # mail was received (not "now" of a backlog scan), so an old Date-less mail stays old.
    newer = receive(None, raw_message(date=T0 + DAY, autocrypt=(header(ALICE, B64_2),)))
    old = message_headers(raw_message(date=None, autocrypt=(header(ALICE, B64_1),)))
    received = T0  # when the old mail arrived
    assert update_from_message(newer, old, received, key_ok=any_key) == newer


# --- the account's own prefer-encrypt setting ---------------------------------------------------


def test_own_setting_is_newer_than_the_current_one_even_within_one_second() -> None:
    # impl: two changes in the same second (or after the clock went back) must still replace.
    first = own_setting(None, ALICE, "mutual", KEY1, NOW)
    second = own_setting(first, ALICE, "nopreference", KEY1, NOW)
    third = own_setting(second, ALICE, "mutual", KEY1, NOW - DAY)
    assert own_preference(first) == ("mutual", NOW)
    assert own_preference(second) == ("nopreference", NOW + 1)
    assert own_preference(third) == ("mutual", NOW + 2)
    assert merge(first, second) == merge(second, first) == second


def test_a_replayed_older_setting_never_wins_a_merge() -> None:
    # impl: the provider can deliver an old signed key update again; the join keeps the newest.
    old = own_setting(None, ALICE, "mutual", KEY1, NOW)
    new = own_setting(old, ALICE, "nopreference", KEY2, NOW + 5)
    assert merge(new, old) == new
    assert merge(merge(new, old), old) == new


def test_own_preference_defaults_to_nopreference() -> None:
    # spec: prefer-encrypt absent means nopreference.
    assert own_preference(None) == ("nopreference", None)
    assert own_preference(PeerState(addr=ALICE, last_seen=NOW)) == ("nopreference", None)
