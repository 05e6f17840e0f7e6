"""IMAP servers that the test suite starts itself (loopback, free ports, temp dirs).

- `PymapServer`: pymap's in-memory dict backend, one user per process.
- `DovecotServer`: a private Dovecot 2.3, namespace flavour "default" or "inbox-prefix".
- `imap_account_factory(kind)`: fresh accounts for the FolderStore contract (see accounts.py).
"""

from __future__ import annotations

from .accounts import ImapAccount, ImapAccountFactory, imap_account_factory
from .common import ServerStartError, free_port
from .dovecot_server import DovecotServer
from .pymap_server import PymapServer

__all__ = [
    "DovecotServer",
    "ImapAccount",
    "ImapAccountFactory",
    "PymapServer",
    "ServerStartError",
    "free_port",
    "imap_account_factory",
]
