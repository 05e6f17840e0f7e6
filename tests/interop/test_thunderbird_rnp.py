"""Our account key in Thunderbird's own OpenPGP library (the `librnp.so` Thunderbird ships and
loads), called directly through its C API: faster than driving Thunderbird, and the same code.

Checked: RNP reads the account key's primary as signing-capable and signs with it (the
signature Delta Chat needs, tests/interop/README.md condition 3), and decrypts what Sequoia
writes to the key. And the reason the key announces SEIPD v1 only: RNP answers "Bad format" to
SEIPD v2. When a Thunderbird update makes that last test fail, RNP reads v2 and the account key
may announce it again (`pgp_self_signature.FEATURES_SEIPD_V1`).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Iterator
from pathlib import Path

import pysequoia
import pytest
from pysequoia.packet import PacketPile, Tag

from native_host.adapters import pgp
from tests.e2e.thunderbird import THUNDERBIRD

LIBRNP = Path(THUNDERBIRD).parent / "librnp.so"
_IMPORT_PUBLIC_AND_SECRET = 0x1 | 0x2


class Rnp:
    """One RNP key store holding one secret key, with the few calls the tests need."""

    def __init__(self, secret_armored: str) -> None:
        if not LIBRNP.exists():
            raise AssertionError(f"{LIBRNP} is missing: apt-get install thunderbird")
        self.lib = ctypes.CDLL(str(LIBRNP))
        self.lib.rnp_result_to_string.restype = ctypes.c_char_p
        self.lib.rnp_version_string_full.restype = ctypes.c_char_p
        self._buffers: list[bytes] = []  # RNP reads input buffers later, without a copy
        self.ffi = ctypes.c_void_p()
        self._ok(self.lib.rnp_ffi_create(ctypes.byref(self.ffi), b"GPG", b"GPG"))
        self._ok(self.lib.rnp_import_keys(self.ffi, self._input(secret_armored.encode()),
                                          _IMPORT_PUBLIC_AND_SECRET, None))  # fmt: skip

    @property
    def version(self) -> str:
        return str(self.lib.rnp_version_string_full().decode())

    def _ok(self, rc: int) -> None:
        if rc != 0:
            raise RuntimeError(self.lib.rnp_result_to_string(rc).decode())

    def _input(self, data: bytes) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._buffers.append(data)
        self._ok(self.lib.rnp_input_from_memory(ctypes.byref(handle), data, len(data), False))
        return handle

    def _output(self) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._ok(self.lib.rnp_output_to_memory(ctypes.byref(handle), 0))
        return handle

    def _bytes(self, output: ctypes.c_void_p) -> bytes:
        buf, size = ctypes.POINTER(ctypes.c_uint8)(), ctypes.c_size_t()
        self._ok(self.lib.rnp_output_memory_get_buf(output, ctypes.byref(buf), ctypes.byref(size),
                                                    False))  # fmt: skip
        return bytes(buf[: size.value])

    def key(self, fingerprint: str) -> ctypes.c_void_p:
        handle = ctypes.c_void_p()
        self._ok(self.lib.rnp_locate_key(self.ffi, b"fingerprint", fingerprint.encode(),
                                         ctypes.byref(handle)))  # fmt: skip
        return handle

    def allows(self, key: ctypes.c_void_p, usage: str) -> bool:
        result = ctypes.c_bool()
        self._ok(self.lib.rnp_key_allows_usage(key, usage.encode(), ctypes.byref(result)))
        return result.value

    def sign_detached(self, key: ctypes.c_void_p, data: bytes) -> bytes:
        out, op = self._output(), ctypes.c_void_p()
        self._ok(self.lib.rnp_op_sign_detached_create(ctypes.byref(op), self.ffi,
                                                      self._input(data), out))  # fmt: skip
        self._ok(self.lib.rnp_op_sign_add_signature(op, key, None))
        self._ok(self.lib.rnp_op_sign_execute(op))
        return self._bytes(out)

    def decrypt(self, message: bytes) -> bytes:
        out = self._output()
        self._ok(self.lib.rnp_decrypt(self.ffi, self._input(message), out))
        return self._bytes(out)


@pytest.fixture(scope="module")
def account_key() -> pgp.AccountKey:
    return pgp.generate_account_key("alice@example.org", time.time())


@pytest.fixture
def rnp(account_key: pgp.AccountKey) -> Iterator[Rnp]:
    store = Rnp(account_key.secret_armored)
    yield store
    store.lib.rnp_ffi_destroy(store.ffi)


def _seipd_versions(message: bytes) -> list[int]:
    return [p.body[0] for p in PacketPile.from_bytes(message) if p.tag == Tag.SEIP]


def test_rnp_signs_with_the_account_key_primary(rnp: Rnp, account_key: pgp.AccountKey) -> None:
    primary = rnp.key(account_key.fingerprint)
    assert rnp.allows(primary, "sign")
    assert rnp.allows(primary, "certify")
    signature = pysequoia.Sig.from_bytes(rnp.sign_detached(primary, b"hello"))
    assert (signature.issuer_fingerprint or "").upper() == account_key.fingerprint
    cert = pysequoia.Cert.from_bytes(account_key.public_armored.encode())
    assert pysequoia.verify(b"hello", store=lambda _ids: [cert], signature=signature).valid_sigs


def test_rnp_decrypts_what_sequoia_writes_to_the_account_key(
    rnp: Rnp, account_key: pgp.AccountKey
) -> None:
    cert = pysequoia.Cert.from_bytes(account_key.public_armored.encode())
    message = pysequoia.encrypt(b"to the account", [cert], armor=False)
    assert _seipd_versions(message) == [1]  # the key announces SEIPD v1 only
    assert rnp.decrypt(message) == b"to the account"


def test_rnp_cannot_decrypt_seipd_v2() -> None:
    """Sequoia's own key shape announces SEIPD v2 (Features 0x09), so Sequoia writes v2 to it;
    Thunderbird's RNP cannot open that. (Why our account key announces v1 only.)"""
    tsk = pysequoia.Tsk.generate("<bob@example.org>", profile=pysequoia.Profile.RFC4880)
    rnp = Rnp(str(tsk))
    message = pysequoia.encrypt(b"v2", [tsk.extract_certificate()], armor=False)
    assert _seipd_versions(message) == [2]
    with pytest.raises(RuntimeError, match="Bad format"):
        rnp.decrypt(message)
    assert "MZLA" in rnp.version  # Mozilla's build, the one Thunderbird loads
