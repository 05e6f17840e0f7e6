"""Delta Chat's real core as a correspondent: accounts on the suite's loopback Dovecot, mail
carried by a small SMTP relay, and the calls a test needs to make it write and read mail.

The pieces, from the bottom:

- `SmtpRelay`: an `aiosmtpd` server on loopback that takes any login and delivers each message
  by IMAP APPEND into the recipient's INBOX on the Dovecot (unknown recipients get a 550);
- `MailSystem`: one Dovecot plus one relay, handing out `Mailbox`es (an address, its IMAP login)
  and reading or waiting for raw mail in an INBOX; our own side sends through it with `send`;
- `DeltaChatCore`: one `deltachat-rpc-server` process (its own accounts directory);
- `DeltaChatAccount`: one configured Delta Chat account on a `Mailbox`: `send_text`,
  `wait_for_message` (the message as Delta Chat shows it: text, sender, padlock),
  `export_secret_keys`.

    with MailSystem() as mail, DeltaChatCore(tmp_path / "dc") as core:
        ours = mail.new_mailbox("me")
        dc = core.new_account(mail.new_mailbox("dc"))
        dc.send_text(ours.addr, "hello")
        raw = mail.wait_for_inbox(ours, lambda m: b"hello" in m)
        mail.send(ours.addr, [dc.addr], reply_bytes)
        seen = dc.wait_for_message(lambda m: m.text == "hi")
        assert seen.encrypted is False

A missing part (Dovecot, aiosmtpd, the rpc server or client) raises `MissingPart` with the
install hint; nothing here skips.
"""

from __future__ import annotations

import contextlib
import shutil
import smtplib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.servers.common import LOOPBACK, free_port
from tests.servers.dovecot_server import DovecotServer

DOMAIN = "example.org"
INSTALL_HINT = "pip install -e '.[test]' (scripts/bootstrap test does this)"
WAIT_SECONDS = 60.0


class MissingPart(AssertionError):
    """A real part of the Delta Chat exchange is not installed here (never a skip)."""


@dataclass(frozen=True)
class Mailbox:
    addr: str
    imap_user: str
    password: str
    host: str  # IMAP
    port: int
    smtp_host: str  # the relay that delivers to it
    smtp_port: int


def rpc_server_path() -> str:
    """The `deltachat-rpc-server` binary that pip installed next to this Python."""
    beside = Path(sys.executable).parent / "deltachat-rpc-server"
    found = str(beside) if beside.exists() else shutil.which("deltachat-rpc-server")
    if found is None:
        raise MissingPart(f"deltachat-rpc-server is missing: {INSTALL_HINT}")
    return found


def rpc_server_version() -> str:
    import subprocess

    done = subprocess.run(
        [rpc_server_path(), "--version"], capture_output=True, text=True, timeout=30
    )
    return (done.stdout or done.stderr).strip()


# ---------------------------------------------------------------------------------------------
# Mail transport


