"""A device's life after pairing: liveness, renaming, removal with a roll of the account key, and
noticing that this device itself was removed.

Order, as everywhere: persist the intent, then act, so a crash repeats harmless work. A roll is
`record.roll_pending` (the fingerprint) plus the new secret key in the keyring under
`account-key-next:`, set before the log entries are queued; every sync finishes what is pending.
A member whose verified log names a key it does not hold asks for it (`core/keyrequest.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from native_host.core import devicelog, envelope, keyrequest, layout
from native_host.core.crypto import (
    DevicePublic,
    canonical,
    decrypt_from,
    encrypt_to,
    verify_document,
)
from native_host.core.directory import Directory
from native_host.core.envelope import MessageType, SmaMessage
from native_host.core.join import Device, announcement, refresh
from native_host.errors import ErrorCode, HostError, RemoteProtocolError
from native_host.jsonstrict import InvalidJson, decode_object
from native_host.ports import Clock, FolderMissing, FolderStore, RandomBytes
from native_host.service.accounts import (
    AccountRecord,
    FolderCursor,
    account_key_name,
    next_key_name,
    old_keys_name,
)
from native_host.service.trust import Trust

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], None]
DAY = 86400
STALE_AFTER_DAYS = 90
MAX_OLD_KEYS = 50
ROLL_GRACE = 600.0  # seconds a member other than the first waits for an owed roll


def announce_interval() -> float:
    """How often a device refreshes its announcement ($SMA_ANNOUNCE_INTERVAL seconds, default a
    day): often enough to tell live devices from dead ones, rarely enough to cost nothing."""
    try:
        value = float(os.environ.get("SMA_ANNOUNCE_INTERVAL", DAY))
    except ValueError:
        return DAY
    return value if value >= 1 else DAY


def _associated(sender: str, recipient: str) -> bytes:
    return f"autocrypt-sma account-key {sender} {recipient}".encode()


class Lifecycle:
    def __init__(
        self,
        record: AccountRecord,
        trust: Trust,
        emit: Emit,
        save: Callable[[], None],
        *,
        clock: Clock,
        random: RandomBytes,
    ) -> None:
        self.record = record
        self.trust = trust
        self.secrets = trust.secrets
        self._emit = emit
        self._save = save
        self._clock = clock
        self._random = random
        self._removal_checked: str | None = None  # the log head _finish_removal last looked at
        self._key_ok_for: str | None = None  # the account key we last found in the keyring
        self._parsed: tuple[str, str | None] | None = None  # (armored, fingerprint), cached

    @property
    def me(self) -> str:
        return self.trust.me

    # --- liveness -----------------------------------------------------------------------------
    def refresh_announcement(self, store: FolderStore) -> bool:
        """Replace our announcement once it is older than the interval (a new one, then the old
        one deleted); True if it was replaced."""
        current = self.record.directory.devices.get(self.me)
        if current is None or self._clock() - current.last_seen < announce_interval():
            return False  # (the join announces a device that has no announcement)
        self._reannounce(store)
        return True

    def _reannounce(self, store: FolderStore) -> None:
        """Append our announcement as the record says now, delete the one it replaces, and read
        it back (so the directory knows its UID for the next replacement)."""
        device = self.record.device
        assert device is not None
        current = self.record.directory.devices.get(self.me)
        me = Device(
            device.device_id, device.name, self.record.account, device.joined,
            self.trust.device_keys(),
        )  # fmt: skip
        store.append(
            layout.ANNOUNCE_FOLDER, announcement(me, now=self._clock(), random=self._random)
        )
        if current is not None:
            store.delete_messages(layout.ANNOUNCE_FOLDER, [current.uid])
        refresh(store, self.record.directory)

    # --- the API ------------------------------------------------------------------------------
    def rename(self, store: FolderStore, device_id: str, name: str) -> None:
        chain = self.trust.device_log()
        if not chain.is_member(self.me):
            raise HostError(ErrorCode.NOT_PAIRED, "only a paired device can rename devices")
        if not chain.is_member(device_id):
            raise HostError(
                ErrorCode.INVALID_PARAMS, f"params.device_id: {device_id} is not paired"
            )
        entry = devicelog.rename(
            chain, self.me, self.trust.device_keys(), device_id, name, self._clock()
        )
        self.trust.record_entry(entry)
        self.trust.publish_pending(store)
        if device_id == self.me and self.record.device is not None:
            device = self.record.device
            self.record.device = type(device)(device.device_id, name, device.joined)
            self._save()
            self._reannounce(store)  # the new name at once: the interval does not apply

    def remove(self, store: FolderStore, device_id: str) -> str | None:
        """Remove a device (this one included: leaving) and, unless we are the one leaving, roll
        the account key; returns the new key's fingerprint."""
        chain = self.trust.device_log()
        if not chain.is_member(self.me):
            raise HostError(ErrorCode.NOT_PAIRED, "only a paired device can remove devices")
        if not chain.is_member(device_id):
            raise HostError(
                ErrorCode.INVALID_PARAMS, f"params.device_id: {device_id} is not paired"
            )
        if len(chain.members()) == 1:
            raise HostError(
                ErrorCode.INVALID_REQUEST,
                "the last device cannot be removed; remove the account instead",
            )
        if device_id == self.me:
            # Leaving: we would know a new key, so we name none; a remaining member rolls (tick).
            entry = devicelog.remove(
                chain, self.me, self.trust.device_keys(), device_id, self._clock()
            )
            self.trust.record_entry(entry)
            self.trust.publish_pending(store)
            return None
        self.record.removal_pending = device_id  # the intent first: a crash is finished by tick
        self._save()
        return self._complete_removal(store)

    def _complete_removal(self, store: FolderStore) -> str | None:
        """One entry removes and rolls (the server cannot deliver the one and withhold the
        other), then the device's folders go, then the new key goes to every member. Each step
        is saved before the next, and a repeat does only what is missing."""
        device_id = self.record.removal_pending
        if device_id is None:
            return None
        chain = self.trust.device_log()
        if chain.is_member(self.me) and chain.is_member(device_id):
            entry = devicelog.remove(
                chain, self.me, self.trust.device_keys(), device_id, self._clock(), self._next_key()
            )
            self.trust.record_entry(entry)
            self.trust.publish_pending(store)
        if device_id in chain.removed:
            self._drop_device_folders(store, device_id)
        self.record.removal_pending = None
        self._save()
        rolled = self.record.roll_pending
        self._finish_roll(store)
        return rolled

    def _next_key(self) -> str:
        """The key a roll of ours names: the one a crash left pending, else a new one (saved
        in the keyring and the record before any entry names it)."""
        from native_host.adapters.pgp import generate_account_key

        pending = self.record.roll_pending
        if pending is not None and self.secrets.get(next_key_name(self.record.account)):
            return pending
        key = generate_account_key(self.record.account, self._clock())
        self.secrets.set(next_key_name(self.record.account), key.secret_armored)
        self.record.roll_pending = key.fingerprint
        self._save()
        return key.fingerprint

    def _roll(self, store: FolderStore) -> str:
        """Record a new account key in a `roll` and hand it to every other member."""
        fingerprint = self._next_key()
        chain = self.trust.device_log()
        entry = devicelog.roll(chain, self.me, self.trust.device_keys(), fingerprint, self._clock())
        self.trust.record_entry(entry)
        self.trust.publish_pending(store)
        self._finish_roll(store)
        return fingerprint

    def _finish_roll(self, store: FolderStore) -> None:
        fingerprint = self.record.roll_pending
        armored = self.secrets.get(next_key_name(self.record.account))
        chain = self.trust.device_log()
        if fingerprint is None or armored is None or chain.account_key != fingerprint:
            # Our roll lost a race (another one won the same place in the log): the winner's
            # key will come; ours is never used.
            self.record.roll_pending = None
            self._save()
            return
        # Sent once, unacknowledged: a member that does not get it asks (answer_key_request).
        for device_id, member in chain.members().items():
            if device_id == self.me:
                continue
            raw = self._key_message(device_id, member.keys, armored, fingerprint)
            try:
                store.append(layout.inbox_folder(device_id), raw)
            except FolderMissing:
                log.warning("roll: the inbox of %s is missing", device_id)
        self._install(armored, fingerprint)
        self.record.roll_pending = None
        self._save()

    def _key_message(
        self, device_id: str, keys: DevicePublic, armored: str, fingerprint: str
    ) -> bytes:
        """The account key for one member: encrypted to its device key, signed, addressed."""
        box = encrypt_to(
            keys,
            canonical({"account_key": armored, "fingerprint": fingerprint}),
            _associated(self.me, device_id),
            self._random,
        )
        return envelope.build(
            MessageType.ACCOUNT_KEY,
            self.me,
            {"box": box},
            account=self.record.account,
            now=self._clock(),
            random=self._random,
            keys=self.trust.device_keys(),
            to=device_id,
            head=self.trust.log_head(),
        )

    def _install(self, armored: str, fingerprint: str) -> None:
        """Make `armored` the account key; the previous one is kept (old mail stays readable)."""
        from native_host.adapters.pgp import BadAccountKey, load_secret

        name = account_key_name(self.record.account)
        current = self.secrets.get(name)
        if current is not None:
            try:
                current_fpr = load_secret(current).fingerprint
            except BadAccountKey:
                current_fpr = None
            if current_fpr != fingerprint:
                old = self.old_keys()
                if current not in old:
                    old.append(current)
                self.secrets.set(
                    old_keys_name(self.record.account), json.dumps(old[-MAX_OLD_KEYS:])
                )
        self.secrets.set(name, armored)
        self.secrets.delete(next_key_name(self.record.account))
        self._key_ok_for = fingerprint
        request = self.record.key_request
        if request is not None and request.get("fingerprint") == fingerprint:
            self.record.key_request = None
            self._save()
        self._emit(
            "account.key_rolled", {"account": self.record.account, "fingerprint": fingerprint}
        )

    def old_keys(self) -> list[str]:
        stored = self.secrets.get(old_keys_name(self.record.account))
        try:
            value = json.loads(stored) if stored else []
        except ValueError:
            value = []
        return [k for k in value if isinstance(k, str)] if isinstance(value, list) else []

    def old_key_count(self) -> int:
        return len(self.old_keys())

    def _drop_device_folders(self, store: FolderStore, device_id: str) -> None:
        """Its inbox goes (nothing is sent there any more) and so do its announcements."""
        with contextlib.suppress(FolderMissing):
            store.delete_folder(layout.inbox_folder(device_id))
        announced = self.record.directory.devices.get(device_id)
        if announced is not None:
            store.delete_messages(layout.ANNOUNCE_FOLDER, [announced.uid])

    # --- incoming -----------------------------------------------------------------------------
    def receive_key(self, message: SmaMessage) -> None:
        """A rolled account key from a member; installed once the log names it."""
        from native_host.adapters.pgp import BadAccountKey, load_secret

        chain = self.trust.device_log()
        member = chain.members().get(message.sender)
        if member is None:
            raise RemoteProtocolError(f"account key from {message.sender}, not a member")
        if message.to != self.me:
            raise RemoteProtocolError("addressed to another device (a replay?)")
        if not verify_document(message.document, member.keys):
            raise RemoteProtocolError("account key message signature does not verify")
        plain = decrypt_from(
            self.trust.device_keys(), message.data.get("box"), _associated(message.sender, self.me)
        )
        try:
            payload = decode_object(plain)
            key = load_secret(str(payload["account_key"]), address=self.record.account)
        except (InvalidJson, KeyError, BadAccountKey) as exc:
            raise RemoteProtocolError(f"account key message: {exc}") from None
        if key.fingerprint == chain.account_key:
            if self._held_fingerprint() != key.fingerprint:  # (an answer after the roll's own)
                self._install(key.secret_armored, key.fingerprint)
            return
        if key.fingerprint in _named_keys(chain):
            log.warning("account key message: %s is an earlier key; ignored", key.fingerprint)
            return  # a late duplicate or a replay: it must not displace a key still to come
        if self.record.roll_pending not in (None, key.fingerprint):
            # The next-key slot holds our own roll's key: if theirs wins, we ask for it then.
            log.warning("account key message during our own roll; ignored")
            return
        # The roll entry has not reached us yet: keep it until it does.
        self.secrets.set(next_key_name(self.record.account), key.secret_armored)
        self.record.key_waiting = key.fingerprint
        self._save()

    # --- every sync ---------------------------------------------------------------------------
    def tick(self, store: FolderStore, chain: devicelog.DeviceLog) -> None:
        if self.record.removal_pending is not None:
            self._complete_removal(store)
        if self.record.roll_pending is not None:
            self._finish_roll(store)
        waiting = self.record.key_waiting
        if waiting is not None and chain.account_key == waiting:
            armored = self.secrets.get(next_key_name(self.record.account))
            if armored is not None:
                self._install(armored, waiting)
            self.record.key_waiting = None
            self._save()
        self._ask_for_key(store, chain)
        self._finish_removal(store, chain)

    # --- a rolled key that never came -----------------------------------------------------------
    def _held_fingerprint(self) -> str | None:
        """The fingerprint of the account key in the keyring (parsed once per key)."""
        from native_host.adapters.pgp import BadAccountKey, load_secret

        armored = self.secrets.get(account_key_name(self.record.account))
        if armored is None:
            return None
        if self._parsed is None or self._parsed[0] != armored:
            try:
                fingerprint: str | None = load_secret(armored).fingerprint
            except BadAccountKey:
                fingerprint = None
            self._parsed = (armored, fingerprint)
        return self._parsed[1]

    def _ask_for_key(self, store: FolderStore, chain: devicelog.DeviceLog) -> None:
        """The verified log names an account key we do not hold (its roll message was dropped,
        or our keyring lost it): ask a member for it, with backoff (core/keyrequest.py)."""
        wanted = chain.account_key
        if (
            wanted is None
            or wanted == self._key_ok_for
            or not chain.is_member(self.me)
            or self.record.roll_pending is not None  # our own roll: it installs itself
        ):
            if wanted is not None and wanted == self._key_ok_for and self.record.key_request:
                self.record.key_request = None
                self._save()
            return
        now = self._clock()
        current = self._key_request()
        if (
            current is not None
            and current.fingerprint == wanted
            and not keyrequest.due(current, now)
        ):
            return  # waiting: the keyring is looked at again when the next request is due
        if self._held_fingerprint() == wanted:
            self._key_ok_for = wanted
            if self.record.key_request is not None:
                self.record.key_request = None
                self._save()
            return
        state = keyrequest.noticed(current, wanted, now)
        if state != current:
            log.info("the log names account key %s, which this device lacks", wanted)
            self.record.key_request = state.to_json()
            self._save()
        if not keyrequest.due(state, now):
            return
        to = keyrequest.target(chain, self.me, state.attempts)
        if to is None:
            return  # no other member holds it: nothing to ask
        previous = (state.sent_to, state.sent_uid)
        sent = keyrequest.after_send(state, now, to)
        self.record.key_request = sent.to_json()
        self._save()  # before the append: a crash delays the next request, never hastens it
        raw = envelope.build(
            MessageType.KEY_REQUEST,
            self.me,
            keyrequest.request_data(wanted),
            account=self.record.account,
            now=now,
            random=self._random,
            keys=self.trust.device_keys(),
            to=to,
            head=self.trust.log_head(),
        )
        try:
            uid = store.append(layout.inbox_folder(to), raw)
        except FolderMissing:
            log.warning("key request: the inbox of %s is missing", to)
            return
        log.warning("asked %s for account key %s (request %d)", to, wanted, sent.attempts)
        self.record.key_request = {**sent.to_json(), "sent_uid": uid}
        self._save()
        prev_to, prev_uid = previous
        if prev_to is not None and prev_uid is not None:
            # Our earlier request, unanswered: the new one replaces it.
            with contextlib.suppress(FolderMissing):
                store.delete_messages(layout.inbox_folder(prev_to), [prev_uid])

    def _key_request(self) -> keyrequest.KeyRequest | None:
        data = self.record.key_request
        if data is None:
            return None
        try:
            return keyrequest.KeyRequest.from_json(data)
        except (KeyError, TypeError, ValueError):
            self.record.key_request = None  # (our own file; start over rather than stop)
            return None

    def next_due(self) -> float | None:
        """When the sync loop must run again for a key request."""
        state = self._key_request()
        return None if state is None else state.next_at

    def answer_key_request(self, store: FolderStore, message: SmaMessage) -> None:
        """A member asks for the current account key: send it as a roll would (rate-limited per
        requester). Anything else raises RemoteProtocolError: reported, and no key goes out."""
        chain = self.trust.device_log()
        now = self._clock()
        wanted = keyrequest.judge(chain, self.me, message, self.record.key_answers, now)
        armored = self.secrets.get(account_key_name(self.record.account))
        if armored is None or self._held_fingerprint() != wanted:
            log.warning("key request from %s: this device lacks %s too", message.sender, wanted)
            return
        self.record.key_answers = keyrequest.answered_after(
            chain, self.record.key_answers, message.sender, now
        )
        self._save()  # before the send: a crash loses this answer, and the requester asks again
        member = chain.members()[message.sender]
        raw = self._key_message(message.sender, member.keys, armored, wanted)
        try:
            store.append(layout.inbox_folder(message.sender), raw)
        except FolderMissing:
            log.warning("key request: the inbox of %s is missing", message.sender)
            return
        log.warning("sent account key %s to %s on request", wanted, message.sender)

    def _finish_removal(self, store: FolderStore, chain: devicelog.DeviceLog) -> None:
        """A device that is out may still hold the current account key: it left (and could not
        roll), its removal and another raced, or two devices removed each other. Then a member
        rolls: the one with the smallest id at once, every other one once ROLL_GRACE has passed
        with the roll still owed (the server may be withholding the first one's; two rolls are
        an ordinary race that the log settles)."""
        if not chain.roll_owed or not chain.is_member(self.me):
            self.record.roll_owed_since = None
            return
        if self.record.roll_pending is not None:
            return
        now = self._clock()
        if self.record.roll_owed_since is None:
            self.record.roll_owed_since = now
            self._save()
        first = min(chain.members())
        if first != self.me and now - self.record.roll_owed_since < ROLL_GRACE:
            return
        for gone in sorted(chain.removed & set(self.record.directory.devices)):
            self._drop_device_folders(store, gone)
        self._roll(store)  # (it names the devices that are out but in the head's state)
        self.record.roll_owed_since = None
        self._save()

    def was_removed(self, chain: devicelog.DeviceLog) -> str | None:
        """Who removed this device, if the log says it is out."""
        if self.record.genesis is None:
            return None
        removal = chain.removal_of(self.me)
        return None if removal is None else str(removal["by"])

    def removed(self, by: str) -> None:
        """Forget the account's secrets and the SMA state; only a new pairing brings us back."""
        account = self.record.account
        device_id = self.me
        # Public: which keys the add-on must take out of Thunderbird (they are forgotten here).
        account_keys = sorted(_named_keys(self.trust.device_log()))
        self.trust.forget_secrets()
        record = self.record
        record.device = None
        record.genesis = None
        record.applied_removals = []
        record.pairings = {}
        record.unpublished = []
        record.directory = Directory()
        record.announce_status = None
        record.inbox = FolderCursor()
        record.roll_pending = None
        record.roll_owed_since = None
        record.removal_pending = None
        record.key_waiting = None
        record.key_request = None
        record.key_answers = {}
        self._key_ok_for = None
        self._parsed = None
        self._save()
        self._emit(
            "device.removed",
            {"account": account, "device_id": device_id, "by": by, "account_keys": account_keys},
        )

    def tell_removals(self, chain: devicelog.DeviceLog) -> None:
        """Once per removal of another device after this one joined (`record.alerts` keeps
        which were told, so a restart does not repeat it): the removed device still knows the
        mailbox password, which no key roll changes; the user must, if it was lost or stolen."""
        mine = chain.members().get(self.me)
        if mine is None:
            return
        told = set(self.record.alerts)
        for device_id in sorted(chain.removed):  # (a removal that counts, on the chain or not)
            entry = chain.removal_of(device_id)
            if entry is None or int(entry.get("seq", 0)) <= mine.seq:
                continue
            mark = f"removed:{device_id}"
            if device_id == self.me or mark in told:
                continue
            self.record.alerts.append(mark)
            told.add(mark)
            self._save()  # before the event: a crash loses the advice rather than repeat it
            by = str(entry.get("by"))
            self._emit(
                "devices.member_removed",
                {
                    "account": self.record.account,
                    "device_id": device_id,
                    "name": str(entry.get("name") or device_id),
                    "by": by,
                    "left": by == device_id,
                    "by_this_device": by == self.me,
                },
            )


def _named_keys(chain: devicelog.DeviceLog) -> set[str]:
    """Every account key the verified log has named (genesis and rolls)."""
    return {str(e["account_key"]) for e in chain.entries() if e.get("account_key")}
