"""The SMA protocol as pure code: no sockets, no files, no clock or randomness of its own."""
