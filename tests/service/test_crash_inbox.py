"""A host killed right after it saved how far its inbox was read, before it deleted what it had
applied (found by tests/stress/test_kills.py: those messages stayed below the watermark, where no
later read saw them, and the inbox never drained). The memory store stands in for the server: the
kill is injected into its delete."""

from __future__ import annotations

from typing import Any

import pytest

from native_host.core import layout
from tests.service.test_inbox_recreated import manual, state
from tests.service.test_instance import ACCOUNT, Device, laptop, phone, server

__all__ = ["laptop", "phone", "server"]


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the runtime catches it."""


def test_a_crash_between_saving_the_watermark_and_deleting_leaves_no_message_behind(
    laptop: Device, phone: Device
) -> None:
    server = laptop.server
    laptop_rt = manual(laptop, "Laptop")
    phone_rt = manual(phone, "Phone")
    laptop_rt.sync()
    phone_rt.sync()
    inbox = layout.inbox_folder(laptop_rt.trust.me)
    invitation = laptop_rt.with_store(lambda s: laptop_rt.trust.invite(s))
    pairing_id = invitation.pairing_id
    phone_rt.with_store(lambda s: phone_rt.trust.join(s, str(invitation.code)))
    assert server.mailbox.status(inbox).messages == 1

    original = server.mailbox.delete_messages

    def killed(folder: str, uids: Any) -> None:
        if folder == inbox:
            raise Killed
        original(folder, uids)

    server.mailbox.delete_messages = killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        laptop_rt.sync()
    server.mailbox.delete_messages = original  # type: ignore[method-assign]
    assert server.mailbox.status(inbox).messages == 1  # applied and saved, not deleted

    laptop.service.stop()
    again = laptop.restart().runtime(ACCOUNT)
    assert state(again, pairing_id) == "confirming"  # the request was applied before the kill
    again.sync()
    assert server.mailbox.status(inbox).messages == 0
    assert [p for p in again.record.pairings] == [pairing_id]  # once
