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
  A folder found missing is looked up on a fresh connection by the next call: in the adversary
  test a Dovecot session whose list index a concurrent delete and rename had corrupted went on
  answering that a folder did not exist for as long as it lived, after its owner recreated it.
- ``append`` normalises line endings to CRLF (imaplib does, and IMAP requires it): messages are
  byte-identical on the way back when they use CRLF, which the SMA envelope does.
- Messages are appended with ``\\Seen`` so that a mail client showing the folder shows no
  unread count.
- Deletion goes through a strategy chosen from CAPABILITY (imap_deletion): flag and expunge in
  place, or on Gmail (``X-GM-EXT-1``, where expunging only removes a label) move to the
  ``\\Trash`` special-use folder and expunge exactly those there; ``delete_folder`` empties a
  folder that way first. Provider facts behind it: docs/providers.md.

``wait_for_change`` (the ``ChangeWaiter`` port) blocks the store for its whole wait, so it runs
on a store of its own (one connection per thread). With IDLE it EXAMINEs the folder, IDLEs and
reads what the server sends in slices of at most 30 s (never one unbounded wait on the socket),
and answers True on the first untagged EXISTS, EXPUNGE, FETCH, RECENT or VANISHED (or a BYE:
Dovecot ends the session when the selected folder is deleted). IDLE is renewed (DONE, IDLE)
every 4 minutes, well inside RFC 2177's 29; after 90 s without a byte from the server the
renewal also sends NOOP. DONE and NOOP wait for their answer only as long as the socket timeout,
so a dead link becomes a ``StoreError`` after at most about 90 s plus the timeout, and at once
when the peer closes or resets it. Without IDLE it polls STATUS (``poll_interval``). ``close``
from another thread interrupts a wait (the waiter gets ``StoreError``).

Logging in is a strategy (imap_login): IMAP LOGIN with a password, or SASL OAUTHBEARER/XOAUTH2
with a token from a token source; the store asks it again at every reconnect, so an OAuth2
account that lost its connection after its token expired logs in with a fresh one.

imapclient's DEBUG logging would print message bodies: this module pins the ``imapclient``
logger to INFO unless the application configured that logger explicitly.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeVar

