"""peers.ingest on PGP/MIME mail encrypted by an independent implementation (GnuPG) to the
account key: protected Autocrypt header and Date, gossip for To/Cc only, an earlier (rolled)
account key, and mail that cannot be opened, which counts by its outer headers and is never an
error."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from native_host.adapters.pgp import AccountKey, generate_account_key
from native_host.core.autocrypt import PeerState
from native_host.core.pgpmime import MAX_ENCRYPTED_BYTES
from native_host.service.accounts import account_key_name
from tests.service.test_instance import ACCOUNT, Device, configured
from tests.service.test_keysync_flow import pair, runtime, settle, table

GPG = "/usr/bin/gpg"


@pytest.fixture(autouse=True)
def _gpg_is_there() -> None:
    """GnuPG is the independent implementation these tests encrypt with: a real part, so its
    absence fails here, clearly (scripts/bootstrap test installs gnupg)."""
    assert os.path.exists(GPG), f"{GPG} is missing: scripts/bootstrap test installs gnupg"


ALICE = "alice.peer@example.net"
CAROL = "carol@example.net"
MALLORY = "mallory@example.net"
HOUR = 3600


@pytest.fixture(scope="module")
def peer_keys() -> dict[str, AccountKey]:
    return {a: generate_account_key(a, 1_700_000_000) for a in (ALICE, CAROL, MALLORY)}


def gpg_encrypt(public_armored: str, plaintext: bytes) -> bytes:
    """Encrypt with GnuPG to a key imported into a throwaway home (not our OpenPGP code)."""
    home = tempfile.mkdtemp(prefix="inner-gpg-")
    try:
        # The service tests run on a fake clock ahead of the real one: keys look "from the future".
        base = [GPG, "--homedir", home, "--batch", "--quiet", "--no-tty", "--ignore-time-conflict"]
        base += ["--ignore-valid-from"]
        subprocess.run([*base, "--import"], input=public_armored.encode(), check=True, timeout=60)
        listed = subprocess.run(
            [*base, "--with-colons", "--list-keys"], capture_output=True, check=True, timeout=60
        ).stdout.decode()
        fingerprint = next(
            line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr")
        )
        return subprocess.run(
            [*base, "--trust-model", "always", "--armor", "--encrypt", "-r", fingerprint],
            input=plaintext,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    finally:
        shutil.rmtree(home, ignore_errors=True)


def date(ts: int) -> str:
    return format_datetime(datetime.fromtimestamp(ts, UTC))


def autocrypt(name: str, key: AccountKey, *, mutual: bool = False) -> str:
    return f"{name}: {key.autocrypt_header_value(key.user_id.strip('<>'), prefer_encrypt=mutual)}"


def pgp_mime(sender: str, outer_date: int, armored: bytes, *, extra: str = "") -> bytes:
    """Delta Chat's shape: minimal outer headers, hidden recipients, a shifted Date."""
    return (
        (
            f'From: <{sender}>\r\nTo: "hidden-recipients": ;\r\nDate: {date(outer_date)}\r\n{extra}'
            'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";'
            ' boundary="1a2b"\r\nMIME-Version: 1.0\r\n\r\n'
            "--1a2b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
            '--1a2b\r\nContent-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n'
        ).encode()
        + armored.replace(b"\n", b"\r\n")
        + b"\r\n--1a2b--\r\n"
    )


def inner(sent: int, peers: dict[str, AccountKey]) -> bytes:
    """The decrypted payload: protected headers, and gossip for To, Cc and one outsider."""
    lines = [
        f"From: <{ALICE}>",
        f"To: <{ACCOUNT}>",
        f"Cc: <{CAROL}>",
        f"Date: {date(sent)}",
        autocrypt("Autocrypt", peers[ALICE], mutual=True),
        autocrypt("Autocrypt-Gossip", peers[CAROL]),
        autocrypt("Autocrypt-Gossip", peers[MALLORY]),  # not a recipient: must be ignored
        "Content-Type: text/plain; charset=utf-8",
    ]
    folded = [line if len(line) < 900 else fold(line) for line in lines]
    return ("\r\n".join(folded) + "\r\n\r\nhello\r\n").encode()


def fold(line: str) -> str:
    return "\r\n ".join(line[i : i + 76] for i in range(0, len(line), 76))


def account_key(device: Device) -> AccountKey:
    from native_host.adapters.pgp import load_secret

    armored = device.secrets.get(account_key_name(ACCOUNT))
    assert armored is not None
    return load_secret(armored)


def ingest(device: Device, raw: bytes, **kwargs: int) -> dict[str, object]:
    b64 = base64.b64encode(raw).decode()
    return runtime(device).peers.ingest(b64, None, kwargs.get("received"))


def now(device: Device) -> int:
    return int(runtime(device).peers._clock())


