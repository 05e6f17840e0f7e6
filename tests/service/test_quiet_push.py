"""The sync loop keeps its promised pace when push news does not come.

Regression (tests/adversary seeds 3 and 6, more often on a loaded machine): the tablet asked to
pair after the attack, the laptop put its accept into the tablet's inbox at once, and the tablet
read it only when the test had given up, 15 s later. Two things kept it waiting: `pairing.request`
did not wake the sync loop, which slept out the wait it had begun before (up to the 60 s poll)
instead of switching to the 250 ms pairing poll; and the inbox's push loop, which would have
woken it, was in the outage backoff (up to a minute) because the adversary had deleted the inbox
a few times in a row, although a missing folder is no outage (the next sync recreates it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from native_host.core import layout
from native_host.ports import FolderMissing, FolderStatus, StoreError
from native_host.service import runtime as runtime_module
from native_host.service.accounts import ImapSettings
from tests.service.test_instance import ACCOUNT, Device, Server, configured
from tests.service.test_pairing_flow import state


class Waiter:
    """The mailbox as one connection sees it, with a scripted `wait_for_change`."""

    def __init__(self, server: ScriptedPush) -> None:
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server.mailbox, name)

    def wait_for_change(
        self, folder: str, timeout: float, since: FolderStatus | None = None
    ) -> bool:
        return self._server.wait(folder, timeout, since)


class ScriptedPush(Server):
    def __init__(self, wait: Callable[[str, float, FolderStatus | None], bool]) -> None:
        super().__init__()
        self.wait = wait

    def open(self, settings: ImapSettings, password: str) -> Any:
        super().open(settings, password)  # (refusals as usual)
        return Waiter(self)


def test_a_pairing_request_switches_the_sync_loop_to_the_pairing_pace_at_once(
    tmp_path: Any,
) -> None:
    """A server that never sends push news: the new device must still see the accept within the
    pairing poll, not at its next 60 s poll."""

    def never(folder: str, timeout: float, since: FolderStatus | None) -> bool:
        time.sleep(0.2)
        return False

    server = ScriptedPush(never)
    laptop, phone = Device(tmp_path / "laptop", server, 1), Device(tmp_path / "phone", server, 2)
    configured(laptop, "Laptop")
    laptop.service.stop(wait=5)  # the laptop's syncs are run by the test
    configured(phone, "Phone")
    time.sleep(0.5)  # the phone's sync loop is in its idle wait (no pairing yet: 60 s)
    phone_rt = phone.service.runtime(ACCOUNT)
    laptop_rt = laptop.service.runtime(ACCOUNT)
    invitation = laptop_rt.with_store(lambda store: laptop_rt.trust.invite(store))
    pairing_id = phone_rt.with_store(lambda store: phone_rt.trust.join(store, str(invitation.code)))
    laptop_rt.sync()  # reads the request, sends its answer
    deadline = time.monotonic() + 3.0
    while state(phone, pairing_id) == "joining":
        assert time.monotonic() < deadline, "the phone did not read the answer within 3 s"
        time.sleep(0.05)
    assert state(phone, pairing_id) == "receiving"


def inbox_news_after_failures(tmp_path: Any, fail: Callable[[str], None], seconds: float) -> None:
    """A phone whose inbox push waits fail five times in a row (`fail` raises): the five must
    come within `seconds`, and news that arrives afterwards must be read and reported at once."""
    failures: list[float] = []

    def wait(folder: str, timeout: float, since: FolderStatus | None) -> bool:
        if folder.startswith(layout.ANNOUNCE_FOLDER + "_") and len(failures) < 5:
            failures.append(time.monotonic())
            fail(folder)
        return server.mailbox.wait_for_change(folder, min(timeout, 0.5), since)

    server = ScriptedPush(wait)
    phone = Device(tmp_path / "phone", server, 2)
    configured(phone, "Phone")
    inbox = layout.inbox_folder(phone.service.runtime(ACCOUNT).trust.me)
    deadline = time.monotonic() + seconds
    while len(failures) < 5:
        assert time.monotonic() < deadline, f"the push loop tried {len(failures)} times"
        time.sleep(0.05)
    time.sleep(0.5)
    while not phone.events.empty():
        phone.events.get()
    server.mailbox.append(inbox, b"From: <x@example.org>\r\n\r\nnot an SMA message\r\n")
    alert = phone.wait_event("security.alert", timeout=3.0)  # read and reported at once
    assert alert["kind"] == "inbox"


def test_a_push_loop_whose_folder_is_missing_does_not_back_off_like_an_outage(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server deletes the inbox five times in a row while the push loop watches it; news
    that arrives afterwards must wake the device promptly (the outage backoff had reached
    1 + 2 + 4 + 8 + 16 s by then)."""
    monkeypatch.setattr(runtime_module, "MISSING_PAUSE", 0.1, raising=False)

    def missing(folder: str) -> None:
        raise FolderMissing(folder)

    inbox_news_after_failures(tmp_path, missing, 5.0)


def test_a_push_loop_refused_by_a_server_that_answers_syncs_backs_off_briefly(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (tests/adversary seed 2, after the attack): Dovecot answered NO to the push
    loop's EXAMINE of the inbox while the adversary deleted and renamed it (LIST still showed
    the folder: a StoreError, not FolderMissing). Each answer doubled the outage backoff, up to
    a minute, although the sync loop reached the server all along; after the attack the laptop
    heard of the tablet's pair-request only at its next 60 s poll. While the sync loop is online
    the push loop's backoff stays short."""
    monkeypatch.setattr(runtime_module, "ONLINE_PUSH_BACKOFF", 0.2, raising=False)

    def refused(folder: str) -> None:
        raise StoreError("select failed: Mailbox was deleted under us")

    inbox_news_after_failures(tmp_path, refused, 6.0)  # old: 1 + 2 + 4 + 8 s to the fifth
