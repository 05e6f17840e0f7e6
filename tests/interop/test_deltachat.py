"""Mail between Delta Chat's real core and our test address, through the loopback Dovecot and the
SMTP relay of tests/interop/deltachat.py.

What is checked: Delta Chat's first mail to us is plaintext and reaches the INBOX with an
Autocrypt header that carries its account key; a plaintext mail from us shows in Delta Chat
without a padlock; a PGP/MIME mail encrypted to that key and signed by the primary key of a key
we announce in Autocrypt headers (outside and inside) shows with the padlock, from a key contact,
with the protected Subject; the same mail signed by a signing subkey is decrypted but shows no
padlock (Delta Chat 2.65 checks signatures against primary keys only: see
tests/interop/README.md); between two Delta Chat accounts the mail is encrypted and shows the
padlock.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from native_host.core import autocrypt
from tests.interop.deltachat import DeltaChatAccount, DeltaChatCore, Mailbox, MailSystem

pytestmark = pytest.mark.imap


@pytest.fixture(scope="module")
def mail() -> Iterator[MailSystem]:
    with MailSystem() as system:
        yield system


@pytest.fixture
def core(tmp_path: Path) -> Iterator[DeltaChatCore]:
    with DeltaChatCore(tmp_path / "deltachat") as started:
        yield started


def _header(raw: bytes) -> autocrypt.AutocryptHeader:
    info = autocrypt.message_headers(raw)
    assert len(info.autocrypt) == 1, info.autocrypt
    return autocrypt.parse_header(re.sub(r"\r?\n", "", info.autocrypt[0]))


def _fold(name: str, value: str) -> str:
    """One header field, folded at its spaces and then every 76 characters (keydata has none)."""
    words = value.split(" ")
    chunks = [w[i : i + 76] for w in words for i in range(0, len(w), 76)]
    return f"{name}: " + "\r\n ".join(chunks) + "\r\n"


def _headers(sender: Mailbox, to: str, subject: str, autocrypt_value: str) -> str:
    head = (
        f"From: <{sender.addr}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain='example.org')}\r\n"
    )
    return head + (_fold("Autocrypt", autocrypt_value) if autocrypt_value else "")


def _plain(sender: Mailbox, to: str, subject: str, text: str, autocrypt_value: str = "") -> bytes:
    return (
        _headers(sender, to, subject, autocrypt_value)
        + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + text
        + "\r\n"
    ).encode()


def _encrypted(sender: Mailbox, to: str, text: str, secret: Any, recipient: Any) -> bytes:
    """A PGP/MIME message (RFC 3156) encrypted to `recipient` and signed by `secret`, with our
    Autocrypt header outside and inside (protected headers)."""
    import pysequoia

    keydata = bytes(secret.extract_certificate())
    header = autocrypt.outgoing_header(sender.addr, keydata, prefer_mutual=True)
    inner = (
        'Content-Type: text/plain; charset=utf-8; protected-headers="v1"\r\n'
        + _headers(sender, to, "encrypted from the account", header)
        + "\r\n"
        + text
        + "\r\n"
    )
    armored = pysequoia.encrypt(
        inner.encode(), recipients=[recipient], signer=secret.signer(), armor=True
    )
    armored_text = armored.decode() if isinstance(armored, bytes) else str(armored)
    boundary = "sma-interop-boundary"
    return (
        _headers(sender, to, "...", header)
        + "MIME-Version: 1.0\r\n"
        + 'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        + f' boundary="{boundary}"\r\n\r\n'
        + f"--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        + f"--{boundary}\r\n"
        + 'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        + 'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        + armored_text.replace("\r\n", "\n").replace("\n", "\r\n")
        + f"\r\n--{boundary}--\r\n"
    ).encode()


def test_deltachat_writes_and_reads_plain_mail(mail: MailSystem, core: DeltaChatCore) -> None:
    ours = mail.new_mailbox("me")
    dc: DeltaChatAccount = core.new_account(mail.new_mailbox("dc"), name="Delta")

    dc.send_text(ours.addr, "first contact from Delta Chat")
    raw = mail.wait_for_inbox(ours, lambda m: b"first contact from Delta Chat" in m)
    header = _header(raw)
    assert header.addr == dc.addr
    assert header.prefer_encrypt == "mutual"
    assert b"-----BEGIN PGP MESSAGE-----" not in raw

    mail.send(ours.addr, [dc.addr], _plain(ours, dc.addr, "plain", "a plaintext answer"))
    seen = dc.wait_for_message(lambda m: "a plaintext answer" in m.text)
    assert seen.sender_addr == ours.addr
    assert seen.encrypted is False


def _encrypted_rfc1847(sender: Mailbox, to: str, text: str, secret: Any, recipient: Any) -> bytes:
    """Thunderbird's shape of a signed and encrypted mail (RFC 3156 section 6.1, "RFC 1847
    encapsulation"): the OpenPGP message is encrypted but not signed, and holds a
    multipart/signed whose first part carries the protected headers and whose second part is a
    detached signature. The Autocrypt header is outside only, as Thunderbird writes it."""
    import pysequoia

    keydata = bytes(secret.extract_certificate())
    header = autocrypt.outgoing_header(sender.addr, keydata, prefer_mutual=True)
    content = (
        'Content-Type: text/plain; charset=utf-8; protected-headers="v1"\r\n'
        + _headers(sender, to, "signed the Thunderbird way", "")
        + "\r\n"
        + text
        + "\r\n"
    )
    signature = pysequoia.sign(
        secret.signer(), content.encode(), mode=pysequoia.SignatureMode.DETACHED, armor=True
    )
    signature_text = signature.decode() if isinstance(signature, bytes) else str(signature)
    inner_boundary = "sma-signed-boundary"
    inner = (
        'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature";'
        f'\r\n boundary="{inner_boundary}"\r\n\r\n'
        + f"--{inner_boundary}\r\n"
        + content
        + f"\r\n--{inner_boundary}\r\n"
        + 'Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"\r\n\r\n'
        + signature_text.replace("\r\n", "\n").replace("\n", "\r\n")
        + f"\r\n--{inner_boundary}--\r\n"
    )
    armored = pysequoia.encrypt(inner.encode(), recipients=[recipient], armor=True)
    armored_text = armored.decode() if isinstance(armored, bytes) else str(armored)
    boundary = "sma-interop-boundary"
    return (
        _headers(sender, to, "...", header)
        + "MIME-Version: 1.0\r\n"
        + 'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\r\n'
        + f' boundary="{boundary}"\r\n\r\n'
        + f"--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
        + f"--{boundary}\r\n"
        + 'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        + 'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        + armored_text.replace("\r\n", "\n").replace("\n", "\r\n")
        + f"\r\n--{boundary}--\r\n"
    ).encode()


def _primary_signing_key(addr: str) -> Any:
    """A pysequoia Tsk shaped like Thunderbird's (RNP) and Delta Chat's own keys: an Ed25519
    primary key that certifies and signs, and a Cv25519 encryption subkey, user id `<addr>`.
    pysequoia's `Tsk.generate` cannot make one (its primary only certifies; it signs with a
    subkey), so GnuPG makes it in a throwaway home."""
    import pysequoia

    gpg = shutil.which("gpg")
    assert gpg is not None, "gpg is missing: scripts/bootstrap test installs gnupg"
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, GNUPGHOME=home)
        base = [gpg, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]

        def run(*args: str) -> bytes:
            return subprocess.run(
                [*base, *args], env=env, check=True, capture_output=True, timeout=60
            ).stdout

        run("--quick-gen-key", f"<{addr}>", "ed25519", "sign,cert", "never")
        colons = run("--with-colons", "--list-keys").decode()
        fingerprint = next(ln.split(":")[9] for ln in colons.splitlines() if ln.startswith("fpr"))
        run("--quick-add-key", fingerprint, "cv25519", "encr", "never")
        return pysequoia.Tsk.from_bytes(run("--export-secret-keys", fingerprint))


def test_deltachat_shows_our_signed_encrypted_mail_as_encrypted(
    mail: MailSystem, core: DeltaChatCore
) -> None:
    """Our PGP/MIME mail, encrypted to the key of Delta Chat's Autocrypt header and signed by the
    primary key of the key we announce, shows with the padlock from a key contact, with the
    protected (inner) Subject. The same mail signed by a signing subkey (pysequoia's default key
    shape) is decrypted but shows no padlock, from the address contact: Delta Chat 2.65 verifies
    the signature against the primary key only (tests/interop/README.md has the conditions)."""
    import pysequoia

    ours = mail.new_mailbox("me")
    subkey_signer = mail.new_mailbox("subkey")
    thunderbird_like = mail.new_mailbox("tb")
    dc = core.new_account(mail.new_mailbox("dc"), name="Delta")

    dc.send_text(ours.addr, "hello, please encrypt")
    raw = mail.wait_for_inbox(ours, lambda m: b"hello, please encrypt" in m)
    dc_cert = pysequoia.Cert.from_bytes(_header(raw).keydata)

    account_key = _primary_signing_key(ours.addr)
    mail.send(
        ours.addr,
        [dc.addr],
        _encrypted(ours, dc.addr, "an encrypted answer", account_key, dc_cert),
    )
    subkey_key = pysequoia.Tsk.generate(
        f"<{subkey_signer.addr}>", profile=pysequoia.Profile.RFC4880
    )
    mail.send(
        subkey_signer.addr,
        [dc.addr],
        _encrypted(subkey_signer, dc.addr, "signed by a subkey", subkey_key, dc_cert),
    )

    mail.send(
        thunderbird_like.addr,
        [dc.addr],
        _encrypted_rfc1847(
            thunderbird_like,
            dc.addr,
            "encapsulated like Thunderbird",
            _primary_signing_key(thunderbird_like.addr),
            dc_cert,
        ),
    )

    seen = dc.wait_for_message(lambda m: "an encrypted answer" in m.text)
    assert seen.sender_addr == ours.addr
    assert seen.encrypted is True, seen.info
    assert seen.key_contact is True
    assert seen.subject == "encrypted from the account"  # the protected Subject, not "..."

    by_subkey = dc.wait_for_message(lambda m: "signed by a subkey" in m.text)
    assert by_subkey.sender_addr == subkey_signer.addr
    assert by_subkey.encrypted is False, by_subkey.info  # decrypted, but no valid signature
    assert by_subkey.key_contact is False

    by_tb = dc.wait_for_message(lambda m: "encapsulated like Thunderbird" in m.text)
    assert by_tb.sender_addr == thunderbird_like.addr
    assert by_tb.encrypted is True, by_tb.info
    assert by_tb.key_contact is True
    assert by_tb.subject == "signed the Thunderbird way"


def test_deltachat_to_deltachat_is_encrypted_with_a_padlock(
    mail: MailSystem, core: DeltaChatCore
) -> None:
    """The control for the test above: between two Delta Chat accounts (one knows the other's
    key from its vCard) the harness sees the mail encrypted on the wire and with the padlock."""
    alice = core.new_account(mail.new_mailbox("dcalice"), name="Alice")
    bob = core.new_account(mail.new_mailbox("dcbob"), name="Bob")
    contacts = bob.account.import_vcard(alice.account.make_vcard([alice.account.self_contact]))
    bob.send_text_in(contacts[0].create_chat(), "encrypted between Delta Chats")
    raw = mail.wait_for_inbox(alice.mailbox, lambda m: bob.addr.encode() in m)
    assert b"-----BEGIN PGP MESSAGE-----" in raw
    assert autocrypt.message_headers(raw).autocrypt == ()
    seen = alice.wait_for_message(lambda m: "encrypted between Delta Chats" in m.text)
    assert seen.sender_addr == bob.addr
    assert seen.encrypted is True, seen.info