from native_host.adapters.imap_deletion import (
    DeletionMode,
    DeletionStrategy,
    choose_deletion,
    copyuid_mapping,
)
from native_host.adapters.imap_login import ImapLogin, PasswordLogin, capabilities_of
from native_host.adapters.imap_login import ImapLoginError as ImapLoginError  # its old home
from native_host.ports import (
    FETCH_MAX_BYTES,
    FetchBatch,
    FolderMissing,
    FolderStatus,
    StoredMessage,
    StoreError,
    Watermark,
    within_budget,
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
SELECT_ATTEMPTS = 3  # a SELECT that meets a folder deleted and recreated under this session
# Without IDLE (Yahoo, AOL: docs/providers.md) each watched folder is polled with STATUS this
# often: 2 folders x 2,880 a day, where 1 s meant 172,800 for a provider known for strict
# limits. Pairing does not wait on it (the sync loop polls every 0.25 s while one is open);
# key sync on such a server arrives within this, as Thunderbird's own polling is minutes.
NO_IDLE_POLL_SECONDS = 30.0
_IDLE_PROBE_SECONDS = 60.0  # NOOP before a non-retryable command after this much idle time
_IDLE_SLICE_SECONDS = 30.0  # the longest single wait on the socket during IDLE
_IDLE_RENEW_SECONDS = 240.0  # DONE + IDLE again (RFC 2177: a server may drop IDLE after 30 min)
_IDLE_QUIET_SECONDS = 90.0  # nothing heard for this long: DONE + NOOP prove the link
_IDLE_MAX_LINES = 1000  # lines read from the socket in one go during IDLE
_IDLE_MAX_LITERAL = 1 << 20  # IDLE news carries no bodies; a bigger literal is an error
_NO_SUCH_MAILBOX = "_Autocrypt_SMA_no_such_mailbox_"  # EXAMINEd only to fail (and deselect)
_SEEN = b"\\Seen"
_DELETED = b"\\Deleted"
# Untagged responses that say the selected mailbox changed (only a hint: the caller re-checks).
_CHANGE_LINE = re.compile(
    rb"\* (?:\d+ (?:EXISTS|EXPUNGE|FETCH|RECENT)|VANISHED)(?:[ ]|$)", re.IGNORECASE
)
_BYE_LINE = re.compile(rb"\* BYE(?:[ ]|$)", re.IGNORECASE)
_LITERAL_END = re.compile(rb"\{(\d+)\+?\}$")  # a line announcing a literal (imaplib's rule)

# The connection is gone or in an unknown state: drop it, the next call reconnects.
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (imaplib.IMAP4.abort, OSError, EOFError)
_IMAP_ERRORS: tuple[type[Exception], ...] = (*_CONNECTION_ERRORS, imaplib.IMAP4.error)


class _StaleSession(Exception):
    """Dovecot kept answering "Mailbox was deleted under us" on this session although LIST
    shows the folder: the session's view of it is stale, and only a new session sees the
    folder that was created again. The command failed, so it is safe to run on a new one."""

    def __init__(self, error: imaplib.IMAP4.error) -> None:
        super().__init__(str(error))
        self.error = error


def _flags(entry_flags: Iterable[Any]) -> set[bytes]:
    out: set[bytes] = set()
    for flag in entry_flags:
        out.add((flag if isinstance(flag, bytes) else str(flag).encode()).upper())
    return out


def _changed(lines: Iterable[bytes]) -> bool:
    return any(_CHANGE_LINE.match(line) for line in lines)


def _said_bye(lines: Iterable[bytes]) -> bool:
    return any(_BYE_LINE.match(line) for line in lines)


def _readable(sock: socket.socket, timeout: float) -> bool:
    """Whether `sock` has something to read (data, EOF or an error) within `timeout` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(max(timeout, 0.0)))


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
        password: str | ImapLogin,
        security: Security = "tls",
        verify_tls: bool = True,
        timeout: float = 30.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        use_idle: bool = True,
        poll_interval: float = NO_IDLE_POLL_SECONDS,
        idle_renew: float = _IDLE_RENEW_SECONDS,
        idle_quiet: float = _IDLE_QUIET_SECONDS,
        deletion: DeletionMode = "auto",
    ) -> None:
        """`use_idle=False` makes `wait_for_change` poll STATUS every `poll_interval` seconds
        even where the server offers IDLE; `idle_renew` and `idle_quiet` are the IDLE loop's
        renewal interval and its "nothing heard" probe interval (seconds). `deletion` picks
        how messages are deleted (imap_deletion): "auto" moves them through Trash on Gmail
        and expunges in place elsewhere; "trash" and "expunge" force one (tests). `password`
        is the password, or a login strategy (imap_login: an OAuth2 token source)."""
        if security not in ("none", "tls", "starttls"):
            raise ValueError(f"security must be 'none', 'tls' or 'starttls', not {security!r}")
        self.host = host
        self.port = port
        self.username = username
        self._login: ImapLogin = PasswordLogin(password) if isinstance(password, str) else password
        self.security: Security = security
        self.verify_tls = verify_tls
        self.timeout = timeout
        self._ssl_context = ssl_context
        self.use_idle = use_idle
        self.poll_interval = poll_interval
        self.idle_renew = idle_renew
        self.idle_quiet = idle_quiet
        choose_deletion(frozenset(), deletion)  # a bad mode fails here, not at first login
        self.deletion_mode: DeletionMode = deletion
        self.deletion: DeletionStrategy = choose_deletion(frozenset(), "expunge")
        self._special_use: dict[bytes, str | None] = {}  # per connection: \Trash -> its name
        self._lock = threading.RLock()
        self._closing = threading.Event()  # set by close(), from any thread
        self._idle_socket: socket.socket | None = None  # while a wait is in IDLE
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
        return self._login.scrub(text)

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
        self._login.prepare()  # a token source may have nothing yet: no connection then
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
            self._login.login(client, self.username, where)
            self._capabilities = capabilities_of(client)
            self._read_namespace(client)
            self.deletion = choose_deletion(self._capabilities, self.deletion_mode)
            self._special_use = {}
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
            fresh_session_tried = False
            attempt = 0
            while attempt < attempts:
                attempt += 1
                client = self._live_client(probe=not retry)
                try:
                    result = action(client)
                except _StaleSession as stale:
                    self._drop()
                    if not fresh_session_tried:
                        fresh_session_tried, attempt = True, attempt - 1
                        log.info("IMAP session stale on a recreated folder; new session")
                        continue
                    raise StoreError(self._scrub(f"{what}: {stale.error}")) from stale.error
                except FolderMissing:
                    # Asked again on a fresh session next time: a long-lived one can go on
                    # seeing a folder as missing after another session recreated it (Dovecot,
                    # after concurrent deletes and renames corrupted its list index).
                    self._drop()
                    raise
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
        """Log out and close the connection; the store cannot be used afterwards.

        From another thread this also ends a `wait_for_change` in progress (it raises
        StoreError) instead of waiting for its timeout.
        """
        self._closing.set()
        waiting = self._idle_socket
        if waiting is not None:
            with contextlib.suppress(OSError):
                waiting.shutdown(socket.SHUT_RDWR)  # wakes the waiter; its DONE then fails
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

    def _on_folder(self, client: Any, folder: str, server: str, command: Callable[[], T]) -> T:
        """`command` on `folder`; a failure is FolderMissing if LIST no longer shows it.

        Dovecot answers "Mailbox was deleted under us" when the folder was deleted and created
        again between two commands of this session: the name exists, the mailbox this session
        knew does not, and the same command again opens the new one (seen in CI for SELECT and
        STATUS, and for APPEND after tests/adversary renamed the announcement folder away and
        back). The command failed, so nothing happened: trying again is safe. A session that
        keeps saying so while LIST shows the folder is stale: `_run` tries once on a new one
        (seen for APPEND to an inbox the owner had recreated, tests/service/test_inbox_recreated)."""
        for attempt in range(SELECT_ATTEMPTS):
            try:
                return command()
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                if "deleted under us" in str(exc) and attempt + 1 < SELECT_ATTEMPTS:
                    time.sleep(0.05)
                    continue
                if "deleted under us" in str(exc) and self._exists(client, server):
                    raise _StaleSession(exc) from exc
                self._missing_or_raise(client, folder, server, exc)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _require(self, client: Any, folder: str, server: str) -> None:
        if not self._exists(client, server):
            raise FolderMissing(folder)

    # --- selected state -----------------------------------------------------------------------
    def _select(self, client: Any, folder: str, server: str, *, readonly: bool) -> dict[Any, Any]:
        self._selected = None
        info: dict[Any, Any] = self._on_folder(
            client, folder, server, lambda: client.select_folder(server, readonly=readonly)
        )
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
                # Gmail: deleting a label keeps its messages in All Mail; empty it first.
                self.deletion.empty_before_delete(_Session(self, client, name), server)
            except FolderMissing:
                return False
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
            response = self._on_folder(
                client, folder, server, lambda: client.append(server, data, flags=(_SEEN,))
            )
            match = _APPENDUID.search(response if isinstance(response, bytes) else b"")
            return int(match.group(2)) if match else None

        return self._run(f"append to {folder!r}", action, retry=False)

    def fetch(
        self,
        folder: str,
        since: Watermark | None,
        *,
        limit: int,
        max_size: int,
        max_bytes: int = FETCH_MAX_BYTES,
    ) -> FetchBatch:
        server = self.server_name(folder)

        def action(client: Any) -> FetchBatch:
            info = self._select(client, folder, server, readonly=True)
            try:
                return self._fetch_selected(client, info, since, limit, max_size, max_bytes)
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
        max_bytes: int,
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
        if not chosen:
            return FetchBatch(uidvalidity, (), reset=reset, more=len(uids) > 0)
        sizes: dict[int, int] = {}
        for uid, item in client.fetch(chosen, ["RFC822.SIZE"]).items():
            if b"RFC822.SIZE" in item:
                sizes[int(uid)] = int(item[b"RFC822.SIZE"])
        # imaplib reads a whole FETCH answer into memory: ask for no more bodies than the budget.
        chosen = within_budget(chosen, sizes, max_size, max_bytes)
        more = len(uids) > len(chosen)
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
        """Delete exactly these UIDs for good, the way this server needs (`self.deletion`)."""
        server = self.server_name(folder)
        wanted = sorted({int(uid) for uid in uids})

        def action(client: Any) -> None:
            if not wanted:
                self._require(client, folder, server)
                return
            self.deletion.delete(_Session(self, client, folder), server, wanted)

        self._run(f"delete messages in {folder!r}", action, retry=True)

    def status(self, folder: str) -> FolderStatus:
        server = self.server_name(folder)
        condstore = b"CONDSTORE" in self._capabilities
        items = ["UIDVALIDITY", "UIDNEXT", "MESSAGES"] + (["HIGHESTMODSEQ"] if condstore else [])

        def action(client: Any) -> FolderStatus:
            answer = self._on_folder(
                client, folder, server, lambda: client.folder_status(server, items)
            )
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

    # --- ChangeWaiter -------------------------------------------------------------------------
    def wait_for_change(
        self, folder: str, timeout: float, since: FolderStatus | None = None
    ) -> bool:
        """True as soon as `folder` may have changed, False after `timeout` seconds without news.

        With `since`, True at once if the folder's content already differs from it (compared
        with the EXAMINE answer that starts the wait, so nothing slips in between). Holds this
        store for the whole wait: use a store of its own. Raises FolderMissing if the folder
        does not exist, StoreError if the link died (the caller reconnects with backoff; the
        next call opens a fresh connection).
        """
        server = self.server_name(folder)
        deadline = time.monotonic() + max(float(timeout), 0.0)
        if self._closing.is_set():
            raise StoreError("the IMAP store is closed")
        if self.use_idle and b"IDLE" in self._capabilities:

            def action(client: Any) -> bool:
                return self._idle_wait(client, folder, server, deadline, since)

            return self._run(f"wait for changes in {folder!r}", action, retry=False)
        return self._poll_wait(folder, deadline, since)

    def _poll_wait(self, folder: str, deadline: float, since: FolderStatus | None) -> bool:
        """Without IDLE: STATUS every `poll_interval` seconds until it differs."""
        before = self.status(folder)
        if since is not None and not since.same_content(before):
            return True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._closing.wait(min(max(self.poll_interval, 0.01), remaining)):
                raise StoreError("the IMAP store is closed")
            try:
                now = self.status(folder)
            except FolderMissing:
                return True  # deleted: a change (the caller's own check will say so)
            if now != before:
                return True

    def _idle_wait(
        self, client: Any, folder: str, server: str, deadline: float, since: FolderStatus | None
    ) -> bool:
        info = self._select(client, folder, server, readonly=True)  # FolderMissing if missing
        if since is not None and not since.same_content(self._examined(client, server, info)):
            self._deselect(client)
            return True
        if time.monotonic() >= deadline:
            self._deselect(client)
            return False
        try:
            changed, alive = self._idle_cycles(client, deadline)
        except BaseException:
            self._drop()  # in IDLE or broken: never reuse this connection
            raise
        finally:
            with contextlib.suppress(Exception):
                client._imap.untagged_responses.clear()  # what IDLE left there is read
        if not alive:
            self._drop()
        else:
            self._deselect(client)
        return changed

    def _examined(self, client: Any, server: str, info: dict[Any, Any]) -> FolderStatus:
        """The folder's status as of its EXAMINE answer (STATUS where that lacks something)."""
        try:
            return FolderStatus(
                uidvalidity=int(info[b"UIDVALIDITY"]),
                uidnext=int(info[b"UIDNEXT"]),
                messages=int(info[b"EXISTS"]),
            )
        except KeyError:
            answer = client.folder_status(server, ["UIDVALIDITY", "UIDNEXT", "MESSAGES"])
            return FolderStatus(
                uidvalidity=int(answer[b"UIDVALIDITY"]),
                uidnext=int(answer[b"UIDNEXT"]),
                messages=int(answer[b"MESSAGES"]),
            )

    def _idle_cycles(self, client: Any, deadline: float) -> tuple[bool, bool]:
        """IDLE until news or `deadline`, renewing it; (changed, connection still usable)."""
        while True:
            tag, news = self._idle_start(client)
            started = heard = time.monotonic()
            quiet = False
            self._idle_socket = client.socket()
            try:
                if self._closing.is_set():
                    raise StoreError("the IMAP store is closed")
                while not (_changed(news) or _said_bye(news)):
                    now = time.monotonic()
                    quiet = now >= heard + self.idle_quiet
                    until = min(deadline, started + self.idle_renew, heard + self.idle_quiet)
                    if now >= until:
                        break
                    lines, woke = self._idle_read(client, min(until - now, _IDLE_SLICE_SECONDS))
                    if lines:
                        heard = time.monotonic()
                        news.extend(line for line in lines if not line.startswith(b"* OK"))
                    elif woke:
                        # Readable but no line: the peer closed (or a spurious wake-up). The
                        # DONE round trip below tells which, within the socket timeout.
                        break
            finally:
                self._idle_socket = None
            if _said_bye(news):
                return True, False  # the server ends the session (Dovecot: folder deleted)
            news.extend(self._finish(client, tag, b"DONE\r\n"))
            if _said_bye(news):
                return True, False
            if quiet and not _changed(news):
                news.extend(self._finish(client, client._imap._command("NOOP"), None))
            if _said_bye(news):
                return True, False
            if _changed(news):
                return True, True
            if time.monotonic() >= deadline:
                return False, True

    def _idle_start(self, client: Any) -> tuple[str, list[bytes]]:
        """Send IDLE and read up to its continuation; untagged lines that come first are kept.

        (imapclient's `idle()` fails on an untagged response before the continuation.)
        """
        imap = client._imap
        tag: str = imap._command("IDLE")
        early: list[bytes] = []
        while True:
            response = imap._get_response()  # bounded by the socket timeout
            if imap.tagged_commands.get(tag):
                kind, data = imap.tagged_commands.pop(tag)
                raise imaplib.IMAP4.error(f"IDLE refused: {kind} {_text(data[0]) if data else ''}")
            if response is None:
                return tag, early  # "+ idling"
            early.append(bytes(response))
            if len(early) > _IDLE_MAX_LINES:
                raise imaplib.IMAP4.abort("no continuation for IDLE")

    def _finish(self, client: Any, tag: str, send: bytes | None) -> list[bytes]:
        """Optionally send `send` (DONE), then read up to the tagged answer to `tag`.

        Returns the untagged lines on the way. Every read is bounded by the socket timeout, so
        this is the round trip that proves a quiet link alive. A BYE then a closed connection
        returns the lines with the BYE instead of raising.
        """
        imap = client._imap
        lines: list[bytes] = []
        try:
            if send is not None:
                imap.send(send)
            while True:
                response = imap._get_response()
                if imap.tagged_commands.get(tag):
                    kind, data = imap.tagged_commands.pop(tag)
                    if kind != "OK":
                        words = _text(data[0]) if data else ""
                        raise imaplib.IMAP4.error(f"{kind} after IDLE: {words}")
                    return lines
                if response is not None:
                    lines.append(bytes(response))
        except _CONNECTION_ERRORS:
            if _said_bye(lines):
                return lines
            raise

    def _idle_read(self, client: Any, wait: float) -> tuple[list[bytes], bool]:
        """Lines the server sent during IDLE: those already here, else what comes within `wait`.

        Returns (lines, woke): woke is False when nothing at all came in time.
        """
        sock = client.socket()
        try:
            sock.setblocking(False)
            # imaplib reads through a buffer: lines can be waiting there while the socket
            # itself has nothing to report, so read first and only then wait on the socket.
            lines = self._ready_lines(client)
            if lines:
                return lines, True
            if not _readable(sock, wait):
                return [], False
            return self._ready_lines(client), True
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.timeout)

    def _ready_lines(self, client: Any) -> list[bytes]:
        """Complete lines readable now (the socket is non-blocking); finishes a partial line
        or a literal within the socket timeout."""
        imap = client._imap
        sock = client.socket()
        lines: list[bytes] = []
        while len(lines) < _IDLE_MAX_LINES:
            try:
                line: bytes = imap.readline()
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            if not line:
                break  # nothing more now (or EOF: the caller's DONE finds out)
            try:
                sock.settimeout(self.timeout)
                while not line.endswith(b"\r\n"):  # the rest of the line is on its way
                    more = imap.readline()
                    if not more:
                        raise imaplib.IMAP4.abort("socket error: EOF within a line")
                    line += more
                text = line[:-2]
                literal = _LITERAL_END.search(text)
                while literal is not None:  # read it (and what follows) to stay in step
                    size = int(literal.group(1))
                    if size > _IDLE_MAX_LITERAL:
                        raise imaplib.IMAP4.abort(f"a {size}-byte literal during IDLE")
                    imap.read(size)
                    trailer = imap._get_line()
                    text += b" " + trailer
                    literal = _LITERAL_END.search(trailer)
            finally:
                sock.setblocking(False)
            lines.append(text)
        return lines


