"""How the IMAP store really deletes SMA messages: expunge in place, or (Gmail) via Trash.

The SMA must stay bounded: every message a device has acted on is deleted again. On most
servers ``STORE \\Deleted`` plus ``UID EXPUNGE`` in the SMA folder removes a message for good.
On Gmail (capability ``X-GM-EXT-1``) a folder is a label: expunging there only removes that
label and the message lives on in ``[Gmail]/All Mail`` (Gmail's default setting "When a message
is marked as deleted and expunged from the last visible IMAP folder: Archive the message"; the
other choices are "Move the message to the Trash" and "Immediately delete the message
forever", and the account owner picks, not us). Deleting a label likewise keeps its messages.
What Gmail does delete is a message expunged from ``[Gmail]/Trash``; moving a message to Trash
also drops all its other labels. So on Gmail deletion moves the messages to the ``\\Trash``
special-use folder and expunges exactly those there, and a folder is emptied that way before it
is deleted.

A strategy decides the order of IMAP steps and nothing else; it talks to the server through the
narrow `DeletionSession` port, which the adapter implements over imapclient and the unit tests
implement as an in-memory model of Gmail's label semantics (tests/unit/test_imap_deletion.py).
If the process dies between the move and the expunge in Trash, the message waits in Trash, which
Gmail itself empties after 30 days: the SMA still stays bounded.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Literal, Protocol

log = logging.getLogger(__name__)

DeletionMode = Literal["auto", "expunge", "trash"]
DELETION_MODES: tuple[DeletionMode, ...] = ("auto", "expunge", "trash")

GMAIL_CAPABILITY = b"X-GM-EXT-1"
TRASH_FLAG = b"\\TRASH"  # RFC 6154 special-use attribute, upper-cased as the adapter compares

_UID_RANGE = re.compile(r"^(\d+)(?::(\d+))?$")
_COPYUID_LIMIT = 100_000  # UIDs one COPYUID may expand to: more is a hostile or broken answer


class DeletionSession(Protocol):
    """The IMAP steps a deletion strategy needs; one mailbox is selected at a time."""

    @property
    def capabilities(self) -> frozenset[bytes]: ...

    def select(self, server: str) -> None:
        """SELECT (read-write); raises FolderMissing when it does not exist."""
        ...

    def deselect(self) -> None:
        """Leave the selected state without expunging anything."""
        ...

    def all_uids(self) -> list[int]:
        """Every UID in the selected mailbox."""
        ...

    def flag_deleted(self, uids: Sequence[int]) -> None: ...

    def uid_expunge(self, uids: Sequence[int]) -> None:
        """UID EXPUNGE (UIDPLUS): only these UIDs, other \\Deleted messages stay."""
        ...

    def expunge(self) -> None:
        """Plain EXPUNGE: every \\Deleted message in the selected mailbox."""
        ...

    def move(self, uids: Sequence[int], destination: str) -> dict[int, int]:
        """UID MOVE; source UID -> destination UID as far as COPYUID told (else empty)."""
        ...

    def copy(self, uids: Sequence[int], destination: str) -> dict[int, int]:
        """UID COPY; source UID -> destination UID as far as COPYUID told (else empty)."""
        ...

    def gmail_message_ids(self, uids: Sequence[int]) -> dict[int, int]:
        """UID -> X-GM-MSGID (Gmail's account-wide, folder-independent message id)."""
        ...

    def search_gmail_message_ids(self, message_ids: Sequence[int]) -> list[int]:
        """UIDs in the selected mailbox of messages with these X-GM-MSGIDs."""
        ...

    def special_use_folder(self, flag: bytes) -> str | None:
        """The server name of the mailbox with this special-use attribute (upper case)."""
        ...


class DeletionStrategy(Protocol):
    name: str

    def delete(self, session: DeletionSession, server: str, uids: Sequence[int]) -> None:
        """Delete exactly these UIDs of `server` for good (never other messages)."""
        ...

    def empty_before_delete(self, session: DeletionSession, server: str) -> None:
        """Make `server` safe to DELETE without its messages surviving elsewhere."""
        ...


class ExpungeInPlace:
    """RFC 3501 deletion: flag and expunge in the folder itself (Dovecot, Cyrus, Courier, ...)."""

    name = "expunge"

    def delete(self, session: DeletionSession, server: str, uids: Sequence[int]) -> None:
        session.select(server)
        try:
            session.flag_deleted(uids)
            if b"UIDPLUS" in session.capabilities:
                session.uid_expunge(uids)
            else:  # without UIDPLUS an EXPUNGE takes every \Deleted message in the folder
                session.expunge()
        finally:
            session.deselect()

    def empty_before_delete(self, session: DeletionSession, server: str) -> None:
        """Nothing to do: DELETE takes a folder's messages with it on these servers."""


class MoveToTrashThenExpunge:
    """Gmail deletion: move to the \\Trash special-use folder, then expunge exactly those there."""

    name = "trash"

    def __init__(self) -> None:
        self._fallback = ExpungeInPlace()

    def delete(self, session: DeletionSession, server: str, uids: Sequence[int]) -> None:
        trash = session.special_use_folder(TRASH_FLAG)
        if trash is None or trash.upper() == server.upper():
            # Better a label removed (the SMA folder still shrinks) than nothing deleted.
            log.warning("no \\Trash special-use folder: expunging in place (may only archive)")
            self._fallback.delete(session, server, uids)
            return
        caps = session.capabilities
        session.select(server)
        try:
            # Asked before the move: after it the messages are no longer in this folder.
            gmail_ids = session.gmail_message_ids(uids) if GMAIL_CAPABILITY in caps else {}
            if b"MOVE" in caps:
                moved = session.move(uids, trash)
            else:
                moved = session.copy(uids, trash)
                session.flag_deleted(uids)
                if b"UIDPLUS" in caps:
                    session.uid_expunge(uids)
                else:
                    session.expunge()
        finally:
            session.deselect()
        if b"UIDPLUS" not in caps:
            # A plain EXPUNGE in Trash would take the user's other deleted mail too.
            log.warning(
                "no UIDPLUS: %d SMA message(s) left in Trash for the server to purge", len(uids)
            )
            return
        session.select(trash)
        try:
            if moved:
                targets = sorted({moved[uid] for uid in uids if uid in moved})
            elif gmail_ids:
                targets = session.search_gmail_message_ids(sorted(set(gmail_ids.values())))
            else:
                targets = []
            if targets:
                session.flag_deleted(targets)
                session.uid_expunge(targets)
            elif uids:
                log.info("moved SMA messages not found in Trash (already gone, or no COPYUID)")
        finally:
            session.deselect()

    def empty_before_delete(self, session: DeletionSession, server: str) -> None:
        """Move every message to Trash and expunge it there: deleting a label keeps them."""
        session.select(server)
        try:
            uids = session.all_uids()
        finally:
            session.deselect()
        if uids:
            self.delete(session, server, uids)


def choose_deletion(
    capabilities: frozenset[bytes], mode: DeletionMode = "auto"
) -> DeletionStrategy:
    """The strategy for this server: `mode` forces one; "auto" picks by capability."""
    if mode not in DELETION_MODES:
        raise ValueError(f"deletion must be one of {DELETION_MODES}, not {mode!r}")
    if mode == "trash" or (mode == "auto" and GMAIL_CAPABILITY in capabilities):
        return MoveToTrashThenExpunge()
    return ExpungeInPlace()


def parse_uid_set(text: str) -> list[int]:
    """An RFC 4315 uid-set ("4,7:9") in order, ranges expanded ascending; ValueError if
    malformed. COPYUID pairs its two sets element by element, so order matters."""
    out: list[int] = []
    for part in text.split(","):
        match = _UID_RANGE.match(part.strip())
        if match is None:
            raise ValueError(f"bad uid-set {text!r}")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        low, high = min(first, last), max(first, last)  # "5:3" is "3:5" (RFC 3501, 9)
        if high - low + len(out) >= _COPYUID_LIMIT:
            raise ValueError("uid-set too large")
        out.extend(range(low, high + 1))
    return out


def parse_copyuid(data: str) -> dict[int, int]:
    """``<uidvalidity> <source-set> <destination-set>`` (RFC 4315 COPYUID) -> source: dest."""
    fields = data.split()
    if len(fields) < 3:
        raise ValueError(f"bad COPYUID {data!r}")
    sources, targets = parse_uid_set(fields[1]), parse_uid_set(fields[2])
    if len(sources) != len(targets):
        raise ValueError(f"COPYUID sets differ in size: {data!r}")
    return dict(zip(sources, targets, strict=True))


def copyuid_mapping(texts: Sequence[str | bytes]) -> dict[int, int]:
    """Every COPYUID in these response texts, merged; malformed ones are ignored (the caller
    then finds the messages another way or leaves them in Trash).

    A text is either a response with ``[COPYUID ...]`` in it (a tagged COPY answer) or the bare
    ``<uidvalidity> <source-set> <destination-set>`` that imaplib files under "COPYUID" for an
    untagged ``* OK [COPYUID ...]`` (a MOVE answer).
    """
    mapping: dict[int, int] = {}
    for text in texts:
        raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        found = re.findall(r"\[COPYUID ([^\]]*)\]", raw, re.IGNORECASE)
        if not found and "[" not in raw and raw.strip():
            found = [raw]
        for data in found:
            with contextlib.suppress(ValueError):
                mapping.update(parse_copyuid(data))
    return mapping
