"""From a parsed request to a result: method lookup, params validation, and error shaping."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from native_host.api.envelope import Request, RequestId
from native_host.errors import ErrorCode, HostError, SecretStoreUnavailable
from native_host.session import Context

log = logging.getLogger(__name__)

Handler = Callable[[Context, dict[str, Any]], dict[str, Any]]


# NamedTuples, not dataclasses, on the host's start path: `dataclasses` imports `inspect`, which
# costs the cold start more than this whole module (python -X importtime).
class Method(NamedTuple):
    name: str
    handler: Handler
    # Cheap and order-sensitive: answered on the reader thread, never queued behind IMAP work.
    inline: bool = False
    # Takes no params: checked by hand (its schema must be the empty object, a test checks)
    # so that a cold host answers without waiting for jsonschema.
    parameterless: bool = False


def result_message(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": request_id, "result": result}


def error_message(request_id: RequestId | None, error: HostError) -> dict[str, Any]:
    return {"id": request_id, "error": error.to_wire()}


def resolve(methods: Mapping[str, Method], request: Request) -> Method:
    """The method to run, with its params already validated."""
    method = methods.get(request.method)
    if method is None:
        raise HostError(ErrorCode.UNKNOWN_METHOD, f"no method {request.method!r}")
    if method.parameterless:
        if request.params:
            name = sorted(request.params)[0][:64]
            raise HostError(
                ErrorCode.INVALID_PARAMS, f"params.{name}: {method.name} takes no params"
            )
    else:
        from native_host.api.schemas import schemas  # after the first ping: pathlib, json

        schemas().check_params(method.name, request.params)
    return method


def run(method: Method, context: Context, request: Request) -> dict[str, Any]:
    """Call the handler; any failure becomes an error response, never a traceback on the wire."""
    try:
        return result_message(request.id, method.handler(context, request.params))
    except HostError as exc:
        return error_message(request.id, exc)
    except SecretStoreUnavailable as exc:  # from deep inside any method that needed a secret
        return error_message(request.id, HostError(ErrorCode.KEYRING_UNAVAILABLE, str(exc)))
    except Exception:
        log.exception("method %s (request %r) failed", method.name, request.id)
        error = HostError(
            ErrorCode.INTERNAL_ERROR,
            f"{method.name} failed inside the host; its log has the details",
        )
        return error_message(request.id, error)
