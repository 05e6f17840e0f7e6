"""Where things live in the account: the SMA folder names and device ids (the one place for them).

Only first-level folders, as the SMA text requires of servers: `_Autocrypt_SMA` holds one
announcement per device; `_Autocrypt_SMA_<device-id>` is the inbox where the others drop that
device's messages.
"""

from __future__ import annotations

import re

from native_host.ports import RandomBytes

ANNOUNCE_FOLDER = "_Autocrypt_SMA"
INBOX_PREFIX = ANNOUNCE_FOLDER + "_"

# 64 random bits: collisions among one person's devices are out of the question, and ids need
# not be secret (they are folder names the server sees). Lower-case hex is safe in every
# server's folder names: no delimiter, no wildcard, no modified-UTF-7 escapes.
DEVICE_ID_BYTES = 8
DEVICE_ID_RE = re.compile(r"[0-9a-f]{16}")
DEVICE_ID_PATTERN = "^[0-9a-f]{16}(?!\\n)$"  # the same rule for JSON Schema


def new_device_id(random: RandomBytes) -> str:
    return random(DEVICE_ID_BYTES).hex()


def is_device_id(value: str) -> bool:
    return DEVICE_ID_RE.fullmatch(value) is not None


def inbox_folder(device_id: str) -> str:
    if not is_device_id(device_id):
        raise ValueError(f"not a device id: {device_id!r}")
    return INBOX_PREFIX + device_id


def device_of_inbox(folder: str) -> str | None:
    """The device id whose inbox `folder` is, or None for any other folder."""
    if not folder.startswith(INBOX_PREFIX):
        return None
    candidate = folder[len(INBOX_PREFIX) :]
    return candidate if is_device_id(candidate) else None
