"""What an instance remembers about each account: IMAP settings, this device, read positions.

One JSON file per account under the instance's directory; the IMAP password is not in it (it is
in the OS keyring), nor is any OAuth2 token (in memory only); a token command is. Files are replaced atomically, so a crash leaves the old state or the new.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from native_host.core.directory import Announcement, Directory
from native_host.ports import FolderStatus, Watermark
from native_host.service.expiry import ExpiryWatch
from native_host.service.files import read_json, write_json

Security = Literal["none", "tls", "starttls"]
AuthKind = Literal["password", "oauth2-thunderbird", "oauth2-command"]


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    security: Security
    username: str
    verify_tls: bool = True


@dataclass(frozen=True)
class AuthSettings:
    """How the account logs in: its password (keyring), tokens from Thunderbird, or a command."""

    kind: AuthKind = "password"
    command: tuple[str, ...] = ()  # oauth2-command only: the argv run for a token

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "command": list(self.command)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> AuthSettings:
        if not data:
            return cls()  # records written before OAuth2 existed
        return cls(data.get("kind", "password"), tuple(str(a) for a in data.get("command") or ()))


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    name: str
    joined: int


MAX_APPLIED = 1000  # more than one inbox batch


@dataclass
class FolderCursor:
    """How far a folder was read, and what its STATUS said then (an idle sync compares only that)."""

    watermark: Watermark | None = None
    status: FolderStatus | None = None
    # UIDs the watermark covers (applied, saved) whose deletion may not have happened: a crash
    # between the save and the delete would otherwise leave them below the watermark for good.
    # Valid only under the watermark's UIDVALIDITY.
    applied: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "watermark": asdict(self.watermark) if self.watermark else None,
            "status": asdict(self.status) if self.status else None,
            "applied": list(self.applied),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> FolderCursor:
        data = data or {}
        mark, status = data.get("watermark"), data.get("status")
        applied = data.get("applied") or []
        uids = [u for u in applied if isinstance(u, int) and u > 0][:MAX_APPLIED]
        return cls(
            Watermark(**mark) if mark else None, FolderStatus(**status) if status else None, uids
        )


@dataclass
class AccountRecord:
    account: str
    imap: ImapSettings
    device: DeviceRecord | None = None
    auth: AuthSettings = field(default_factory=AuthSettings)
    directory: Directory = field(default_factory=Directory)
    announce_status: FolderStatus | None = None
    inbox: FolderCursor = field(default_factory=FolderCursor)
    genesis: str | None = None  # the device-log genesis this device pinned (own, or via pairing)
    pairings: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)  # security problems already reported
    unpublished: list[dict[str, Any]] = field(default_factory=list)  # log entries to append
    outbox: list[dict[str, str]] = field(default_factory=list)  # pairing messages to send
    roll_pending: str | None = None  # a key roll of ours not yet handed to every member
    roll_owed_since: float | None = None  # when this device saw that a roll is owed
    removal_pending: str | None = None  # a device this device's user removes (until done)
    applied_removals: list[str] = field(default_factory=list)  # log removals acted on (hashes)
    # Members whose messages named a log head this device does not hold: {device: {hash, seq,
    # since, alerted}} (trust.check_withholding); at most one per member.
    unknown_heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_waiting: str | None = None  # a rolled key received before the log entry naming it
    key_request: dict[str, Any] | None = None  # asking for a current key we lack (keyrequest)
    key_answers: dict[str, float] = field(default_factory=dict)  # whom we last sent a key, when
    expire_after_days: float | None = None  # opt-in: remove devices not seen for this long
    expiry_checked: float = 0.0  # when the policy last ran here
    unsolicited_pairing: int = 0  # pair requests that came with no open invitation (ignored)
    expiry_watch: ExpiryWatch = field(default_factory=ExpiryWatch)  # the policy's evidence

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "imap": asdict(self.imap),
            "auth": self.auth.to_json(),
            "device": asdict(self.device) if self.device else None,
            "announce": {
                **FolderCursor(self.directory.watermark, self.announce_status).to_json(),
                "devices": [asdict(a) for a in self.directory.devices.values()],
                "log": self.directory.log_entries,
                "log_uids": self.directory.log_uids,
            },
            "inbox": self.inbox.to_json(),
            "genesis": self.genesis,
            "pairings": self.pairings,
            "alerts": self.alerts[-1000:],
            "unpublished": self.unpublished,
            "outbox": self.outbox,
            "roll_pending": self.roll_pending,
            "roll_owed_since": self.roll_owed_since,
            "removal_pending": self.removal_pending,
            "applied_removals": self.applied_removals,
            "unknown_heads": self.unknown_heads,
            "key_waiting": self.key_waiting,
            "key_request": self.key_request,
            "key_answers": self.key_answers,
            "expire_after_days": self.expire_after_days,
            "expiry_checked": self.expiry_checked,
            "unsolicited_pairing": self.unsolicited_pairing,
            "expiry_watch": self.expiry_watch.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountRecord:
        announce = data.get("announce") or {}
        cursor = FolderCursor.from_json(announce)
        directory = Directory(watermark=cursor.watermark, log_entries=list(announce.get("log", [])))
        log_uids = announce.get("log_uids")  # absent in records of earlier versions
        directory.log_uids = (
            {str(h): int(u) for h, u in log_uids.items()} if isinstance(log_uids, dict) else None
        )
        for item in announce.get("devices", []):
            directory.devices[item["device_id"]] = Announcement(**item)
        device = data.get("device")
        return cls(
            account=data["account"],
            imap=ImapSettings(**data["imap"]),
            device=DeviceRecord(**device) if device else None,
            auth=AuthSettings.from_json(data.get("auth")),
            directory=directory,
            announce_status=cursor.status,
            inbox=FolderCursor.from_json(data.get("inbox")),
            genesis=data.get("genesis"),
            pairings=dict(data.get("pairings") or {}),
            alerts=list(data.get("alerts") or []),
            unpublished=list(data.get("unpublished") or []),
            outbox=list(data.get("outbox") or []),
            roll_pending=data.get("roll_pending"),
            roll_owed_since=data.get("roll_owed_since"),
            removal_pending=data.get("removal_pending"),
            applied_removals=[str(h) for h in data.get("applied_removals") or []],
            unknown_heads=dict(data.get("unknown_heads") or {}),
            key_waiting=data.get("key_waiting"),
            key_request=data.get("key_request"),
            key_answers={str(k): float(v) for k, v in (data.get("key_answers") or {}).items()},
            expire_after_days=data.get("expire_after_days"),
            expiry_checked=float(data.get("expiry_checked") or 0.0),
            unsolicited_pairing=int(data.get("unsolicited_pairing") or 0),
            expiry_watch=ExpiryWatch.from_json(data.get("expiry_watch")),
        )


def password_name(account: str) -> str:
    return f"imap-password:{account}"


def device_key_name(account: str) -> str:
    return f"device-key:{account}"


def account_key_name(account: str) -> str:
    return f"account-key:{account}"


def next_key_name(account: str) -> str:
    """A rolled account key not yet in use (ours being handed out, or one received early)."""
    return f"account-key-next:{account}"


def old_keys_name(account: str) -> str:
    """Earlier account keys, kept to read old mail (a JSON list of armored secret keys)."""
    return f"account-key-old:{account}"


def account_secret_names(account: str) -> tuple[str, ...]:
    """Every keyring entry an SMA membership leaves (the password is the account's, not the
    membership's): forgotten together when the device is removed, joins anew, or the account
    is removed."""
    return (
        device_key_name(account),
        account_key_name(account),
        next_key_name(account),
        old_keys_name(account),
    )


class AccountFiles:
    """The account records of one instance, one file each, named by a hash of the address."""

    def __init__(self, instance_dir: Path) -> None:
        self.root = instance_dir / "accounts"

    def _path(self, account: str) -> Path:
        return self.root / (hashlib.sha256(account.lower().encode()).hexdigest()[:32] + ".json")

    def peer_db(self, account: str) -> Path:
        """The account's SQLite state (peers and key-sync links), next to its record."""
        return self._path(account).with_suffix(".sqlite3")

    def load(self, account: str) -> AccountRecord | None:
        data = read_json(self._path(account))
        return AccountRecord.from_json(data) if data else None

    def save(self, record: AccountRecord) -> None:
        write_json(self._path(record.account), record.to_json())

    def delete(self, account: str) -> None:
        self._path(account).unlink(missing_ok=True)
        db = self.peer_db(account)
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            path.unlink(missing_ok=True)

    def all(self) -> list[AccountRecord]:
        if not self.root.is_dir():
            return []
        records = []
        for path in sorted(self.root.glob("*.json")):
            data = read_json(path)
            if data:
                records.append(AccountRecord.from_json(data))
        return sorted(records, key=lambda r: r.account)
