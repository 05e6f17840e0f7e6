"""A small OAuth2 provider on a free loopback port, for tests (and the Thunderbird e2e test later).

Stdlib `http.server` in a thread. Endpoints (form-encoded POST, JSON answers):

- ``/token`` (RFC 6749): ``grant_type=refresh_token`` (``refresh_token``), ``password``
  (``username``, ``password``: the user's password given to `add_user`) and
  ``client_credentials`` with ``username`` (a test shortcut: no user interaction anywhere).
  Answers ``access_token``, ``token_type`` Bearer, ``expires_in``, ``refresh_token``.
- ``/introspect`` (RFC 7662): ``token`` -> ``{"active": true, "username", "exp", ...}`` or
  ``{"active": false}`` (unknown, expired or revoked). Dovecot's oauth2 passdb asks here.
- ``/revoke`` (RFC 7009): ``token`` (an access or refresh token; a refresh token takes its
  access tokens with it). Always 200.

Tokens are random; lifetimes are per provider (`lifetime`, changeable between grants) and
checked against the wall clock. `requests` counts requests per path and `introspected` lists
the verdicts, so tests can bound how often a server asked. Every issued token is in `issued`
(tests scan logs and files for them).

    with OAuth2Provider() as provider:
        refresh = provider.add_user("user1")
        token = provider.grant(refresh)["access_token"]
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from .common import LOOPBACK

DEFAULT_LIFETIME = 3600
MAX_BODY = 64 * 1024


@dataclass
class _Access:
    username: str
    expires_at: float
    refresh: str | None
    revoked: bool = False


class OAuth2Provider:
    def __init__(self, *, lifetime: int = DEFAULT_LIFETIME) -> None:
        self.lifetime = lifetime
        self.host = LOOPBACK
        self.port = 0
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}  # username -> password
        self._refresh: dict[str, str] = {}  # refresh token -> username (revoked: removed)
        self._access: dict[str, _Access] = {}
        self.requests: Counter[str] = Counter()
        self.introspected: list[tuple[str, bool]] = []  # (token, active) per introspection
        self.issued: list[str] = []  # every access and refresh token ever handed out
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- URLs ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"

    @property
    def revocation_url(self) -> str:
        return self.url + "/revoke"

    # --- what tests do directly -------------------------------------------------------------
    def add_user(self, username: str, password: str | None = None) -> str:
        """Register `username` and return a refresh token for it (as if it had signed in)."""
        with self._lock:
            self._users[username] = password or secrets.token_urlsafe(12)
            return self._new_refresh(username)

    def grant(self, refresh_token: str) -> dict[str, Any]:
        """What ``/token`` answers to grant_type=refresh_token (raises KeyError if revoked)."""
        with self._lock:
            username = self._refresh[refresh_token]
            return self._issue(username, refresh_token)

    def revoke(self, token: str) -> None:
        with self._lock:
            self._revoke(token)

    def active(self, token: str) -> bool:
        with self._lock:
            return self._is_active(token)

    # --- inside (lock held) ---------------------------------------------------------------------
    def _new_refresh(self, username: str) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self._refresh[token] = username
        self.issued.append(token)
        return token

    def _issue(self, username: str, refresh: str | None) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(32)
        self._access[token] = _Access(username, time.time() + self.lifetime, refresh)
        self.issued.append(token)
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.lifetime,
        }
        if refresh is not None:
            answer["refresh_token"] = refresh
        return answer

    def _is_active(self, token: str) -> bool:
        access = self._access.get(token)
        return (
            access is not None
            and not access.revoked
            and time.time() < access.expires_at
            and (access.refresh is None or access.refresh in self._refresh)
        )

    def _revoke(self, token: str) -> None:
        if token in self._refresh:
            del self._refresh[token]  # its access tokens die with it (_is_active)
        elif token in self._access:
            self._access[token].revoked = True

    def handle(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """One request's answer: (HTTP status, JSON body)."""
        with self._lock:
            self.requests[path] += 1
            if path == "/introspect":
                token = form.get("token", "")
                active = self._is_active(token)
                self.introspected.append((token, active))
                if not active:
                    return 200, {"active": False}
                access = self._access[token]
                return 200, {
                    "active": True,
                    "username": access.username,
                    "exp": int(access.expires_at),
                    "token_type": "Bearer",
                    "scope": "imap",
                }
            if path == "/revoke":
                self._revoke(form.get("token", ""))
                return 200, {}
            if path == "/token":
                return self._token_endpoint(form)
            return 404, {"error": "not_found"}

    def _token_endpoint(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type")
        if grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            if refresh not in self._refresh:
                return 400, {"error": "invalid_grant"}
            return 200, self._issue(self._refresh[refresh], refresh)
        if grant == "password":
            username = form.get("username", "")
            if username not in self._users or self._users[username] != form.get("password"):
                return 400, {"error": "invalid_grant"}
            return 200, self._issue(username, self._new_refresh(username))
        if grant == "client_credentials":
            username = form.get("username", "")
            if username not in self._users:
                return 400, {"error": "invalid_client"}
            return 200, self._issue(username, None)
        return 400, {"error": "unsupported_grant_type"}

    # --- the server -----------------------------------------------------------------------------
    def start(self) -> OAuth2Provider:
        if self._server is not None:
            return self
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(min(length, MAX_BODY)).decode("utf-8", "replace")
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    try:
                        loaded = json.loads(raw or "{}")
                    except ValueError:
                        loaded = {}
                    form = {str(k): str(v) for k, v in dict(loaded).items()}
                else:
                    form = {k: v[0] for k, v in parse_qs(raw).items()}
                status, body = provider.handle(self.path.split("?", 1)[0], form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # quiet: request lines would carry nothing, but tests read stderr

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="oauth2-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OAuth2Provider:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