class _Session:
    """The DeletionSession port over this store's imapclient connection (one call's worth)."""

    def __init__(self, store: ImapStore, client: Any, folder: str) -> None:
        self._store = store
        self._client = client
        self._folder = folder  # the logical name, for FolderMissing

    @property
    def capabilities(self) -> frozenset[bytes]:
        return self._store._capabilities

    def select(self, server: str) -> None:
        folder = self._folder if server == self._store.server_name(self._folder) else server
        self._store._select(self._client, folder, server, readonly=False)

    def deselect(self) -> None:
        self._store._deselect(self._client)

    def all_uids(self) -> list[int]:
        return sorted(int(uid) for uid in self._client.search(["ALL"]))

    def flag_deleted(self, uids: Sequence[int]) -> None:
        self._client.add_flags(list(uids), [_DELETED], silent=True)

    def uid_expunge(self, uids: Sequence[int]) -> None:
        self._client.uid_expunge(list(uids))

    def expunge(self) -> None:
        self._client.expunge()

    def _transfer(self, command: str, uids: Sequence[int], destination: str) -> dict[int, int]:
        imap = self._client._imap
        imap.untagged_responses.pop("COPYUID", None)  # none left over from an earlier command
        if command == "MOVE":
            answer = self._client.move(list(uids), destination)
        else:
            answer = self._client.copy(list(uids), destination)
        # MOVE reports COPYUID in an untagged OK (imaplib files it under COPYUID), COPY in
        # its tagged answer (RFC 6851, 4.3; RFC 4315, 3).
        texts = [answer if isinstance(answer, bytes | str) else b""]
        texts.extend(imap.untagged_responses.pop("COPYUID", []) or [])
        return copyuid_mapping(texts)

    def move(self, uids: Sequence[int], destination: str) -> dict[int, int]:
        return self._transfer("MOVE", uids, destination)

    def copy(self, uids: Sequence[int], destination: str) -> dict[int, int]:
        return self._transfer("COPY", uids, destination)

    def gmail_message_ids(self, uids: Sequence[int]) -> dict[int, int]:
        found: dict[int, int] = {}
        for uid, item in self._client.fetch(list(uids), ["X-GM-MSGID"]).items():
            if b"X-GM-MSGID" in item:
                found[int(uid)] = int(item[b"X-GM-MSGID"])
        return found

    def search_gmail_message_ids(self, message_ids: Sequence[int]) -> list[int]:
        uids: set[int] = set()
        for message_id in message_ids:
            uids.update(int(uid) for uid in self._client.search(["X-GM-MSGID", str(message_id)]))
        return sorted(uids)

    def special_use_folder(self, flag: bytes) -> str | None:
        """Found once per connection: by LIST RETURN (SPECIAL-USE), else XLIST, else LIST
        (Gmail puts the attributes into every LIST answer)."""
        cache = self._store._special_use
        if flag not in cache:
            cache[flag] = None
            for entry_flags, _delimiter, name in self._list_with_special_use():
                if flag.upper() in _flags(entry_flags):
                    cache[flag] = _text(name)
                    break
        return cache[flag]

    def _list_with_special_use(self) -> list[tuple[Any, Any, Any]]:
        client, caps = self._client, self.capabilities
        if b"SPECIAL-USE" in caps:
            imap = client._imap
            typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", "(SPECIAL-USE)")
            if typ == "OK":
                typ, data = imap._untagged_response(typ, data, "LIST")
                return list(client._proc_folder_list(data))
        if b"XLIST" in caps:
            return list(client.xlist_folders())
        return list(client.list_folders())
