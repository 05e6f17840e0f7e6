"""The in-memory account and its devices, shared by the service-layer tests; every test's devices
are stopped afterwards, so no background thread outlives its test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.test_instance import LIVE_DEVICES, laptop, phone, server

__all__ = ["laptop", "phone", "server"]


@pytest.fixture(autouse=True)
def _stop_devices() -> Iterator[None]:
    yield
    while LIVE_DEVICES:
        LIVE_DEVICES.pop().service.stop()
