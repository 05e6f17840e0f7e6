"""Thin adapters that perform I/O behind the ports in native_host.ports; they decide nothing."""
