"""Who belongs to the account, and how a new device gets in: device keys, the device log, the
account key, and pairing, run against the store and the keyring.

Order of every step: apply the input, persist the new state, and only then send or delete, so a
crash repeats harmless work and never loses or half-installs anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from native_host.core import devicelog, envelope, layout
from native_host.core import pairing as pm
from native_host.core.crypto import DeviceKeys, DevicePublic, verify_document
from native_host.core.envelope import LogHead, MessageType, SmaMessage
from native_host.errors import ErrorCode, HostError, RemoteProtocolError
from native_host.ports import Clock, FolderMissing, FolderStore, RandomBytes, SecretStore
from native_host.service.accounts import (
    AccountRecord,
    account_key_name,
    account_secret_names,
    device_key_name,
)

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], None]
PAIRING_TYPES = {
    MessageType.PAIR_REQUEST,
    MessageType.PAIR_ACCEPT,
    MessageType.PAIR_CONFIRM,
    MessageType.PAIR_KEY,
    MessageType.PAIR_REJECT,
}


def _load(data: dict[str, Any] | None) -> pm.Pairing | None:
    """A stored pairing, or None for one saved by 0.1.0 (no migration: it is left out)."""
    if data is None:
        return None
    try:
        return pm.Pairing.from_json(data)
    except (KeyError, ValueError, TypeError, RemoteProtocolError):
        return None


def _hash_or_none(entry: Any) -> str | None:
    """Entries from the server may be garbage (the log reports them); they just do not match."""
    try:
        return devicelog.entry_hash(entry)
    except (TypeError, ValueError):
        return None


_TERMINAL_STATES = {s.value for s in pm.TERMINAL}
# Only a user action opens a pairing ("Add a device", or typing a code), and a new one ends the
# earlier one of the same role: injected requests open nothing, so they cannot lock pairing out.
# Only the newest finished ones are kept for pairing.list.
MAX_FINISHED_PAIRINGS = 50
# A member's log head that this device cannot find for this long (its entries are appended before
# the message that names the head, and read first) means the server is hiding entries from us.
WITHHELD_AFTER = 300.0
MAX_WAITING_LOGGED = 32  # waiting entries named on stderr per sync (the rest are counted)
# Refused log entries (junk, forgeries) are one alert with their count at most this often: a
# server that keeps injecting must not flood the user, and none goes unreported.
REFUSED_ALERT_EVERY = 60.0
UNSOLICITED_ALERT = "pairing:unsolicited"  # in record.alerts once the user was told
# A pairing message whose recipient's inbox is missing (the server deleted it; the owner
# recreates it at its next sync) is tried again this often, until its pairing expires.
OUTBOX_RETRY = 2.0


class Trust:
    def __init__(
        self,
        record: AccountRecord,
        secrets: SecretStore,
        emit: Emit,
        save: Callable[[], None],
        *,
        clock: Clock,
        random: RandomBytes,
    ) -> None:
        self.record = record
        self._save = save  # persists the record (the runtime's account file)
        self._log: devicelog.DeviceLog | None = None  # built from the record on first use
        self._log_for: tuple[str | None, str | None] = (None, None)  # (device, genesis) it is for
        self._refused_reported = 0  # the log's refusal count at the last alert
        self._refused_logged = 0  # ... and at the last stderr lines
        self._waiting_logged: set[str] = set()  # waiting entries already named on stderr
        self._refused_alerted_at = -REFUSED_ALERT_EVERY  # (the first one goes out at once)
        self._refused_last = ""  # the reason of the latest refusal, for the next alert
        record.directory.on_log = self._take_entry  # (device_log sets it again on a new one)
        self.secrets = secrets
        self._device_keys: DeviceKeys | None = None
        self._emit = emit
        self._clock = clock
        self._random = random

    # --- keys ---------------------------------------------------------------------------------
    def device_keys(self) -> DeviceKeys:
        """This device's key pair, made on first use and kept only in the keyring."""
        if self._device_keys is not None:
            return self._device_keys  # read once: every sync cycle signs or opens something
        name = device_key_name(self.record.account)
        stored = self.secrets.get(name)
        if stored is not None:
            self._device_keys = DeviceKeys.from_secret(stored)
            return self._device_keys
        keys = DeviceKeys.generate(self._random)
        self.secrets.set(name, keys.to_secret())
        self._device_keys = keys
        return keys

    def forget_secrets(self) -> None:
        """Delete this device's key pair and every account key (current, next, earlier ones)
        from the keyring."""
        self._device_keys = None
        for name in account_secret_names(self.record.account):
            self.secrets.delete(name)

    def account_key_armored(self) -> str | None:
        return self.secrets.get(account_key_name(self.record.account))

    @property
    def me(self) -> str:
        assert self.record.device is not None
        return self.record.device.device_id

    # --- the device log -----------------------------------------------------------------------
    def device_log(self) -> devicelog.DeviceLog:
        """The device log, fed as entries arrive (the directory hands each one over as it reads
        the folder): only what verifies is kept, and the record saves exactly that."""
        device = self.record.device.device_id if self.record.device is not None else None
        if self._log is None or self._log_for != (device, self.record.genesis):
            held = self._log
            chain = devicelog.DeviceLog(
                self.record.genesis, me=device, applied=self.record.applied_removals
            )
            chain.receive_all(self.record.directory.log_entries)
            if held is not None:  # (pinned now: what waited for the pin gets its chance)
                chain.receive_all(held.documents())
            self._log, self._log_for = chain, (device, self.record.genesis)
            self._refused_reported = self._refused_logged = chain.refused_total
        directory = self.record.directory
        if directory.on_log is None:  # (a directory made afresh: a reset, a removal)
            directory.on_log = self._take_entry
        return self._log

    def log_head(self) -> LogHead | None:
        """Our head, for every message we send another device (None before we have a log)."""
        chain = self.device_log()
        seq, head = chain.head_seq, chain.head_hash
        return None if seq is None or head is None else LogHead(seq, head)

    def _take_entry(self, entry: Any) -> bool:
        """One entry read from the announcement folder: the log decides whether it is kept
        (the answer: whether it holds it, kept or waiting for its parent)."""
        chain = self.device_log()
        before = chain.changes
        chain.receive(entry)
        if chain.changes != before:  # (junk is dropped: nothing to save)
            self.record.directory.log_entries = chain.documents()
        try:
            return chain.holds(devicelog.entry_hash(entry))
        except (TypeError, ValueError):  # (garbage does not even hash)
            return False

    def founded_here(self) -> bool:
        """Whether this device made the pinned genesis."""
        genesis = self.device_log().admission_of(self.me)
        return genesis is not None and genesis["op"] == devicelog.Op.GENESIS.value

    def found_log(self, store: FolderStore) -> bool:
        """First device: make the account key and the genesis entry (once)."""
        if self.record.genesis is not None:
            return False
        from native_host.adapters.pgp import generate_account_key

        assert self.record.device is not None
        keys = self.device_keys()
        account_key = generate_account_key(self.record.account, self._clock())
        self.secrets.set(account_key_name(self.record.account), account_key.secret_armored)
        entry = devicelog.genesis(
            self.me, keys, self.record.device.name, account_key.fingerprint, self._clock()
        )
        self.record.genesis = devicelog.entry_hash(entry)
        self.record_entry(entry)
        self.publish_pending(store)
        return True

    def record_entry(self, entry: dict[str, Any]) -> None:
        """Know an entry of ours at once and queue it for the server, saved before it is sent:
        a crash between the two leaves it queued, and the next sync sends it (a duplicate on
        the server is harmless: the log keys entries by hash)."""
        chain = self.device_log()
        chain.receive(entry)
        self.record.directory.log_entries = chain.documents()
        self.record.unpublished.append(entry)
        self._save()

    def publish_pending(self, store: FolderStore) -> None:
        while self.record.unpublished:
            raw = envelope.build(
                MessageType.LOG,
                self.me,
                self.record.unpublished[0],
                account=self.record.account,
                now=self._clock(),
                random=self._random,
                keys=self.device_keys(),
            )
            store.append(layout.ANNOUNCE_FOLDER, raw)
            self.record.unpublished.pop(0)
            self._save()

    def check_log(self) -> devicelog.DeviceLog:
        """Resolve the log (every sync) and say what it found: each attack once, as a security
        alert; a lost fork (an ordinary race) only in the log; refused entries (junk, forgeries)
        as one alert with their count, never one per entry."""
        chain = self.device_log()
        chain.report_overdue(self._clock(), WITHHELD_AFTER)
        self.record.directory.log_entries = chain.documents()
        self._log_waiting(chain)
        uids = self.record.directory.log_uids
        if uids is not None and len(uids) > len(self.record.directory.log_entries) + 64:
            # (entries dropped from the waiting pool: their places are of no use any more)
            self.record.directory.log_uids = {h: u for h, u in uids.items() if chain.holds(h)}
        # Acted on from now: a later entry cannot undo them. Not a removal of this device: it
        # is acted on by wiping (which forgets this record), and until then it may still be
        # voided by a hidden removal of its signer (Trust.removal_in_doubt).
        of_me = chain.removal_of(self.me) if self.record.device is not None else None
        counting = [
            h
            for h in chain.counting_removals()
            if of_me is None or h != devicelog.entry_hash(of_me)
        ]
        if not set(counting) <= chain.applied:
            chain.apply(counting)
            self.record.applied_removals = sorted(chain.applied)
            self._save()
        for problem in chain.problems:
            if problem.kind in devicelog.REFUSED:
                continue
            key = f"{problem.kind}:{problem.entry_hash}"
            if key in self.record.alerts:
                continue
            self.record.alerts.append(key)
            self._save()
            if problem.kind is devicelog.ProblemKind.FORK:
                log.info("device log: %s", problem.reason)
                continue
            log.warning("device log: %s %s", problem.kind.value, problem.entry_hash)
            self._alert(problem.kind.value, problem.reason)
        refused = chain.refused_total - self._refused_logged
        if refused > 0:  # each on stderr once (the latest MAX_REJECTIONS_KEPT of a sync)
            self._refused_logged = chain.refused_total
            kept = [p for p in chain.problems if p.kind in devicelog.REFUSED][-refused:]
            for problem in kept:
                log.warning("device log: refused %s: %s", problem.entry_hash, problem.reason)
            if refused > len(kept):
                log.warning("device log: %d more refused", refused - len(kept))
            self._refused_last = kept[-1].reason if kept else self._refused_last
        pending = chain.refused_total - self._refused_reported
        now = self._clock()
        if pending > 0 and now >= self._refused_alerted_at + REFUSED_ALERT_EVERY:
            self._refused_reported, self._refused_alerted_at = chain.refused_total, now
            self._alert(
                "refused",
                f"{pending} device-log entr{'y' if pending == 1 else 'ies'} from the server did not"
                f" verify and {'was' if pending == 1 else 'were'} dropped (forged, damaged or from"
                f" another version); the last: {self._refused_last}",
                count=pending,
            )
        return chain

    def _log_waiting(self, chain: devicelog.DeviceLog) -> None:
        """Say on stderr, once each (at most MAX_WAITING_LOGGED a sync), which entries wait
        for a parent: not yet a refusal (the parent may be on its way), but what an entry that
        is never judged is on record; after WITHHELD_AFTER it is reported as refused."""
        pending = chain.pending
        new = [h for h in pending if h not in self._waiting_logged]
        for h in new[:MAX_WAITING_LOGGED]:
            log.warning("device log: waiting %s for an entry not seen yet", h)
        if len(new) > MAX_WAITING_LOGGED:
            log.warning("device log: %d more waiting", len(new) - MAX_WAITING_LOGGED)
        self._waiting_logged = set(pending) & (self._waiting_logged | set(new))

    def _alert(self, finding: str, message: str, count: int | None = None) -> None:
        data: dict[str, Any] = {
            "account": self.record.account,
            "kind": "device_log",
            "finding": finding,
            "message": message[:500],
        }
        if count is not None:
            data["count"] = count
        self._emit("security.alert", data)

    def note_head(self, message: SmaMessage) -> None:
        """A verified message from a member says where its log stands: remember a head we do
        not hold (check_withholding decides when that means the server hides entries)."""
        head = message.head
        chain = self.device_log()
        if head is None or not chain.is_member(message.sender):
            return
        unknown = self.record.unknown_heads
        if chain.contains(head.hash):
            if unknown.pop(message.sender, None) is not None:
                self._save()
            return
        current = unknown.get(message.sender)
        if current is None or current.get("hash") != head.hash:
            since = self._clock() if current is None else float(current["since"])
            unknown[message.sender] = {"hash": head.hash, "seq": head.seq, "since": since}
            self._save()

    def removal_in_doubt(self, chain: devicelog.DeviceLog) -> bool:
        """Whether this device must not act yet on its removal by another device.

        A member's signed head that this device cannot find means a branch the server hides,
        and it may hold a removal of the remover, which voids ours (a removed device signs "remove
        the phone" beside its own removal while the provider hides that removal: tests/adversary
        seed 6). So while such a head is younger than WITHHELD_AFTER, the device waits (it keeps
        reading, sends nothing); then the withheld alert is raised and it acts. With no unknown
        head, as in every honest removal, it acts at once."""
        now = self._clock()
        return any(
            not chain.contains(str(info["hash"])) and now - float(info["since"]) < WITHHELD_AFTER
            for info in self.record.unknown_heads.values()
        )

    def check_withholding(self, chain: devicelog.DeviceLog) -> None:
        """Alert once per member whose head stayed out of reach for WITHHELD_AFTER seconds, and
        read the announcement folder from the start once (an entry may have been missed)."""
        now = self._clock()
        for device, info in list(self.record.unknown_heads.items()):
            if chain.contains(str(info["hash"])) or not chain.is_member(device):
                del self.record.unknown_heads[device]
                self._save()
                continue
            if info.get("alerted") or now - float(info["since"]) < WITHHELD_AFTER:
                continue
            self.record.unknown_heads[device] = {**info, "alerted": True}
            self.record.directory.watermark = None  # (entries are kept by hash: a re-read is free)
            self.record.announce_status = None
            self._save()
            name = chain.members()[device].name
            self._alert(
                "withheld",
                f"your provider may be hiding messages from your other devices: {name!r} has"
                f" device-log entry {info['seq']}, which this device has not received after"
                f" {int(WITHHELD_AFTER // 60)} minutes",
            )

    def rebase_lost(self, store: FolderStore, chain: devicelog.DeviceLog) -> None:
        """Our adds and renames that lost a fork to another device's entry (an ordinary race):
        signed again on the head, so that what the user did still happens."""
        if not chain.is_member(self.me):
            return
        for lost in chain.lost_by(self.me):
            members = chain.members()
            device_id = str(lost["device_id"])
            if lost["op"] == devicelog.Op.ADD.value and device_id not in members:
                keys = DevicePublic.from_json(lost["keys"])
                entry = devicelog.admit(
                    chain, self.me, self.device_keys(), device_id, keys, lost["name"], self._clock()
                )
            elif lost["op"] == devicelog.Op.RENAME.value and device_id in members:
                entry = devicelog.rename(
                    chain, self.me, self.device_keys(), device_id, lost["name"], self._clock()
                )
            else:
                continue
            log.info("device log: %s of %s signed again on the new head", lost["op"], device_id)
            self.record_entry(entry)
        self.publish_pending(store)

    def pairing_active(self) -> bool:
        return any(p.get("state") not in _TERMINAL_STATES for p in self.record.pairings.values())

    def _prune(self) -> None:
        finished = [p for p in self.record.pairings.values() if p.get("state") in _TERMINAL_STATES]
        finished.sort(key=lambda p: p.get("expires_at", 0))
        for old in finished[: max(0, len(finished) - MAX_FINISHED_PAIRINGS)]:
            self.record.pairings.pop(old["pairing_id"], None)

    def is_paired(self) -> bool:
        return self.record.genesis is not None and self.device_log().is_member(self.me)

    # --- pairing: the API side ----------------------------------------------------------------
    def pairing(self, pairing_id: str) -> pm.Pairing:
        found = _load(self.record.pairings.get(pairing_id))
        if found is None:
            raise HostError(
                ErrorCode.PAIRING_NOT_FOUND, f"no pairing {pairing_id!r} on this device"
            )
        return found

    def pairings(self) -> list[pm.Pairing]:
        """Every pairing this device keeps (records from 0.1.0 are left out: no migration)."""
        return [p for p in map(_load, self.record.pairings.values()) if p is not None]

    def invite(self, store: FolderStore) -> pm.Pairing:
        """ "Add a device": a new one-time code on this (paired) device; an earlier invitation
        that is still open ends, so at most one is open."""
        if not self.is_paired() or self.account_key_armored() is None:
            raise HostError(ErrorCode.INVALID_REQUEST, "only a paired device can add a device")
        self._end_open(store, pm.Role.INVITER, "replaced by a new invitation")
        assert self.record.device is not None
        outcome = pm.invite(
            me=self.me,
            name=self.record.device.name,
            my_keys=self.device_keys().public,
            now=int(self._clock()),
            random=self._random,
        )
        self._commit(store, outcome)
        return outcome.pairing

    def join(self, store: FolderStore, code: str) -> str:
        """On the new device, with the code the user typed: ask the device it names."""
        if self.is_paired():
            raise HostError(ErrorCode.INVALID_REQUEST, "this device is already paired")
        assert self.record.device is not None
        try:
            nameplate, _ = pm.parse_code(code)
        except pm.BadCode as exc:
            raise HostError(ErrorCode.INVALID_PARAMS, f"params.code: {exc}") from None
        targets = [
            d
            for d in self.record.directory.devices
            if d != self.me and pm.nameplate_of(d) == nameplate
        ]
        if not targets:
            raise HostError(
                ErrorCode.INVALID_PARAMS,
                f"params.code: no device of this account has the number {nameplate}: check the "
                "code, and that the other device is online",
            )
        self._end_open(store, pm.Role.JOINER, "replaced by a new code")
        outcome = pm.join(
            me=self.me,
            my_keys=self.device_keys().public,
            name=self.record.device.name,
            code=code,
            now=int(self._clock()),
            random=self._random,
        )
        self._commit(store, outcome, targets)
        return outcome.pairing.pairing_id

    def _end_open(self, store: FolderStore, role: pm.Role, reason: str) -> None:
        for p in self.pairings():
            if p.role is role and p.state not in pm.TERMINAL:
                self._commit(store, pm.step(p, pm.Reject(reason), random=self._random))

    def cancel(self, store: FolderStore, pairing_id: str) -> pm.Pairing:
        current = self.pairing(pairing_id)
        if current.state is pm.State.EXPIRED or (
            current.state not in pm.TERMINAL and self._clock() >= current.expires_at
        ):
            self._commit(store, pm.step(current, pm.Tick(int(self._clock())), random=self._random))
            raise HostError(
                ErrorCode.PAIRING_EXPIRED, "the pairing expired (ten minutes); start a new one"
            )
        try:
            outcome = pm.step(current, pm.Reject(), random=self._random)
        except pm.IllegalInput as exc:
            raise HostError(ErrorCode.PAIRING_STATE, str(exc)) from None
        self._commit(store, outcome)
        return self.pairing(pairing_id)

    def _secret_for(self, p: pm.Pairing) -> dict[str, Any]:
        """What the responder sends: the account key, and the log with the new device admitted."""
        armored = self.account_key_armored()
        if armored is None or p.peer is None or p.peer_keys is None:
            raise HostError(ErrorCode.PAIRING_STATE, "this device holds no account key to share")
        chain = self.device_log()
        entry = devicelog.admit(
            chain,
            self.me,
            self.device_keys(),
            p.peer,
            p.peer_keys,
            p.peer_name or "device",
            self._clock(),
        )
        # Every entry kept, not only the chain: removals that count off the chain too.
        return {
            "account_key": armored,
            "genesis": self.record.genesis,
            "log": [*chain.documents()[: devicelog.MAX_ENTRIES], entry],
        }

    # --- pairing: messages from the inbox -----------------------------------------------------
    def receive(self, store: FolderStore, message: SmaMessage) -> None:
        """One verified-to-parse message from this device's inbox; raises RemoteProtocolError to
        have it reported and dropped."""
        if message.type not in PAIRING_TYPES:
            raise RemoteProtocolError(f"no handler for {message.type} in an inbox")
        if message.to != self.me:
            raise RemoteProtocolError("addressed to another device (a replay?)")
        incoming = pm.Received(message.type.value, message.sender, message.data)
        if message.type is MessageType.PAIR_REQUEST:
            self._on_request(store, message, incoming)
            return
        session = str(message.data.get("pairing_id"))
        current = next((p for p in self.pairings() if p.session == session), None)
        if current is None:
            raise RemoteProtocolError("no such pairing here")
        signer = current.peer_keys
        if (
            message.type is MessageType.PAIR_ACCEPT
            and current.role is pm.Role.JOINER
            and signer is None
        ):
            # Self-signed: the key confirmation binds these keys to the code.
            signer = DevicePublic.from_json(message.data.get("keys"))
        if signer is None or not verify_document(message.document, signer):
            raise RemoteProtocolError(f"{message.type} signature does not verify")
        self._commit(store, pm.step(current, incoming, random=self._random))

    def _on_request(self, store: FolderStore, message: SmaMessage, incoming: pm.Received) -> None:
        """Only an open invitation answers a request: anything else is unsolicited, counted and
        reported once (a possible attack), and never shown to the user."""
        keys = DevicePublic.from_json(message.data.get("keys"))
        if not verify_document(message.document, keys):
            raise RemoteProtocolError("pairing request signature does not verify")
        session = str(message.data["pairing_id"])
        if any(p.session == session and p.peer == message.sender for p in self.pairings()):
            return  # a replay of the request an invitation answered: already answered once
        invitation = next((p for p in self.pairings() if p.state in pm.OPEN_INVITATION), None)
        if invitation is not None and self._clock() >= invitation.expires_at:
            self._commit(
                store, pm.step(invitation, pm.Tick(int(self._clock())), random=self._random)
            )
            invitation = None
        if invitation is not None:
            outcome = pm.step(invitation, incoming, random=self._random)
            if outcome.pairing.state is not pm.State.INVITING:
                self._commit(store, outcome)
                return
        self._unsolicited(message)

    def _unsolicited(self, message: SmaMessage) -> None:
        self.record.unsolicited_pairing += 1
        log.warning(
            "pairing: request from %s without an open invitation ignored (%d so far)",
            message.sender,
            self.record.unsolicited_pairing,
        )
        if UNSOLICITED_ALERT not in self.record.alerts:
            self.record.alerts.append(UNSOLICITED_ALERT)
            self._emit(
                "security.alert",
                {
                    "account": self.record.account,
                    "kind": "pairing",
                    "message": "a device asked to pair although no one chose 'Add a device' "
                    "here; it was ignored. If you did not try to pair a device, someone with "
                    "access to your mailbox may have tried.",
                },
            )
        self._save()

    # --- the clock and the log ----------------------------------------------------------------
    def tick(self, store: FolderStore, chain: devicelog.DeviceLog) -> None:
        self._prune()
        self.publish_pending(store)
        self.send_pending(store)
        for current in self.pairings():
            if current.state in pm.TERMINAL:
                continue
            if current.role is pm.Role.JOINER and current.key_box:
                self._commit(store, pm.resume_install(current))  # a crash interrupted it
                continue
            if current.state is pm.State.PROVEN:
                self._release(store, current)  # a crash came between the proof and the send
                continue
            if (
                current.role is pm.Role.INVITER
                and current.state is pm.State.SENT
                and current.peer
                and chain.is_member(current.peer)
            ):
                self._commit(store, pm.complete(current))
                continue
            self._commit(store, pm.step(current, pm.Tick(int(self._clock())), random=self._random))

    # --- effects ------------------------------------------------------------------------------
    def _commit(
        self, store: FolderStore, outcome: pm.Outcome, targets: list[str] | None = None
    ) -> None:
        """Persist the new state first, then carry out the effects (send, install, notify).

        The one exception is an install: until it is done the pre-install state stays on disk
        (see pm.Install), and the install itself saves the completed state."""
        p = outcome.pairing
        installs = [e for e in outcome.effects if isinstance(e, pm.Install)]
        self.record.pairings[p.pairing_id] = (installs[0].pending if installs else p).to_json()
        # What the step sends is saved with the state it belongs to and sent from the outbox: a
        # crash between the two sends it after the restart (a duplicate leaves the peer unchanged).
        for effect in outcome.effects:
            if isinstance(effect, pm.Send):
                for to in targets if effect.to == "*" and targets else [effect.to]:
                    raw = self._build(to, effect.type, effect.data)
                    self.record.outbox.append(
                        {"to": to, "raw": raw.decode("ascii"), "pairing_id": p.pairing_id}
                    )
        self._save()
        self.send_pending(store)
        for effect in outcome.effects:
            if isinstance(effect, pm.Install):
                if not self._install(store, p, effect.payload):
                    return  # refused: the pairing is now failed, nothing more to tell
            elif isinstance(effect, pm.Notify):
                self._notify(effect.event, p)
            elif isinstance(effect, pm.NeedSecret):
                self._release(store, p)

    def _release(self, store: FolderStore, p: pm.Pairing) -> None:
        """Inviter: the joiner proved the code (PROVEN is on disk): seal and send the key."""
        try:
            secret = self._secret_for(p)
        except HostError as exc:
            self._commit(store, pm.step(p, pm.Reject(exc.message), random=self._random))
            return
        self._commit(store, pm.step(p, pm.Release(secret), random=self._random))

    def _build(self, to: str, kind: str, data: dict[str, Any]) -> bytes:
        return envelope.build(
            MessageType(kind),
            self.me,
            data,
            account=self.record.account,
            now=self._clock(),
            random=self._random,
            keys=self.device_keys(),
            to=to,
            head=self.log_head(),
        )

    def send_pending(self, store: FolderStore) -> None:
        """Send the saved pairing messages, each removed from the outbox once appended. One
        whose recipient's inbox is missing stays and is tried again every OUTBOX_RETRY seconds
        until its pairing expires: the server may have deleted the inbox, and its owner
        recreates it at its next sync (dropping the message would leave the pairing hanging)."""
        index = 0
        while index < len(self.record.outbox):
            message = self.record.outbox[index]
            now = self._clock()
            if not self._still_wanted(message, now):
                log.warning("pairing: a message to %s expired unsent", message["to"])
                self.record.outbox.pop(index)
                self._save()
                continue
            if float(message.get("retry_at", 0)) > now:
                index += 1
                continue
            try:
                store.append(layout.inbox_folder(message["to"]), message["raw"].encode("ascii"))
            except FolderMissing:
                if "retry_at" not in message:  # (said once, not every OUTBOX_RETRY)
                    log.warning("pairing: the inbox of %s is missing; trying again", message["to"])
                self.record.outbox[index] = {**message, "retry_at": str(now + OUTBOX_RETRY)}
                self._save()
                index += 1
                continue
            self.record.outbox.pop(index)
            self._save()

    def _still_wanted(self, message: dict[str, str], now: float) -> bool:
        """A message is sent until its pairing expires (or is pruned): a reject, sent from a
        terminal state, too."""
        if "pairing_id" not in message:  # saved by an earlier version: one attempt
            return "retry_at" not in message
        pairing = self.record.pairings.get(message["pairing_id"])
        return pairing is not None and now < float(pairing.get("expires_at", 0))

    def outbox_due(self) -> float | None:
        """When the sync loop must run again to retry a message (None: nothing waits)."""
        waiting = [float(m["retry_at"]) for m in self.record.outbox if "retry_at" in m]
        return min(waiting) if waiting else None

    def _install(self, store: FolderStore, p: pm.Pairing, payload: dict[str, Any]) -> bool:
        """Joiner, after the transfer authenticated: check everything,
        then install the account key, pin the log and publish the entry that admits us."""
        from native_host.adapters.pgp import BadAccountKey, load_secret

        try:
            genesis = str(payload["genesis"])
            chain = devicelog.DeviceLog(genesis, me=self.me)
            chain.receive_all(list(payload["log"])[: devicelog.MAX_ENTRIES + 1])
            me = chain.members().get(self.me)
            if me is None or me.keys != self.device_keys().public:
                raise RemoteProtocolError("the log sent does not admit this device with its keys")
            if p.peer is None or not chain.is_member(p.peer):
                raise RemoteProtocolError("the device that answered is not in the log it sent")
            key = load_secret(str(payload["account_key"]), address=self.record.account)
            if chain.account_key and key.fingerprint.upper() != chain.account_key.upper():
                raise RemoteProtocolError("the account key is not the one the log names")
        except (KeyError, TypeError, ValueError, RemoteProtocolError, BadAccountKey) as exc:
            failed = pm.Pairing.from_json(
                {**p.to_json(), "state": pm.State.FAILED.value, "reason": f"install refused: {exc}"}
            )
            self.record.pairings[p.pairing_id] = failed.to_json()
            self._save()
            self._notify("security.alert", failed)
            self._notify("pairing.updated", failed)
            return False
        # Idempotent, in an order that survives a crash anywhere: key, pin, queue the entry that
        # admits us (see record_entry), "completed", and only then send.
        self.secrets.set(account_key_name(self.record.account), key.secret_armored)
        self.record.genesis = genesis
        held = self.device_log()  # (pinned now: rebuilt from what it held)
        admission = chain.admission_of(self.me)
        held.receive_all(chain.documents())
        self.record.directory.log_entries = held.documents()
        # Read the folder once more from its start: the entries that came with the pairing are
        # kept now, and where each sits must be known before one can count as deleted.
        self.record.directory.watermark = None
        self.record.announce_status = None
        assert admission is not None  # checked above: the log admits us
        self.record_entry(admission)
        self.record.pairings[p.pairing_id] = p.to_json()
        self._save()
        self.publish_pending(store)
        return True

    def _notify(self, event: str, p: pm.Pairing) -> None:
        if event == "security.alert":
            self._emit(
                "security.alert",
                {
                    "account": self.record.account,
                    "kind": "pairing",
                    "message": p.reason or "a pairing check failed",
                },
            )
            return
        self._emit(event, {"account": self.record.account, "pairing": self.view(p)})

    def view(self, p: pm.Pairing) -> dict[str, Any]:
        return {
            "pairing_id": p.pairing_id,
            "role": p.role.value,
            "peer_device_id": p.peer,
            "peer_name": p.peer_name,
            "state": p.state.value,
            "code": p.code if p.state is pm.State.INVITING else None,
            "expires_at": p.expires_at,
            "reason": p.reason,
        }
