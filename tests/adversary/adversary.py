"""A hostile IMAP server: a scripted adversary with its own connection to the account.

It does to the SMA folders what the provider can (docs/threat-model.md): injects forged
documents signed with its own keys while claiming to be a member, replays and duplicates what it
saw, reorders, deletes and corrupts messages, renames and deletes folders and changes
UIDVALIDITY. Every choice comes from one seeded `random.Random`, so a schedule reproduces from its
seed (the timing of the honest devices around it does not).

It keeps every byte it ever saw (`seen`), for the test that no secret crossed the server, and
every message it put into a folder (`placements`), classified by whether a device that reads it
must report it (see `classify`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from native_host.core import devicelog, envelope, layout
from native_host.core.crypto import (
    DeviceKeys,
    DevicePublic,
    canonical,
    encrypt_to,
    sign_document,
    verify_document,
)
from native_host.core.envelope import MessageType
from native_host.core.pairing import nameplate_of
from native_host.errors import RemoteProtocolError

SMA_PATTERN = layout.ANNOUNCE_FOLDER + "*"
_APPENDUID = re.compile(rb"APPENDUID (\d+) (\d+)")
PAIRING_TYPES = {"pair-request", "pair-accept", "pair-confirm", "pair-key", "pair-reject"}

ACTIONS: dict[str, tuple[int, bool]] = {  # name: (weight, destructive)
    "forge_announcement": (3, False),
    "forge_log_entry": (3, False),
    "forge_pairing": (3, False),
    "forge_device_message": (4, False),
    "replay": (4, False),
    "duplicate": (3, False),
    "corrupt": (4, False),
    "reorder": (2, True),
    "delete": (2, True),
    "delete_folder": (1, True),
    "rename_folder": (1, True),
    "change_uidvalidity": (1, True),
}


@dataclass
class Placement:
    """One message the adversary put into a folder."""

    action: str
    folder: str
    uidvalidity: int
    uid: int | None
    raw: bytes
    must_report: bool  # a device that reads it must report it (see Adversary.classify)
    round: int
    gone_by_adversary: bool = False  # the adversary itself deleted it (or its folder) later


@dataclass
class Snapshot:
    folders: dict[str, tuple[int, dict[int, bytes]]] = field(default_factory=dict)


def doc_of(raw: bytes) -> envelope.SmaMessage | None:
    try:
        return envelope.parse(raw)
    except RemoteProtocolError:
        return None


class Adversary:
    def __init__(
        self,
        mail: dict[str, Any],  # the account as the tests configure it (tests/host fixtures)
        *,
        seed: int,
        doveadm: tuple[str, Path] | None = None,  # (doveadm binary, dovecot.conf)
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.account = str(mail["account"])
        imap = mail["imap"]
        self._login = (
            str(imap["host"]),
            int(imap["port"]),
            str(imap["username"]),
            mail["password"],
        )
        self._doveadm = doveadm
        self.client: IMAPClient | None = None
        self.mallory = DeviceKeys.generate(self.rng.randbytes)
        self.mallory_id = self.rng.randbytes(8).hex()
        self.attacker_ids = {self.mallory_id}
        self.seen: dict[str, bytes] = {}  # sha256 -> bytes: everything read from the server
        self.captured: list[tuple[str, bytes]] = []  # honest messages as first seen, in order
        self.mine: set[str] = set()  # sha256 of every message the adversary wrote
        self.placements: list[Placement] = []
        self.actions: list[str] = []
        self.round = 0
        self.snapshot = Snapshot()

    # --- the connection ---------------------------------------------------------------------
    def _imap(self) -> IMAPClient:
        if self.client is None:
            host, port, username, password = self._login
            client = IMAPClient(host, port=port, ssl=False, timeout=15)
            client.login(username, password)
            self.client = client
        return self.client

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.logout()
            self.client = None

    def _reset_connection(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.shutdown()
        self.client = None

    # --- what it sees -------------------------------------------------------------------------
    def folders(self) -> list[str]:
        names = [str(f[2]) for f in self._imap().list_folders("", SMA_PATTERN)]
        return sorted(n for n in names if n.startswith(layout.ANNOUNCE_FOLDER))

    def look(self) -> Snapshot:
        """Read every message of every SMA folder; remember all of it."""
        snap = Snapshot()
        client = self._imap()
        for folder in self.folders():
            try:
                info = client.select_folder(folder, readonly=True)
                uids = client.search("ALL")
                fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
                client.unselect_folder()
            except Exception:  # deleted meanwhile by an honest device (an inbox at removal)
                self._reset_connection()
                client = self._imap()
                continue
            messages = {int(uid): bytes(data[b"BODY[]"]) for uid, data in fetched.items()}
            snap.folders[folder] = (int(info[b"UIDVALIDITY"]), messages)
            for raw in messages.values():
                key = hashlib.sha256(raw).hexdigest()
                if key not in self.seen:
                    self.seen[key] = raw
                    if key not in self.mine:
                        self.captured.append((folder, raw))
        self.snapshot = snap
        return snap

    def genuine(self) -> list[envelope.SmaMessage]:
        return [m for _, raw in self.captured if (m := doc_of(raw)) is not None]

    def honest_ids(self) -> list[str]:
        ids = {layout.device_of_inbox(f) for f in self.snapshot.folders}
        ids |= {m.sender for m in self.genuine() if m.type is MessageType.ANNOUNCE}
        return sorted(i for i in ids if i is not None and i not in self.attacker_ids)

    def honest_keys(self) -> dict[str, DevicePublic]:
        keys: dict[str, DevicePublic] = {}
        for m in self.genuine():
            if m.type is MessageType.ANNOUNCE and m.sender not in self.attacker_ids:
                with contextlib.suppress(Exception):
                    keys[m.sender] = DevicePublic.from_json(m.data["keys"])
        return keys

    # --- classification -----------------------------------------------------------------------
    def classify(self, folder: str, raw: bytes) -> bool:
        """Must a device that reads `raw` in `folder` report it?

        Yes when it does not parse; when it sits in the wrong place (an inbox message in the
        announcement folder, an announcement or log entry in an inbox, a message addressed to
        another device); when its document is not one an honest device wrote (forged or
        altered) and its signature cannot hold: key updates and account keys (only members
        sign those), an announcement whose signature fails with the keys it carries, a log entry
        that extends an honest entry, a pairing message whose signature fails with the keys it
        carries or names no known pairing. Not required: a byte-identical or document-identical
        copy of an honest message (a replay or duplicate: ignored or merged as a no-op), a
        well-signed announcement (a claim, shown unpaired), a foreign genesis or an entry whose
        parent never appeared (it waits), and pairing messages the attacker signed correctly
        with its own keys (the users' code comparison is what stops those).
        """
        message = doc_of(raw)
        if message is None:
            return True
        genuine = {canonical(m.document) for m in self.genuine()}
        is_genuine = canonical(message.document) in genuine
        owner = layout.device_of_inbox(folder)
        if folder == layout.ANNOUNCE_FOLDER:
            if message.type not in (MessageType.ANNOUNCE, MessageType.LOG):
                return True
            if is_genuine:
                return False
            if message.type is MessageType.ANNOUNCE:
                keys = message.data.get("keys")
                return keys is not None and not _verifies(message.document, keys)
            prev = message.data.get("prev")
            honest_entries = {
                devicelog.entry_hash(m.data)
                for m in self.genuine()
                if m.type is MessageType.LOG and canonical(m.document) in genuine
            }
            return prev in honest_entries
        if owner is None:
            return False  # a folder no device reads
        if message.type in (MessageType.ANNOUNCE, MessageType.LOG):
            return True
        if message.to != owner:
            return True
        if is_genuine:
            return False
        if message.type in (MessageType.KEY_UPDATE, MessageType.ACCOUNT_KEY):
            return True
        if message.type in (MessageType.PAIR_REQUEST, MessageType.PAIR_ACCEPT):
            return not _verifies(message.document, message.data.get("keys"))
        return message.sender not in self.attacker_ids

    # --- writing ------------------------------------------------------------------------------
    def _append(
        self, action: str, folder: str, raw: bytes, must_report: bool | None = None
    ) -> None:
        client = self._imap()
        try:
            response = client.append(folder, raw)
        except Exception:
            self._reset_connection()
            return  # the folder is gone (an honest removal, or our own delete)
        match = _APPENDUID.search(response if isinstance(response, bytes) else b"")
        uidvalidity, uid = (int(match[1]), int(match[2])) if match else (0, None)
        self.mine.add(hashlib.sha256(raw).hexdigest())
        report = self.classify(folder, raw) if must_report is None else must_report
        self.placements.append(Placement(action, folder, uidvalidity, uid, raw, report, self.round))

    def _delete(self, folder: str, uids: list[int]) -> None:
        client = self._imap()
        try:
            client.select_folder(folder)
            client.delete_messages(uids)
            client.expunge()
            uidvalidity = int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])
            client.unselect_folder()
        except Exception:
            self._reset_connection()
            return
        for p in self.placements:
            if p.folder == folder and p.uid in uids and p.uidvalidity == uidvalidity:
                p.gone_by_adversary = True

    def _folder_gone(self, folder: str) -> None:
        for p in self.placements:
            if p.folder == folder:
                p.gone_by_adversary = True

    def _build(
        self,
        type: MessageType,
        sender: str,
        data: dict[str, Any],
        *,
        to: str | None = None,
        keys: DeviceKeys | None = None,
    ) -> bytes:
        return envelope.build(
            type,
            sender,
            data,
            account=self.account,
            now=1.9e9 + self.rng.randrange(10**6),
            random=self.rng.randbytes,
            keys=keys or self.mallory,
            to=to,
        )

    # --- the actions --------------------------------------------------------------------------
    def forge_announcement(self) -> None:
        """Mallory announces itself, or an honest device with its keys but Mallory's signature."""
        honest = self.honest_keys()
        if honest and self.rng.random() < 0.5:
            victim = self.rng.choice(sorted(honest))
            data = {"name": "Laptop (new)", "joined": 1, "last_seen": 2_000_000_000}
            raw = self._build(
                MessageType.ANNOUNCE,
                victim,
                {**data, "keys": honest[victim].to_json()},
            )
        else:
            data = {"name": "Your new phone", "joined": 1, "last_seen": 2_000_000_000}
            raw = self._build(
                MessageType.ANNOUNCE,
                self.mallory_id,
                {**data, "keys": self.mallory.public.to_json()},
            )
        self._append("forge-announcement", layout.ANNOUNCE_FOLDER, raw)

    def forge_log_entry(self) -> None:
        """An entry admitting Mallory that extends an honest entry and claims an honest signer,
        or a foreign genesis."""
        entries = [m.data for m in self.genuine() if m.type is MessageType.LOG]
        if entries and self.rng.random() < 0.8:
            parent = self.rng.choice(entries)
            by = self.rng.choice(sorted({str(e["by"]) for e in entries}))
            entry = {
                "v": 2,
                "seq": int(parent["seq"]) + 1,
                "prev": devicelog.entry_hash(parent),
                "op": self.rng.choice(["add", "remove", "roll"]),
                "device_id": self.mallory_id,
                "keys": self.mallory.public.to_json(),
                "name": "Mallory",
                "account_key": None,
                "by": by,
                "at": 1_900_000_000,
            }
            if entry["op"] == "roll":
                entry["account_key"] = "A" * 40
            signed = sign_document(entry, self.mallory)
        else:
            signed = devicelog.genesis(self.mallory_id, self.mallory, "Mallory", "B" * 40, 1.9e9)
        raw = self._build(
            MessageType.LOG, self.rng.choice([self.mallory_id, *self.honest_ids()]), signed
        )
        self._append("forge-log", layout.ANNOUNCE_FOLDER, raw)

    def forge_pairing(self) -> None:
        """Mallory asks an honest device to pair (a guess at its code), or answers an honest
        device's request."""
        victims = self.honest_ids()
        if not victims:
            return
        victim = self.rng.choice(victims)
        requests = [m for m in self.genuine() if m.type is MessageType.PAIR_REQUEST]
        choice = self.rng.random()
        if choice < 0.4 or not requests:
            data = {  # a guess at the victim's code (one per invitation, if one is open)
                "pairing_id": self.rng.randbytes(16).hex(),
                "pake": "spake2-ed25519-v1",
                "nameplate": nameplate_of(victim),
                "name": "Phone",
                "keys": self.mallory.public.to_json(),
                "msg": base64.b64encode(b"A" + self.rng.randbytes(32)).decode(),
            }
            raw = self._build(MessageType.PAIR_REQUEST, self.mallory_id, data, to=victim)
            self._append("forge-pair-request", layout.inbox_folder(victim), raw)
            return
        request = self.rng.choice(requests)
        initiator = request.sender
        responder = request.to or victim
        pairing_id = request.data["pairing_id"]
        eph = base64.b64encode(b"B" + self.rng.randbytes(32)).decode()
        mac = base64.b64encode(self.rng.randbytes(32)).decode()
        if choice < 0.7:  # an accept with Mallory's keys, in Mallory's name or the responder's
            sender = self.rng.choice([self.mallory_id, responder])
            data = {
                "pairing_id": pairing_id,
                "name": "Laptop",
                "keys": self.mallory.public.to_json(),
                "msg": eph,
                "confirm": mac,
            }
            raw = self._build(MessageType.PAIR_ACCEPT, sender, data, to=initiator)
            self._append("forge-pair-accept", layout.inbox_folder(initiator), raw)
        elif choice < 0.85:  # a key box that cannot open, "from" the responder
            data = {
                "pairing_id": pairing_id,
                "box": base64.b64encode(self.rng.randbytes(200)).decode(),
            }
            raw = self._build(MessageType.PAIR_KEY, responder, data, to=initiator)
            self._append("forge-pair-key", layout.inbox_folder(initiator), raw)
        else:  # a key confirmation "from" the joiner
            data = {"pairing_id": pairing_id, "confirm": mac}
            raw = self._build(MessageType.PAIR_CONFIRM, initiator, data, to=responder)
            self._append("forge-pair-confirm", layout.inbox_folder(responder), raw)

    def forge_device_message(self) -> None:
        """A key update or a rolled account key "from" a member, encrypted to the victim but
        signed by Mallory."""
        keys = self.honest_keys()
        if len(keys) < 1:
            return
        victim = self.rng.choice(sorted(keys))
        sender = self.rng.choice([self.mallory_id, *sorted(keys)])
        kind = self.rng.choice([MessageType.KEY_UPDATE, MessageType.ACCOUNT_KEY])
        box = encrypt_to(
            keys[victim], self.rng.randbytes(64), (sender + victim).encode(), self.rng.randbytes
        )
        raw = self._build(kind, sender, {"box": box}, to=victim)
        self._append(f"forge-{kind.value}", layout.inbox_folder(victim), raw)

    def replay(self) -> None:
        """An honest message seen earlier, into its own folder or another one."""
        if not self.captured:
            return
        folder, raw = self.rng.choice(self.captured)
        targets = [f for f in self.snapshot.folders] or [folder]
        target = folder if self.rng.random() < 0.5 else self.rng.choice(targets)
        self._append("replay", target, raw)

    def duplicate(self) -> None:
        messages = self._present()
        if messages:
            folder, _uid, raw = self.rng.choice(messages)
            self._append("duplicate", folder, raw)

    def corrupt(self) -> None:
        """Replace a message by a damaged copy: a flipped byte, a truncation or swapped parts."""
        messages = self._present()
        if not messages:
            return
        folder, uid, raw = self.rng.choice(messages)
        how = self.rng.choice(["flip", "truncate", "swap"])
        head, _, body = raw.partition(b"\r\n\r\n")
        if how == "flip" and body:
            i = self.rng.randrange(len(body))
            body = body[:i] + bytes([body[i] ^ (1 << self.rng.randrange(8))]) + body[i + 1 :]
            damaged = head + b"\r\n\r\n" + body
        elif how == "truncate":
            damaged = raw[: self.rng.randrange(1, max(2, len(raw)))]
        else:  # another message's body under this one's headers
            _f, _u, other = self.rng.choice(messages)
            damaged = head + b"\r\n\r\n" + other.partition(b"\r\n\r\n")[2]
        self._delete(folder, [uid])
        self._append(f"corrupt-{how}", folder, damaged)

    def reorder(self) -> None:
        """Take a folder's messages out and put them back in another order."""
        folders = [f for f, (_v, m) in self.snapshot.folders.items() if len(m) > 1]
        if not folders:
            return
        folder = self.rng.choice(folders)
        messages = list(self.snapshot.folders[folder][1].items())
        self.rng.shuffle(messages)
        self._delete(folder, [uid for uid, _ in messages])
        for _uid, raw in messages:
            self._append("reorder", folder, raw)

    def delete(self) -> None:
        messages = self._present()
        if messages:
            folder, uid, _raw = self.rng.choice(messages)
            self._delete(folder, [uid])

    def delete_folder(self) -> None:
        folders = list(self.snapshot.folders)
        if not folders:
            return
        folder = self.rng.choice(folders)
        with contextlib.suppress(Exception):
            self._imap().delete_folder(folder)
            self._folder_gone(folder)

    def rename_folder(self) -> None:
        """Move a folder away (its messages vanish for the devices), and back half the time."""
        folders = list(self.snapshot.folders)
        if not folders:
            return
        folder = self.rng.choice(folders)
        aside = f"Trash-{self.rng.randbytes(4).hex()}"
        client = self._imap()
        try:
            client.rename_folder(folder, aside)
        except Exception:
            self._reset_connection()
            return
        self._folder_gone(folder)
        if self.rng.random() < 0.5:
            with contextlib.suppress(Exception):
                client.rename_folder(aside, folder)  # fails if a device recreated it meanwhile
                return
        with contextlib.suppress(Exception):
            client.delete_folder(aside)

    def change_uidvalidity(self) -> None:
        folders = list(self.snapshot.folders)
        if not folders or self._doveadm is None:
            return
        folder = self.rng.choice(folders)
        doveadm, config = self._doveadm
        value = str(self.rng.randrange(1, 2**31))
        subprocess.run(
            [doveadm, "-c", str(config), "mailbox", "update", "-u", self._login[2],
             "--uid-validity", value, folder],
            check=False, capture_output=True, timeout=30,
        )  # fmt: skip
        self._folder_gone(folder)  # the devices rescan; old UIDs mean nothing to us either

    def _present(self) -> list[tuple[str, int, bytes]]:
        return [
            (folder, uid, raw)
            for folder, (_v, messages) in self.snapshot.folders.items()
            for uid, raw in messages.items()
        ]

    def act(self, actions: int = 3, *, destructive: bool = True) -> list[str]:
        """One round: look at everything, then `actions` seeded choices."""
        self.round += 1
        try:
            self.look()
            names = [n for n, (_w, d) in ACTIONS.items() if destructive or not d]
            weights = [ACTIONS[n][0] for n in names]
            done = self.rng.choices(names, weights, k=actions)
            for name in done:
                getattr(self, name)()
                self.look()
        except Exception as exc:  # the server dropped us (a folder we had selected went away)
            self._reset_connection()
            done = [f"connection lost: {type(exc).__name__}"]
        self.actions.append(f"round {self.round}: {', '.join(done)}")
        return done


def _verifies(document: dict[str, Any], keys: Any) -> bool:
    try:
        return verify_document(document, DevicePublic.from_json(keys))
    except Exception:
        return False
