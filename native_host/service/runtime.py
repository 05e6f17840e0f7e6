"""One joined account at work: its IMAP connection, sync cycle, push waiters and events.

Every store call goes through one lock (one connection, never two threads on it). A sync cycle
first compares each watched folder's STATUS with the one saved after the last sync, so an idle
cycle costs one round trip per watched folder (two), whatever the number of devices or the
history. The new state is saved only after what it covers was applied.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from native_host.core import devicelog, envelope, layout, pgpmime
from native_host.core.directory import Announcement
from native_host.core.join import (
    Device,
    ensure_folder,
    join,
    refresh,
    still_announced,
)
from native_host.core.keysync import PeerRepo
from native_host.errors import ErrorCode, HostError, RemoteProtocolError
from native_host.ports import (
    ChangeWaiter,
    Clock,
    FolderMissing,
    FolderStatus,
    FolderStore,
    RandomBytes,
    SecretStore,
    SecretStoreUnavailable,
    StoreError,
    Watermark,
)
from native_host.service.accounts import AccountFiles, AccountRecord, DeviceRecord
from native_host.service.lifecycle import STALE_AFTER_DAYS, Lifecycle
from native_host.service.peers import PeerBook
from native_host.service.tokens import TokenWaiting
from native_host.service.trust import Trust

if TYPE_CHECKING:
    from native_host.adapters.pgp import AccountKey

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_INTERVAL = 60.0  # a sync even without push news: the safety net under IDLE
# While a pairing is under way (rare, ten minutes at most) the inboxes are also checked this
# often: some servers delay IDLE news (Dovecot by about 0.5 s), and pairing takes four hops.
PAIRING_POLL_INTERVAL = 0.25
PUSH_WAIT = 240.0  # one wait_for_change call; the waiter renews IDLE inside it
MAX_BACKOFF = 60.0
TOKEN_WAIT = 30.0  # waiting for an OAuth2 token: look again this often (a token's arrival wakes)
MISSING_PAUSE = 1.0  # a push loop whose folder is missing looks again this long after a sync
ONLINE_PUSH_BACKOFF = 4.0  # a push loop's longest backoff while the sync loop is online
MIN_WAIT = 0.02  # the sync loop never spins faster than this, whatever a timer says
INBOX_BATCH = 100  # messages per fetch; the store also caps their bodies at FETCH_MAX_BYTES
MAX_INBOX_BATCHES = 50  # per sync cycle; the rest waits for the next (the status has moved)
# Messages a member signs to this device: evidence for the expiry policy that it is alive.
_FROM_MEMBERS = frozenset(
    {
        envelope.MessageType.KEY_UPDATE,
        envelope.MessageType.ACCOUNT_KEY,
        envelope.MessageType.KEY_REQUEST,
    }
)
LOG_RECHECK = 60.0  # an entry we hold that the folder never showed is looked for this often
LISTED_UIDS = 10_000  # announcement-folder UIDs listed to find deleted log entries (sizes only)


class PushStore(FolderStore, ChangeWaiter, Protocol):
    def close(self) -> None: ...


StoreOpener = Callable[[AccountRecord], PushStore]
Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class SyncReport:
    announcements_read: int
    inbox_read: int
    devices: int
    rejected: int
    changed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "announcements_read": self.announcements_read,
            "inbox_read": self.inbox_read,
            "devices": self.devices,
            "rejected": self.rejected,
        }


def device_view(
    announcement: Announcement, me: str | None, member_name: str | None, stale_before: float
) -> dict[str, Any]:
    return {
        "device_id": announcement.device_id,
        # The device log alone says who belongs (and its name wins); an announcement is a claim.
        "name": member_name or announcement.name,
        "last_seen": announcement.last_seen,
        "paired": member_name is not None,
        "self": announcement.device_id == me,
        "stale": announcement.last_seen < stale_before,
        "announced": True,
    }


def unannounced_view(member: devicelog.Member, me: str | None, added_at: int) -> dict[str, Any]:
    """A member whose announcement the directory lacks (the server deleted or withholds it):
    still listed, or the user could neither see nor remove it. Its last sign of life is
    unknown, so it is never stale (withholding alone must not make a device an expiry
    candidate); `last_seen` is when the log added it."""
    return {
        "device_id": member.device_id,
        "name": member.name,
        "last_seen": added_at,
        "paired": True,
        "self": member.device_id == me,
        "stale": False,
        "announced": False,
    }


@dataclass(frozen=True)
class JoinOutcome:
    founded: bool  # this device founded the account's identity (now or at an earlier join)
    identity_found: bool  # the SMA already held other devices or a device log when it joined


class AccountRuntime:
    def __init__(
        self,
        record: AccountRecord,
        files: AccountFiles,
        open_store: StoreOpener,
        emit: Emit,
        *,
        clock: Clock,
        random: RandomBytes,
        secrets: SecretStore,
        peer_repo: PeerRepo | None = None,
    ) -> None:
        self.record = record
        self.trust = Trust(
            record, secrets, emit, lambda: files.save(record), clock=clock, random=random
        )
        self._files = files
        self._open_store = open_store
        self._emit = emit
        self._clock = clock
        self._random = random
        self._lock = threading.RLock()
        self._store: PushStore | None = None
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self._cycles = threading.Condition()  # counts sync attempts, for the push loops
        self._cycle_count = 0
        self._wakes = 0  # counts wake() calls (a token arrived): backoff waits end early
        self._state: tuple[Any, ...] | None = None  # the last sync.state sent
        self._threads: list[threading.Thread] = []
        self.online: bool | None = None
        if peer_repo is None:
            from native_host.adapters.memory_peers import MemoryPeerRepo

            peer_repo = MemoryPeerRepo()
        self._loaded_keys: dict[str, AccountKey] = {}  # armored -> checked, for decryption
        self.peers = PeerBook(
            peer_repo,
            record.account,
            emit,
            self._dirty.set,
            clock=clock,
            random=random,
            decrypt=self._decrypt_mail,
        )
        if record.device is not None:
            self.peers.set_device(record.device.device_id)
        self.lifecycle = Lifecycle(
            record, self.trust, emit, lambda: files.save(record), clock=clock, random=random
        )
        self.removed = False  # this device was removed: the instance makes a fresh runtime
        self._doubted: str | None = None  # the remover whose removal of us we wait to act on
        self._log_recheck_at = 0.0  # (clock) when an unplaced log entry is looked for again
        self._unplaced_at_last_check: frozenset[str] = frozenset()  # (entry hashes)
        self._rejections_reported = 0  # directory.rejected_total already logged

    @property
    def account(self) -> str:
        return self.record.account

    def _decrypt_mail(self, data: bytes) -> bytes | None:
        """The `Decrypt` port of the peer book: every account key this device holds, the
        current one first, then those kept from before a roll (mail a peer encrypted to the
        key it knew)."""
        from native_host.adapters.pgp import decrypt_message

        keys = self._account_keys()
        if not keys:
            return None
        return decrypt_message(data, keys, max_output=pgpmime.MAX_INNER_BYTES)

    def _account_keys(self) -> list[AccountKey]:
        from native_host.adapters.pgp import BadAccountKey, load_secret

        current = self.trust.account_key_armored() if self.record.device else None
        wanted = ([current] if current else []) + self.lifecycle.old_keys()
        keys: list[AccountKey] = []
        for armored in dict.fromkeys(wanted):
            key = self._loaded_keys.get(armored)
            if key is None:
                try:
                    key = load_secret(armored)
                except BadAccountKey:
                    continue  # an unreadable leftover does not stop the others
                self._loaded_keys[armored] = key
            keys.append(key)
        for stale in set(self._loaded_keys) - set(wanted):
            self._loaded_keys.pop(stale, None)  # forgotten with the membership: not kept in memory
        return keys

    # --- the connection -----------------------------------------------------------------------
    def _connected(self) -> PushStore:
        if self._store is None:
            self._store = self._open_store(self.record)
        return self._store

    def _drop(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except Exception:
                log.debug("closing a broken store failed", exc_info=True)
            self._store = None

    # --- operations ---------------------------------------------------------------------------
    def join(self, name: str, first_device: bool | None = None) -> JoinOutcome:
        """Join the SMA; found the account's identity (its account key and device log) only when
        the user says this is the first device (`first_device` True), or, when the caller does not
        say (None), when nothing else is in the SMA. The server cannot make a device found an
        identity or stop it from founding one: what it planted only shows in `identity_found`.
        Founding while another identity is there is a reset: its devices see a foreign genesis."""
        with self._lock:
            record = self.record
            if record.device is None:
                # A new device identity: secrets left in the keyring by an earlier life of this
                # instance and account (removed, then configured again) must not carry over.
                self.trust.forget_secrets()
            if record.device is None or record.device.name != name:
                device_id = (
                    record.device.device_id if record.device else layout.new_device_id(self._random)
                )
                joined = record.device.joined if record.device else int(self._clock())
                # Persisted before any folder is touched: a crash mid-join resumes with this id.
                record.device = DeviceRecord(device_id, name, joined)
                self._files.save(record)
            self.peers.set_device(record.device.device_id)
            keys = self.trust.device_keys()  # in the keyring before the server sees this device
            device = Device(
                record.device.device_id,
                record.device.name,
                record.account,
                record.device.joined,
                keys,
            )
            try:
                store = self._connected()
                result = join(
                    store, record.directory, device, clock=self._clock, random=self._random
                )
                found = bool(self.trust.device_log().pending) or not result.first_device
                if record.genesis is None and (
                    first_device is True or (first_device is None and not found)
                ):
                    self.trust.found_log(store)
                    refresh(store, record.directory)
                    if found:
                        log.warning("%s: founded a new identity over an existing one", self.account)
                self.trust.publish_pending(store)  # what a crash or a cut left queued
            except StoreError:
                self._drop()
                raise
            self._files.save(record)
        self.start()
        return JoinOutcome(
            founded=record.genesis is not None and self.trust.founded_here(),
            identity_found=found,
        )

    def with_store(self, action: Callable[[FolderStore], T]) -> T:
        """Run `action` on this account's connection, under its lock (for pairing steps), then
        wake the sync loop: what the action changed can change its pace (a pairing started
        polls every PAIRING_POLL_INTERVAL). Before, the loop slept out the wait it had begun,
        up to POLL_INTERVAL, and only push news woke it: while a push loop was backing off
        after the server deleted the inbox, the new device saw the accept a minute late."""
        with self._lock:
            try:
                result = action(self._connected())
            except StoreError:
                self._drop()
                raise
            finally:
                self._dirty.set()
            self._files.save(self.record)
        return result

    def devices(self, stale_after_days: float = STALE_AFTER_DAYS) -> list[dict[str, Any]]:
        with self._lock:
            me = self.record.device.device_id if self.record.device else None
            chain = self.trust.device_log()
            members = chain.members()
            # A removed device's announcement is deleted by the remover, but the directory read
            # it earlier: the verified log has the last word (a removed id never comes back).
            removed = chain.removed
            ordered = sorted(
                (a for a in self.record.directory.devices.values() if a.device_id not in removed),
                key=lambda a: (a.joined, a.device_id),
            )
            stale_before = self._clock() - stale_after_days * 86400
            views = [
                device_view(
                    a,
                    me,
                    members[a.device_id].name if a.device_id in members else None,
                    stale_before,
                )
                for a in ordered
            ]
            announced = self.record.directory.devices
            missing = [m for m in members.values() if m.device_id not in announced]
            if missing:
                added_at = {e["seq"]: int(e["at"]) for e in chain.entries()}
                for member in sorted(missing, key=lambda m: (m.seq, m.device_id)):
                    views.append(unannounced_view(member, me, added_at.get(member.seq, 0)))
            return views

    def sync(self) -> SyncReport:
        with self._lock:
            if self.removed or self.record.device is None:
                raise HostError(
                    ErrorCode.NOT_JOINED,
                    f"this device is not in the SMA of {self.account} (any more); use sma.join",
                )
            try:
                report = self._sync_once()
            except StoreError:
                self._drop()
                raise
            finally:
                self._log_rejections()
        if report.changed:
            self._emit("devices.changed", {"account": self.account, "devices": self.devices()})
        return report

    def _sync_once(self) -> SyncReport:
        record = self.record
        assert record.device is not None, "sync before join"
        store = self._connected()
        before = dict(record.directory.devices)
        announcements = 0
        status: FolderStatus | None
        moved = False  # an idle cycle writes nothing to disk (pairing steps save themselves)
        try:
            announce_status = store.status(layout.ANNOUNCE_FOLDER)
        except FolderMissing:
            announce_status = self._recreate_announce_folder(store)
        if announce_status != record.announce_status or self._unplaced_entries_due():
            announcements = refresh(store, record.directory)
            me = record.device.device_id
            if me in record.directory.devices and not still_announced(store, record.directory, me):
                # The server deleted our announcement: devices that read the folder afresh
                # would not see us. Announce again (the join writes what is missing).
                del record.directory.devices[me]
            gone = self.lifecycle.was_removed(self.trust.device_log()) is not None
            if me not in record.directory.devices and not gone:  # (removed: below)
                self._join_again(store)
            if not gone:
                self._write_back_deleted_entries(store)
            record.announce_status = announce_status
            moved = True
        chain = self.trust.check_log()
        inbox_name = layout.inbox_folder(record.device.device_id)
        try:
            status = store.status(inbox_name)
        except FolderMissing:
            # Deleted by the device that removed us, or by the server: the log decides which.
            refresh(store, record.directory)
            chain = self.trust.check_log()
            if self.lifecycle.was_removed(chain) is None:
                store.create_folder(inbox_name)
                self._emit(
                    "security.alert",
                    {
                        "account": self.account,
                        "kind": "inbox",
                        "message": "this device's inbox folder was deleted; recreated it",
                    },
                )
            status = None
        removed_by = self.lifecycle.was_removed(chain)
        if removed_by is not None and removed_by != self.trust.me:
            self.trust.check_withholding(chain)  # (a hidden branch: said before acting)
            if self.trust.removal_in_doubt(chain):
                if self._doubted != removed_by:
                    self._doubted = removed_by
                    log.warning(
                        "%s: removed by %s, but a member's log head is missing: waiting for it",
                        self.account,
                        removed_by,
                    )
                return SyncReport(announcements, 0, len(record.directory.devices), 0, True)
        if removed_by is not None:
            self._removed(removed_by)
            return SyncReport(announcements, 0, len(record.directory.devices), 0, True)
        self._doubted = None
        self.trust.tick(store, chain)
        self.trust.rebase_lost(store, chain)
        self.trust.check_withholding(chain)
        self.lifecycle.tick(store, chain)
        self.lifecycle.tell_removals(chain)
        self._expiry_policy(chain)
        if self.lifecycle.refresh_announcement(store):
            moved = True
        inbox_read = 0
        if status is None:
            status = store.status(inbox_name)
        if status != record.inbox.status:
            try:
                inbox_read = self._read_inbox(store, inbox_name)
            except FolderMissing:
                # Deleted since its status above: by the device removing us, or by the server.
                # The next cycle's status check tells which (above); not an outage to report.
                log.info("%s: the inbox went away while it was read", self.account)
                self._dirty.set()
            else:
                # The status from before the read: one taken after it could include a message
                # that arrived meanwhile, unread, and an idle cycle would then never look again.
                # (Our own deletions change the status, so the next cycle fetches once more and
                # finds nothing.)
                record.inbox.status = status
            moved = True
        self.peers.flush(store, chain, self.trust.device_keys())
        if record.expiry_watch.synced(self._clock()):
            moved = True
        if moved:
            self._files.save(record)
        return SyncReport(
            announcements_read=announcements,
            inbox_read=inbox_read,
            devices=len(record.directory.devices),
            rejected=len(record.directory.rejected),
            changed=record.directory.devices != before,
        )

    def _log_rejections(self) -> None:
        """Report on stderr what the announcement folder's reads refused (garbage, bad
        signatures) since the last report; the count is in `sync`'s answer. Every read counts,
        not only the cycle's first: the join and the inbox check read the folder again, and a
        message that arrived in between was refused unreported (tests/adversary, seed 1)."""
        directory = self.record.directory
        new = directory.rejected_total - self._rejections_reported
        self._rejections_reported = directory.rejected_total
        if new <= 0:
            return  # (a fresh directory after a removal starts counting again)
        if new > len(directory.rejected):  # more than are kept: say how many went unlisted
            log.warning("announcement folder: %d more rejected", new - len(directory.rejected))
        for rejection in directory.rejected[-new:]:
            log.warning("announcement folder: rejected uid %d: %s", rejection.uid, rejection.reason)

    def _join_again(self, store: FolderStore) -> None:
        """Our announcement is gone (the server deleted it, or recreated the folder): the join
        is idempotent and writes what is missing, nothing twice."""
        device = self.record.device
        assert device is not None
        me = Device(
            device.device_id, device.name, self.account, device.joined, self.trust.device_keys()
        )
        join(store, self.record.directory, me, clock=self._clock, random=self._random)

    def _unplaced_entries_due(self) -> bool:
        """Whether to look for our log entries in the folder although its status did not move.

        An APPEND the server acknowledges but never stores changes nothing we would notice, so
        an entry (our own roll, say) could stay unseen by every other device for good while we
        count it, and the devices would disagree on the account key (seen in
        test_an_owed_roll_the_first_member_never_makes_is_made_by_another_after_the_grace).
        While an entry we keep has no place in the folder, the folder is read and the entry
        written back every LOG_RECHECK seconds; in the normal case every entry has a place and
        this costs nothing. Only an entry already unplaced at the previous check counts: one
        appended a moment ago is simply not read yet, and whether the first check fell just
        before or after it must not decide when it is written again (it made a test flaky)."""
        uids = self.record.directory.log_uids
        now = self._clock()
        if uids is None or now < self._log_recheck_at:
            return False
        queued = {devicelog.entry_hash(e) for e in self.record.unpublished}
        unplaced = frozenset(self.trust.device_log().kept_hashes() - uids.keys() - queued)
        overdue = unplaced & self._unplaced_at_last_check
        self._unplaced_at_last_check = unplaced
        if not unplaced:
            return False
        self._log_recheck_at = now + LOG_RECHECK
        return bool(overdue)

    def _write_back_deleted_entries(self, store: FolderStore) -> None:
        """Append again every entry of our verified log that the announcement folder no longer
        holds. No device deletes log entries, so the server did: one message, or the whole folder
        (recreated by a device that knew fewer entries, or renamed away). A device that had not
        read the entry yet could otherwise never verify anything after it, and the devices would
        disagree for good on the members and the account key (seen as the adversary test's lost
        roll). Runs whenever the folder changed; one FETCH of sizes. Copies are harmless: the log
        keys entries by hash, and every device holding the entry may write it back."""
        directory = self.record.directory
        mark = directory.watermark
        entries = self.trust.device_log().kept()  # (off-chain removals count too)
        if directory.log_uids is None or mark is None or not entries:
            return
        listed = store.fetch(
            layout.ANNOUNCE_FOLDER, Watermark(mark.uidvalidity, 0), limit=LISTED_UIDS, max_size=0
        )
        if listed.reset:
            return  # renumbered since the refresh: the next one rescans, then we look again
        present = {m.uid for m in listed.messages}
        # Past the listing's end nothing is known; an entry not read at all counts as deleted
        # only when the refresh read everything there is (nothing arrived since).
        listed_up_to = max(present, default=0) if listed.more else None
        read_all = listed_up_to is None and max(present, default=0) <= mark.last_uid
        queued = {devicelog.entry_hash(e) for e in self.record.unpublished}
        missing = []
        for entry in entries:
            key = devicelog.entry_hash(entry)
            uid = directory.log_uids.get(key)
            if key in queued or uid in present:
                continue
            if uid is None and not read_all:
                continue  # it may be among the messages not read yet
            if uid is not None and listed_up_to is not None and uid > listed_up_to:
                continue  # past the listing
            missing.append(entry)
        if not missing:
            return
        log.warning(
            "announcement folder: %d verified log entries were deleted; writing them back (%s)",
            len(missing),
            ", ".join(f"{e['op']} at seq {e['seq']}" for e in missing),
        )
        self.record.unpublished.extend(missing)
        self._files.save(self.record)
        self._emit(
            "security.alert",
            {
                "account": self.account,
                "kind": "device_log",
                "finding": "deleted",
                "message": f"the server deleted {len(missing)} device-log entries; wrote them back",
            },
        )
        self.trust.publish_pending(store)

    def _recreate_announce_folder(self, store: FolderStore) -> FolderStatus:
        """No device deletes the announcement folder: the server did (or renamed it). Create it
        again and write the verified log back (every device keeps its own copy; duplicates are
        harmless); the next refresh sees a new UIDVALIDITY, and our announcement is written again
        (_join_again)."""
        ensure_folder(store, layout.ANNOUNCE_FOLDER, [])
        if self.trust.is_paired():
            # Every kept entry, not only the chain: removals that count off it too.
            self.record.unpublished.extend(self.trust.device_log().kept())
            self._files.save(self.record)
        self._emit(
            "security.alert",
            {
                "account": self.account,
                "kind": "device_log",
                "message": "the announcement folder was deleted; recreated it",
            },
        )
        return store.status(layout.ANNOUNCE_FOLDER)

    def _read_inbox(self, store: FolderStore, folder: str) -> int:
        """Handle what other devices dropped here, one bounded batch at a time (each applied,
        deleted and released before the next is fetched: a refresh holds a few MiB, however
        much waits)."""
        read = 0
        for _ in range(MAX_INBOX_BATCHES):
            count, more = self._read_inbox_batch(store, folder)
            read += count
            if not more:
                break
        return read

    def _read_inbox_batch(self, store: FolderStore, folder: str) -> tuple[int, bool]:
        """One batch: each message is applied and the state saved before the message goes, so
        a crash repeats it (harmlessly) but never loses it. (messages read, more waiting)"""
        cursor = self.record.inbox
        batch = store.fetch(
            folder, cursor.watermark, limit=INBOX_BATCH, max_size=envelope.MAX_MESSAGE_BYTES
        )
        if cursor.applied and not batch.reset:
            # The last read saved its watermark, then crashed before deleting: finish that.
            store.delete_messages(folder, cursor.applied)
        cursor.applied = []
        done: list[int] = []
        for message in batch.messages:
            try:
                if message.raw is None:
                    raise RemoteProtocolError(f"{message.size} bytes is over the size limit")
                parsed = envelope.parse(message.raw)
                if parsed.type is envelope.MessageType.KEY_UPDATE:
                    self.peers.receive(parsed, self.trust.device_log(), self.trust.device_keys())
                elif parsed.type is envelope.MessageType.ACCOUNT_KEY:
                    self.lifecycle.receive_key(parsed)
                elif parsed.type is envelope.MessageType.KEY_REQUEST:
                    self.lifecycle.answer_key_request(store, parsed)
                else:
                    self.trust.receive(store, parsed)
                self.trust.note_head(parsed)  # (it verified: its head is the sender's word)
                if parsed.type in _FROM_MEMBERS:  # each checked its member's signature above
                    self.record.expiry_watch.heard_from(parsed.sender, self._clock())
            except RemoteProtocolError as exc:
                log.warning("inbox %s: dropped message uid %d: %s", folder, message.uid, str(exc))
                alert = {"account": self.account, "kind": "inbox", "message": str(exc)[:500]}
                self._emit("security.alert", alert)
            except (StoreError, SecretStoreUnavailable):
                raise  # the server or the keyring, not the message: read it again later
            except Exception as exc:
                # A check that failed in a way nobody foresaw (a library's own exception type):
                # still the message's fault, never a reason to stop reading the inbox (left in
                # place, it would fail every sync and nothing after it would be read).
                kind = type(exc).__name__
                log.warning("inbox %s: dropped message uid %d: %s", folder, message.uid, kind)
                alert = {
                    "account": self.account,
                    "kind": "inbox",
                    "message": f"unreadable ({kind})",
                }
                self._emit("security.alert", alert)
            done.append(message.uid)
        cursor.watermark = batch.after(cursor.watermark)
        cursor.applied = done
        self._files.save(self.record)
        if done:
            store.delete_messages(folder, done)
        cursor.applied = []  # saved as empty with the next save; a repeat delete is harmless
        return len(batch.messages), batch.more

    def _removed(self, by: str) -> None:
        """The verified log says this device was removed: forget everything, stop."""
        log.warning("%s: this device was removed from the SMA by %s", self.account, by)
        self.lifecycle.removed(by)
        self.removed = True
        self._stop.set()
        self._dirty.set()

    def remove_device(self, device_id: str) -> str | None:
        return self.with_store(lambda store: self.lifecycle.remove(store, device_id))

    def rename_device(self, device_id: str, name: str) -> None:
        self.with_store(lambda store: self.lifecycle.rename(store, device_id, name))

    def leave(self) -> None:
        """Remove this device from the SMA; the others roll the key."""
        with self._lock:  # one hold: the background sync would otherwise see the entry first
            me = self.trust.me
            self.with_store(lambda store: self.lifecycle.remove(store, me))
            if not self.removed:
                self._removed(me)

    def _expiry_policy(self, chain: Any) -> None:
        """The opt-in policy, on the device where it was set: once a day, *propose* to the user
        the devices that look gone by every sign this device has (service/expiry.py), never
        removing anything itself: the provider can withhold announcements and messages, so an
        absence is a question for the user, not a proof."""
        days = self.record.expire_after_days
        now = self._clock()
        if days is None or now - self.record.expiry_checked < 86400:
            return
        if not chain.is_member(self.trust.me):
            return
        self.record.expiry_checked = now
        watch = self.record.expiry_watch
        views = {d["device_id"]: d for d in self.devices(days)}
        stale = [i for i, d in views.items() if d["stale"] and d["paired"] and not d["self"]]
        ask = watch.to_ask(watch.candidates(stale, now, days * 86400))
        self._files.save(self.record)
        if ask:
            log.warning("%s: proposing to remove %d absent device(s)", self.account, len(ask))
            self._emit(
                "devices.expiry_proposed",
                {
                    "account": self.account,
                    "after_days": days,
                    "devices": [
                        {
                            "device_id": i,
                            "name": views[i]["name"],
                            "last_seen": views[i]["last_seen"],
                            "last_heard": int(watch.heard[i]) if i in watch.heard else None,
                        }
                        for i in ask
                    ],
                },
            )

    def set_expiry_policy(self, days: float | None) -> None:
        with self._lock:
            self.record.expire_after_days = days
            self.record.expiry_checked = 0.0
            watch = self.record.expiry_watch
            # The evidence counts from now: a period must pass with the policy on.
            watch.policy_since = None if days is None else self._clock()
            watch.proposed = []
            self._files.save(self.record)
        self._dirty.set()

    def expire(self, older_than_days: float) -> list[str]:
        """Remove every paired device (not this one) not seen for that long."""
        stale = [
            d["device_id"]
            for d in self.devices(older_than_days)
            if d["stale"] and d["paired"] and not d["self"]
        ]
        for device_id in stale:
            self.remove_device(device_id)
        return stale

    # --- the background -----------------------------------------------------------------------
    def start(self) -> None:
        """Sync in the background and listen for pushes; idempotent."""
        with self._lock:
            if self._threads or self.record.device is None:
                return
            folders = [layout.ANNOUNCE_FOLDER, layout.inbox_folder(self.record.device.device_id)]
            self._threads = [
                threading.Thread(target=self._sync_loop, name=f"sync-{self.account}", daemon=True)
            ]
            self._threads += [
                threading.Thread(target=self._push_loop, args=(f,), name=f"push-{f}", daemon=True)
                for f in folders
            ]
        for thread in self._threads:
            thread.start()

    def stop(self, wait: float = 0.0) -> None:
        """Stop the loops. With `wait`, also let a sync cycle under way finish (up to that many
        seconds) before returning, so that a runtime replacing this one on the same record never
        runs beside it; process exit passes no wait."""
        self._stop.set()
        self._dirty.set()
        self._cycle_done()
        deadline = time.monotonic() + wait
        for thread in self._threads[:1]:  # the sync loop; push loops only wake it
            if wait > 0 and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        # A worker may sit in a slow IMAP call holding the lock; exit must not wait for it.
        if self._lock.acquire(timeout=0.2):
            try:
                self._drop()
            finally:
                self._lock.release()

    def _sync_and_wait(self) -> None:
        """Ask for a sync and wait until one ran, so the saved status has caught up with the news
        (otherwise the next wait, comparing against a stale status, would return at once)."""
        with self._cycles:
            seen = self._cycle_count
        self._dirty.set()
        with self._cycles:
            self._cycles.wait_for(
                lambda: self._cycle_count > seen or self._stop.is_set(), PUSH_WAIT
            )

    def _cycle_done(self) -> None:
        with self._cycles:
            self._cycle_count += 1
            self._cycles.notify_all()

    def _last_status(self, folder: str) -> FolderStatus | None:
        """What the last sync saw of `folder` (read without the lock: a stale value only costs
        one extra sync)."""
        if folder == layout.ANNOUNCE_FOLDER:
            return self.record.announce_status
        return self.record.inbox.status

    def wake(self) -> None:
        """Something this account waited for arrived (a token): retry at once, not after the
        backoff, in the sync loop and the push loops alike."""
        with self._cycles:
            self._wakes += 1
            self._cycles.notify_all()
        self._dirty.set()

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the runtime stops or is woken (wake)."""
        with self._cycles:
            seen = self._wakes
            self._cycles.wait_for(lambda: self._wakes != seen or self._stop.is_set(), seconds)

    def _set_online(
        self, online: bool, error: StoreError | SecretStoreUnavailable | None = None
    ) -> None:
        """Send sync.state when what it says changes. Waiting for an OAuth2 token is its own
        state ("waiting": "token"), with auth_failed only once the server refused the tokens."""
        data: dict[str, Any] = {"account": self.account, "online": online}
        if isinstance(error, TokenWaiting):
            data["waiting"] = "token"
            if error.code is not None:
                data["error"] = {"code": error.code.value, "message": str(error)[:500]}
        elif error is not None:
            code = getattr(error, "code", None)  # a token command's failure: auth_failed
            if isinstance(error, SecretStoreUnavailable):
                code = ErrorCode.KEYRING_UNAVAILABLE
            data["error"] = {
                "code": code.value if isinstance(code, ErrorCode) else "imap_unavailable",
                "message": str(error)[:500] or "IMAP failed",
            }
        key = (online, data.get("waiting"), data.get("error", {}).get("code"))
        self.online = online
        if key == self._state:
            return
        self._state = key
        self._emit("sync.state", data)

    def _sync_loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            self._dirty.clear()  # before the sync: a push during it triggers one more
            try:
                self.sync()
            except HostError:
                self._cycle_done()
                return  # removed (or left) meanwhile: nothing more to sync
            except (StoreError, SecretStoreUnavailable) as exc:
                self._cycle_done()
                self._set_online(False, exc)
                if isinstance(exc, TokenWaiting):
                    # Not an outage: the token source asks Thunderbird (rate-limited) and a
                    # token's arrival wakes this loop; until then look again now and then.
                    self._pause(TOKEN_WAIT)
                    continue
                log.info(
                    "sync of %s failed (%s: %s); next try in %.0f s",
                    self.account,
                    type(exc).__name__,
                    str(exc)[:200],
                    backoff,
                )
                self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            except Exception:
                self._cycle_done()
                log.exception("sync of %s failed", self.account)
                self._stop.wait(MAX_BACKOFF)
                continue
            self._cycle_done()
            self._set_online(True)
            backoff = 1.0
            wait = PAIRING_POLL_INTERVAL if self.trust.pairing_active() else POLL_INTERVAL
            for due in (
                self.peers.sync.next_due(),
                self.lifecycle.next_due(),
                self.trust.outbox_due(),
            ):
                if due is not None:
                    wait = max(MIN_WAIT, min(wait, due - self._clock()))
            self._dirty.wait(wait)

    def _push_loop(self, folder: str) -> None:
        backoff = 1.0
        waiter: PushStore | None = None
        while not self._stop.is_set():
            try:
                if waiter is None:
                    waiter = self._open_store(self.record)
                if waiter.wait_for_change(folder, PUSH_WAIT, since=self._last_status(folder)):
                    self._sync_and_wait()
                backoff = 1.0
            except FolderMissing:
                # Not an outage: the server deleted the folder (or this device was removed).
                # The sync cycle recreates it (or finds the removal); watch again after that
                # cycle at a steady pace. With the outage backoff, a server deleting the inbox
                # a few times in a row left the device without push news for up to a minute.
                self._sync_and_wait()
                self._stop.wait(MISSING_PAUSE)
            except (StoreError, SecretStoreUnavailable):
                # Both are reported by the sync loop (imap_unavailable, keyring_unavailable).
                if waiter is not None:
                    try:
                        waiter.close()
                    except Exception:
                        log.debug("closing a broken waiter failed", exc_info=True)
                waiter = None
                self._dirty.set()  # the sync loop reports the outage and backs off
                self._pause(backoff)
                # While the sync loop reaches the server, this is no outage but one folder in
                # flux (Dovecot answers NO to EXAMINE while another session deletes or renames
                # it): back off only up to ONLINE_PUSH_BACKOFF, or the device hears of news up
                # to a minute late once the server has calmed down.
                limit = ONLINE_PUSH_BACKOFF if self.online else MAX_BACKOFF
                backoff = min(backoff * 2, limit)
        if waiter is not None:
            waiter.close()