def test_protected_header_date_and_gossip_count_and_outsider_gossip_does_not(
    laptop: Device, peer_keys: dict[str, AccountKey]
) -> None:
    configured(laptop, "Laptop")
    sent = now(laptop) - HOUR
    armored = gpg_encrypt(account_key(laptop).public_armored, inner(sent, peer_keys))
    result = ingest(laptop, pgp_mime(ALICE, sent - 50 * HOUR, armored))
    assert result == {"updated": True, "addr": ALICE, "encrypted": "decrypted", "gossip_updated": 1}
    rows = table(laptop)
    assert rows[ALICE] == PeerState(
        addr=ALICE,
        last_seen=sent,  # the inner Date, not the shifted outer one
        autocrypt_timestamp=sent,
        public_key=peer_keys[ALICE].keydata(),
        prefer_encrypt="mutual",
    )
    assert rows[CAROL].gossip_key == peer_keys[CAROL].keydata()
    assert rows[CAROL].gossip_timestamp == sent
    assert rows[CAROL].public_key is None
    assert MALLORY not in rows
    assert ACCOUNT not in rows  # never a peer of itself
    answer = runtime(laptop).peers.recommend([CAROL], reply_to_encrypted=False)
    assert answer["recommendation"] == "discourage"  # a gossip-only key


def test_mail_encrypted_to_an_earlier_account_key_still_counts(
    laptop: Device, phone: Device, peer_keys: dict[str, AccountKey]
) -> None:
    configured(laptop, "Laptop")
    configured(phone, "Phone")
    pair(laptop, phone, [laptop, phone])
    before = account_key(laptop)
    phone_id = runtime(phone).record.device.device_id  # type: ignore[union-attr]
    rolled = runtime(laptop).remove_device(phone_id)
    assert rolled is not None
    settle([laptop], lambda: account_key(laptop).fingerprint == rolled)
    assert runtime(laptop).lifecycle.old_key_count() == 1
    sent = now(laptop) - HOUR
    armored = gpg_encrypt(before.public_armored, inner(sent, peer_keys))
    result = ingest(laptop, pgp_mime(ALICE, sent, armored))
    assert result["encrypted"] == "decrypted"
    assert table(laptop)[ALICE].public_key == peer_keys[ALICE].keydata()


def test_mail_no_key_of_ours_opens_counts_by_its_outer_headers(
    laptop: Device, peer_keys: dict[str, AccountKey]
) -> None:
    configured(laptop, "Laptop")
    sent = now(laptop) - HOUR
    stranger = generate_account_key(ACCOUNT, sent)  # the right address, not our key
    armored = gpg_encrypt(stranger.public_armored, inner(sent, peer_keys))
    outer_header = autocrypt("Autocrypt", peer_keys[ALICE]).replace(": ", ": ", 1)
    raw = pgp_mime(ALICE, sent - 2 * HOUR, armored, extra=fold(outer_header) + "\r\n")
    result = ingest(laptop, raw)
    assert result["encrypted"] == "undecryptable"
    assert result["updated"] is True
    row = table(laptop)[ALICE]
    assert row.autocrypt_timestamp == sent - 2 * HOUR  # the outer header, at the outer Date
    assert row.prefer_encrypt == "nopreference"
    assert CAROL not in table(laptop)
    again = ingest(laptop, raw)  # the same answer every time: nothing to retry
    assert again["encrypted"] == "undecryptable"


def test_oversized_headers_only_and_malformed_mail_are_reported_not_raised(
    laptop: Device, peer_keys: dict[str, AccountKey]
) -> None:
    configured(laptop, "Laptop")
    sent = now(laptop) - HOUR
    big = pgp_mime(ALICE, sent, b"-----BEGIN PGP MESSAGE-----\n" + b"A" * MAX_ENCRYPTED_BYTES)
    assert ingest(laptop, big)["encrypted"] == "too_large"
    head_only = pgp_mime(ALICE, sent, b"")
    head_only = head_only[: head_only.index(b"\r\n\r\n") + 4]
    assert ingest(laptop, head_only)["encrypted"] == "headers_only"
    broken = pgp_mime(ALICE, sent, b"not openpgp").replace(b"--1a2b--", b"--nope--")
    assert ingest(laptop, broken)["encrypted"] == "malformed"
    garbage = pgp_mime(
        ALICE, sent, b"-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----"
    )
    assert ingest(laptop, garbage)["encrypted"] == "undecryptable"


def test_inner_from_of_someone_else_is_a_sender_mismatch(
    laptop: Device, peer_keys: dict[str, AccountKey]
) -> None:
    configured(laptop, "Laptop")
    sent = now(laptop) - HOUR
    payload = inner(sent, peer_keys).replace(
        f"From: <{ALICE}>".encode(), f"From: <{MALLORY}>".encode()
    )
    armored = gpg_encrypt(account_key(laptop).public_armored, payload)
    result = ingest(laptop, pgp_mime(ALICE, sent, armored))
    assert result["encrypted"] == "sender_mismatch"
    assert table(laptop)[ALICE].public_key is None
    assert CAROL not in table(laptop)


def test_a_date_less_mail_is_dated_at_its_receipt_not_at_the_scan(
    laptop: Device, peer_keys: dict[str, AccountKey]
) -> None:
    configured(laptop, "Laptop")
    t = now(laptop)
    newer = f"From: <{ALICE}>\r\nDate: {date(t - 10 * HOUR)}\r\n{fold(autocrypt('Autocrypt', peer_keys[ALICE]))}\r\n\r\n"
    old_key = generate_account_key(ALICE, t - 1000 * HOUR)
    old = f"From: <{ALICE}>\r\n{fold(autocrypt('Autocrypt', old_key))}\r\n\r\n"
    ingest(laptop, newer.encode())
    result = ingest(laptop, old.encode(), received=t - 900 * HOUR)  # a backlog scan finds it
    assert result["updated"] is False
    assert table(laptop)[ALICE].public_key == peer_keys[ALICE].keydata()
