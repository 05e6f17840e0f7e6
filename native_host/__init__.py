"""autocrypt-sma native-messaging host: one Autocrypt identity across a person's mail clients."""

__version__ = "0.1.0"

# Bumped whenever a request, response or event changes incompatibly; the add-on compares it.
PROTOCOL_VERSION = 1
