"""The FolderStore port on a real IMAP account, through imapclient (one connection per store).

Logical folder names (``_Autocrypt_SMA``, ``_Autocrypt_SMA_0123456789abcdef``) are mapped into
the account's first personal namespace: on a Courier/Cyrus-style server whose NAMESPACE is
``(("INBOX." "."))`` the logical ``_Autocrypt_SMA`` is the server's ``INBOX._Autocrypt_SMA``.
``INBOX`` is special in IMAP and always maps to itself. A logical name never contains the
hierarchy delimiter or a LIST wildcard, so every folder the store touches is first-level.

Behaviour matches ``MemoryStore`` (the reference), with these IMAP facts behind it:

- No mailbox stays selected between calls: a server drops a session whose selected mailbox is
  deleted by another session (Dovecot and pymap both do), so ``fetch`` and ``delete_messages``
  leave the selected state again (UNSELECT, or else an EXAMINE that fails; never CLOSE).
- A lost connection is re-opened on the next call. Reads and idempotent writes are retried once
  on a fresh connection; ``append``, ``create_folder`` and ``delete_folder`` are not (their
  outcome would be unknown), and after a long idle a NOOP probes the link before them.
- "Missing folder" is decided by LIST after a failing command, never by parsing the server's
  words; other failures become ``StoreError`` carrying the server's words (never the password).
- ``append`` normalises line endings to CRLF (imaplib does, and IMAP requires it): messages are
  byte-identical on the way back when they use CRLF, which the SMA envelope does.
- Messages are appended with ``\\Seen`` so that a mail client showing the folder shows no
  unread count.

imapclient's DEBUG logging would print message bodies: this module pins the ``imapclient``
logger to INFO unless the application configured that logger explicitly.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeVar

from native_host.ports import (
    FetchBatch,
    FolderMissing,
    FolderStatus,
    StoredMessage,
    StoreError,
    Watermark,
)

Security = Literal["none", "tls", "starttls"]

log = logging.getLogger(__name__)

_imapclient_log = logging.getLogger("imapclient")
if _imapclient_log.level == logging.NOTSET:
    _imapclient_log.setLevel(logging.INFO)  # its DEBUG output contains message bodies

T = TypeVar("T")

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]", re.IGNORECASE)
_FORBIDDEN = re.compile(r"[%*\x00-\x1f\x7f]")
_UNUSABLE = {b"\\NONEXISTENT", b"\\NOSELECT"}  # a name that cannot hold messages
_IDLE_PROBE_SECONDS = 60.0  # NOOP before a non-retryable command after this much idle time
_NO_SUCH_MAILBOX = "_Autocrypt_SMA_no_such_mailbox_"  # EXAMINEd only to fail (and deselect)
_SEEN = b"\\Seen"
_DELETED = b"\\Deleted"

# The connection is gone or in an unknown state: drop it, the next call reconnects.
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (imaplib.IMAP4.abort, OSError, EOFError)
_IMAP_ERRORS: tuple[type[Exception], ...] = (*_CONNECTION_ERRORS, imaplib.IMAP4.error)


class ImapLoginError(StoreError):
    """The server refused the credentials (retrying with the same ones will not help)."""


def _flags(entry_flags: Iterable[Any]) -> set[bytes]:
    out: set[bytes] = set()
    for flag in entry_flags:
        out.add((flag if isinstance(flag, bytes) else str(flag).encode()).upper())
    return out


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class ImapStore:
    """A FolderStore backed by one IMAP connection; thread-safe (calls are serialised)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        security: Security = "tls",
        verify_tls: bool = True,
        timeout: float = 30.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in ("none", "tls", "starttls"):
            raise ValueError(f"security must be 'none', 'tls' or 'starttls', not {security!r}")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        self.security: Security = security
        self.verify_tls = verify_tls
        self.timeout = timeout
        self._ssl_context = ssl_context
        self._lock = threading.RLock()
        self._client: Any = None
        self._closed = False
        self._last_used = 0.0
        self._selected: tuple[str, bool] | None = None  # (server name, read-only)
        self._capabilities: frozenset[bytes] = frozenset()
        self.namespace_prefix = ""
        self.delimiter: str | None = None
        with self._lock:
            self._connect()

    # --- connection ---------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        if self._password and len(self._password) >= 3:
            text = text.replace(self._password, "***")
        return text

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is not None:
            return self._ssl_context
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> Any:
        from imapclient import IMAPClient

        where = f"{self.host}:{self.port}"
        try:
            client = IMAPClient(
                self.host,
                self.port,
                ssl=self.security == "tls",
                ssl_context=self._tls_context() if self.security == "tls" else None,
                timeout=self.timeout,
            )
        except (OSError, imaplib.IMAP4.error) as exc:
            raise StoreError(self._scrub(f"cannot connect to {where}: {exc}")) from exc
        # imaplib writes a command in several pieces; with Nagle's algorithm each piece after
        # the first can wait for a delayed ACK (about 40 ms per command on some servers).
        with contextlib.suppress(OSError, AttributeError):
            client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.security == "starttls":
                client.starttls(self._tls_context())
            try:
                client.login(self.username, self._password)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                raise ImapLoginError(
                    self._scrub(f"login to {where} as {self.username!r} refused: {exc}")
                ) from None
            self._capabilities = frozenset(
                (cap if isinstance(cap, bytes) else str(cap).encode()).upper()
                for cap in client.capabilities()
            )
            self._read_namespace(client)
        except StoreError:
            self._shutdown(client)
            raise
        except _IMAP_ERRORS as exc:
            self._shutdown(client)
            raise StoreError(self._scrub(f"IMAP session setup with {where} failed: {exc}")) from exc
        self._client = client
        self._selected = None
        self._last_used = time.monotonic()
        return client

    def _read_namespace(self, client: Any) -> None:
        prefix, delimiter = "", None
        found = False
        if b"NAMESPACE" in self._capabilities:
            personal = client.namespace().personal
            if personal:
                prefix_raw, delimiter_raw = personal[0]
                prefix = _text(prefix_raw) if prefix_raw is not None else ""
                delimiter = _text(delimiter_raw) if delimiter_raw is not None else None
                found = True
        if not found:
            for _entry, delimiter_raw, _name in client.list_folders("", ""):
                delimiter = _text(delimiter_raw) if delimiter_raw is not None else None
                break
        self.namespace_prefix = prefix
        self.delimiter = delimiter or None

    @staticmethod
    def _shutdown(client: Any) -> None:
        with contextlib.suppress(Exception):
            client.shutdown()

    def _drop(self) -> None:
        client, self._client = self._client, None
        self._selected = None
        if client is not None:
            self._shutdown(client)

    def _live_client(self, *, probe: bool) -> Any:
        if self._client is None:
            log.info("connecting to IMAP server %s:%s", self.host, self.port)
            return self._connect()
        if probe and time.monotonic() - self._last_used > _IDLE_PROBE_SECONDS:
            try:
                self._client.noop()
            except _IMAP_ERRORS:
                log.info("IMAP connection went stale; reconnecting")
                self._drop()
                return self._connect()
        return self._client

    def _run(self, what: str, action: Callable[[Any], T], *, retry: bool) -> T:
        """Run `action(client)` under the lock, translating every failure into StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError("the IMAP store is closed")
            attempts = 2 if retry else 1
            for attempt in range(1, attempts + 1):
                client = self._live_client(probe=not retry)
                try:
                    result = action(client)
                except StoreError:
                    raise
                except _CONNECTION_ERRORS as exc:
                    self._drop()
                    if attempt < attempts and not isinstance(exc, TimeoutError):
                        log.info("IMAP connection lost during %s; retrying once", what)
                        continue
                    raise StoreError(self._scrub(f"{what}: connection lost: {exc}")) from exc
                except imaplib.IMAP4.error as exc:
                    if type(exc).__name__ in ("ProtocolError", "IllegalStateError"):
                        self._drop()  # the session's state is unknown now
                    raise StoreError(self._scrub(f"{what}: {exc}")) from exc
                except (KeyError, IndexError, TypeError, ValueError) as exc:
                    # A response imapclient parsed but that lacks what IMAP promises.
                    self._drop()
                    raise StoreError(
                        self._scrub(f"{what}: unexpected server response ({exc!r})")
                    ) from exc
                self._last_used = time.monotonic()
                return result
            raise AssertionError("unreachable")

    def close(self) -> None:
        """Log out and close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            self._selected = None
            if client is not None:
                try:
                    client.logout()
                except Exception:
                    self._shutdown(client)

    def __enter__(self) -> ImapStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- names --------------------------------------------------------------------------------
    def _check_name(self, name: str, *, allow_empty: bool = False) -> None:
        if not isinstance(name, str):
            raise TypeError("folder names are str")
        if not name and not allow_empty:
            raise ValueError("empty folder name")
        if _FORBIDDEN.search(name):
            raise ValueError(f"folder name {name!r} contains a wildcard or control character")
        if self.delimiter and self.delimiter in name:
            raise ValueError(f"folder name {name!r} contains the delimiter {self.delimiter!r}")

    def server_name(self, name: str) -> str:
        """The server's name for a logical folder name."""
        self._check_name(name)
        if name.upper() == "INBOX":
            return "INBOX"
        return self.namespace_prefix + name

    def _logical_name(self, server: str) -> str | None:
        if server.upper() == "INBOX":
            return "INBOX"
        prefix = self.namespace_prefix
        if prefix and not server.upper().startswith(prefix.upper()):
            return None
        logical = server[len(prefix) :]
        if not logical or (self.delimiter and self.delimiter in logical):
            return None
        return logical

    def _usable(self, entry_flags: Iterable[Any]) -> bool:
        return not (_flags(entry_flags) & _UNUSABLE)

    def _exists(self, client: Any, server: str) -> bool:
        for entry_flags, _delimiter, name in client.list_folders("", server):
            if (name == server or name.upper() == server.upper() == "INBOX") and self._usable(
                entry_flags
            ):
                return True
        return False

    def _missing_or_raise(self, client: Any, folder: str, server: str, exc: Exception) -> NoReturn:
        """After a failed command: FolderMissing if LIST does not show the folder, else re-raise."""
        if not self._exists(client, server):
            raise FolderMissing(folder) from exc
        raise exc

    def _require(self, client: Any, folder: str, server: str) -> None:
        if not self._exists(client, server):
            raise FolderMissing(folder)

    # --- selected state -----------------------------------------------------------------------
    def _select(self, client: Any, folder: str, server: str, *, readonly: bool) -> dict[Any, Any]:
        self._selected = None
        try:
            info: dict[Any, Any] = client.select_folder(server, readonly=readonly)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            self._missing_or_raise(client, folder, server, exc)
        self._selected = (server, readonly)
        return info

    def _deselect(self, client: Any) -> None:
        """Leave the selected state without expunging anything; on failure drop the link.

        UNSELECT where offered; otherwise a failing EXAMINE, which leaves no mailbox selected
        (RFC 3501, 6.3.1). CLOSE is not used: it expunges in a read-write mailbox, and pymap
        refuses it in a read-only one.
        """
        if self._selected is None:
            return
        self._selected = None
        try:
            if b"UNSELECT" in self._capabilities:
                client.unselect_folder()
                return
            try:
                client.select_folder(self.namespace_prefix + _NO_SUCH_MAILBOX, readonly=True)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                return  # the expected outcome: nothing is selected now
            self._selected = (self.namespace_prefix + _NO_SUCH_MAILBOX, True)  # it exists?!
        except Exception as exc:
            log.info("could not leave the selected mailbox (%s); reconnecting later", type(exc))
            self._drop()

    # --- FolderStore --------------------------------------------------------------------------
    def list_folders(self, prefix: str) -> list[str]:
        """First-level folders whose logical name starts with `prefix` (LIST with `%`)."""
        self._check_name(prefix, allow_empty=True)

        def action(client: Any) -> list[str]:
            names: set[str] = set()
            pattern = self.namespace_prefix + prefix + "%"
            for entry_flags, _delimiter, server in client.list_folders("", pattern):
                server = _text(server)
                logical = self._logical_name(server)
                if logical is None or not self._usable(entry_flags):
                    continue
                if logical.startswith(prefix):
                    names.add(logical)
            if self.namespace_prefix and "INBOX".startswith(prefix):
                names.add("INBOX")  # outside the prefixed pattern, but always there
            return sorted(names)

        return self._run(f"list folders {prefix!r}", action, retry=True)

    def create_folder(self, name: str) -> bool:
        server = self.server_name(name)

        def action(client: Any) -> bool:
            try:
                client.create_folder(server)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                if "[ALREADYEXISTS]" in str(exc).upper() or self._exists(client, server):
                    return False
                raise
            # A subscription can outlive an earlier folder of the same name: drop it.
            with contextlib.suppress(imaplib.IMAP4.error):
                client.unsubscribe_folder(server)
            return True

        return self._run(f"create folder {name!r}", action, retry=False)

    def delete_folder(self, name: str) -> bool:
        server = self.server_name(name)

        def action(client: Any) -> bool:
            try:
                client.delete_folder(server)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                if not self._exists(client, server):
                    return False
                raise
            with contextlib.suppress(imaplib.IMAP4.error):
                client.unsubscribe_folder(server)
            return True

        return self._run(f"delete folder {name!r}", action, retry=False)

    def append(self, folder: str, message: bytes) -> int | None:
        server = self.server_name(folder)
        data = bytes(message)

        def action(client: Any) -> int | None:
            try:
                response = client.append(server, data, flags=(_SEEN,))
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                self._missing_or_raise(client, folder, server, exc)
            match = _APPENDUID.search(response if isinstance(response, bytes) else b"")
            return int(match.group(2)) if match else None

        return self._run(f"append to {folder!r}", action, retry=False)

    def fetch(
        self, folder: str, since: Watermark | None, *, limit: int, max_size: int
    ) -> FetchBatch:
        server = self.server_name(folder)

        def action(client: Any) -> FetchBatch:
            info = self._select(client, folder, server, readonly=True)
            try:
                return self._fetch_selected(client, info, since, limit, max_size)
            finally:
                self._deselect(client)

        return self._run(f"fetch from {folder!r}", action, retry=True)

    def _fetch_selected(
        self,
        client: Any,
        info: dict[Any, Any],
        since: Watermark | None,
        limit: int,
        max_size: int,
    ) -> FetchBatch:
        if b"UIDVALIDITY" not in info:
            raise StoreError("the server did not report UIDVALIDITY")
        uidvalidity = int(info[b"UIDVALIDITY"])
        reset = since is not None and since.uidvalidity != uidvalidity
        start = since.last_uid if since is not None and not reset else 0
        exists = int(info.get(b"EXISTS", 1))
        uidnext = info.get(b"UIDNEXT")
        uids: list[int] = []
        if exists > 0 and (uidnext is None or int(uidnext) > start + 1):
            # `n:*` always matches the highest UID, even one below n: filter it out.
            found = client.search(["UID", f"{start + 1}:*"])
            uids = sorted({int(uid) for uid in found if int(uid) > start})
        chosen = uids[: max(limit, 0)]
        more = len(uids) > len(chosen)
        if not chosen:
            return FetchBatch(uidvalidity, (), reset=reset, more=more)
        sizes: dict[int, int] = {}
        for uid, item in client.fetch(chosen, ["RFC822.SIZE"]).items():
            if b"RFC822.SIZE" in item:
                sizes[int(uid)] = int(item[b"RFC822.SIZE"])
        small = [uid for uid in chosen if uid in sizes and sizes[uid] <= max_size]
        bodies: dict[int, bytes] = {}
        if small:
            for uid, item in client.fetch(small, ["BODY.PEEK[]"]).items():
                raw = item.get(b"BODY[]")
                if isinstance(raw, bytes):
                    bodies[int(uid)] = raw
        messages: list[StoredMessage] = []
        for uid in chosen:
            if uid not in sizes:
                continue  # expunged meanwhile
            if sizes[uid] > max_size:
                messages.append(StoredMessage(uid, sizes[uid], None))
            elif uid in bodies:
                messages.append(StoredMessage(uid, sizes[uid], bodies[uid]))
        return FetchBatch(uidvalidity, tuple(messages), reset=reset, more=more)

    def delete_messages(self, folder: str, uids: Sequence[int]) -> None:
        server = self.server_name(folder)
        wanted = sorted({int(uid) for uid in uids})

        def action(client: Any) -> None:
            if not wanted:
                self._require(client, folder, server)
                return
            self._select(client, folder, server, readonly=False)
            try:
                client.add_flags(wanted, [_DELETED], silent=True)
                if b"UIDPLUS" in self._capabilities:
                    client.uid_expunge(wanted)
                else:  # without UIDPLUS an EXPUNGE takes every \Deleted message
                    client.expunge()
            finally:
                self._deselect(client)

        self._run(f"delete messages in {folder!r}", action, retry=True)

    def status(self, folder: str) -> FolderStatus:
        server = self.server_name(folder)
        condstore = b"CONDSTORE" in self._capabilities
        items = ["UIDVALIDITY", "UIDNEXT", "MESSAGES"] + (["HIGHESTMODSEQ"] if condstore else [])

        def action(client: Any) -> FolderStatus:
            try:
                answer = client.folder_status(server, items)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                self._missing_or_raise(client, folder, server, exc)
            modseq = answer.get(b"HIGHESTMODSEQ")
            return FolderStatus(
                uidvalidity=int(answer[b"UIDVALIDITY"]),
                uidnext=int(answer[b"UIDNEXT"]),
                messages=int(answer[b"MESSAGES"]),
                highestmodseq=int(modseq) if modseq is not None else None,
            )

        return self._run(f"status of {folder!r}", action, retry=True)

    def _subscribed(self, client: Any, server: str) -> bool:
        for _entry, _delimiter, name in client.list_sub_folders("", server):
            if name == server or name.upper() == server.upper() == "INBOX":
                return True
        return False

    def is_subscribed(self, folder: str) -> bool:
        server = self.server_name(folder)

        def action(client: Any) -> bool:
            self._require(client, folder, server)
            return self._subscribed(client, server)

        return self._run(f"subscription of {folder!r}", action, retry=True)

    def set_subscribed(self, folder: str, subscribed: bool) -> None:
        server = self.server_name(folder)

        def action(client: Any) -> None:
            self._require(client, folder, server)
            try:
                if subscribed:
                    client.subscribe_folder(server)
                else:
                    client.unsubscribe_folder(server)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error:
                # Some servers say NO to a change that is already in place.
                if self._subscribed(client, server) != subscribed:
                    raise

        self._run(f"subscribe {folder!r}", action, retry=True)
