"""The account's Autocrypt peers on this device: mail in, queries out, and key sync over the SMA.

The protocol is in core/keysync.py and core/autocrypt.py; this module feeds them real input (a
message from the add-on, a chunk from the inbox), runs the sends on the runtime's connection,
and reports changes as `peers.updated` events.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Literal, cast

from native_host.core import autocrypt, layout, pgpmime
from native_host.core.autocrypt import InvalidMessage, MessageInfo, PeerState, canonical_addr
from native_host.core.crypto import DeviceKeys
from native_host.core.devicelog import DeviceLog
from native_host.core.envelope import LogHead, SmaMessage
from native_host.core.keysync import KeySync, PartlyRejected, PeerRepo, open_chunk, seal_chunk
from native_host.errors import ErrorCode, HostError, RemoteProtocolError
from native_host.ports import Clock, Decrypt, FolderMissing, FolderStore, RandomBytes

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], None]
# What became of the encrypted part of a multipart/encrypted mail (peers.ingest's `encrypted`).
Encrypted = Literal[
    "decrypted",  # its protected headers and gossip counted
    "provided",  # not opened here; the inner header block the caller sent counted
    "headers_only",  # only the header block came: the outer headers counted
    "too_large",  # above pgpmime.MAX_ENCRYPTED_BYTES: the outer headers counted
    "malformed",  # not RFC 3156 PGP/MIME, or an inner header block beyond the bounds
    "undecryptable",  # no account key this device holds (current or earlier) opens it
    "sender_mismatch",  # the inner From names someone else: only the outer headers counted
]
MAX_EVENT_ADDRS = 100
MAX_LIST = 500


def _key_ok(keydata: bytes, addr: str) -> bytes | None:
    """A header's key as it is kept: usable for `addr`, cut to its minimal form."""
    from native_host.adapters.pgp import minimal_peer_keydata

    return minimal_peer_keydata(keydata, address=addr)


def _key_usable(keydata: bytes) -> bool:
    from native_host.adapters.pgp import usable_peer_key

    return usable_peer_key(keydata)


def _key_ok_at(keydata: bytes, addr: str, at: float) -> bool:
    """The check at a given time, for rows another device sends (`keysync.admit`)."""
    from native_host.adapters.pgp import usable_peer_key

    return usable_peer_key(keydata, now=at, address=addr)


def peer_view(state: PeerState, *, detail: bool = False) -> dict[str, Any]:
    view = state.to_json()
    if detail:
        from native_host.adapters.pgp import peer_key_fingerprint

        view["public_key_fingerprint"] = (
            peer_key_fingerprint(state.public_key) if state.public_key else None
        )
        view["gossip_key_fingerprint"] = (
            peer_key_fingerprint(state.gossip_key) if state.gossip_key else None
        )
    return view


def _decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise HostError(ErrorCode.INVALID_PARAMS, f"params.{what}: not valid base64") from None


