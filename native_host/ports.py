"""The interfaces the protocol core needs from the outside world, and nothing more.

The core decides; adapters (IMAP, memory, keyring, OpenPGP, SQLite) do I/O behind these.
Every implementation of a port runs the same contract test class in tests/contract/.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# The ports' exceptions live in errors.py, which the host's start imports without this module.
from native_host.errors import FolderMissing as FolderMissing
from native_host.errors import SecretStoreUnavailable as SecretStoreUnavailable
from native_host.errors import StoreAuthError as StoreAuthError
from native_host.errors import StoreError as StoreError

# Injected so that every decision is reproducible in tests.
Clock = Callable[[], float]  # seconds since the epoch, like time.time
RandomBytes = Callable[[int], bytes]  # like os.urandom / secrets.token_bytes
# The plaintext of an OpenPGP message encrypted to the account key (current or an earlier one),
# or None when no key this device holds opens it or the plaintext is too large. The OpenPGP
# library and the keyring stay behind it, so the peer book and its tests need neither.
Decrypt = Callable[[bytes], bytes | None]

# Message bodies one fetch loads at most (beyond its first message): what one refresh of a
# folder holds in memory is a batch, applied and released before the next is fetched.
FETCH_MAX_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Watermark:
    """How far a folder has been read: valid only while the folder's UIDVALIDITY is unchanged."""

    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class FolderStatus:
    """A cheap summary that changes whenever the folder's content changes."""

    uidvalidity: int
    uidnext: int
    messages: int
    highestmodseq: int | None = None  # None where the server has no CONDSTORE

    def same_content(self, other: FolderStatus | None) -> bool:
        """Equal where every server reports alike (HIGHESTMODSEQ comes only with CONDSTORE)."""
        return other is not None and (self.uidvalidity, self.uidnext, self.messages) == (
            other.uidvalidity,
            other.uidnext,
            other.messages,
        )


@dataclass(frozen=True)
class StoredMessage:
    uid: int
    size: int
    raw: bytes | None  # None: over the size limit, so not fetched; it stays on the server


@dataclass(frozen=True)
class FetchBatch:
    uidvalidity: int
    messages: tuple[StoredMessage, ...]
    reset: bool  # UIDVALIDITY changed since the watermark: this batch starts from the beginning
    more: bool  # the limit cut the batch short; fetch again from `watermark`

    @property
    def watermark(self) -> Watermark:
        last = self.messages[-1].uid if self.messages else 0
        return Watermark(self.uidvalidity, last)

    def after(self, since: Watermark | None) -> Watermark:
        """The watermark to save once this batch is applied."""
        if self.messages or self.reset or since is None:
            return self.watermark
        return since


def within_budget(
    uids: Sequence[int], sizes: Mapping[int, int], max_size: int, max_bytes: int
) -> list[int]:
    """The leading `uids` whose bodies to load (those of at most `max_size`) total at most
    `max_bytes`; the first one always. For `FolderStore.fetch` implementations."""
    chosen: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        loaded = size if size <= max_size else 0
        if chosen and total + loaded > max_bytes:
            break
        chosen.append(uid)
        total += loaded
    return chosen


class FolderStore(Protocol):
    """First-level folders of one mail account, addressed by logical (un-prefixed) names.

    Implementations map names to the server's namespace; the core never sees a prefix or a
    hierarchy delimiter.
    """

    def list_folders(self, prefix: str) -> list[str]:
        """First-level folders whose logical name starts with `prefix`."""
        ...

    def create_folder(self, name: str) -> bool:
        """Create an unsubscribed folder; False if it existed already (not an error)."""
        ...

    def delete_folder(self, name: str) -> bool:
        """False if it did not exist."""
        ...

    def append(self, folder: str, message: bytes) -> int | None:
        """Store a message; its UID if the server tells (UIDPLUS)."""
        ...

    def fetch(
        self,
        folder: str,
        since: Watermark | None,
        *,
        limit: int,
        max_size: int,
        max_bytes: int = FETCH_MAX_BYTES,
    ) -> FetchBatch:
        """Messages with UID above the watermark, oldest first, at most `limit` of them.

        A message larger than `max_size` comes back with `raw=None` and is never loaded. The
        loaded bodies total at most `max_bytes`, except that the first message always comes
        (or nothing would move): the batch ends before the body that would cross it, and
        `more` says to fetch again.
        """
        ...

    def delete_messages(self, folder: str, uids: Sequence[int]) -> None:
        """Delete and expunge exactly these UIDs (others' pending deletions are not touched)."""
        ...

    def status(self, folder: str) -> FolderStatus: ...

    def is_subscribed(self, folder: str) -> bool: ...

    def set_subscribed(self, folder: str, subscribed: bool) -> None: ...


class ChangeWaiter(Protocol):
    """Push: block until a folder may have changed. Used on a connection of its own."""

    def wait_for_change(
        self, folder: str, timeout: float, since: FolderStatus | None = None
    ) -> bool:
        """True as soon as `folder` may have changed (a hint: the caller re-checks), False after
        `timeout` seconds without news. Raises StoreError if the link died.

        With `since` (the status the caller last acted on), a change that happened before the
        wait began counts too: without it, one landing between the caller's last look and the
        start of IDLE would go unnoticed until the next poll.
        """
        ...


class SecretStore(Protocol):
    """Secrets by name (an IMAP password, later private keys); the OS keyring in production."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...

    def delete(self, name: str) -> None:
        """Forget it; no error if it was not there."""
        ...


@dataclass(frozen=True)
class AccessToken:
    """An OAuth2 access token, held in memory only. `fresh`: not yet offered to the server (a
    refused fresh token is the provider's verdict; a refused reused one may just have expired)."""

    value: str = field(repr=False)
    fresh: bool = True


class TokenSource(Protocol):
    """Where an OAuth2 account's access tokens come from (Thunderbird, or a token command)."""

    def token(self) -> AccessToken:
        """A token to log in with now; raises StoreAuthError while none can be had."""
        ...

    def rejected(self, token: AccessToken, detail: str) -> StoreAuthError:
        """The server refused `token`; returns the error the login raises if it gives up."""
        ...

    def accepted(self, token: AccessToken) -> None:
        """The server took `token`."""
        ...
