"""The user's tools: the `autocrypt-sma` command (main), what it runs (install, doctor, pairing,
demo) and the client that starts a host as Thunderbird does."""
