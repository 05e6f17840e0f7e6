"""Deletion strategies against an in-memory model of Gmail's label semantics.

No Gmail can run here, so `GmailModel` encodes what Google documents and other clients report
(sources in docs/providers.md): a folder is a label; expunging in a label removes that label
and, per the account's setting for the last visible folder, archives the message (the default:
it stays in "[Gmail]/All Mail"), moves it to Trash, or deletes it forever; moving or copying a
message into Trash removes every other label; expunging in Trash deletes it for good; deleting
a label keeps its messages in All Mail. The real-server half (move to a special-use Trash, then
UID EXPUNGE there) runs on Dovecot in tests/contract/test_imap_deletion.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pytest

from native_host.adapters.imap_deletion import (
    ExpungeInPlace,
    MoveToTrashThenExpunge,
    choose_deletion,
    copyuid_mapping,
    parse_copyuid,
    parse_uid_set,
)
from native_host.ports import FolderMissing

ALL_MAIL = "[Gmail]/All Mail"
TRASH = "[Gmail]/Bin"  # the localised name (en-GB): the strategy must find it by \Trash
SMA = "_Autocrypt_SMA"
Behaviour = Literal["archive", "trash", "delete_forever"]


@dataclass
class _Folder:
    uids: dict[int, int] = field(default_factory=dict)  # uid -> X-GM-MSGID
    deleted: set[int] = field(default_factory=set)
    uidnext: int = 1


class GmailModel:
    """A DeletionSession over a model of one Gmail account (one mailbox selected at a time)."""

    def __init__(
        self,
        *,
        move: bool = True,
        uidplus: bool = True,
        copyuid: bool = True,
        behaviour: Behaviour = "archive",
    ) -> None:
        caps = {b"IMAP4REV1", b"IDLE", b"X-GM-EXT-1", b"XLIST", b"SPECIAL-USE"}
        caps |= {b"MOVE"} if move else set()
        caps |= {b"UIDPLUS"} if uidplus else set()
        self._caps = frozenset(caps)
        self.copyuid = copyuid
        self.behaviour = behaviour
        self.labels: dict[str, _Folder] = {"INBOX": _Folder(), TRASH: _Folder()}
        self.bodies: dict[int, bytes] = {}  # X-GM-MSGID -> message: what exists at all
        self.selected: str | None = None
        self._ids = itertools.count(1_700_000_000_000_000_000)

    # --- the model ----------------------------------------------------------------------------
    def create_label(self, name: str) -> None:
        self.labels.setdefault(name, _Folder())

    def delete_label(self, name: str) -> None:
        """Gmail: deleting a label keeps its messages (in All Mail, or wherever else)."""
        del self.labels[name]

    def add(self, label: str, body: bytes, *, deleted: bool = False) -> int:
        message_id = next(self._ids)
        self.bodies[message_id] = body
        uid = self._label(label, message_id)
        if deleted:
            self.labels[label].deleted.add(uid)
        return message_id

    def _label(self, name: str, message_id: int) -> int:
        folder = self.labels[name]
        uid, folder.uidnext = folder.uidnext, folder.uidnext + 1
        folder.uids[uid] = message_id
        return uid

    def _unlabel_all(self, message_id: int) -> None:
        for folder in self.labels.values():
            for uid in [u for u, m in folder.uids.items() if m == message_id]:
                del folder.uids[uid]
                folder.deleted.discard(uid)

    def all_mail(self) -> set[int]:
        """What "[Gmail]/All Mail" shows: every message not in Trash (nor Spam)."""
        in_trash = set(self.labels[TRASH].uids.values())
        return set(self.bodies) - in_trash

    def contents(self, label: str) -> set[bytes]:
        return {self.bodies[m] for m in self.labels[label].uids.values()}

    def _expunge_one(self, name: str, uid: int) -> None:
        folder = self.labels[name]
        message_id = folder.uids.pop(uid)
        folder.deleted.discard(uid)
        if name == TRASH:
            self._unlabel_all(message_id)
            del self.bodies[message_id]  # deleted for good
            return
        still_labelled = any(message_id in f.uids.values() for f in self.labels.values())
        if still_labelled or self.behaviour == "archive":
            return  # the message lives on in All Mail
        if self.behaviour == "trash":
            self._label(TRASH, message_id)
        else:
            del self.bodies[message_id]

    # --- DeletionSession ----------------------------------------------------------------------
    @property
    def capabilities(self) -> frozenset[bytes]:
        return self._caps

    def _folder(self) -> _Folder:
        assert self.selected is not None, "no mailbox selected"
        return self.labels[self.selected]

    def select(self, server: str) -> None:
        assert self.selected is None, "the strategy must deselect before selecting again"
        if server not in self.labels:
            raise FolderMissing(server)
        self.selected = server

    def deselect(self) -> None:
        self.selected = None

    def all_uids(self) -> list[int]:
        return sorted(self._folder().uids)

    def flag_deleted(self, uids: Sequence[int]) -> None:
        folder = self._folder()
        folder.deleted |= {uid for uid in uids if uid in folder.uids}

    def uid_expunge(self, uids: Sequence[int]) -> None:
        assert b"UIDPLUS" in self._caps
        assert self.selected is not None
        for uid in sorted(set(uids) & self._folder().deleted):
            self._expunge_one(self.selected, uid)

    def expunge(self) -> None:
        assert self.selected is not None
        for uid in sorted(self._folder().deleted):
            self._expunge_one(self.selected, uid)

    def _transfer(self, uids: Sequence[int], destination: str, *, move: bool) -> dict[int, int]:
        assert self.selected is not None
        source = self._folder()
        mapping: dict[int, int] = {}
        for uid in sorted(set(uids) & set(source.uids)):
            message_id = source.uids[uid]
            if destination == TRASH:
                self._unlabel_all(message_id)  # into Trash: every other label goes
            elif move:
                del source.uids[uid]
            mapping[uid] = self._label(destination, message_id)
        return mapping if self.copyuid else {}

    def move(self, uids: Sequence[int], destination: str) -> dict[int, int]:
        assert b"MOVE" in self._caps
        return self._transfer(uids, destination, move=True)

    def copy(self, uids: Sequence[int], destination: str) -> dict[int, int]:
        return self._transfer(uids, destination, move=False)

    def gmail_message_ids(self, uids: Sequence[int]) -> dict[int, int]:
        folder = self._folder()
        return {uid: folder.uids[uid] for uid in uids if uid in folder.uids}

    def search_gmail_message_ids(self, message_ids: Sequence[int]) -> list[int]:
        wanted = set(message_ids)
        return sorted(uid for uid, m in self._folder().uids.items() if m in wanted)

    def special_use_folder(self, flag: bytes) -> str | None:
        return TRASH if flag == b"\\TRASH" else None


def _sma_with(gmail: GmailModel, count: int) -> list[int]:
    gmail.create_label(SMA)
    for n in range(count):
        gmail.add(SMA, b"sma %d" % n)
    return sorted(gmail.labels[SMA].uids)


def _users_trash(gmail: GmailModel) -> set[bytes]:
    gmail.add(TRASH, b"user's trash")
    gmail.add(TRASH, b"user's trash, flagged deleted", deleted=True)
    return gmail.contents(TRASH)


def test_the_model_reproduces_the_problem_expunge_in_a_label_only_archives() -> None:
    gmail = GmailModel()
    uids = _sma_with(gmail, 2)
    ExpungeInPlace().delete(gmail, SMA, uids[:1])
    assert gmail.contents(SMA) == {b"sma 1"}
    assert len(gmail.all_mail()) == 2  # the "deleted" message is still in the account


@pytest.mark.parametrize("behaviour", ["archive", "trash", "delete_forever"])
@pytest.mark.parametrize(
    ("move", "copyuid"), [(True, True), (False, True), (True, False), (False, False)]
)
def test_trash_strategy_deletes_exactly_those_for_good(
    behaviour: Behaviour, move: bool, copyuid: bool
) -> None:
    gmail = GmailModel(move=move, copyuid=copyuid, behaviour=behaviour)
    uids = _sma_with(gmail, 3)
    trash_before = _users_trash(gmail)
    MoveToTrashThenExpunge().delete(gmail, SMA, [uids[0], uids[2]])
    assert gmail.contents(SMA) == {b"sma 1"}
    assert set(gmail.bodies.values()) == {b"sma 1"} | trash_before  # gone from the account
    assert gmail.contents(TRASH) == trash_before  # the user's Trash untouched
    assert gmail.labels[TRASH].deleted == {2}  # even their pending \Deleted is not expunged
    assert gmail.selected is None


def test_without_uidplus_the_messages_wait_in_trash_and_nothing_else_is_expunged() -> None:
    gmail = GmailModel(uidplus=False)
    uids = _sma_with(gmail, 2)
    trash_before = _users_trash(gmail)
    MoveToTrashThenExpunge().delete(gmail, SMA, uids[:1])
    assert gmail.contents(SMA) == {b"sma 1"}
    assert gmail.contents(TRASH) == trash_before | {b"sma 0"}  # Gmail purges Trash in 30 days
    assert b"sma 0" not in {gmail.bodies[m] for m in gmail.all_mail()}


def test_deleting_a_folder_empties_it_through_trash_first() -> None:
    gmail = GmailModel()
    _sma_with(gmail, 3)
    strategy = MoveToTrashThenExpunge()
    strategy.empty_before_delete(gmail, SMA)
    gmail.delete_label(SMA)
    assert gmail.bodies == {}


def test_deleting_a_label_without_emptying_it_keeps_its_messages() -> None:
    gmail = GmailModel()
    _sma_with(gmail, 2)
    ExpungeInPlace().empty_before_delete(gmail, SMA)
    gmail.delete_label(SMA)
    assert len(gmail.all_mail()) == 2  # why Gmail needs the other strategy


def test_a_repeated_delete_after_a_crash_is_harmless() -> None:
    """A retry finds the UIDs gone from the SMA folder and touches nothing in Trash."""
    gmail = GmailModel()
    uids = _sma_with(gmail, 2)
    trash_before = _users_trash(gmail)
    strategy = MoveToTrashThenExpunge()
    strategy.delete(gmail, SMA, uids[:1])
    strategy.delete(gmail, SMA, uids[:1])
    assert gmail.contents(SMA) == {b"sma 1"}
    assert gmail.contents(TRASH) == trash_before


def test_missing_folder_raises_folder_missing_and_leaves_nothing_selected() -> None:
    gmail = GmailModel()
    with pytest.raises(FolderMissing):
        MoveToTrashThenExpunge().delete(gmail, SMA, [1])
    assert gmail.selected is None


def test_without_a_trash_folder_it_falls_back_to_expunge_in_place() -> None:
    gmail = GmailModel()
    uids = _sma_with(gmail, 2)
    gmail.special_use_folder = lambda flag: None  # type: ignore[method-assign]
    MoveToTrashThenExpunge().delete(gmail, SMA, uids[:1])
    assert gmail.contents(SMA) == {b"sma 1"}


def test_strategy_is_chosen_by_capability_or_forced() -> None:
    gmail_caps = frozenset({b"IMAP4REV1", b"X-GM-EXT-1", b"UIDPLUS", b"MOVE"})
    dovecot_caps = frozenset({b"IMAP4REV1", b"UIDPLUS", b"MOVE", b"SPECIAL-USE"})
    assert choose_deletion(gmail_caps).name == "trash"
    assert choose_deletion(dovecot_caps).name == "expunge"
    assert choose_deletion(dovecot_caps, "trash").name == "trash"
    assert choose_deletion(gmail_caps, "expunge").name == "expunge"
    with pytest.raises(ValueError):
        choose_deletion(gmail_caps, "sometimes")  # type: ignore[arg-type]


def test_uid_sets_and_copyuid_parse_as_rfc_4315_says() -> None:
    assert parse_uid_set("4,7:9,12") == [4, 7, 8, 9, 12]
    assert parse_uid_set("9:7") == [7, 8, 9]
    assert parse_copyuid("38505 304,319:320 3956:3958") == {304: 3956, 319: 3957, 320: 3958}
    for bad in ("", "1:", "a", "1,,2", "*"):
        with pytest.raises(ValueError):
            parse_uid_set(bad)
    with pytest.raises(ValueError):
        parse_copyuid("1 1:3 5")
    with pytest.raises(ValueError):
        parse_uid_set("1:999999999")
    tagged = b"[COPYUID 1 3:4 10:11] Done"
    untagged = b"1 5 12"  # how imaplib files "* OK [COPYUID 1 5 12] Moved"
    assert copyuid_mapping([tagged, untagged]) == {3: 10, 4: 11, 5: 12}
    assert copyuid_mapping([b"[COPYUID 1 3:4 10] bad", b"Done", b""]) == {}
