"""The ways things go wrong: the add-on asked badly (HostError), the mail server sent garbage
(RemoteProtocolError), or a port failed (StoreError, SecretStoreUnavailable: ports.py names them)."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable error codes of the native-messaging API; the schemas and docs/api.md mirror this."""

    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    UNKNOWN_METHOD = "unknown_method"
    INVALID_PARAMS = "invalid_params"
    FRAME_TOO_LARGE = "frame_too_large"
    RESPONSE_TOO_LARGE = "response_too_large"
    BUSY = "busy"
    NOT_CONFIGURED = "not_configured"
    NOT_JOINED = "not_joined"
    AUTH_FAILED = "auth_failed"
    IMAP_UNAVAILABLE = "imap_unavailable"
    KEYRING_UNAVAILABLE = "keyring_unavailable"
    PAIRING_NOT_FOUND = "pairing_not_found"
    PAIRING_EXPIRED = "pairing_expired"
    PAIRING_STATE = "pairing_state"
    NOT_PAIRED = "not_paired"
    INTERNAL_ERROR = "internal_error"


class HostError(Exception):
    """A request cannot be served; carries the stable code the add-on switches on."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}


class RemoteProtocolError(Exception):
    """Data from the mail server (the adversary) failed to parse or verify.

    The service layer skips such a message, leaves it in place and reports it; it never
    becomes a HostError, because the add-on did nothing wrong.
    """


class StoreError(Exception):
    """The folder store failed (connection lost, server said NO); the operation may be retried."""


class StoreAuthError(StoreError):
    """The server refused the credentials: retrying with the same ones will not help."""


class FolderMissing(StoreError):
    """The folder does not exist (deleted by another device, or by the server)."""


class SecretStoreUnavailable(Exception):
    """No usable OS keyring: secrets are never stored anywhere else."""
