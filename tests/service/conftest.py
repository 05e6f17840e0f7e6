"""The in-memory account and its devices, shared by the service-layer tests."""

from tests.service.test_instance import laptop, phone, server

__all__ = ["laptop", "phone", "server"]
