"""An in-memory FolderStore that behaves like one IMAP account (UIDs, UIDVALIDITY, subscriptions).

Several devices share one instance the way they share one mailbox. Tests also use it as the
adversary's view: `folders` is the raw server state and may be edited directly.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from native_host.ports import (
    FETCH_MAX_BYTES,
    FetchBatch,
    FolderMissing,
    FolderStatus,
    StoredMessage,
    Watermark,
    within_budget,
)

_uidvalidities = itertools.count(1_000_000)  # never reused, as IMAP requires for recreated folders


@dataclass
class MemoryFolder:
    uidvalidity: int = field(default_factory=lambda: next(_uidvalidities))
    uidnext: int = 1
    modseq: int = 1
    messages: dict[int, bytes] = field(default_factory=dict)
    subscribed: bool = False


class MemoryStore:
    def __init__(self) -> None:
        self.folders: dict[str, MemoryFolder] = {"INBOX": MemoryFolder(subscribed=True)}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self.operations = 0  # one per call, like one IMAP round trip, for cost tests

    def _folder(self, name: str) -> MemoryFolder:
        folder = self.folders.get(name)
        if folder is None:
            raise FolderMissing(name)
        return folder

    def list_folders(self, prefix: str) -> list[str]:
        with self._lock:
            self.operations += 1
            return sorted(name for name in self.folders if name.startswith(prefix))

    def create_folder(self, name: str) -> bool:
        with self._lock:
            self.operations += 1
            if name in self.folders:
                return False
            self.folders[name] = MemoryFolder()
            self._changed.notify_all()
            return True

    def delete_folder(self, name: str) -> bool:
        with self._lock:
            self.operations += 1
            gone = self.folders.pop(name, None) is not None
            self._changed.notify_all()
            return gone

    def append(self, folder: str, message: bytes) -> int | None:
        with self._lock:
            self.operations += 1
            box = self._folder(folder)
            uid = box.uidnext
            box.messages[uid] = bytes(message)
            box.uidnext += 1
            box.modseq += 1
            self._changed.notify_all()
            return uid

    def fetch(
        self,
        folder: str,
        since: Watermark | None,
        *,
        limit: int,
        max_size: int,
        max_bytes: int = FETCH_MAX_BYTES,
    ) -> FetchBatch:
        with self._lock:
            self.operations += 1
            box = self._folder(folder)
            reset = since is not None and since.uidvalidity != box.uidvalidity
            start = since.last_uid if since is not None and not reset else 0
            uids = sorted(uid for uid in box.messages if uid > start)
            first = uids[: max(limit, 0)]
            sizes = {uid: len(box.messages[uid]) for uid in first}
            chosen = within_budget(first, sizes, max_size, max_bytes)
            # Copies, as off the wire: what a fetch holds in memory is measurable as on IMAP.
            messages = tuple(
                StoredMessage(
                    uid, len(raw), bytes(memoryview(raw)) if len(raw) <= max_size else None
                )
                for uid in chosen
                for raw in (box.messages[uid],)
            )
            return FetchBatch(box.uidvalidity, messages, reset=reset, more=len(uids) > len(chosen))

    def delete_messages(self, folder: str, uids: Sequence[int]) -> None:
        with self._lock:
            self.operations += 1
            box = self._folder(folder)
            for uid in uids:
                if box.messages.pop(uid, None) is not None:
                    box.modseq += 1
            self._changed.notify_all()

    def status(self, folder: str) -> FolderStatus:
        with self._lock:
            self.operations += 1
            box = self._folder(folder)
            return FolderStatus(box.uidvalidity, box.uidnext, len(box.messages), box.modseq)

    def is_subscribed(self, folder: str) -> bool:
        with self._lock:
            self.operations += 1
            return self._folder(folder).subscribed

    def set_subscribed(self, folder: str, subscribed: bool) -> None:
        with self._lock:
            self.operations += 1
            self._folder(folder).subscribed = subscribed

    def wait_for_change(
        self, folder: str, timeout: float, since: FolderStatus | None = None
    ) -> bool:
        with self._lock:
            box = self._folder(folder)
            if since is not None and not since.same_content(
                FolderStatus(box.uidvalidity, box.uidnext, len(box.messages))
            ):
                return True
            before = self._fingerprint(folder)
            self._changed.wait_for(lambda: self._fingerprint(folder) != before, timeout)
            return self._fingerprint(folder) != before

    def _fingerprint(self, folder: str) -> tuple[int, int] | None:
        box = self.folders.get(folder)
        return None if box is None else (box.uidvalidity, box.modseq)

    def close(self) -> None:
        """Nothing to close: the mailbox outlives its users, as a server's does."""

    # --- the adversary's and the tests' direct access ----------------------------------------
    def change_uidvalidity(self, folder: str) -> None:
        with self._lock:
            self._folder(folder).uidvalidity = next(_uidvalidities)