class PeerBook:
    def __init__(
        self,
        repo: PeerRepo,
        account: str,
        emit: Emit,
        wake: Callable[[], None],
        *,
        clock: Clock,
        random: RandomBytes,
        decrypt: Decrypt | None = None,
    ) -> None:
        self.repo = repo
        self._decrypt = decrypt  # None: encrypted mail counts by its outer headers only
        self.account = account
        self._me = canonical_addr(account)
        self.sync = KeySync(repo, "", clock, key_ok=_key_ok_at)
        self._emit = emit
        self._wake = wake  # the sync loop sleeps until a batch is due; new changes move that
        self._clock = clock
        self._random = random
        self.appended = 0  # SMA messages this device appended for key sync (for benchmarks)

    def set_device(self, device_id: str) -> None:
        self.sync.me = device_id

    # --- the API ------------------------------------------------------------------------------
    def ingest(
        self, message_b64: str, gossip_b64: str | None = None, received: int | None = None
    ) -> dict[str, Any]:
        """Autocrypt Level 1 update from one received mail (see docs/api.md, peers.ingest).

        `received`: when the mail arrived (IMAP INTERNALDATE or the client's database date). It,
        not this device's clock, is Level 1's "time of receipt" for a mail without a usable
        Date: during a backlog scan the clock says now, and a Date-less old mail would
        otherwise override every newer key of its sender.
        """
        raw = _decode(message_b64, "message")
        try:
            outer = autocrypt.message_headers(raw)
        except InvalidMessage as exc:
            raise HostError(ErrorCode.INVALID_PARAMS, f"params.message: {exc}") from None
        sender = outer.from_addr
        result: dict[str, Any] = {"updated": False, "addr": sender}
        if not outer.from_addrs:
            result["ignored"] = "no From address"
            return result
        if sender is None:
            result["ignored"] = "more than one From address"
            return result
        if sender == self._me:
            result["ignored"] = "sent from this account"
            return result
        now = int(self._clock())
        if received is not None:
            now = max(0, min(now, received))
        view, gossip = outer, cast(tuple[str, ...], ())
        if outer.content_type == "multipart/encrypted":
            inner, status = self._open(raw, gossip_b64)
            if inner is not None:
                protected = autocrypt.protected_view(outer, inner)
                if protected is None:
                    status = "sender_mismatch"
                else:
                    view, gossip = protected, protected.gossip
            result["encrypted"] = status
        states = autocrypt.contributions(view, now, key_ok=_key_ok, gossip_values=gossip)
        if not states:
            result["ignored"] = "an automatic reply or a delivery report"
            return result
        states = [s for s in states if s.addr != self._me]
        was_idle = not self.sync.waiting
        changed = self.sync.ingest(states)
        if changed:
            self._updated(changed, "mail")
            if was_idle:
                self._wake()
        result["updated"] = any(s.addr == sender for s in changed)
        if len(changed) > int(result["updated"]):
            result["gossip_updated"] = len(changed) - int(result["updated"])
        return result

    def _open(self, raw: bytes, inner_b64: str | None) -> tuple[MessageInfo | None, Encrypted]:
        """The inner root entity's headers of a multipart/encrypted mail, and what happened.

        Never raises for the mail's content: a mail that cannot be opened still counts by its
        outer headers (the sender was seen), and the add-on must not retry it for ever.
        """
        status: Encrypted
        if len(raw) > pgpmime.MAX_ENCRYPTED_BYTES:
            status = "too_large"
        elif not raw[len(autocrypt.header_block(raw)) :].strip():
            status = "headers_only"
        else:
            try:
                payload = pgpmime.encrypted_payload(raw)
            except InvalidMessage:
                return None, "malformed"
            plain = None if self._decrypt is None else self._decrypt(payload)
            if plain is None:
                return None, "undecryptable"
            try:
                return autocrypt.message_headers(plain), "decrypted"
            except InvalidMessage:
                return None, "malformed"
        if inner_b64 is None:
            return None, status
        try:
            return autocrypt.message_headers(_decode(inner_b64, "gossip")), "provided"
        except InvalidMessage as exc:
            raise HostError(ErrorCode.INVALID_PARAMS, f"params.gossip: {exc}") from None

    # --- the account's own prefer-encrypt setting (core/autocrypt.py, own_setting) --------------
    def prefer_encrypt(self) -> tuple[autocrypt.PreferEncrypt, int | None]:
        with self.repo.transaction():
            row = self.repo.get(self._me)
        return autocrypt.own_preference(None if row is None else row.state)

    def set_prefer_encrypt(self, value: autocrypt.PreferEncrypt, keydata: bytes) -> dict[str, Any]:
        """Set the account's preference on every device: a newer own row, sent by key sync."""
        with self.repo.transaction():
            row = self.repo.get(self._me)
        current = None if row is None else row.state
        state = autocrypt.own_setting(current, self._me, value, keydata, int(self._clock()))
        was_idle = not self.sync.waiting
        changed = self.sync.ingest([state])
        if changed:
            self._updated(changed, "mail")  # only the own row: account.prefer_encrypt
            if was_idle:
                self._wake()
        prefer, at = self.prefer_encrypt()
        return {"prefer_encrypt": prefer, "set_at": at}

    def get(self, addr: str) -> dict[str, Any] | None:
        if canonical_addr(addr) == self._me:
            return None  # the own row is the prefer-encrypt setting, not a peer
        with self.repo.transaction():
            row = self.repo.get(canonical_addr(addr))
        return None if row is None else peer_view(row.state, detail=True)

    def page(self, limit: int, cursor: str | None) -> dict[str, Any]:
        limit = max(1, min(limit, MAX_LIST))
        with self.repo.transaction():
            page = self.repo.page(cursor, limit + 2)
            total = self.repo.count() - (self.repo.get(self._me) is not None)
        page = [s for s in page if s.addr != self._me][: limit + 1]  # see `get`
        more = len(page) > limit
        page = page[:limit]
        return {
            "peers": [peer_view(s) for s in page],
            "cursor": page[-1].addr if more else None,
            "total": total,
        }

    def recommend(self, recipients: list[str], reply_to_encrypted: bool) -> dict[str, Any]:
        now = int(self._clock())
        mutual = self.prefer_encrypt()[0] == "mutual"
        each: list[dict[str, Any]] = []
        with self.repo.transaction():
            rows = {addr: self.repo.get(canonical_addr(addr)) for addr in recipients}
        for addr in recipients:
            row = rows[addr]
            each.append(
                {
                    "addr": canonical_addr(addr),
                    "recommendation": autocrypt.recommend(
                        None if row is None else row.state,
                        now,
                        reply_to_encrypted,
                        own_prefer_mutual=mutual,
                        key_usable=_key_usable,
                    ),
                }
            )
        overall = autocrypt.recommend_many(
            [cast(autocrypt.Recommendation, e["recommendation"]) for e in each]
        )
        return {"recommendation": overall, "recipients": each}

    def _updated(self, changed: list[PeerState], source: str) -> None:
        """peers.updated for correspondents; the own row (the prefer-encrypt setting) is not a
        peer: it has an event of its own and stays out of peers.get/list (the add-on imports
        what those return into Thunderbird as correspondents' keys)."""
        own = [s for s in changed if s.addr == self._me]
        changed = [s for s in changed if s.addr != self._me]
        if own:
            prefer, at = autocrypt.own_preference(own[-1])
            self._emit(
                "account.prefer_encrypt",
                {"account": self.account, "prefer_encrypt": prefer, "set_at": at},
            )
        if not changed:
            return
        self._emit(
            "peers.updated",
            {
                "account": self.account,
                "source": source,
                "count": len(changed),
                "addrs": [s.addr for s in changed[:MAX_EVENT_ADDRS]],
            },
        )

    # --- the SMA ------------------------------------------------------------------------------
    def receive(self, message: SmaMessage, chain: DeviceLog, my_keys: DeviceKeys) -> None:
        """One key-update chunk from this device's inbox, applied durably (the caller deletes it
        afterwards); raises RemoteProtocolError to have it reported and dropped."""
        members = chain.members()
        member = members.get(message.sender)
        if member is None:
            raise RemoteProtocolError(f"key update from {message.sender}, not a member")
        payload = open_chunk(message, me=self.sync.me, my_keys=my_keys, signer=member.keys)
        try:
            changed = self.sync.apply(message.sender, payload, members)
        except PartlyRejected as exc:
            if exc.changed:
                self._updated(exc.changed, "sync")
            raise
        if changed:
            self._updated(changed, "sync")

    def flush(self, store: FolderStore, chain: DeviceLog, my_keys: DeviceKeys) -> int:
        """Send every batch that is due; returns how many messages were appended."""
        members = chain.members()
        appended = 0
        seq, hash_ = chain.head_seq, chain.head_hash
        head = None if seq is None or hash_ is None else LogHead(seq, hash_)
        for out in self.sync.plan(members):
            member = members.get(out.device)
            if member is None:
                continue
            folder = layout.inbox_folder(out.device)
            uids: list[int | None] = []
            try:
                for chunk in self.sync.chunks(out):
                    raw = seal_chunk(
                        chunk,
                        sender=self.sync.me,
                        sender_keys=my_keys,
                        recipient=out.device,
                        recipient_keys=member.keys,
                        account=self.account,
                        now=self._clock(),
                        random=self._random,
                        head=head,
                    )
                    uids.append(store.append(folder, raw))
                    appended += 1
            except FolderMissing:
                log.warning("key sync: the inbox of %s is missing; skipped", out.device)
                continue
            replaced = self.sync.sent(out, uids)
            if replaced:
                # The folder can vanish between the append and this delete: the device that
                # removed its owner deletes it (tests/stress/test_load in CI). What is replaced
                # went with it, and the removal is no error of this device's sync.
                with contextlib.suppress(FolderMissing):
                    store.delete_messages(folder, list(replaced))
        self.appended += appended
        return appended