class SmtpRelay:
    """SMTP on loopback that delivers by IMAP APPEND to the recipient's INBOX."""

    def __init__(self, mailboxes: Callable[[str], Mailbox | None]) -> None:
        try:
            from aiosmtpd.controller import Controller
            from aiosmtpd.smtp import AuthResult
        except ImportError as exc:
            raise MissingPart(f"aiosmtpd is missing: {INSTALL_HINT}") from exc
        self._mailboxes = mailboxes
        self.port = free_port()
        self.host = LOOPBACK
        self.delivered: list[tuple[str, bytes]] = []
        relay = self

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if relay._mailboxes(address) is None:
                    return "550 no such mailbox here"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                data = envelope.original_content or envelope.content
                raw = data if isinstance(data, bytes) else data.encode()
                for rcpt in envelope.rcpt_tos:
                    mailbox = relay._mailboxes(rcpt)
                    assert mailbox is not None
                    append_to_inbox(mailbox, raw)
                    relay.delivered.append((rcpt, raw))
                return "250 delivered"

        def any_login(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
            return AuthResult(success=True)

        self._controller = Controller(
            Handler(),
            hostname=self.host,
            port=self.port,
            authenticator=any_login,
            auth_require_tls=False,
            decode_data=False,
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._controller.stop()


def _imap(mailbox: Mailbox) -> Any:
    from imapclient import IMAPClient

    client = IMAPClient(mailbox.host, port=mailbox.port, ssl=False, timeout=15)
    client.login(mailbox.imap_user, mailbox.password)
    return client


def append_to_inbox(mailbox: Mailbox, raw: bytes) -> None:
    client = _imap(mailbox)
    try:
        client.append("INBOX", raw)
    finally:
        with contextlib.suppress(Exception):
            client.logout()


class MailSystem:
    """A loopback Dovecot and an SMTP relay in front of it; the place mail goes through."""

    def __init__(self, dovecot: DovecotServer | None = None, *, domain: str = DOMAIN) -> None:
        self._own_dovecot = dovecot is None
        self.dovecot = dovecot or DovecotServer()
        self.domain = domain
        self._by_addr: dict[str, Mailbox] = {}
        self.relay = SmtpRelay(lambda addr: self._by_addr.get(addr.strip().lower()))

    def start(self) -> MailSystem:
        self.dovecot.start()
        self.relay.start()
        return self

    def stop(self) -> None:
        self.relay.stop()
        if self._own_dovecot:
            self.dovecot.stop()

    def __enter__(self) -> MailSystem:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def new_mailbox(self, local: str) -> Mailbox:
        """A fresh Dovecot user reachable as `<local>-<user>@<domain>` through the relay."""
        user, password = self.dovecot.new_account()
        addr = f"{local}-{user}@{self.domain}".lower()
        mailbox = Mailbox(
            addr,
            user,
            password,
            self.dovecot.host,
            self.dovecot.port,
            self.relay.host,
            self.relay.port,
        )
        self._by_addr[addr] = mailbox
        return mailbox

    def send(self, mail_from: str, rcpt_to: list[str], raw: bytes) -> None:
        """Submit a message through the relay, as our side's SMTP client would."""
        with smtplib.SMTP(self.relay.host, self.relay.port, timeout=15) as smtp:
            smtp.sendmail(mail_from, rcpt_to, raw)

    def inbox(self, mailbox: Mailbox) -> list[bytes]:
        """Every message in the INBOX, raw, in UID order."""
        client = _imap(mailbox)
        try:
            client.select_folder("INBOX", readonly=True)
            uids = client.search("ALL")
            fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
            return [fetched[uid][b"BODY[]"] for uid in sorted(fetched)]
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def wait_for_inbox(
        self, mailbox: Mailbox, predicate: Callable[[bytes], bool], timeout: float = WAIT_SECONDS
    ) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            for raw in self.inbox(mailbox):
                if predicate(raw):
                    return raw
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no matching message in {mailbox.addr}'s INBOX in {timeout} s"
                )
            time.sleep(0.3)


# ---------------------------------------------------------------------------------------------
# Delta Chat


@dataclass(frozen=True)
class SeenMessage:
    """A message as Delta Chat shows it to its user."""

    id: int
    text: str
    subject: str
    sender_addr: str
    encrypted: bool  # Delta Chat's padlock: encrypted and signed by a key it knows
    info: str  # Delta Chat's own "message info" text (mentions the encryption too)
    key_contact: bool  # the sender is a key contact (one per key), not an address contact


class DeltaChatCore:
    """One `deltachat-rpc-server` with its own accounts directory."""

    def __init__(self, directory: Path) -> None:
        try:
            from deltachat_rpc_client import DeltaChat, Rpc
        except ImportError as exc:
            raise MissingPart(f"deltachat-rpc-client is missing: {INSTALL_HINT}") from exc
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._stderr = (directory / "rpc-server.log").open("wb")
        self.rpc = Rpc(
            accounts_dir=str(directory / "accounts"),
            rpc_server_path=rpc_server_path(),
            stderr=self._stderr,
        )
        self._deltachat_class = DeltaChat
        self.accounts: list[DeltaChatAccount] = []

    def start(self) -> DeltaChatCore:
        self.rpc.start()
        self.deltachat = self._deltachat_class(self.rpc)
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.deltachat.stop_io()
        with contextlib.suppress(Exception):
            self.rpc.close()
        self._stderr.close()

    def __enter__(self) -> DeltaChatCore:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def new_account(self, mailbox: Mailbox, *, name: str = "") -> DeltaChatAccount:
        """A Delta Chat account configured on `mailbox` (plain IMAP and SMTP on loopback),
        online, and willing to read plaintext mail from a first contact."""
        account = self.deltachat.add_account()
        if name:
            account.set_config("displayname", name)
        account.add_or_update_transport(
            {
                "addr": mailbox.addr,
                "password": mailbox.password,
                "imapServer": mailbox.host,
                "imapPort": mailbox.port,
                "imapSecurity": "plain",
                "imapUser": mailbox.imap_user,
                "smtpServer": mailbox.smtp_host,
                "smtpPort": mailbox.smtp_port,
                "smtpSecurity": "plain",
                "smtpUser": mailbox.imap_user,
                "smtpPassword": mailbox.password,
                "certificateChecks": "acceptInvalidCertificates",
            }
        )
        with contextlib.suppress(Exception):  # older cores have no such key; 2.65 defaults it to 1
            account.set_config("force_encryption", "0")
        # get_next_msgs returns the ids above `last_msg_id`; unset, only the newest one or two.
        account.set_config("last_msg_id", "0")
        account.bring_online()
        wrapped = DeltaChatAccount(account, mailbox)
        self.accounts.append(wrapped)
        return wrapped


class DeltaChatAccount:
    def __init__(self, account: Any, mailbox: Mailbox) -> None:
        self.account = account
        self.mailbox = mailbox
        self.addr = mailbox.addr
        self._seen: dict[int, SeenMessage] = {}  # every incoming message so far, by id

    def chat_with(self, addr: str) -> Any:
        """The chat with `addr` as an address (unencrypted-capable) contact."""
        contact = self.account.create_contact(addr)
        return contact.create_chat()

    def send_text(self, to_addr: str, text: str) -> int:
        message = self.chat_with(to_addr).send_text(text)
        return int(message.id)

    def send_text_in(self, chat: Any, text: str) -> int:
        return int(chat.send_text(text).id)

    def wait_for_message(
        self, predicate: Callable[[SeenMessage], bool], timeout: float = WAIT_SECONDS
    ) -> SeenMessage:
        """The first incoming message (not ours, not an info line) that matches; messages seen
        while waiting are kept, so a later call can still find them."""
        deadline = time.monotonic() + timeout
        while True:
            self._poll()
            for message in self._seen.values():
                if predicate(message):
                    return message
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.addr}: no matching message in {timeout} s; "
                    f"saw {list(self._seen.values())!r}"
                )
            time.sleep(0.3)

    def _poll(self) -> None:
        messages = self.account.get_next_messages()
        for message in messages:
            snap = message.get_snapshot()
            if snap.from_id == 1 or snap.is_info:  # 1 is DC_CONTACT_ID_SELF
                continue
            sender = snap.sender.get_snapshot()
            self._seen[int(snap.id)] = SeenMessage(
                id=int(snap.id),
                text=snap.text or "",
                subject=snap.subject or "",
                sender_addr=str(sender.address or "").lower(),
                encrypted=bool(snap.show_padlock),
                info=message.get_info(),
                key_contact=bool(sender.get("is_key_contact")),
            )
        if messages:
            self.account.set_config("last_msg_id", str(max(int(m.id) for m in messages)))

    def export_secret_keys(self, directory: Path) -> list[Path]:
        """Delta Chat's export of its own key pair (armored files), for tests that decrypt."""
        directory.mkdir(parents=True, exist_ok=True)
        self.account.export_self_keys(str(directory))
        return sorted(directory.iterdir())
